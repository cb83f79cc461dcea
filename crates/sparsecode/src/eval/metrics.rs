//! Reconstruction and sparsity metrics. Dataset-wide sums are accumulated in f64.

use crate::Matrix;
use serde::{Deserialize, Serialize};

/// Mean over samples and dimensions of `(x - x_hat)^2`.
pub fn mse(x: &Matrix, x_hat: &Matrix) -> f64 {
    let n = x.as_slice().len();
    if n == 0 {
        return f64::NAN;
    }
    sq_err(x, x_hat) / n as f64
}

fn sq_err(x: &Matrix, x_hat: &Matrix) -> f64 {
    x.as_slice()
        .iter()
        .zip(x_hat.as_slice())
        .map(|(a, b)| ((*a - *b) as f64).powi(2))
        .sum()
}

/// `sum ||x - x_hat||^2 / sum ||x - mean(x)||^2` with the mean taken per dimension over the
/// dataset (not the mean of squares: a bug seen elsewhere).
pub fn fvu(x: &Matrix, x_hat: &Matrix) -> f64 {
    let (s, m) = x.shape();
    if s == 0 {
        return f64::NAN;
    }
    let mut mean = vec![0.0f64; m];
    for r in 0..s {
        mean.iter_mut()
            .zip(x.row(r))
            .for_each(|(a, v)| *a += *v as f64);
    }
    mean.iter_mut().for_each(|a| *a /= s as f64);
    let total: f64 = (0..s)
        .map(|r| {
            x.row(r)
                .iter()
                .zip(&mean)
                .map(|(v, mu)| (*v as f64 - mu).powi(2))
                .sum::<f64>()
        })
        .sum();
    sq_err(x, x_hat) / total
}

/// Mean number of non-zero codes per sample.
pub fn l0(codes: &Matrix) -> f64 {
    if codes.rows() == 0 {
        return f64::NAN;
    }
    codes.as_slice().iter().filter(|v| **v != 0.0).count() as f64 / codes.rows() as f64
}

/// Fraction of samples on which each latent is non-zero.
pub fn firing_frequency(codes: &Matrix) -> Vec<f64> {
    let (s, n) = codes.shape();
    let mut count = vec![0u64; n];
    for r in 0..s {
        count
            .iter_mut()
            .zip(codes.row(r))
            .for_each(|(c, v)| *c += (*v != 0.0) as u64);
    }
    count
        .into_iter()
        .map(|c| c as f64 / s.max(1) as f64)
        .collect()
}

/// A histogram over equal-width bins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// `bins + 1` bin edges.
    pub edges: Vec<f64>,
    /// Items per bin.
    pub counts: Vec<u64>,
}

/// Histogram of `log10(frequency + 1e-10)` over `[-10, 0]` (latents that never fire land in the
/// first bin).
pub fn density_histogram(freq: &[f64], bins: usize) -> Histogram {
    let bins = bins.max(1);
    let (lo, hi) = (-10.0f64, 0.0f64);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0u64; bins];
    for f in freq {
        let v = (f + 1e-10).log10();
        let i = (((v - lo) / width).floor().max(0.0) as usize).min(bins - 1);
        counts[i] += 1;
    }
    Histogram {
        edges: (0..=bins).map(|i| lo + width * i as f64).collect(),
        counts,
    }
}

/// Reconstruction and sparsity of one set of codes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconMetrics {
    /// Number of samples evaluated.
    pub samples: usize,
    /// Mean squared error per element.
    pub mse: f64,
    /// Fraction of variance unexplained.
    pub fvu: f64,
    /// Mean non-zero codes per sample.
    pub l0: f64,
    /// Fraction of latents that never fire on these samples.
    pub dead_fraction: f64,
    /// Histogram of log10 firing frequency.
    pub density: Histogram,
}

/// All reconstruction metrics from data, reconstruction and codes.
pub fn evaluate(x: &Matrix, x_hat: &Matrix, codes: &Matrix) -> ReconMetrics {
    let freq = firing_frequency(codes);
    ReconMetrics {
        samples: x.rows(),
        mse: mse(x, x_hat),
        fvu: fvu(x, x_hat),
        l0: l0(codes),
        dead_fraction: freq.iter().filter(|f| **f == 0.0).count() as f64 / freq.len().max(1) as f64,
        density: density_histogram(&freq, 20),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fvu_uses_per_dimension_mean() {
        // Data with a large mean: predicting the mean exactly gives FVU 1, not something tiny.
        let x = Matrix::from_vec(4, 2, vec![10.0, 1.0, 12.0, 3.0, 10.0, 3.0, 12.0, 1.0]).unwrap();
        let mean =
            Matrix::from_vec(4, 2, vec![11.0, 2.0, 11.0, 2.0, 11.0, 2.0, 11.0, 2.0]).unwrap();
        assert!((fvu(&x, &mean) - 1.0).abs() < 1e-12);
        assert_eq!(fvu(&x, &x), 0.0);
        assert!((mse(&x, &mean) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn sparsity_metrics() {
        let z = Matrix::from_vec(3, 3, vec![1.0, 0.0, 0.0, 2.0, 3.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
        assert!((l0(&z) - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(firing_frequency(&z), vec![2.0 / 3.0, 2.0 / 3.0, 0.0]);
        let h = density_histogram(&firing_frequency(&z), 10);
        assert_eq!(h.counts[0], 1, "never-firing latent in the first bin");
        assert_eq!(h.counts[9], 2);
        assert_eq!(evaluate(&z, &z, &z).dead_fraction, 1.0 / 3.0);
    }
}

/// Rows encoded at a time by [`evaluate_sae`].
const EVAL_CHUNK: usize = 2048;

/// [`evaluate`] for an SAE on `x`, in chunks of rows, so memory stays at one chunk of codes
/// however wide the SAE (dense codes of 65k samples x 65k latents would need 16 GiB).
pub fn evaluate_sae(sae: &crate::sae::Sae, x: &Matrix, par: crate::Parallelism) -> ReconMetrics {
    let (s, m) = x.shape();
    let n = sae.d_sae();
    let mut mean = vec![0.0f64; m];
    for r in 0..s {
        mean.iter_mut()
            .zip(x.row(r))
            .for_each(|(a, v)| *a += *v as f64);
    }
    mean.iter_mut().for_each(|a| *a /= s.max(1) as f64);
    let (mut err, mut total, mut active) = (0.0f64, 0.0f64, 0u64);
    let mut fired = vec![0u64; n];
    for start in (0..s).step_by(EVAL_CHUNK) {
        let chunk = x.slice_rows(start, (start + EVAL_CHUNK).min(s));
        let codes = sae.encode_dense(&chunk, par);
        let rec = sae.decode(&codes, par);
        err += sq_err(&chunk, &rec);
        for r in 0..chunk.rows() {
            total += chunk
                .row(r)
                .iter()
                .zip(&mean)
                .map(|(v, mu)| (*v as f64 - mu).powi(2))
                .sum::<f64>();
            for (f, v) in fired.iter_mut().zip(codes.row(r)) {
                if *v != 0.0 {
                    *f += 1;
                    active += 1;
                }
            }
        }
    }
    let freq: Vec<f64> = fired.iter().map(|c| *c as f64 / s.max(1) as f64).collect();
    ReconMetrics {
        samples: s,
        mse: if s == 0 {
            f64::NAN
        } else {
            err / (s * m) as f64
        },
        fvu: err / total,
        l0: if s == 0 {
            f64::NAN
        } else {
            active as f64 / s as f64
        },
        dead_fraction: freq.iter().filter(|f| **f == 0.0).count() as f64 / n.max(1) as f64,
        density: density_histogram(&freq, 20),
    }
}

#[cfg(test)]
mod sae_eval_tests {
    use super::*;
    use crate::sae::{Activation, EncoderInit, Sae};
    use rand::SeedableRng;

    #[test]
    fn chunked_sae_evaluation_equals_the_whole_matrix_one() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let sae = Sae::init(
            6,
            20,
            Activation::TopK { k: 3 },
            EncoderInit::Tied,
            &mut rng,
        );
        let x = Matrix::from_fn(5000, 6, |_, _| {
            rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng)
        });
        let codes = sae.encode_dense(&x, crate::Parallelism::Serial);
        let whole = evaluate(&x, &sae.decode(&codes, crate::Parallelism::Serial), &codes);
        let chunked = evaluate_sae(&sae, &x, crate::Parallelism::Serial);
        assert_eq!(whole.density, chunked.density);
        assert_eq!(whole.l0, chunked.l0);
        for (a, b) in [(whole.mse, chunked.mse), (whole.fvu, chunked.fvu)] {
            assert!((a - b).abs() < 1e-9 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
}
