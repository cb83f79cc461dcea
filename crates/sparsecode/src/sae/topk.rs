//! TopK SAE with the AuxK dead-latent loss. Only the encoder forward is a dense product: the
//! decoder is a gather-sum over the k active rows, and the weight gradients touch only the rows of
//! latents that fired (or were used by AuxK) in the batch, accumulated per latent in parallel.

use super::collective::{Collective, LatentShard};
use super::grads::{sized, subtract_encoder_path, DenseAux, LossParts, Workspace};
use super::params::Grads;
use super::Sae;
use crate::linalg::{simd, topk_row, topk_row_shifted, TopK};
use crate::{Matrix, Parallelism};
use rayon::prelude::*;

/// The auxiliary loss on dead latents.
#[derive(Clone, Copy, Debug)]
pub struct AuxK<'a> {
    /// How many dead latents reconstruct the residual.
    pub k_aux: usize,
    /// Coefficient of the auxiliary loss (1/32 in arXiv 2406.04093).
    pub coef: f32,
    /// Which latents count as dead (length d_sae).
    pub dead: &'a [bool],
}

/// Selects the top `k` per row of `pre + bias` restricted to the latents where `mask` is true.
fn select(pre: &[f32], bias: &[f32], k: usize, mask: Option<&[bool]>, out: &mut TopK) {
    let n = bias.len();
    let b = pre.len() / n;
    out.k = k;
    out.indices.resize(b * k, 0);
    out.values.resize(b * k, 0.0);
    pre.par_chunks(n)
        .zip(
            out.indices
                .par_chunks_mut(k)
                .zip(out.values.par_chunks_mut(k)),
        )
        .for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(scratch, masked, map): &mut (Vec<(f32, u32)>, Vec<f32>, Vec<u32>),
             (row, (idx, val))| match mask {
                None => topk_row_shifted(row, bias, k, scratch, idx, val),
                Some(mask) => {
                    masked.clear();
                    map.clear();
                    for (j, (&v, _)) in row.iter().zip(mask).enumerate().filter(|(_, (_, &d))| d) {
                        masked.push(v + bias[j]);
                        map.push(j as u32);
                    }
                    topk_row(masked, k, scratch, idx, val);
                    idx.iter_mut().for_each(|i| *i = map[*i as usize]);
                }
            },
        );
}

/// AuxK runs on dense GEMMs over the dead latents when there are at most this many times
/// `k_aux` of them.
const DENSE_AUX_RATIO: usize = 16;

#[cfg(test)]
thread_local! {
    /// Tests force one AuxK path or the other.
    pub(crate) static FORCE_DENSE_AUX: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Dense AuxK forward: the aux codes as a `[B, dead]` matrix times the dead decoder rows, into
/// `out`. Leaves the dense codes and the gathered rows in the workspace for the backward.
fn dense_aux_forward(
    sae: &Sae,
    dead: &[bool],
    codes: &TopK,
    ws: &mut DenseAux,
    b: usize,
    out: &mut [f32],
    par: Parallelism,
) {
    let m = sae.d_in();
    ws.dead_idx.clear();
    ws.dead_pos.clear();
    ws.dead_pos.resize(dead.len(), u32::MAX);
    for (j, &d) in dead.iter().enumerate() {
        if d {
            ws.dead_pos[j] = ws.dead_idx.len() as u32;
            ws.dead_idx.push(j as u32);
        }
    }
    let nd = ws.dead_idx.len();
    let z = sized(&mut ws.z, b * nd);
    z.fill(0.0);
    let ka = codes.k;
    for (s, (&j, &v)) in codes.indices.iter().zip(&codes.values).enumerate() {
        if v > 0.0 {
            z[(s / ka) * nd + ws.dead_pos[j as usize] as usize] = v;
        }
    }
    let wd = sized(&mut ws.w_dead, nd * m);
    for (row, &j) in wd.chunks_mut(m).zip(&ws.dead_idx) {
        row.copy_from_slice(sae.w_dec.row(j as usize));
    }
    crate::linalg::matmul(
        out,
        crate::linalg::MatRef::new(z, b, nd),
        crate::linalg::MatRef::new(wd, nd, m),
        0.0,
        par,
    );
}

/// Dense AuxK backward: adds the aux gradients of the dead latents' decoder rows, encoder rows
/// and encoder biases, given `dea = d loss / d e_aux` (`[B, d_in]`).
fn dense_aux_backward(
    ws: &mut DenseAux,
    dea: &[f32],
    xc: &[f32],
    g: &mut Grads,
    b: usize,
    m: usize,
    par: Parallelism,
) {
    use crate::linalg::{matmul, MatRef};
    let nd = ws.dead_idx.len();
    let z = &ws.z[..b * nd];
    let wd = &ws.w_dead[..nd * m];
    let tmp = sized(&mut ws.tmp, nd * m);
    // d W_dec[dead] = z^T dea.
    matmul(
        tmp,
        MatRef::new(z, b, nd).t(),
        MatRef::new(dea, b, m),
        0.0,
        par,
    );
    for (row, &j) in tmp.chunks(m).zip(&ws.dead_idx) {
        g.w_dec[j as usize * m..(j as usize + 1) * m]
            .iter_mut()
            .zip(row)
            .for_each(|(a, v)| *a += v);
    }
    // d codes = dea W_dec[dead]^T, kept where the aux code is active.
    let dz = sized(&mut ws.dz, b * nd);
    matmul(
        dz,
        MatRef::new(dea, b, m),
        MatRef::new(wd, nd, m).t(),
        0.0,
        par,
    );
    dz.iter_mut().zip(z).for_each(|(d, zv)| {
        if *zv <= 0.0 {
            *d = 0.0
        }
    });
    // d W_enc[dead] = dz^T x_c; d b_enc[dead] = column sums of dz.
    matmul(
        tmp,
        MatRef::new(dz, b, nd).t(),
        MatRef::new(xc, b, m),
        0.0,
        par,
    );
    for (p, (row, &j)) in tmp.chunks(m).zip(&ws.dead_idx).enumerate() {
        g.w_enc[j as usize * m..(j as usize + 1) * m]
            .iter_mut()
            .zip(row)
            .for_each(|(a, v)| *a += v);
        g.b_enc[j as usize] += dz.chunks(nd).map(|r| r[p]).sum::<f32>();
    }
}

/// Adds `sum_s val_bs W_dec[idx_bs]` to every row `b` of `out` (`[B, d_in]`).
pub(super) fn gather_sum(sae: &Sae, codes: &TopK, out: &mut [f32]) {
    let m = sae.d_in();
    let k = codes.k;
    out.par_chunks_mut(m)
        .zip(codes.indices.par_chunks(k).zip(codes.values.par_chunks(k)))
        .for_each(|(row, (idx, val))| {
            let terms = idx.iter().zip(val).filter(|(_, v)| **v > 0.0);
            simd::axpy_many(row, terms.map(|(&j, &v)| (v, sae.w_dec.row(j as usize))));
        });
}

/// [`gather_sum`] for codes with many active latents per row (each row's slots in increasing
/// latent order, as [`select_variable`] writes them): the latents a block of
/// [`LATENT_BLOCK`] at a time, so that the block's decoder rows stay in L2 while every row
/// adds its codes from it (row by row, the decoder rows came from memory once per active code).
pub(super) fn gather_sum_by_latent_blocks(w_dec: &Matrix, codes: &TopK, out: &mut [f32]) {
    let (n, m) = w_dec.shape();
    let k = codes.k;
    let mut next = vec![0usize; out.len() / m.max(1)];
    for j0 in (0..n).step_by(LATENT_BLOCK) {
        let j1 = (j0 + LATENT_BLOCK) as u32;
        out.par_chunks_mut(m)
            .zip(codes.indices.par_chunks(k).zip(codes.values.par_chunks(k)))
            .zip(next.par_iter_mut())
            .for_each(|((row, (idx, val)), at)| {
                simd::run(
                    #[inline(always)]
                    || {
                        while *at < k && idx[*at] < j1 {
                            let (j, v) = (idx[*at], val[*at]);
                            *at += 1;
                            if v > 0.0 {
                                simd::axpy_inline(row, v, w_dec.row(j as usize));
                            }
                        }
                    },
                )
            });
    }
}

/// Latents per block of [`gather_sum_by_latent_blocks`] (768 KB of decoder rows at d_in 768).
const LATENT_BLOCK: usize = 256;

/// How the active latents of a batch are chosen.
#[derive(Clone, Copy, Debug)]
pub enum Selection<'a> {
    /// The `k` largest pre-activations of each sample (TopK).
    PerSample(usize),
    /// The `k * B` largest positive pre-activations of the whole batch (BatchTopK).
    Batch(usize),
    /// Every pre-activation above its latent's threshold (JumpReLU); the entries within half the
    /// bandwidth of it are kept in `ws.window` for the threshold's gradient.
    Threshold {
        /// Per-latent thresholds.
        theta: &'a [f32],
        /// Width of the straight-through window.
        bandwidth: f32,
    },
}

/// Keeps the entries of `pre + bias` chosen by `keep` (row, latent, value), at most `n` per row,
/// as a [`TopK`] with as many slots per row as the fullest row has, padded with zero values.
pub(super) fn select_variable(
    pre: &[f32],
    bias: &[f32],
    keep: &(dyn Fn(usize, f32) -> bool + Sync),
    out: &mut TopK,
) {
    let n = bias.len();
    let rows: Vec<Vec<(u32, f32)>> = pre
        .par_chunks(n)
        .map(|row| {
            row.iter()
                .zip(bias)
                .enumerate()
                .filter_map(|(j, (v, b))| {
                    let v = v + b;
                    keep(j, v).then_some((j as u32, v))
                })
                .collect()
        })
        .collect();
    let k = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    out.k = k;
    out.indices.clear();
    out.indices.resize(rows.len() * k, 0);
    out.values.clear();
    out.values.resize(rows.len() * k, 0.0);
    for (r, row) in rows.iter().enumerate() {
        for (s, &(j, v)) in row.iter().enumerate() {
            out.indices[r * k + s] = j;
            out.values[r * k + s] = v;
        }
    }
}

/// The entries of `pre + bias` with `|v - theta_j| < bandwidth / 2` (row, latent, v), row-major.
fn window_entries(
    pre: &[f32],
    bias: &[f32],
    theta: &[f32],
    bandwidth: f32,
    out: &mut Vec<(u32, u32, f32)>,
) {
    let half = 0.5 * bandwidth;
    out.clear();
    for (r, row) in pre.chunks(bias.len()).enumerate() {
        for (j, (v, b)) in row.iter().zip(bias).enumerate() {
            let v = v + b;
            if (v - theta[j]).abs() < half {
                out.push((r as u32, j as u32, v));
            }
        }
    }
}

/// The positive entries of `pre + bias` into `out`: BatchTopK's candidates.
fn positive_entries(pre: &[f32], bias: &[f32], out: &mut Vec<f32>) {
    let n = bias.len();
    out.clear();
    for row in pre.chunks(n) {
        out.extend(
            row.iter()
                .zip(bias)
                .map(|(v, b)| v + b)
                .filter(|v| *v > 0.0),
        );
    }
}

/// Loss and gradients of the TopK SAE (with AuxK when `aux` is given and some latent is dead) on
/// the row-major rows `x` of a step of `total` rows. Gradients are written into `g`
/// (overwritten); `ws.fired` receives which latents fired.
pub fn topk_loss_grad(
    sae: &Sae,
    x: &[f32],
    total: usize,
    k: usize,
    aux: Option<AuxK<'_>>,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    let mut local = super::SingleProcess;
    let selection = Selection::PerSample(k);
    sparse_loss_grad(sae, x, total, selection, aux, &mut local, ws, g, par)
}

/// The loss and gradients of an SAE whose codes are the pre-activations `selection` keeps (no
/// penalty beyond AuxK): TopK, BatchTopK, and the reconstruction part of JumpReLU, on the rows
/// `x` of a step of `total` rows. BatchTopK's threshold is the `k * total`-th largest positive
/// pre-activation of the whole step, which `collective` finds across processes; after such a
/// step `ws.batch_threshold` holds it.
pub fn sparse_loss_grad(
    sae: &Sae,
    x: &[f32],
    total: usize,
    selection: Selection<'_>,
    aux: Option<AuxK<'_>>,
    collective: &mut dyn Collective,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    let n = sae.d_sae();
    let b = pre_activations_as(sae, x, ws, certifiable(sae, selection), par);
    select_active(sae, selection, (b, total), collective, ws);
    let recon = reconstruction_error(sae, x, total, ws);
    let aux_loss = auxk_and_weight_grads(sae, aux, (b, total), None, (ws, g), None, par);
    b_dec_grad(sae, b, ws, g);
    let active = mark_fired(ws, n);
    LossParts::of_step(recon, aux_loss, active, total)
}

/// `b_dec`'s gradient from the reconstruction error `ws.de` of `b` rows: its column sums, less
/// the encoder's path through `x - b_dec`.
pub(super) fn b_dec_grad(sae: &Sae, b: usize, ws: &mut Workspace, g: &mut Grads) {
    let m = sae.d_in();
    g.b_dec.fill(0.0);
    for row in ws.de[..b * m].chunks_exact(m) {
        g.b_dec.iter_mut().zip(row).for_each(|(a, v)| *a += v);
    }
    subtract_encoder_path(sae, g, &mut ws.tmp_m);
}

/// Whether a selection can run through the certified encoder: a linear encoder's (every
/// selection has a certified form).
pub(super) fn certifiable(sae: &Sae, _selection: Selection<'_>) -> bool {
    sae.encoder.hidden().is_none()
}

/// `x_c` and the pre-activations of the rows `x` into the workspace, or with `certify` (a linear
/// encoder's) the certified encoder's approximations of them (without bias), which
/// `ws.pre_is_approx` then says; returns the number of rows.
pub(super) fn pre_activations_as(
    sae: &Sae,
    x: &[f32],
    ws: &mut Workspace,
    certify: bool,
    par: Parallelism,
) -> usize {
    let (n, m) = sae.w_dec.shape();
    let b = x.len() / m;
    let (xc, pre) = (sized(&mut ws.xc, b * m), sized(&mut ws.pre, b * n));
    if certify {
        sae.center(x, xc);
        ws.cert.approximate(&sae.w_enc, &sae.b_enc, xc, pre, par);
    } else {
        sae.pre_activations(x, xc, pre, false, par);
    }
    ws.pre_is_approx = certify;
    b
}

/// The top `k` of `ws.pre + b_enc` per row (over the latents `mask` keeps) into `out`: from the
/// certified encoder's approximations when `ws.pre` holds them.
pub(super) fn select_top(
    sae: &Sae,
    b: usize,
    k: usize,
    mask: Option<&[bool]>,
    ws: &mut Workspace,
    aux: bool,
) {
    let n = sae.d_sae();
    let out = if aux { &mut ws.aux } else { &mut ws.topk };
    let pre = &ws.pre[..b * n];
    if ws.pre_is_approx {
        let xc = &ws.xc[..b * sae.d_in()];
        ws.cert
            .select(&sae.w_enc, &sae.b_enc, xc, pre, k, mask, out);
    } else {
        select(pre, &sae.b_enc, k, mask, out);
    }
}

/// After the reconstruction: AuxK's forward, then the sparse weight gradients of the main codes
/// (from their reconstruction's gradient `main` by level, or `ws.de` when None) and of AuxK's
/// codes; returns AuxK's loss (0 without it).
pub(super) fn auxk_and_weight_grads(
    sae: &Sae,
    aux: Option<AuxK<'_>>,
    (b, total): (usize, usize),
    main: Option<MainGrad<'_>>,
    (ws, g): (&mut Workspace, &mut Grads),
    shard: Option<&mut dyn LatentShard>,
    par: Parallelism,
) -> f64 {
    let m = sae.d_in();
    let aux = aux.and_then(|a| auxk_forward(sae, a, (b, total), ws, shard, par));
    // Dense AuxK computes its gradients with products; the sparse path joins the main slots.
    let sparse_aux = aux.is_some_and(|r| !r.dense);
    group_slots_by_latent(ws, sae.d_sae(), sparse_aux);
    match main {
        Some(main) => sparse_weight_grads_by_level(sae, ws, main, g, b, sparse_aux),
        None => sparse_weight_grads(sae, ws, g, b, sparse_aux),
    }
    if aux.is_some_and(|r| r.dense) {
        let (dea, xc) = (&ws.xhat[..b * m], &ws.xc[..b * m]);
        dense_aux_backward(&mut ws.dense_aux, dea, xc, g, b, m, par);
    }
    aux.map_or(0.0, |r| r.loss)
}

/// Chooses the active entries of `ws.pre + b_enc` into `ws.topk`; BatchTopK's threshold is the
/// collective phase (the `k * total`-th largest over every process's rows).
pub(super) fn select_active(
    sae: &Sae,
    selection: Selection<'_>,
    (b, total): (usize, usize),
    collective: &mut dyn Collective,
    ws: &mut Workspace,
) {
    let pre = &ws.pre[..b * sae.d_sae()];
    match selection {
        Selection::PerSample(k) => select_top(sae, b, k, None, ws, false),
        Selection::Batch(k) if ws.pre_is_approx => {
            let xc = &ws.xc[..b * sae.d_in()];
            let (w, bias) = (&sae.w_enc, &sae.b_enc);
            let selected = &mut ws.topk;
            ws.batch_threshold =
                ws.cert
                    .select_batch(w, bias, xc, pre, (k, total), collective, selected);
        }
        Selection::Batch(k) => {
            positive_entries(pre, &sae.b_enc, &mut ws.tmp_m);
            let t = collective.kth_largest(&mut ws.tmp_m, k * total);
            ws.batch_threshold = t;
            select_variable(pre, &sae.b_enc, &|_, v| v > 0.0 && v >= t, &mut ws.topk);
        }
        Selection::Threshold { theta, bandwidth } if ws.pre_is_approx => {
            let xc = &ws.xc[..b * sae.d_in()];
            let (w, bias) = (&sae.w_enc, &sae.b_enc);
            let (out, window) = (&mut ws.topk, &mut ws.window);
            ws.cert
                .select_threshold(w, bias, xc, pre, (theta, bandwidth), out, window);
        }
        Selection::Threshold { theta, bandwidth } => {
            select_variable(pre, &sae.b_enc, &|j, v| v > theta[j], &mut ws.topk);
            window_entries(pre, &sae.b_enc, theta, bandwidth, &mut ws.window);
        }
    }
}

/// `x_hat = b_dec + gather-sum` into `ws.xhat`, `de = 2 (x_hat - x) / B` into `ws.de`; returns
/// the squared error summed over these rows, divided by `B = total`.
pub(super) fn reconstruction_error(sae: &Sae, x: &[f32], total: usize, ws: &mut Workspace) -> f64 {
    reconstruction_error_from(sae, x, total, ws, gather_sum)
}

/// [`reconstruction_error`] with [`gather_sum_by_latent_blocks`], for codes with many active
/// latents per row in latent order (sparse ReLU's).
pub(super) fn wide_reconstruction_error(
    sae: &Sae,
    x: &[f32],
    total: usize,
    ws: &mut Workspace,
) -> f64 {
    reconstruction_error_from(sae, x, total, ws, |s, c, o| {
        gather_sum_by_latent_blocks(&s.w_dec, c, o)
    })
}

fn reconstruction_error_from(
    sae: &Sae,
    x: &[f32],
    total: usize,
    ws: &mut Workspace,
    gather: fn(&Sae, &TopK, &mut [f32]),
) -> f64 {
    let m = sae.d_in();
    let xhat = sized(&mut ws.xhat, x.len());
    xhat.par_chunks_mut(m)
        .for_each(|r| r.copy_from_slice(&sae.b_dec));
    gather(sae, &ws.topk, xhat);
    error_of_reconstruction(x, total, ws)
}

/// From the reconstruction `ws.xhat` of the rows `x`: `de = 2 (x_hat - x) / B` into `ws.de`;
/// returns the squared error summed over these rows, divided by `B = total`.
pub(super) fn error_of_reconstruction(x: &[f32], total: usize, ws: &mut Workspace) -> f64 {
    let inv_b = 1.0 / total as f32;
    let xhat = &ws.xhat[..x.len()];
    let de = sized(&mut ws.de, x.len());
    let mut recon = 0.0f64;
    for ((d, xh), xv) in de.iter_mut().zip(xhat.iter()).zip(x) {
        let e = xh - xv;
        recon += (e as f64) * (e as f64);
        *d = 2.0 * e * inv_b;
    }
    recon / total as f64
}

/// What the AuxK forward did.
#[derive(Clone, Copy, Debug)]
struct AuxRun {
    /// Its loss (with coefficient and scale), divided by the step's rows.
    loss: f64,
    /// Whether it ran on dense products over the dead latents.
    dense: bool,
}

/// AuxK: reconstructs the (detached) residual `x - x_hat = -e` from the top dead latents;
/// leaves `d loss / d e_aux` in `ws.xhat` (whose reconstruction is no longer needed) and the
/// aux codes in `ws.aux`. None when no latent is dead or the coefficient is 0.
fn auxk_forward(
    sae: &Sae,
    a: AuxK<'_>,
    (b, total): (usize, usize),
    ws: &mut Workspace,
    mut shard: Option<&mut dyn LatentShard>,
    par: Parallelism,
) -> Option<AuxRun> {
    let given = std::mem::take(&mut ws.aux_given);
    let local_dead = a.dead.iter().filter(|d| **d).count();
    // Sharded: the dead latents of every block compete for the k_aux slots of a row.
    let dead = match shard.as_deref_mut() {
        Some(s) => s.sum_count(local_dead as u64) as usize,
        None => local_dead,
    };
    let ka = a.k_aux.min(dead);
    if ka == 0 || a.coef <= 0.0 {
        return None;
    }
    let m = sae.d_in();
    let inv_b = 1.0 / total as f32;
    let scale = (dead as f32 / a.k_aux as f32).min(1.0);
    if given {
        // The caller chose (a Switch SAE: within each row's expert).
    } else if local_dead > 0 {
        select_top(sae, b, ka.min(local_dead), Some(a.dead), ws, true);
    } else {
        // No dead latent in this block: one inactive slot per row (buffers reused).
        let aux = &mut ws.aux;
        aux.k = 1;
        aux.indices.clear();
        aux.indices.resize(b, 0);
        aux.values.clear();
        aux.values.resize(b, 0.0);
    }
    if let Some(s) = shard.as_deref_mut() {
        super::sharded::keep_global_top(s, &mut ws.aux, ka);
    }
    // With few dead latents relative to k_aux, dense GEMMs over the dead subset beat the
    // gather/scatter.
    // (Sharded, always the gather: a block may hold few or none of the dead latents.)
    #[allow(unused_mut)]
    let mut dense = dead <= DENSE_AUX_RATIO * ka && shard.is_none();
    #[cfg(test)]
    if let Some(forced) = FORCE_DENSE_AUX.with(|f| f.get()) {
        dense = forced;
    }
    let xhat = &mut ws.xhat[..b * m];
    if dense {
        dense_aux_forward(sae, a.dead, &ws.aux, &mut ws.dense_aux, b, xhat, par);
    } else {
        xhat.fill(0.0);
        gather_sum(sae, &ws.aux, xhat);
    }
    if let Some(s) = shard {
        s.sum_f32(xhat);
    }
    let c = a.coef * scale;
    let mut loss = 0.0f64;
    for (ea, d) in xhat.iter_mut().zip(&ws.de[..b * m]) {
        let diff = *ea + *d / (2.0 * inv_b); // e_aux - (x - x_hat) = e_aux + e
        loss += (diff as f64) * (diff as f64);
        *ea = 2.0 * c * diff * inv_b;
    }
    Some(AuxRun {
        loss: loss * c as f64 / total as f64,
        dense,
    })
}

/// Groups the active slots (main codes, then sparse AuxK codes) by latent with a counting sort
/// into `ws.latent_start` / `ws.by_latent`, so that each latent's rows are summed by one thread
/// in a fixed order: no atomics, identical results for any thread count.
pub(super) fn group_slots_by_latent(ws: &mut Workspace, n: usize, with_aux: bool) {
    let main_slots = ws.topk.values.len();
    let aux_slots = if with_aux { ws.aux.values.len() } else { 0 };
    let start = &mut ws.latent_start;
    start.clear();
    start.resize(n + 1, 0);
    for s in 0..main_slots {
        start[ws.topk.indices[s] as usize + 1] += 1;
    }
    for s in 0..aux_slots {
        start[ws.aux.indices[s] as usize + 1] += 1;
    }
    for j in 0..n {
        start[j + 1] += start[j];
    }
    let by = &mut ws.by_latent;
    by.resize(main_slots + aux_slots, 0);
    let fill = &mut ws.fill;
    fill.clear();
    fill.extend_from_slice(&start[..n]);
    for s in 0..main_slots {
        let j = ws.topk.indices[s] as usize;
        by[fill[j] as usize] = s as u32;
        fill[j] += 1;
    }
    for s in 0..aux_slots {
        let j = ws.aux.indices[s] as usize;
        by[fill[j] as usize] = (main_slots + s) as u32;
        fill[j] += 1;
    }
}

/// The gradient of the loss with respect to the reconstructions the main codes feed: `[B, levels,
/// d_in]`, where a latent below `widths[l]` (and at or above `widths[l - 1]`) reads level `l`.
/// One level (`widths = [d_sae]`) for every architecture but Matryoshka.
#[derive(Clone, Copy, Debug)]
pub(super) struct MainGrad<'a> {
    /// `[B, widths.len(), d_in]`.
    pub(super) grad: &'a [f32],
    /// Increasing latent counts, the last `d_sae`.
    pub(super) widths: &'a [usize],
    /// Per row, the factor from a pre-activation to its code (a Switch SAE's router
    /// probability; None: 1).
    pub(super) row_scale: Option<&'a [f32]>,
}

/// The per-latent sparse gradients of `W_dec`, `W_enc` and `b_enc` from the grouped slots: each
/// latent's rows, with the gradient of the loss with respect to their reconstruction (`main`
/// for the main codes, `ws.xhat` = `d loss / d e_aux` for sparse AuxK codes).
fn sparse_weight_grads(sae: &Sae, ws: &Workspace, g: &mut Grads, b: usize, with_aux: bool) {
    let main = MainGrad {
        grad: &ws.de[..b * sae.d_in()],
        widths: &[sae.d_sae()],
        row_scale: (!ws.code_scale.is_empty()).then(|| &ws.code_scale[..b]),
    };
    sparse_weight_grads_by_level(sae, ws, main, g, b, with_aux);
}

/// The sparse ReLU-L1 step's weight gradients from the active codes in `ws.topk` and
/// `ws.de`: the reconstruction's, plus the penalty's `per_code[j]` on each active code of
/// latent `j` (`l1 ||W_dec_j|| / B`); `b_enc`'s too. The penalty's decoder-norm term is the
/// caller's. Each latent sums its rows in order, as [`sparse_weight_grads`] does, a block of
/// rows at a time.
pub(super) fn penalised_weight_grads(
    sae: &Sae,
    ws: &mut Workspace,
    g: &mut Grads,
    b: usize,
    per_code: &[f32],
) {
    let (n, m) = sae.w_dec.shape();
    group_slots_by_latent(ws, n, false);
    let (de, xc) = (&ws.de[..b * m], &ws.xc[..b * m]);
    let values = &ws.topk.values;
    g.w_dec.fill(0.0);
    g.w_enc.fill(0.0);
    g.b_enc.fill(0.0);
    let mut rows: Vec<_> = g
        .w_dec
        .chunks_mut(m)
        .zip(g.w_enc.chunks_mut(m))
        .zip(g.b_enc.iter_mut())
        .collect();
    visit_by_row_blocks(ws, b, &mut rows, |j, ((gd, ge), gb), row, e| {
        let val = values[e];
        if val <= 0.0 {
            return;
        }
        let gr = &de[row * m..(row + 1) * m];
        let dv = simd::dot_inline(gr, sae.w_dec.row(j)) + per_code[j];
        simd::axpy_inline(gd, val, gr);
        simd::axpy_inline(ge, dv, &xc[row * m..(row + 1) * m]);
        **gb += dv;
    });
}

/// Calls `visit(j, state_j, row, slot)` for every main slot of `ws.topk` (grouped by latent by
/// [`group_slots_by_latent`]), each latent's slots in row order, latents in parallel, a block
/// of [`ROW_BLOCK`] rows at a time (of `rows`): the per-latent sums of the dense products'
/// gradients, in the same order for any thread count.
pub(super) fn visit_by_row_blocks<S: Send>(
    ws: &Workspace,
    rows: usize,
    states: &mut [S],
    visit: impl Fn(usize, &mut S, usize, usize) + Sync,
) {
    let (start, by, k) = (&ws.latent_start, &ws.by_latent, ws.topk.k);
    // Each latent's next slot; its slots run in row order, so a block takes a prefix.
    let mut next: Vec<u32> = start[..states.len()].to_vec();
    for r0 in (0..rows).step_by(ROW_BLOCK) {
        let r1 = (r0 + ROW_BLOCK).min(rows);
        states
            .par_iter_mut()
            .zip(next.par_iter_mut())
            .enumerate()
            .for_each(|(j, (state, at))| {
                simd::run(
                    #[inline(always)]
                    || {
                        while *at < start[j + 1] {
                            let e = by[*at as usize] as usize;
                            let row = e / k;
                            if row >= r1 {
                                break;
                            }
                            *at += 1;
                            visit(j, state, row, e);
                        }
                    },
                )
            });
    }
}

/// Rows per block of [`visit_by_row_blocks`]: every latent's gradient rows are read and
/// written once a block, while the block's `de` and `x_c` rows (2 x 3 MB at d_in 768) stay in
/// L3. Measured on the ReLU step at 768 x 16384, 5% of codes active, 2 threads (AMD EPYC):
/// unblocked 3.67 s a step (each active code read two random rows from memory), blocks of 64 /
/// 256 / 512 / 1024 rows 3.15 / 2.52 / 2.33 / 2.28 s.
const ROW_BLOCK: usize = 1024;

/// Per latent, the sum of its codes `values` grouped by [`penalised_weight_grads`] (`start`,
/// `by`: `ws.latent_start`, `ws.by_latent`), in slot order, into `out`.
pub(super) fn code_sums_into(start: &[u32], by: &[u32], values: &[f32], out: &mut [f32]) {
    out.par_iter_mut().enumerate().for_each(|(j, c)| {
        let slots = &by[start[j] as usize..start[j + 1] as usize];
        *c = slots.iter().map(|&s| values[s as usize]).sum();
    });
}

/// [`sparse_weight_grads`] with the main codes' gradient given per level.
fn sparse_weight_grads_by_level(
    sae: &Sae,
    ws: &Workspace,
    main: MainGrad<'_>,
    g: &mut Grads,
    b: usize,
    with_aux: bool,
) {
    let m = sae.d_in();
    let main_slots = ws.topk.values.len();
    let (k, ka) = (ws.topk.k, if with_aux { ws.aux.k } else { 1 });
    let (start, by) = (&ws.latent_start, &ws.by_latent);
    let (topk, auxc) = (&ws.topk, &ws.aux);
    let (dea, xc) = (&ws.xhat[..b * m], &ws.xc[..b * m]);
    let levels = main.widths.len();
    g.w_dec
        .par_chunks_mut(m)
        .zip(g.w_enc.par_chunks_mut(m))
        .zip(g.b_enc.par_iter_mut())
        .enumerate()
        .for_each(|(j, ((gd, ge), gb))| {
            gd.fill(0.0);
            ge.fill(0.0);
            let slots = &by[start[j] as usize..start[j + 1] as usize];
            let wd = sae.w_dec.row(j);
            let level = main.widths.partition_point(|&w| w <= j);
            let mut sum_dv = 0.0f32;
            simd::run(
                #[inline(always)]
                || {
                    for &e in slots {
                        let e = e as usize;
                        let (row, val, gr) = if e < main_slots {
                            let row = e / k;
                            let at = (row * levels + level) * m;
                            (row, topk.values[e], &main.grad[at..at + m])
                        } else {
                            let s = e - main_slots;
                            (s / ka, auxc.values[s], &dea[s / ka * m..(s / ka + 1) * m])
                        };
                        if val <= 0.0 {
                            continue;
                        }
                        // d loss / d code = grad_b . W_dec[j]; it flows to the encoder row through
                        // x_c, times the row's scale from pre-activation to code (main codes).
                        let mut dv = simd::dot_inline(gr, wd);
                        simd::axpy_inline(gd, val, gr);
                        if let (Some(scale), true) = (main.row_scale, e < main_slots) {
                            dv *= scale[row];
                        }
                        simd::axpy_inline(ge, dv, &xc[row * m..(row + 1) * m]);
                        sum_dv += dv;
                    }
                },
            );
            *gb = sum_dv;
        });
}

/// Marks in `ws.fired` the latents with a positive code; returns the number of positive codes.
pub(super) fn mark_fired(ws: &mut Workspace, n: usize) -> usize {
    let fired = &mut ws.fired;
    fired.clear();
    fired.resize(n, false);
    let mut active = 0usize;
    for (&j, &v) in ws.topk.indices.iter().zip(&ws.topk.values) {
        if v > 0.0 {
            fired[j as usize] = true;
            active += 1;
        }
    }
    active
}
