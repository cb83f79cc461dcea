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
use rayon::prelude::*;

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
    let m = sae.d_in();
    let b = x.len() / m;
    let mut local = super::SingleProcess;
    let selection = Selection::Threshold {
        theta: threshold,
        bandwidth,
    };
    let mut parts = sparse_loss_grad(sae, x, total, selection, None, &mut local, ws, g, par);
    let penalty = l0 as f64 * parts.l0;
    parts.sparsity = penalty;
    parts.loss += penalty;
    threshold_grad(
        sae,
        threshold,
        (&ws.window, &ws.de[..b * m], total),
        l0,
        bandwidth,
        g.get_mut(ParamId::Threshold),
    );
    parts
}

/// Straight-through pseudo-gradient with respect to `ln theta`, given the entries in the window
/// (row, latent, pre-activation; row-major) and `de = d loss / d x_hat` of these rows, part of
/// a step of `total` rows.
pub(crate) fn threshold_grad(
    sae: &Sae,
    threshold: &[f32],
    (window, de, total): (&[(u32, u32, f32)], &[f32], usize),
    l0: f32,
    eps: f32,
    out: &mut Vec<f32>,
) {
    let (n, m) = sae.w_dec.shape();
    out.clear();
    out.resize(n, 0.0);
    let inv_b = 1.0 / total as f32;
    // The entries grouped by latent (a stable counting sort: rows stay in order), then each
    // latent summed by one thread: the serial row-major sum, bit for bit, at any thread count.
    let mut start = vec![0usize; n + 1];
    window
        .iter()
        .for_each(|&(_, j, _)| start[j as usize + 1] += 1);
    for j in 0..n {
        start[j + 1] += start[j];
    }
    let mut fill = start.clone();
    let mut rows = vec![0u32; window.len()];
    for &(r, j, _) in window {
        rows[fill[j as usize]] = r;
        fill[j as usize] += 1;
    }
    out.par_iter_mut().enumerate().for_each(|(j, o)| {
        let theta = threshold[j];
        for &r in &rows[start[j]..start[j + 1]] {
            let der = &de[r as usize * m..(r as usize + 1) * m];
            let dz = crate::linalg::simd::dot(der, sae.w_dec.row(j));
            *o += -(theta / eps) * dz - l0 * inv_b / eps;
        }
    });
    // Chain rule through theta = exp(t).
    out.iter_mut().zip(threshold).for_each(|(o, t)| *o *= t);
}
