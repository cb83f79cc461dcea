//! Gated SAE (arXiv 2404.16014): one encoder matrix read two ways. The gate
//! `pi_gate = u + b_gate` (`u = x_c W_enc^T`, `b_gate` is `b_enc`) decides which latents fire; the
//! magnitude `pi_mag = exp(r_mag) u + b_mag` decides how much: `f = H(pi_gate) ReLU(pi_mag)`.
//! Loss: `||x - x_hat||^2 + l1 sum_j ReLU(pi_gate_j) ||W_dec_j|| + ||x - x_hat_aux||^2`, where
//! `x_hat_aux = ReLU(pi_gate) W_dec + b_dec` uses a frozen (detached) copy of the decoder so the
//! auxiliary term trains only the gate. When at most [`super::relu::SPARSE_MAX_DENSITY`] of the
//! gates can be open, the certified encoder finds them and their exact `u` without the dense
//! product (`super::certified`), and everything after runs per latent over the rows where its
//! gate is open (every term of the loss is zero elsewhere); otherwise dense products throughout.

use super::grads::{
    add_norm_penalty_grad, column_sums, decoder_grad, decoder_norms, error_grad, l1_penalty, sized,
    LossParts, Workspace,
};
use super::params::{Grads, ParamId};
use super::topk::{
    code_sums_into, gather_sum_by_latent_blocks, group_slots_by_latent, mark_fired,
    visit_by_row_blocks,
};
use super::Sae;
use crate::linalg::simd;
use crate::linalg::{matmul, MatRef};
use crate::{Matrix, Parallelism};

/// The magnitude path of a gated SAE (the parameters of its [`super::Encoder::Gated`]).
#[derive(Clone, Copy, Debug)]
pub struct Magnitude<'a> {
    /// Magnitude-path bias `[d_sae]`.
    pub b_mag: &'a [f32],
    /// Magnitude-path log scale `[d_sae]`.
    pub r_mag: &'a [f32],
}

/// Loss and gradients of a gated SAE on the rows `x` of a step of `total` rows. `mag` is the
/// model's magnitude path (passed typed: only a gated encoder has one). `frozen` is the
/// detached decoder of the auxiliary term (`None`: the SAE's own, with no gradient flowing
/// into it from that term).
pub fn gated_loss_grad(
    sae: &Sae,
    mag: Magnitude<'_>,
    x: &[f32],
    total: usize,
    l1: f32,
    frozen: Option<(&Matrix, &[f32])>,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    let (n, m) = sae.w_dec.shape();
    let b = x.len() / m;
    let inv_b = 1.0 / total as f32;
    let (w_aux, b_aux) = frozen.unwrap_or((&sae.w_dec, &sae.b_dec));
    let scale: Vec<f32> = mag.r_mag.iter().map(|r| r.exp()).collect();
    let xc = sized(&mut ws.xc, b * m);
    let u = sized(&mut ws.pre, b * n);
    if let Some(limit) = super::relu::sparse_limit(sae, b * n) {
        // Few open gates: the certified encoder finds them (and their u) without the product.
        sae.center(x, xc);
        ws.cert.approximate(&sae.w_enc, &sae.b_enc, xc, u, par);
        let (w, bias) = (&sae.w_enc, &sae.b_enc);
        if let Some(u_slot) = ws.cert.open_gates(w, bias, xc, u, limit, &mut ws.aux) {
            let step = SparseGated {
                mag,
                scale: &scale,
                l1,
                aux: (w_aux, b_aux),
            };
            return step.loss_grad(sae, x, total, &u_slot, ws, g);
        }
    }
    let (xc, u) = (&mut ws.xc[..b * m], &mut ws.pre[..b * n]);
    sae.pre_activations(x, xc, u, false, par);
    let (u, xc) = (&ws.pre[..b * n], &ws.xc[..b * m]);
    // The codes f live in dpre's buffer (gated has no dpre of its own).
    let f = sized(&mut ws.dpre, b * n);
    let mut gate_relu = vec![0.0f32; b * n];
    gated_codes(u, (&sae.b_enc, mag, &scale), f, &mut gate_relu);
    let xhat = sized(&mut ws.xhat, b * m);
    matmul(xhat, MatRef::new(f, b, n), sae.w_dec.view(), 0.0, par);
    let de = sized(&mut ws.de, b * m);
    let recon = error_grad(xhat, x, &sae.b_dec, de, total);
    // Auxiliary reconstruction from ReLU(gate) through the frozen decoder.
    let mut de_aux = vec![0.0f32; b * m];
    matmul(xhat, MatRef::new(&gate_relu, b, n), w_aux.view(), 0.0, par);
    let aux = error_grad(xhat, x, b_aux, &mut de_aux, total);
    let mut norms = vec![0.0f32; n];
    decoder_norms(sae, &mut norms);
    let colsum = sized(&mut ws.colsum, n);
    column_sums(&gate_relu, n, colsum);
    let penalty = l1_penalty(colsum, &norms, l1, total);

    // df = de W_dec^T; d aux / d ReLU(gate) = de_aux W_aux^T.
    let mut df = vec![0.0f32; b * n];
    matmul(
        &mut df,
        MatRef::new(de, b, m),
        sae.w_dec.view().t(),
        0.0,
        par,
    );
    let mut dg = vec![0.0f32; b * n];
    matmul(
        &mut dg,
        MatRef::new(&de_aux, b, m),
        w_aux.view().t(),
        0.0,
        par,
    );
    let (mut g_rmag, mut g_bmag) = (g.take(ParamId::RMag), g.take(ParamId::BMag));
    g_rmag.clear();
    g_rmag.resize(n, 0.0);
    g_bmag.clear();
    g_bmag.resize(n, 0.0);
    g.b_enc.fill(0.0);
    let path = (&sae.b_enc[..], mag, &scale[..], &norms[..]);
    let grads = (&mut g_bmag[..], &mut g_rmag[..], &mut g.b_enc[..]);
    let active = through_gate_and_magnitude(u, &mut df, &dg, path, l1 * inv_b, grads);
    *g.get_mut(ParamId::RMag) = g_rmag;
    *g.get_mut(ParamId::BMag) = g_bmag;
    let du = &df;
    matmul(
        &mut g.w_enc,
        MatRef::new(du, b, n).t(),
        MatRef::new(xc, b, m),
        0.0,
        par,
    );
    decoder_grad(sae, f, de, (l1, colsum, &norms, total), g, par);
    column_sums(de, m, &mut g.b_dec);
    if sae.apply_b_dec_to_input {
        let mut du_sum = vec![0.0f32; n];
        column_sums(du, n, &mut du_sum);
        subtract_through_encoder(sae, &du_sum, &mut g.b_dec);
    }
    ws.fired.clear();
    ws.fired
        .extend((0..n).map(|j| f.chunks_exact(n).any(|r| r[j] > 0.0)));
    LossParts::of_step(recon, penalty + aux, active, total)
}

/// The codes `f = H(gate) ReLU(mag)` into `f` and `ReLU(gate)` into `gate_relu`, from the
/// shared pre-activations `u` (`gate = u + b_gate`, `mag = exp(r_mag) u + b_mag`).
fn gated_codes(
    u: &[f32],
    (b_gate, mag, scale): (&[f32], Magnitude<'_>, &[f32]),
    f: &mut [f32],
    gate_relu: &mut [f32],
) {
    let n = b_gate.len();
    for ((fr, gr), ur) in f
        .chunks_exact_mut(n)
        .zip(gate_relu.chunks_exact_mut(n))
        .zip(u.chunks_exact(n))
    {
        for j in 0..n {
            let gate = ur[j] + b_gate[j];
            let m = scale[j] * ur[j] + mag.b_mag[j];
            fr[j] = if gate > 0.0 { m.max(0.0) } else { 0.0 };
            gr[j] = gate.max(0.0);
        }
    }
}

/// Back through the gate and the magnitude path: given `df = d loss / d f` (in `du`) and
/// `dg = d aux / d ReLU(gate)`, adds the gradients of `b_mag`, `r_mag` and `b_gate`, and turns
/// `du` into `d loss / d u = dgate + exp(r_mag) dmag`. Returns the number of active codes.
fn through_gate_and_magnitude(
    u: &[f32],
    du: &mut [f32],
    dg: &[f32],
    (b_gate, mag, scale, norms): (&[f32], Magnitude<'_>, &[f32], &[f32]),
    l1_over_b: f32,
    (g_bmag, g_rmag, g_bgate): (&mut [f32], &mut [f32], &mut [f32]),
) -> usize {
    let n = b_gate.len();
    let mut active = 0usize;
    for (i, (&ui, d)) in u.iter().zip(du.iter_mut()).enumerate() {
        let j = i % n;
        let gate = ui + b_gate[j];
        let (dmag, dgate) = if gate > 0.0 {
            let m = scale[j] * ui + mag.b_mag[j];
            active += (m > 0.0) as usize;
            let dmag = if m > 0.0 { *d } else { 0.0 };
            (dmag, dg[i] + l1_over_b * norms[j])
        } else {
            (0.0, 0.0)
        };
        g_bmag[j] += dmag;
        g_rmag[j] += dmag * scale[j] * ui;
        g_bgate[j] += dgate;
        *d = dgate + scale[j] * dmag;
    }
    active
}

/// `b_dec`'s gradient through the encoder's input `x - b_dec`: subtracts `du_sum W_enc` (with
/// `du_sum` the per-latent sums of `d loss / d u`).
fn subtract_through_encoder(sae: &Sae, du_sum: &[f32], b_dec_grad: &mut [f32]) {
    let mut through = vec![0.0f32; sae.d_in()];
    let du = MatRef::new(du_sum, 1, du_sum.len());
    matmul(&mut through, du, sae.w_enc.view(), 0.0, Parallelism::Serial);
    b_dec_grad
        .iter_mut()
        .zip(&through)
        .for_each(|(a, v)| *a -= v);
}

/// The parts of a gated step the sparse path reads besides the SAE.
struct SparseGated<'a> {
    mag: Magnitude<'a>,
    /// `exp(r_mag)`.
    scale: &'a [f32],
    l1: f32,
    /// The auxiliary reconstruction's decoder and bias.
    aux: (&'a Matrix, &'a [f32]),
}

impl SparseGated<'_> {
    /// The rest of a gated step when few gates are open, given them as slots (`ws.aux`: values
    /// `ReLU(gate)`; `u_slot`: their `u`): the codes `f` into `ws.topk`, both reconstructions by
    /// gather-sums, and every gradient of the dense path summed per latent over its open gates.
    fn loss_grad(
        &self,
        sae: &Sae,
        x: &[f32],
        total: usize,
        u_slot: &[f32],
        ws: &mut Workspace,
        g: &mut Grads,
    ) -> LossParts {
        let (n, m) = sae.w_dec.shape();
        let b = x.len() / m;
        let inv_b = 1.0 / total as f32;
        let (mag, scale) = (self.mag, self.scale);
        // The codes f, computed from u as the dense path does.
        let k = ws.aux.k;
        ws.topk.k = k;
        ws.topk.indices.clone_from(&ws.aux.indices);
        ws.topk.values.clear();
        ws.topk
            .values
            .extend(ws.aux.values.iter().enumerate().map(|(e, &gate)| {
                let j = ws.aux.indices[e] as usize;
                let mv = scale[j] * u_slot[e] + mag.b_mag[j];
                if gate > 0.0 {
                    mv.max(0.0)
                } else {
                    0.0
                }
            }));
        let xhat = sized(&mut ws.xhat, b * m);
        xhat.fill(0.0);
        gather_sum_by_latent_blocks(&sae.w_dec, &ws.topk, xhat);
        let de = sized(&mut ws.de, b * m);
        let recon = error_grad(xhat, x, &sae.b_dec, de, total);
        let (w_aux, b_aux) = self.aux;
        xhat.fill(0.0);
        gather_sum_by_latent_blocks(w_aux, &ws.aux, xhat);
        let mut de_aux = vec![0.0f32; b * m];
        let aux = error_grad(xhat, x, b_aux, &mut de_aux, total);
        let mut norms = vec![0.0f32; n];
        decoder_norms(sae, &mut norms);
        group_slots_by_latent(ws, n, false);
        let mut colsum = vec![0.0f32; n];
        code_sums_into(&ws.latent_start, &ws.by_latent, &ws.aux.values, &mut colsum);
        let penalty = l1_penalty(&colsum, &norms, self.l1, total);
        let (mut g_rmag, mut g_bmag) = (g.take(ParamId::RMag), g.take(ParamId::BMag));
        for v in [&mut g_rmag, &mut g_bmag] {
            v.clear();
            v.resize(n, 0.0);
        }
        let mut du_sum = vec![0.0f32; n];
        g.w_dec.fill(0.0);
        g.w_enc.fill(0.0);
        g.b_enc.fill(0.0);
        let mut state: Vec<_> = g
            .w_dec
            .chunks_mut(m)
            .zip(g.w_enc.chunks_mut(m))
            .zip(g.b_enc.iter_mut().zip(&mut du_sum))
            .zip(g_bmag.iter_mut().zip(g_rmag.iter_mut()))
            .collect();
        let (gate, f, xc) = (&ws.aux.values, &ws.topk.values, &ws.xc[..b * m]);
        let de = &ws.de[..b * m];
        let l1_over_b = self.l1 * inv_b;
        visit_by_row_blocks(ws, b, &mut state, |j, st, row, e| {
            let (((gd, ge), (gb, ds)), (gbm, grm)) = st;
            if gate[e] <= 0.0 {
                return;
            }
            let (de_r, dea_r) = (&de[row * m..(row + 1) * m], &de_aux[row * m..(row + 1) * m]);
            let ui = u_slot[e];
            let mv = scale[j] * ui + mag.b_mag[j];
            let dmag = if mv > 0.0 {
                simd::dot_inline(de_r, sae.w_dec.row(j))
            } else {
                0.0
            };
            let dgate = simd::dot_inline(dea_r, w_aux.row(j)) + l1_over_b * norms[j];
            **gbm += dmag;
            **grm += dmag * scale[j] * ui;
            **gb += dgate;
            let du = dgate + scale[j] * dmag;
            **ds += du;
            simd::axpy_inline(gd, f[e], de_r);
            simd::axpy_inline(ge, du, &xc[row * m..(row + 1) * m]);
        });
        drop(state);
        add_norm_penalty_grad(sae, &mut g.w_dec, &colsum, &norms, l1_over_b);
        *g.get_mut(ParamId::RMag) = g_rmag;
        *g.get_mut(ParamId::BMag) = g_bmag;
        column_sums(de, m, &mut g.b_dec);
        if sae.apply_b_dec_to_input {
            subtract_through_encoder(sae, &du_sum, &mut g.b_dec);
        }
        let active = mark_fired(ws, n);
        LossParts::of_step(recon, penalty + aux, active, total)
    }
}
