//! Matryoshka BatchTopK (arXiv 2503.17547): BatchTopK codes, and one reconstruction loss per
//! nested prefix of the dictionary.
//!
//! With widths `m_1 < ... < m_L = d_sae` and `x_hat_l = b_dec + sum_{j < m_l} z_j W_dec[j]`
//! (the reconstruction from the first `m_l` latents only),
//!
//! `L = sum_l 1/B sum_b ||x_hat_l,b - x_b||^2  (+ AuxK on the full residual x - x_hat_L)`.
//!
//! Backward: with `e_l = 2 (x_hat_l - x) / B`, a latent `j` in level `g` (`m_{g-1} <= j < m_g`)
//! feeds every reconstruction `l >= g`, so its code's gradient is `D_g . W_dec[j]` and its decoder
//! row's `z_j D_g`, where `D_g = sum_{l >= g} e_l` (a suffix sum over levels, computed once per
//! sample); `b_dec` feeds every level, `d b_dec = sum_b D_1`. The rest is TopK's sparse backward
//! ([`super::topk`]) with `D_{level(j)}` in place of the single residual: the weight gradients
//! still touch only the rows of latents that fired. Early latents are thus trained to reconstruct
//! on their own, which keeps general features from being absorbed into specific ones.

use super::collective::Collective;
use super::grads::{sized, subtract_encoder_path, LossParts, Workspace};
use super::params::Grads;
use super::topk::{
    auxk_and_weight_grads, certifiable, mark_fired, pre_activations_as, select_active, MainGrad,
};
use super::{AuxK, Sae, Selection};
use crate::linalg::{simd, TopK};
use crate::Parallelism;
use rayon::prelude::*;

/// Loss and gradients of a Matryoshka BatchTopK SAE (`k` active latents per sample on average
/// over the step, `widths` the increasing prefix sizes ending at `d_sae`) on the rows `x` of a
/// step of `total` rows; `recon` in the result is the full reconstruction's error, `loss` the
/// sum over levels plus AuxK. After the step `ws.batch_threshold` holds the batch threshold.
#[allow(clippy::too_many_arguments)]
pub fn matryoshka_loss_grad(
    sae: &Sae,
    x: &[f32],
    total: usize,
    (k, widths): (usize, &[usize]),
    aux: Option<AuxK<'_>>,
    collective: &mut dyn Collective,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    let (n, m) = sae.w_dec.shape();
    debug_assert_eq!(widths.last(), Some(&n), "the last width is d_sae");
    let selection = Selection::Batch(k);
    let b = pre_activations_as(sae, x, ws, certifiable(sae, selection), par);
    select_active(sae, selection, (b, total), collective, ws);
    let (nested, full) = nested_errors(sae, x, total, widths, ws);
    let levels = std::mem::take(&mut ws.levels);
    let main = MainGrad {
        grad: &levels[..b * widths.len() * m],
        widths,
        row_scale: None,
    };
    let aux_loss = auxk_and_weight_grads(sae, aux, (b, total), Some(main), (ws, g), None, par);
    // D_1 holds every level's error: b_dec's gradient.
    g.b_dec.fill(0.0);
    for row in levels[..b * widths.len() * m].chunks_exact(widths.len() * m) {
        g.b_dec.iter_mut().zip(&row[..m]).for_each(|(a, v)| *a += v);
    }
    ws.levels = levels;
    subtract_encoder_path(sae, g, &mut ws.tmp_m);
    let active = mark_fired(ws, n);
    LossParts {
        loss: nested + aux_loss,
        recon: full,
        sparsity: aux_loss,
        variance: 0.0,
        l0: active as f64 / total as f64,
    }
}

/// The nested reconstructions of the selected codes `ws.topk` (whose slots run in increasing
/// latent order within a row, as the batch selection writes them): per sample and level the
/// suffix sum `D_l` into `ws.levels` (`[B, L, d_in]`), the full reconstruction into `ws.xhat`,
/// and its error gradient `e_L` into `ws.de` (for AuxK). Returns the summed squared error over
/// levels and that of the full reconstruction, each divided by `total`.
fn nested_errors(
    sae: &Sae,
    x: &[f32],
    total: usize,
    widths: &[usize],
    ws: &mut Workspace,
) -> (f64, f64) {
    let m = sae.d_in();
    let nl = widths.len();
    let b = x.len() / m;
    let inv_b = 1.0 / total as f32;
    let codes = &ws.topk;
    let levels = sized(&mut ws.levels, b * nl * m);
    let xhat = sized(&mut ws.xhat, b * m);
    let de = sized(&mut ws.de, b * m);
    // Per sample (nested, full) squared errors, summed afterwards in row order so that the loss
    // does not depend on the thread count; the buffer is the workspace's (no allocation per step).
    let sums = &mut ws.row_errors;
    sums.resize(b, (0.0, 0.0));
    levels
        .par_chunks_mut(nl * m)
        .zip(xhat.par_chunks_mut(m))
        .zip(de.par_chunks_mut(m))
        .zip(x.par_chunks(m))
        .zip(sums.par_iter_mut())
        .enumerate()
        .for_each(|(r, ((((lv, acc), de), xr), out))| {
            *out = sample_levels(sae, codes, r, widths, xr, acc, lv, inv_b);
            de.copy_from_slice(&lv[(nl - 1) * m..]);
            // Suffix sums, from the last level down: D_l = e_l + D_{l+1}.
            for l in (0..nl - 1).rev() {
                let (head, tail) = lv.split_at_mut((l + 1) * m);
                head[l * m..]
                    .iter_mut()
                    .zip(&tail[..m])
                    .for_each(|(a, v)| *a += v);
            }
        });
    let (nested, full) = sums[..b]
        .iter()
        .fold((0.0, 0.0), |(a, b), (n, f)| (a + n, b + f));
    (nested / total as f64, full / total as f64)
}

/// One sample's levels: accumulates the reconstruction in `acc` level by level and writes each
/// level's `e_l = 2 (x_hat_l - x) / B` into `lv` (`[L, d_in]`); returns the squared errors summed
/// over levels, and the last level's.
#[allow(clippy::too_many_arguments)]
fn sample_levels(
    sae: &Sae,
    codes: &TopK,
    row: usize,
    widths: &[usize],
    x: &[f32],
    acc: &mut [f32],
    lv: &mut [f32],
    inv_b: f32,
) -> (f64, f64) {
    let m = acc.len();
    let k = codes.k;
    let slots = codes.indices[row * k..(row + 1) * k]
        .iter()
        .zip(&codes.values[row * k..(row + 1) * k])
        .filter(|(_, v)| **v > 0.0);
    acc.copy_from_slice(&sae.b_dec);
    let (mut level, mut nested, mut last) = (0usize, 0.0f64, 0.0f64);
    let mut emit = |level: usize, acc: &[f32]| {
        let e = &mut lv[level * m..(level + 1) * m];
        let mut sq = 0.0f64;
        for ((d, a), xv) in e.iter_mut().zip(acc).zip(x) {
            let diff = a - xv;
            sq += (diff as f64) * (diff as f64);
            *d = 2.0 * diff * inv_b;
        }
        nested += sq;
        last = sq;
    };
    for (&j, &v) in slots {
        while j as usize >= widths[level] {
            emit(level, acc);
            level += 1;
        }
        simd::axpy(acc, v, sae.w_dec.row(j as usize));
    }
    while level < widths.len() {
        emit(level, acc);
        level += 1;
    }
    (nested, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::{Activation, EncoderInit, SingleProcess};
    use rand::SeedableRng;

    /// The nested losses written out naively: every level's reconstruction from scratch.
    fn naive_nested(sae: &Sae, codes: &TopK, x: &[f32], widths: &[usize]) -> f64 {
        let m = sae.d_in();
        let b = x.len() / m;
        let mut total = 0.0f64;
        for r in 0..b {
            for &w in widths {
                let mut xh = sae.b_dec.clone();
                for s in 0..codes.k {
                    let (j, v) = (
                        codes.indices[r * codes.k + s] as usize,
                        codes.values[r * codes.k + s],
                    );
                    if v > 0.0 && j < w {
                        for (a, d) in xh.iter_mut().zip(sae.w_dec.row(j)) {
                            *a += v * d;
                        }
                    }
                }
                total += xh
                    .iter()
                    .zip(&x[r * m..(r + 1) * m])
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>();
            }
        }
        total / b as f64
    }

    #[test]
    fn nested_losses_match_their_naive_sum_and_one_level_is_batch_topk() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut sae = Sae::init(5, 12, Activation::JumpRelu, EncoderInit::Tied, &mut rng);
        sae.b_dec = vec![0.1, -0.2, 0.0, 0.3, 0.05];
        let x: Vec<f32> = (0..40).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let widths = [2, 5, 12];
        let mut ws = Workspace::default();
        let mut g = Grads::like(&sae);
        let mut one = SingleProcess;
        let serial = Parallelism::Serial;
        let parts = matryoshka_loss_grad(
            &sae,
            &x,
            8,
            (3, &widths),
            None,
            &mut one,
            &mut ws,
            &mut g,
            serial,
        );
        let want = naive_nested(&sae, &ws.topk, &x, &widths);
        assert!(
            (parts.loss - want).abs() < 1e-5 * want,
            "{} vs {want}",
            parts.loss
        );
        let full = naive_nested(&sae, &ws.topk, &x, &[12]);
        assert!((parts.recon - full).abs() < 1e-5 * full);
        assert!(parts.loss > parts.recon * 1.5, "inner levels add loss");
        // One level is BatchTopK exactly.
        let mut gb = Grads::like(&sae);
        let bt = super::super::sparse_loss_grad(
            &sae,
            &x,
            8,
            Selection::Batch(3),
            None,
            &mut one,
            &mut Workspace::default(),
            &mut gb,
            serial,
        );
        let mut g1 = Grads::like(&sae);
        let one_level = matryoshka_loss_grad(
            &sae,
            &x,
            8,
            (3, &[12]),
            None,
            &mut one,
            &mut ws,
            &mut g1,
            serial,
        );
        assert!((bt.loss - one_level.loss).abs() < 1e-12 * bt.loss);
        assert_eq!(g1.w_dec, gb.w_dec);
        assert_eq!(g1.w_enc, gb.w_enc);
        assert_eq!(g1.b_dec, gb.b_dec);
    }
}
