//! ReLU + L1 (SAELens "standard"): dense forward and backward.

use super::grads::{
    decoder_grad, decoder_norms, error_grad, l1_penalty, sized, subtract_encoder_path, LossParts,
    Workspace,
};
use super::params::Grads;
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
    let z = &*pre;

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
    let mut active = 0usize;
    for row in z.chunks_exact(n) {
        for (c, &v) in colsum.iter_mut().zip(row) {
            *c += v;
            active += (v > 0.0) as usize;
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

    LossParts {
        loss: recon + penalty,
        recon,
        sparsity: penalty,
        variance: 0.0,
        l0: active as f64 / total as f64,
    }
}
