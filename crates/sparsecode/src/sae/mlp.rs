//! MLP encoder (the amortised encoder of arXiv 2411.13117): `hidden = ReLU(x_c W_h^T + b_h)`,
//! `z = ReLU(hidden W_enc^T + b_enc)`, linear decoder, loss `||x - x_hat||^2 + l1 sum_j z_j
//! ||W_dec_j||` as for the standard SAE. Dense forward and backward through both layers.

use super::grads::{
    column_sums, decoder_grad, decoder_norms, error_grad, l1_penalty, sized, LossParts, Workspace,
};
use super::params::{Grads, ParamId};
use super::{HiddenLayer, Sae};
use crate::linalg::{matmul, MatRef};
use crate::Parallelism;

/// Loss and gradients of an SAE with an MLP encoder (ReLU codes, L1 penalty) on the rows `x`
/// of a step of `total` rows. The hidden layer `h` is the one of `sae`'s
/// [`super::Encoder::Mlp`] (passed typed, so no other model can reach this loss); `W_enc` is
/// `[d_sae, width]`.
pub fn mlp_loss_grad(
    sae: &Sae,
    h: &HiddenLayer,
    x: &[f32],
    total: usize,
    l1: f32,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    let (n, m) = sae.w_dec.shape();
    let w = h.w.rows();
    let b = x.len() / m;
    let inv_b = 1.0 / total as f32;
    let xc = sized(&mut ws.xc, b * m);
    xc.copy_from_slice(x);
    if sae.apply_b_dec_to_input {
        for r in xc.chunks_exact_mut(m) {
            r.iter_mut().zip(&sae.b_dec).for_each(|(v, bd)| *v -= bd);
        }
    }
    let mut hid = vec![0.0f32; b * w];
    matmul(&mut hid, MatRef::new(xc, b, m), h.w.view().t(), 0.0, par);
    for r in hid.chunks_exact_mut(w) {
        r.iter_mut()
            .zip(&h.b)
            .for_each(|(v, bh)| *v = (*v + bh).max(0.0));
    }
    let z = sized(&mut ws.pre, b * n);
    matmul(z, MatRef::new(&hid, b, w), sae.w_enc.view().t(), 0.0, par);
    for r in z.chunks_exact_mut(n) {
        r.iter_mut()
            .zip(&sae.b_enc)
            .for_each(|(v, be)| *v = (*v + be).max(0.0));
    }
    let xhat = sized(&mut ws.xhat, b * m);
    matmul(xhat, MatRef::new(z, b, n), sae.w_dec.view(), 0.0, par);
    let de = sized(&mut ws.de, b * m);
    let recon = error_grad(xhat, x, &sae.b_dec, de, total);
    let mut norms = vec![0.0f32; n];
    decoder_norms(sae, &mut norms);
    let colsum = sized(&mut ws.colsum, n);
    column_sums(z, n, colsum);
    let penalty = l1_penalty(colsum, &norms, l1, total);

    // dpre = (de W_dec^T + l1/B ||W_dec_j||) where z > 0.
    let dpre = sized(&mut ws.dpre, b * n);
    matmul(dpre, MatRef::new(de, b, m), sae.w_dec.view().t(), 0.0, par);
    let mut active = 0usize;
    for (dr, zr) in dpre.chunks_exact_mut(n).zip(z.chunks_exact(n)) {
        for j in 0..n {
            if zr[j] > 0.0 {
                dr[j] += l1 * inv_b * norms[j];
                active += 1;
            } else {
                dr[j] = 0.0;
            }
        }
    }
    decoder_grad(sae, z, de, (l1, colsum, &norms, total), g, par);
    matmul(
        &mut g.w_enc,
        MatRef::new(dpre, b, n).t(),
        MatRef::new(&hid, b, w),
        0.0,
        par,
    );
    column_sums(dpre, n, &mut g.b_enc);
    // Into the hidden layer: dhid = dpre W_enc, masked by ReLU.
    let mut dh = vec![0.0f32; b * w];
    matmul(&mut dh, MatRef::new(dpre, b, n), sae.w_enc.view(), 0.0, par);
    dh.iter_mut().zip(&hid).for_each(|(d, hv)| {
        if *hv <= 0.0 {
            *d = 0.0
        }
    });
    let gw = g.get_mut(ParamId::WHidden);
    gw.resize(w * m, 0.0);
    matmul(
        gw,
        MatRef::new(&dh, b, w).t(),
        MatRef::new(xc, b, m),
        0.0,
        par,
    );
    let mut gbh = g.take(ParamId::BHidden);
    gbh.resize(w, 0.0);
    column_sums(&dh, w, &mut gbh);
    column_sums(de, m, &mut g.b_dec);
    if sae.apply_b_dec_to_input {
        let mut through = vec![0.0f32; m];
        matmul(
            &mut through,
            MatRef::new(&gbh, 1, w),
            h.w.view(),
            0.0,
            Parallelism::Serial,
        );
        g.b_dec.iter_mut().zip(&through).for_each(|(a, v)| *a -= v);
    }
    *g.get_mut(ParamId::BHidden) = gbh;
    ws.fired.clear();
    ws.fired.extend(colsum.iter().map(|c| *c > 0.0));
    LossParts::of_step(recon, penalty, active, total)
}
