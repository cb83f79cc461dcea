//! Gradient buffers shaped like the parameters of an [`super::Sae`], and the parts of a loss.

/// Gradients of the loss with respect to every parameter (same layouts as [`super::Sae`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grads {
    /// Gradient of the encoder rows `[d_sae, d_in]`.
    pub w_enc: Vec<f32>,
    /// Gradient of the encoder bias `[d_sae]`.
    pub b_enc: Vec<f32>,
    /// Gradient of the decoder rows `[d_sae, d_in]`.
    pub w_dec: Vec<f32>,
    /// Gradient of the decoder bias `[d_in]`.
    pub b_dec: Vec<f32>,
    /// JumpReLU: pseudo-gradient with respect to the log-thresholds `[d_sae]` (else empty).
    pub threshold: Vec<f32>,
    /// Gated: gradient of `b_mag` `[d_sae]` (else empty).
    pub b_mag: Vec<f32>,
    /// Gated: gradient of `r_mag` `[d_sae]` (else empty).
    pub r_mag: Vec<f32>,
    /// MLP encoder: gradient of the hidden weights `[width, d_in]` (else empty).
    pub w_hidden: Vec<f32>,
    /// MLP encoder: gradient of the hidden bias `[width]` (else empty).
    pub b_hidden: Vec<f32>,
}

impl Grads {
    /// Zeroed gradients for `d_sae` latents of width `d_in`.
    pub fn zeros(d_in: usize, d_sae: usize) -> Self {
        Grads {
            w_enc: vec![0.0; d_in * d_sae],
            b_enc: vec![0.0; d_sae],
            w_dec: vec![0.0; d_in * d_sae],
            b_dec: vec![0.0; d_in],
            ..Grads::default()
        }
    }

    /// Zeroed gradients shaped like every parameter of `sae`.
    pub fn like(sae: &super::Sae) -> Self {
        let z = |n: usize| vec![0.0f32; n];
        Grads {
            w_enc: z(sae.w_enc.as_slice().len()),
            b_enc: z(sae.b_enc.len()),
            w_dec: z(sae.w_dec.as_slice().len()),
            b_dec: z(sae.b_dec.len()),
            threshold: z(sae.threshold.len()),
            b_mag: z(sae.b_mag.len()),
            r_mag: z(sae.r_mag.len()),
            w_hidden: z(sae.hidden.as_ref().map_or(0, |h| h.w.as_slice().len())),
            b_hidden: z(sae.hidden.as_ref().map_or(0, |h| h.b.len())),
        }
    }

    /// Every tensor with its name, the always-present four first.
    pub fn named(&self) -> [(&'static str, &Vec<f32>); 9] {
        [
            ("w_enc", &self.w_enc),
            ("b_enc", &self.b_enc),
            ("w_dec", &self.w_dec),
            ("b_dec", &self.b_dec),
            ("threshold", &self.threshold),
            ("b_mag", &self.b_mag),
            ("r_mag", &self.r_mag),
            ("w_hidden", &self.w_hidden),
            ("b_hidden", &self.b_hidden),
        ]
    }

    /// The tensor called `name` (one of [`Grads::named`]'s names).
    pub fn by_name_mut(&mut self, name: &str) -> Option<&mut Vec<f32>> {
        Some(match name {
            "w_enc" => &mut self.w_enc,
            "b_enc" => &mut self.b_enc,
            "w_dec" => &mut self.w_dec,
            "b_dec" => &mut self.b_dec,
            "threshold" => &mut self.threshold,
            "b_mag" => &mut self.b_mag,
            "r_mag" => &mut self.r_mag,
            "w_hidden" => &mut self.w_hidden,
            "b_hidden" => &mut self.b_hidden,
            _ => return None,
        })
    }

    /// Sets every gradient to zero, keeping the allocations.
    pub fn clear(&mut self) {
        for v in [
            &mut self.w_enc,
            &mut self.b_enc,
            &mut self.w_dec,
            &mut self.b_dec,
            &mut self.threshold,
            &mut self.b_mag,
            &mut self.r_mag,
            &mut self.w_hidden,
            &mut self.b_hidden,
        ] {
            v.fill(0.0);
        }
    }
}

/// The terms of one loss evaluation (all averaged over the batch).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LossParts {
    /// Total loss that was differentiated.
    pub loss: f64,
    /// `1/B sum ||x_hat - x||^2`.
    pub recon: f64,
    /// The sparsity term (L1 penalty or AuxK loss, with its coefficient).
    pub sparsity: f64,
    /// Sum over the batch of `||x - mean_batch(x)||^2 / B`, for the batch FVU.
    pub variance: f64,
    /// Mean number of non-zero codes per sample.
    pub l0: f64,
}

impl LossParts {
    /// Fraction of variance unexplained on this batch.
    pub fn fvu(&self) -> f64 {
        if self.variance > 0.0 {
            self.recon / self.variance
        } else {
            f64::NAN
        }
    }
}

/// `1/B sum_b ||x_b - mean(x)||^2` for a row-major batch.
pub(crate) fn batch_variance(x: &[f32], d: usize) -> f64 {
    let b = x.len() / d.max(1);
    if b == 0 {
        return 0.0;
    }
    let mut mean = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += *v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= b as f64);
    let mut s = 0.0;
    for row in x.chunks_exact(d) {
        s += row
            .iter()
            .zip(&mean)
            .map(|(v, m)| (*v as f64 - m).powi(2))
            .sum::<f64>();
    }
    s / b as f64
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
    /// BatchTopK: the smallest pre-activation kept in the last batch.
    pub(crate) batch_threshold: f32,
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
    let (n, m) = sae.w_enc.shape();
    let through = sized(tmp, m);
    crate::linalg::matmul(
        through,
        crate::linalg::MatRef::new(&g.b_enc, 1, n),
        sae.w_enc.view(),
        0.0,
        crate::Parallelism::Serial,
    );
    g.b_dec
        .iter_mut()
        .zip(through.iter())
        .for_each(|(a, v)| *a -= v);
}

/// Column sums of a row-major `[rows, n]` matrix into `out`.
pub(crate) fn column_sums(a: &[f32], n: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in a.chunks_exact(n) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
}

/// `2 (x_hat + bias - x) / B` into `de`; returns the mean squared norm of the error.
pub(crate) fn error_grad(xhat: &[f32], x: &[f32], bias: &[f32], de: &mut [f32], b: usize) -> f64 {
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
/// `l1/B colsum_j W_dec_j / ||W_dec_j||` (`codes` `[B, d_sae]`, `de` `[B, d_in]`).
pub(crate) fn decoder_grad(
    sae: &super::Sae,
    codes: &[f32],
    de: &[f32],
    (l1, colsum, norms): (f32, &[f32], &[f32]),
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
    let inv_b = 1.0 / b as f32;
    for j in 0..n {
        if norms[j] > 0.0 {
            let s = l1 * inv_b * colsum[j] / norms[j];
            g.w_dec[j * m..(j + 1) * m]
                .iter_mut()
                .zip(sae.w_dec.row(j))
                .for_each(|(gv, w)| *gv += s * w);
        }
    }
}
