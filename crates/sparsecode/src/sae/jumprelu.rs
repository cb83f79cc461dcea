//! JumpReLU (arXiv 2407.14435): `z_j = pre_j H(pre_j - theta_j)` with learnable thresholds
//! `theta_j = exp(t_j)`, trained on `||x - x_hat||^2 + l0 * #active` per sample. The step
//! function has no useful gradient, so the thresholds get the paper's straight-through
//! pseudo-derivatives with a rectangle kernel of width `bandwidth`:
//! `d z / d theta = -(theta / eps) K((pre - theta) / eps)`, `d H / d theta = -(1 / eps) K(...)`,
//! `K(u) = 1` for `|u| < 1/2`. Weights and biases get exact gradients (the active set fixed).

use super::grads::{LossParts, Workspace};
use super::params::{Grads, ParamId};
use super::topk::{sparse_loss_grad, Selection};
use super::Sae;
use crate::Parallelism;

/// Loss and gradients of a JumpReLU SAE on the rows `x` of a step of `total` rows; `threshold`
/// is the model's (its [`super::Encoder::JumpRelu`]'s, passed typed). The `threshold` gradient
/// receives the pseudo-gradient with respect to the log-thresholds `t = ln theta`.
pub fn jumprelu_loss_grad(
    sae: &Sae,
    threshold: &[f32],
    x: &[f32],
    total: usize,
    l0: f32,
    bandwidth: f32,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    let (n, m) = sae.w_dec.shape();
    let b = x.len() / m;
    let mut local = super::SingleProcess;
    let selection = Selection::Threshold(threshold);
    let mut parts = sparse_loss_grad(sae, x, total, selection, None, &mut local, ws, g, par);
    let penalty = l0 as f64 * parts.l0;
    parts.sparsity = penalty;
    parts.loss += penalty;
    threshold_grad(
        sae,
        threshold,
        (&ws.pre[..b * n], &ws.de[..b * m], total),
        l0,
        bandwidth,
        g.get_mut(ParamId::Threshold),
    );
    parts
}

/// Straight-through pseudo-gradient with respect to `ln theta`, given the pre-activations
/// without bias and `de = d loss / d x_hat` of these rows, part of a step of `total` rows.
pub(crate) fn threshold_grad(
    sae: &Sae,
    threshold: &[f32],
    (pre, de, total): (&[f32], &[f32], usize),
    l0: f32,
    eps: f32,
    out: &mut Vec<f32>,
) {
    let (n, m) = sae.w_dec.shape();
    out.clear();
    out.resize(n, 0.0);
    let half = 0.5 * eps;
    let inv_b = 1.0 / total as f32;
    for (row, der) in pre.chunks_exact(n).zip(de.chunks_exact(m)) {
        for j in 0..n {
            let theta = threshold[j];
            let v = row[j] + sae.b_enc[j];
            if (v - theta).abs() < half {
                let dz = crate::linalg::simd::dot(der, sae.w_dec.row(j));
                out[j] += -(theta / eps) * dz - l0 * inv_b / eps;
            }
        }
    }
    // Chain rule through theta = exp(t).
    out.iter_mut().zip(threshold).for_each(|(o, t)| *o *= t);
}
