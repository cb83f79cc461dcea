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
