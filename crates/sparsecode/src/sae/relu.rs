//! ReLU + L1 (SAELens "standard"): a dense encoder product, then either dense products for the
//! rest of the step or, once training has made the codes sparse (at most
//! [`SPARSE_MAX_DENSITY`] of them active in the step), TopK's sparse machinery: the decoder a
//! gather-sum over each row's active latents, the weight gradients summed per latent over the
//! rows where it fired, with the penalty's terms added.

use super::grads::{
    add_norm_penalty_grad, column_sums, decoder_grad, decoder_norms, error_grad, l1_penalty, sized,
    subtract_encoder_path, LossParts, Workspace,
};
use super::params::Grads;
use super::topk::{
    code_sums_into, penalised_weight_grads, select_variable, wide_reconstruction_error,
};
use super::Sae;
use crate::linalg::{matmul, MatRef};
use crate::Parallelism;
use rayon::prelude::*;

/// Loss and gradients of the ReLU-L1 SAE on the row-major rows `x` (`[rows, d_in]`, part of a
/// step of `total` rows), with the L1 penalty weighted by decoder row norms. Gradients are
/// written into `g` (overwritten). `ws.fired` receives which latents fired on these rows.
pub fn relu_loss_grad(
    sae: &Sae,
    x: &[f32],
    total: usize,
    l1: f32,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    let (n, m) = sae.w_dec.shape();
    let b = x.len() / m;
    let inv_b = 1.0 / total as f32;
    let xc = sized(&mut ws.xc, b * m);
    let pre = sized(&mut ws.pre, b * n);
    sae.pre_activations(x, xc, pre, true, par);
    // z = ReLU(pre), kept in `pre`.
    pre.par_iter_mut().for_each(|v| *v = v.max(0.0));
    let active: usize = pre
        .par_chunks(n)
        .map(|r| r.iter().filter(|v| **v > 0.0).count())
        .sum();
    if sparse_step(sae, active, b * n) {
        return sparse_relu_loss_grad(sae, x, total, l1, active, ws, g);
    }
    let z = &*ws.pre;

    // x_hat = z W_dec + b_dec; de = 2 (x_hat - x) / B.
    let xhat = sized(&mut ws.xhat, b * m);
    matmul(xhat, MatRef::new(z, b, n), sae.w_dec.view(), 0.0, par);
    let de = sized(&mut ws.de, b * m);
    let recon = error_grad(xhat, x, &sae.b_dec, de, total);

    // Decoder row norms weight the penalty.
    let norms = sized(&mut ws.norms, n);
    decoder_norms(sae, norms);
    let colsum = sized(&mut ws.colsum, n);
    colsum.fill(0.0);
    for row in z.chunks_exact(n) {
        for (c, &v) in colsum.iter_mut().zip(row) {
            *c += v;
        }
    }
    let fired = &mut ws.fired;
    fired.clear();
    fired.extend(colsum.iter().map(|&c| c > 0.0));
    let penalty = l1_penalty(colsum, norms, l1, total);

    // dz = de W_dec^T + l1 * norms / B, masked by the ReLU.
    let dpre = sized(&mut ws.dpre, b * n);
    matmul(dpre, MatRef::new(de, b, m), sae.w_dec.view().t(), 0.0, par);
    dpre.par_chunks_mut(n)
        .zip(z.par_chunks(n))
        .for_each(|(d, zr)| {
            for ((dv, zv), nj) in d.iter_mut().zip(zr).zip(norms.iter()) {
                *dv = if *zv > 0.0 {
                    *dv + l1 * nj * inv_b
                } else {
                    0.0
                };
            }
        });

    // dW_dec = z^T de + l1/B * colsum_j * W_dec_j / ||W_dec_j||.
    decoder_grad(sae, z, de, (l1, colsum, norms, total), g, par);
    // dW_enc = dpre^T x_c; db_enc = sum_b dpre.
    matmul(
        &mut g.w_enc,
        MatRef::new(dpre, b, n).t(),
        MatRef::new(xc, b, m),
        0.0,
        par,
    );
    g.b_enc.fill(0.0);
    for row in dpre.chunks_exact(n) {
        g.b_enc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
    }
    // db_dec = sum_b de - (apply_b_dec ? db_enc W_enc : 0).
    g.b_dec.fill(0.0);
    for row in de.chunks_exact(m) {
        g.b_dec.iter_mut().zip(row).for_each(|(a, v)| *a += v);
    }
    subtract_encoder_path(sae, g, &mut ws.tmp_m);

    LossParts::of_step(recon, penalty, active, total)
}

/// Steps with at most this fraction of active codes run on the sparse path. At 768 x 16384,
/// batch 4096, 2 threads (AMD EPYC): dense 2.97 s a step whatever the density; sparse 0.81 s at
/// 0.2%, 1.94 s at 5%, 3.24 s at 10%.
pub(crate) const SPARSE_MAX_DENSITY: f64 = 0.07;

#[cfg(test)]
thread_local! {
    /// Tests force one ReLU path or the other.
    pub(crate) static FORCE_SPARSE_RELU: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether a step with `active` of `entries` codes positive takes the sparse path.
fn sparse_step(sae: &Sae, active: usize, entries: usize) -> bool {
    sparse_limit(sae, entries).is_some_and(|limit| active <= limit)
}

/// The most active codes of `entries` a step may have and take the sparse path; None for an
/// MLP encoder (its gradient goes through its hidden layer).
pub(super) fn sparse_limit(sae: &Sae, entries: usize) -> Option<usize> {
    if sae.encoder.hidden().is_some() {
        return None;
    }
    #[cfg(test)]
    if let Some(forced) = FORCE_SPARSE_RELU.with(|f| f.get()) {
        return forced.then_some(usize::MAX);
    }
    Some((SPARSE_MAX_DENSITY * entries as f64) as usize)
}

/// The rest of a ReLU-L1 step from the codes `ws.pre` (ReLU applied) when few are active: the
/// gradients of the dense path, summed per latent over its active codes.
fn sparse_relu_loss_grad(
    sae: &Sae,
    x: &[f32],
    total: usize,
    l1: f32,
    active: usize,
    ws: &mut Workspace,
    g: &mut Grads,
) -> LossParts {
    let (n, m) = sae.w_dec.shape();
    let b = x.len() / m;
    let inv_b = 1.0 / total as f32;
    let zero_bias = vec![0.0f32; n];
    select_variable(&ws.pre[..b * n], &zero_bias, &|_, v| v > 0.0, &mut ws.topk);
    let recon = wide_reconstruction_error(sae, x, total, ws);
    let mut norms = std::mem::take(&mut ws.norms);
    norms.resize(n, 0.0);
    decoder_norms(sae, &mut norms);
    let per_code: Vec<f32> = norms.iter().map(|nj| l1 * nj * inv_b).collect();
    penalised_weight_grads(sae, ws, g, b, &per_code);
    let colsum = sized(&mut ws.colsum, n);
    code_sums_into(&ws.latent_start, &ws.by_latent, &ws.topk.values, colsum);
    add_norm_penalty_grad(sae, &mut g.w_dec, colsum, &norms, l1 * inv_b);
    let penalty = l1_penalty(colsum, &norms, l1, total);
    let fired = &mut ws.fired;
    fired.clear();
    fired.extend(colsum.iter().map(|&c| c > 0.0));
    ws.norms = norms;
    column_sums(&ws.de[..b * m], m, &mut g.b_dec);
    subtract_encoder_path(sae, g, &mut ws.tmp_m);
    LossParts::of_step(recon, penalty, active, total)
}
