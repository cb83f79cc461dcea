//! Switch SAE (arXiv 2410.08201): a router sends each sample to one of `E` experts, equal blocks
//! of `L = d_sae / E` latents, and only that block's encoder rows are computed: the encoder
//! product costs `B d L` instead of TopK's `B d d_sae`, `E` times less.
//!
//! For a sample `x` (`B` samples in a step):
//! - routing: `u = x - b_r`, logits `h = W_r u` (`W_r` is `[E, d_in]`), `p = softmax(h)`, expert
//!   `e* = argmax h` (ties to the lower index);
//! - codes: `a_j = x_c . W_enc_j + b_enc_j` for the latents `j` of `e*` only (`x_c = x - b_dec`
//!   when `apply_b_dec_to_input`); `S` = the top `k` of them, kept where `a_j > 0`; the code of
//!   `j` in `S` is `z_j = p_e* a_j` (the router's probability scales the expert's output, which
//!   is how the router learns from the reconstruction);
//! - `x_hat = b_dec + sum_{j in S} z_j W_dec_j`;
//! - loss `L = 1/B sum_b ||x_hat_b - x_b||^2 + lambda s E sum_e f_e P_e`: the Switch
//!   Transformer's load-balancing term, `f_e` the fraction of the step's samples routed to `e`
//!   (a count: no gradient), `P_e = 1/B sum_b p_be`, `s = 1/B sum_b ||x_b||^2` so that the term
//!   is in the reconstruction's units (on inputs normalised to `E||x||^2 = d_in`, `s = d_in`,
//!   as in the paper's training code), `lambda` the coefficient;
//! - AuxK when asked (arXiv 2406.04093; the paper's training code has it switched off): each
//!   row's top `k_aux` dead latents *of its own expert* (pre-activations, not scaled by `p`)
//!   reconstruct the residual as for TopK, so a dead latent is revived by its expert's tokens.
//!
//! Backward, with `de_b = 2 (x_hat_b - x_b) / B`:
//! - `dW_dec_j = sum_b z_bj de_b`, `db_dec = sum_b de_b` (plus the encoder path below);
//! - `g_bj = de_b . W_dec_j`, `da_bj = p_b g_bj`: `dW_enc_j = sum_b da_bj x_c,b`,
//!   `db_enc_j = sum_b da_bj`, and `b_dec` receives `-sum_bj da_bj W_enc_j` through `x_c`;
//! - `dp_be = lambda s E f_e / B + [e = e*_b] sum_{j in S_b} a_bj g_bj`, where the sum is
//!   `de_b . (x_hat_b - b_dec) / p_b` (one dot product per sample);
//! - softmax: `dh_b = p_b * (dp_b - p_b . dp_b)`; `dW_r = sum_b dh_b u_b^T`,
//!   `db_r = -sum_b W_r^T dh_b`.
//!
//! The selection and the top `k` are exact f32 (no certified approximation: the product is
//! already `E` times smaller). Rows are grouped by expert (a counting sort, so the order does
//! not depend on threads) and each expert's rows go through one product with its block.

use super::collective::Collective;
use super::grads::{sized, LossParts, Workspace};
use super::params::{Grads, ParamId};
use super::topk::{auxk_and_weight_grads, b_dec_grad, mark_fired, reconstruction_error, AuxK};
use super::{Router, Sae};
use crate::linalg::{matmul, topk_row, topk_row_shifted, MatRef};
use crate::Parallelism;
use rayon::prelude::*;

/// A Switch step's buffers beyond the common ones.
#[derive(Debug, Default)]
pub struct SwitchScratch {
    /// `x - b_r`, `[B, d_in]`.
    routed_in: Vec<f32>,
    /// Router probabilities `[B, E]`.
    probs: Vec<f32>,
    /// Each row's expert.
    expert: Vec<u32>,
    /// The rows grouped by expert (in row order within an expert).
    order: Vec<u32>,
    /// Where each expert's rows start in `order`, and the end.
    starts: Vec<usize>,
    /// Each row's position in `order`.
    pos: Vec<u32>,
    /// One expert's centred rows, gathered.
    gathered: Vec<f32>,
    /// The softmax's input gradient `[B, E]`.
    dh: Vec<f32>,
}

/// The forward pass of the rows `x`: `ws.xc` the centred rows, `ws.switch` the routing,
/// `ws.pre` the chosen experts' pre-activations (rows in expert order, `L` each, without
/// bias), `ws.topk` the codes `z` with latent indices over the whole dictionary.
fn forward(sae: &Sae, router: &Router, k: usize, x: &[f32], ws: &mut Workspace, par: Parallelism) {
    let m = sae.d_in();
    let b = x.len() / m.max(1);
    sae.center(x, sized(&mut ws.xc, b * m));
    // Each row's probability of its expert: the factor from pre-activation to code.
    route(router, x, (&mut ws.switch, &mut ws.code_scale), par);
    group_by_expert(&mut ws.switch, router.experts(), b);
    expert_codes(sae, k, b, ws, par);
    let (values, p_star) = (&mut ws.topk.values, &ws.code_scale);
    values
        .par_chunks_mut(k)
        .zip(p_star.par_iter())
        .for_each(|(v, p)| v.iter_mut().for_each(|z| *z *= p));
}

/// Router probabilities, each row's expert and (into `p_star`) its probability.
fn route(
    router: &Router,
    x: &[f32],
    (sw, p_star): (&mut SwitchScratch, &mut Vec<f32>),
    par: Parallelism,
) {
    let (e, m) = router.w.shape();
    let b = x.len() / m.max(1);
    let u = sized(&mut sw.routed_in, b * m);
    u.copy_from_slice(x);
    u.par_chunks_mut(m)
        .for_each(|r| r.iter_mut().zip(&router.b).for_each(|(v, c)| *v -= c));
    let h = sized(&mut sw.probs, b * e);
    matmul(h, MatRef::new(u, b, m), router.w.view().t(), 0.0, par);
    sw.expert.resize(b, 0);
    p_star.resize(b, 0.0);
    h.par_chunks_mut(e)
        .zip(sw.expert.par_iter_mut().zip(p_star.par_iter_mut()))
        .for_each(|(row, (ex, ps))| {
            let mut at = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[at] {
                    at = i;
                }
            }
            let top = row[at];
            let mut sum = 0.0f32;
            for v in row.iter_mut() {
                *v = (*v - top).exp();
                sum += *v;
            }
            row.iter_mut().for_each(|v| *v /= sum);
            *ex = at as u32;
            *ps = row[at];
        });
}

/// Groups the rows by expert with a counting sort (rows in order within an expert).
fn group_by_expert(sw: &mut SwitchScratch, experts: usize, b: usize) {
    let starts = &mut sw.starts;
    starts.clear();
    starts.resize(experts + 1, 0);
    for &ex in &sw.expert[..b] {
        starts[ex as usize + 1] += 1;
    }
    for e in 0..experts {
        starts[e + 1] += starts[e];
    }
    let mut fill = starts[..experts].to_vec();
    sw.order.resize(b, 0);
    sw.pos.resize(b, 0);
    for (r, &ex) in sw.expert[..b].iter().enumerate() {
        let q = &mut fill[ex as usize];
        sw.order[*q] = r as u32;
        sw.pos[r] = *q as u32;
        *q += 1;
    }
}

/// Each expert's rows times its block of encoder rows into `ws.pre`, then each row's top `k`
/// (bias added, ReLU) into `ws.topk` with indices over the whole dictionary.
fn expert_codes(sae: &Sae, k: usize, b: usize, ws: &mut Workspace, par: Parallelism) {
    let (n, m) = sae.w_dec.shape();
    let sw = &mut ws.switch;
    let experts = sw.starts.len() - 1;
    let l = n / experts;
    let xc = &ws.xc[..b * m];
    let pre = sized(&mut ws.pre, b * l);
    for e in 0..experts {
        let (q0, q1) = (sw.starts[e], sw.starts[e + 1]);
        if q0 == q1 {
            continue;
        }
        let g = sized(&mut sw.gathered, (q1 - q0) * m);
        g.par_chunks_mut(m)
            .zip(sw.order[q0..q1].par_iter())
            .for_each(|(dst, &r)| dst.copy_from_slice(&xc[r as usize * m..(r as usize + 1) * m]));
        let block = MatRef::new(&sae.w_enc.as_slice()[e * l * m..(e + 1) * l * m], l, m);
        let out = &mut pre[q0 * l..q1 * l];
        matmul(out, MatRef::new(g, q1 - q0, m), block.t(), 0.0, par);
    }
    let out = &mut ws.topk;
    out.k = k;
    out.indices.resize(b * k, 0);
    out.values.resize(b * k, 0.0);
    let (pre, sw) = (&*pre, &ws.switch);
    out.indices
        .par_chunks_mut(k)
        .zip(out.values.par_chunks_mut(k))
        .enumerate()
        .for_each_init(Vec::new, |scratch, (r, (idx, val))| {
            let (q, e) = (sw.pos[r] as usize, sw.expert[r] as usize);
            let bias = &sae.b_enc[e * l..(e + 1) * l];
            topk_row_shifted(&pre[q * l..(q + 1) * l], bias, k, scratch, idx, val);
            idx.iter_mut().for_each(|i| *i += (e * l) as u32);
        });
}

/// The codes of the row-major rows `x` (inference: the training step's forward).
pub(super) fn encode_codes(
    sae: &Sae,
    router: &Router,
    k: usize,
    x: &[f32],
    par: Parallelism,
) -> crate::linalg::TopK {
    let mut ws = Workspace::default();
    forward(sae, router, k, x, &mut ws, par);
    ws.topk
}

/// Loss and gradients of a Switch SAE (see the module docs) on the rows `x` of a step of
/// `total` rows; `lb_coef` is the load-balancing coefficient `lambda`, `aux` AuxK within each
/// row's expert. The rows per expert and the squared norms are summed over every process by
/// `collective` (the balance term is the whole step's). Gradients are written into `g`;
/// `ws.fired` receives which latents fired.
#[allow(clippy::too_many_arguments)]
pub fn switch_loss_grad(
    sae: &Sae,
    router: &Router,
    k: usize,
    x: &[f32],
    total: usize,
    (lb_coef, aux): (f32, Option<AuxK<'_>>),
    collective: &mut dyn Collective,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    let (n, m) = sae.w_dec.shape();
    let b = x.len() / m;
    forward(sae, router, k, x, ws, par);
    let recon = reconstruction_error(sae, x, total, ws);
    // Before AuxK reuses the reconstruction's buffer.
    let balance = router_grads(sae, router, x, total, lb_coef, collective, ws, g, par);
    if let Some(a) = aux {
        let dead = a.dead.iter().filter(|d| **d).count();
        let ka = a.k_aux.min(dead);
        if ka > 0 && a.coef > 0.0 {
            select_dead_in_expert(sae, a.dead, ka, b, ws);
            ws.aux_given = true;
        }
    }
    // The weight gradients scale each code's by ws.code_scale.
    let aux_loss = auxk_and_weight_grads(sae, aux, (b, total), None, (ws, g), None, par);
    b_dec_grad(sae, b, ws, g);
    let active = mark_fired(ws, n);
    LossParts::of_step(recon, balance + aux_loss, active, total)
}

/// AuxK's codes: each row's `ka` largest pre-activations (bias added, ReLU) among the dead
/// latents of its own expert, into `ws.aux` with indices over the whole dictionary; a row whose
/// expert has fewer dead latents fills its other slots with inactive (zero) codes.
fn select_dead_in_expert(sae: &Sae, dead: &[bool], ka: usize, b: usize, ws: &mut Workspace) {
    let sw = &ws.switch;
    let l = sae.d_sae() / (sw.starts.len() - 1);
    let pre = &ws.pre[..b * l];
    let out = &mut ws.aux;
    out.k = ka;
    out.indices.resize(b * ka, 0);
    out.values.resize(b * ka, 0.0);
    out.indices
        .par_chunks_mut(ka)
        .zip(out.values.par_chunks_mut(ka))
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(scratch, values, latents): &mut (Vec<(f32, u32)>, Vec<f32>, Vec<u32>),
             (r, (idx, val))| {
                let (q, e) = (sw.pos[r] as usize, sw.expert[r] as usize);
                values.clear();
                latents.clear();
                for j in e * l..(e + 1) * l {
                    if dead[j] {
                        values.push(pre[q * l + j - e * l] + sae.b_enc[j]);
                        latents.push(j as u32);
                    }
                }
                let kr = ka.min(values.len());
                idx.fill((e * l) as u32);
                val.fill(0.0);
                if kr > 0 {
                    topk_row(values, kr, scratch, &mut idx[..kr], &mut val[..kr]);
                    idx[..kr].iter_mut().for_each(|i| *i = latents[*i as usize]);
                }
            },
        );
}

/// The router's gradients (reconstruction and load balance) into `g`; returns the balance
/// term of the loss over these rows (divided by the step's rows).
#[allow(clippy::too_many_arguments)]
fn router_grads(
    sae: &Sae,
    router: &Router,
    x: &[f32],
    total: usize,
    lb_coef: f32,
    collective: &mut dyn Collective,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> f64 {
    let (e, m) = router.w.shape();
    let b = x.len() / m;
    let sw = &mut ws.switch;
    // Rows per expert and the squared norms, over the whole step.
    let mut sums = vec![0.0f64; e + 1];
    for &ex in &sw.expert[..b] {
        sums[ex as usize] += 1.0;
    }
    sums[e] = x.iter().map(|v| (*v as f64) * (*v as f64)).sum();
    collective.sum_f64(&mut sums);
    let inv_b = 1.0 / total as f64;
    let c = lb_coef as f64 * sums[e] * inv_b * e as f64;
    // d loss / d p_be from the balance term: c f_e / B.
    let from_balance: Vec<f32> = sums[..e]
        .iter()
        .map(|count| (c * count * inv_b * inv_b) as f32)
        .collect();
    let (xhat, de) = (&ws.xhat[..b * m], &ws.de[..b * m]);
    let dh = sized(&mut sw.dh, b * e);
    let probs = &sw.probs[..b * e];
    let (expert, p_star) = (&sw.expert, &ws.code_scale);
    let per_row: Vec<f64> = dh
        .par_chunks_mut(e)
        .zip(probs.par_chunks(e))
        .enumerate()
        .map(|(r, (dh, p))| {
            let rows = r * m..(r + 1) * m;
            // sum_{j in S} a_j g_j = de . (x_hat - b_dec) / p*.
            let through: f32 = de[rows.clone()]
                .iter()
                .zip(&xhat[rows])
                .zip(&sae.b_dec)
                .map(|((d, xh), bd)| d * (xh - bd))
                .sum();
            dh.copy_from_slice(&from_balance);
            dh[expert[r] as usize] += through / p_star[r];
            let s: f32 = dh.iter().zip(p).map(|(d, p)| d * p).sum();
            dh.iter_mut().zip(p).for_each(|(d, p)| *d = p * (*d - s));
            p.iter()
                .zip(&sums[..e])
                .map(|(p, f)| *p as f64 * f)
                .sum::<f64>()
        })
        .collect();
    // Summed in row order: the same bits for any thread count.
    let balance: f64 = per_row.iter().sum();
    let mut gw = g.take(ParamId::WRouter);
    gw.resize(e * m, 0.0);
    matmul(
        &mut gw,
        MatRef::new(dh, b, e).t(),
        MatRef::new(&sw.routed_in[..b * m], b, m),
        0.0,
        par,
    );
    *g.get_mut(ParamId::WRouter) = gw;
    let mut dh_sum = vec![0.0f32; e];
    super::grads::column_sums(dh, e, &mut dh_sum);
    let gb = g.get_mut(ParamId::BRouter);
    gb.resize(m, 0.0);
    matmul(
        gb,
        MatRef::new(&dh_sum, 1, e),
        router.w.view(),
        0.0,
        Parallelism::Serial,
    );
    gb.iter_mut().for_each(|v| *v = -*v);
    // c sum_e f_e P_e over these rows: f_e = count_e / B, P_e's part = sum_b p_be / B.
    c * balance * inv_b * inv_b
}
