//! The parts of a loss, the reusable workspace of a step, and the pieces of backward passes that
//! several architectures share.

use super::params::Grads;

/// The terms of one loss evaluation, each a sum over this process's rows divided by the step's
/// total row count (so the parts of a split batch add up to the whole batch's values).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LossParts {
    /// Total loss that was differentiated.
    pub loss: f64,
    /// `1/B sum ||x_hat - x||^2`.
    pub recon: f64,
    /// The sparsity term (L1 penalty or AuxK loss, with its coefficient).
    pub sparsity: f64,
    /// `1/B sum_b ||x_b - mean(x)||^2` over the whole step, for the batch FVU (set by
    /// [`super::StepStats::finish`] after the reduction; 0 straight out of a loss function).
    pub variance: f64,
    /// Mean number of non-zero codes per sample.
    pub l0: f64,
}

impl LossParts {
    /// What a loss function returns: the reconstruction term, the sparsity term (the loss
    /// differentiated is their sum) and `active` non-zero codes over `total` samples; the
    /// variance is filled in later by [`super::StepStats::finish`].
    pub(crate) fn of_step(recon: f64, sparsity: f64, active: usize, total: usize) -> Self {
        LossParts {
            loss: recon + sparsity,
            recon,
            sparsity,
            variance: 0.0,
            l0: active as f64 / total as f64,
        }
    }

    /// Fraction of variance unexplained on this batch.
    pub fn fvu(&self) -> f64 {
        if self.variance > 0.0 {
            self.recon / self.variance
        } else {
            f64::NAN
        }
    }
}

/// Scratch buffers for one training step, grown on first use and reused afterwards so that the
/// step allocates nothing in steady state.
#[derive(Debug, Default)]
pub struct Workspace {
    pub(crate) xc: Vec<f32>,
    pub(crate) pre: Vec<f32>,
    pub(crate) xhat: Vec<f32>,
    pub(crate) de: Vec<f32>,
    pub(crate) dpre: Vec<f32>,
    pub(crate) norms: Vec<f32>,
    pub(crate) colsum: Vec<f32>,
    pub(crate) topk: crate::linalg::TopK,
    pub(crate) aux: crate::linalg::TopK,
    pub(crate) by_latent: Vec<u32>,
    pub(crate) latent_start: Vec<u32>,
    pub(crate) fired: Vec<bool>,
    pub(crate) tmp_m: Vec<f32>,
    pub(crate) fill: Vec<u32>,
    pub(crate) dense_aux: DenseAux,
    /// Matryoshka: per sample and level the gradient of the nested losses (`[B, levels, d_in]`).
    pub(crate) levels: Vec<f32>,
    /// Matryoshka: per sample its squared errors summed over levels, and the full one's.
    pub(crate) row_errors: Vec<(f64, f64)>,
    /// BatchTopK: the smallest pre-activation kept in the last batch.
    pub(crate) batch_threshold: f32,
    /// TopK's certified encoder; `pre` holds its approximations (without bias) when
    /// `pre_is_approx`.
    pub(crate) cert: super::certified::Certified,
    pub(crate) pre_is_approx: bool,
    /// JumpReLU: the entries in the straight-through window, (row, latent, pre-activation), in
    /// row-major order.
    pub(crate) window: Vec<(u32, u32, f32)>,
    /// Switch: the routing and its gradients.
    pub(crate) switch: super::switch::SwitchScratch,
    /// Per row, the factor from a pre-activation to its code (a Switch SAE's router
    /// probability), applied to the main codes' encoder gradients; empty: 1.
    pub(crate) code_scale: Vec<f32>,
    /// `aux` already holds AuxK's selection (a Switch SAE chooses within each row's expert);
    /// the AuxK step that uses it clears this.
    pub(crate) aux_given: bool,
}

impl Workspace {
    /// How TopK's approximate pre-activations are computed (the selection is the same).
    pub fn set_encoder_precision(&mut self, p: super::EncoderPrecision) {
        self.cert.precision = p;
    }

    /// What TopK's certified selection has done since this workspace was made.
    pub fn certified_stats(&self) -> super::CertifiedStats {
        self.cert.stats
    }
}

/// Buffers of the dense AuxK path (dead latents as a dense block).
#[derive(Debug, Default)]
pub struct DenseAux {
    pub(crate) dead_idx: Vec<u32>,
    pub(crate) dead_pos: Vec<u32>,
    pub(crate) z: Vec<f32>,
    pub(crate) w_dead: Vec<f32>,
    pub(crate) tmp: Vec<f32>,
    pub(crate) dz: Vec<f32>,
}

pub(crate) fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// The input is centred by `b_dec` before the encoder, so `b_dec` also receives
/// `-(sum_b dpre_b) W_enc = -db_enc W_enc`. Call after `g.b_enc` holds its final value.
pub(crate) fn subtract_encoder_path(sae: &super::Sae, g: &mut Grads, tmp: &mut Vec<f32>) {
    if !sae.apply_b_dec_to_input {
        return;
    }
    let through = encoder_path(sae, &g.b_enc, tmp);
    g.b_dec
        .iter_mut()
        .zip(through.iter())
        .for_each(|(a, v)| *a -= v);
}

/// `db_enc W_enc` into `tmp` (`[d_in]`): the encoder's part of `b_dec`'s gradient, negated
/// (a latent-sharded block sums its part with the other blocks' before subtracting).
pub(crate) fn encoder_path<'a>(
    sae: &super::Sae,
    b_enc_grad: &[f32],
    tmp: &'a mut Vec<f32>,
) -> &'a mut [f32] {
    let (n, m) = sae.w_enc.shape();
    let through = sized(tmp, m);
    crate::linalg::matmul(
        through,
        crate::linalg::MatRef::new(b_enc_grad, 1, n),
        sae.w_enc.view(),
        0.0,
        crate::Parallelism::Serial,
    );
    through
}

/// Column sums of a row-major `[rows, n]` matrix into `out`.
pub(crate) fn column_sums(a: &[f32], n: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in a.chunks_exact(n) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
}

/// `2 (x_hat + bias - x) / B` into `de` (`B` = `total` rows of the step); returns the squared
/// norm of the error summed over these rows, divided by `B`.
pub(crate) fn error_grad(
    xhat: &[f32],
    x: &[f32],
    bias: &[f32],
    de: &mut [f32],
    total: usize,
) -> f64 {
    let b = total;
    let mut sum = 0.0f64;
    let inv_b = 1.0 / b as f32;
    for ((d, xh), (xv, bd)) in de
        .iter_mut()
        .zip(xhat)
        .zip(x.iter().zip(bias.iter().cycle()))
    {
        let e = xh + bd - xv;
        sum += (e as f64) * (e as f64);
        *d = 2.0 * e * inv_b;
    }
    sum / b as f64
}

/// `||W_dec_j||` of every latent.
pub(crate) fn decoder_norms(sae: &super::Sae, out: &mut [f32]) {
    for (j, nj) in out.iter_mut().enumerate() {
        *nj = sae.w_dec.row(j).iter().map(|v| v * v).sum::<f32>().sqrt();
    }
}

/// The decoder-norm weighted L1 penalty `l1/B sum_j colsum_j ||W_dec_j||`.
pub(crate) fn l1_penalty(colsum: &[f32], norms: &[f32], l1: f32, b: usize) -> f64 {
    colsum
        .iter()
        .zip(norms)
        .map(|(c, w)| (*c as f64) * (*w as f64))
        .sum::<f64>()
        * l1 as f64
        / b as f64
}

/// `dW_dec = codes^T de` plus the gradient of [`l1_penalty`] with respect to the decoder rows,
/// `l1/B colsum_j W_dec_j / ||W_dec_j||` (`codes` `[rows, d_sae]`, `de` `[rows, d_in]`, `B` =
/// `total` rows of the step).
pub(crate) fn decoder_grad(
    sae: &super::Sae,
    codes: &[f32],
    de: &[f32],
    (l1, colsum, norms, total): (f32, &[f32], &[f32], usize),
    g: &mut Grads,
    par: crate::Parallelism,
) {
    let (n, m) = sae.w_dec.shape();
    let b = de.len() / m.max(1);
    crate::linalg::matmul(
        &mut g.w_dec,
        crate::linalg::MatRef::new(codes, b, n).t(),
        crate::linalg::MatRef::new(de, b, m),
        0.0,
        par,
    );
    let inv_b = 1.0 / total as f32;
    add_norm_penalty_grad(sae, &mut g.w_dec, colsum, norms, l1 * inv_b);
}

/// Adds the decoder-norm penalty's gradient `l1/B colsum_j W_dec_j / ||W_dec_j||` (rows with a
/// zero norm get none) to `w_dec_grad`, given `l1_over_b = l1/B`.
pub(crate) fn add_norm_penalty_grad(
    sae: &super::Sae,
    w_dec_grad: &mut [f32],
    colsum: &[f32],
    norms: &[f32],
    l1_over_b: f32,
) {
    use rayon::prelude::*;
    w_dec_grad
        .par_chunks_mut(sae.d_in().max(1))
        .enumerate()
        .filter(|(j, _)| norms[*j] > 0.0)
        .for_each(|(j, gd)| {
            let s = l1_over_b * colsum[j] / norms[j];
            gd.iter_mut()
                .zip(sae.w_dec.row(j))
                .for_each(|(gv, w)| *gv += s * w);
        });
}
