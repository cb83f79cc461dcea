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
    /// Mean absolute code sum per sample (`||z||_1`).
    #[serde(default)]
    pub l1: f64,
    /// Mean cosine of each sample and its reconstruction (samples with `x = 0` left out).
    #[serde(default)]
    pub cosine: f64,
    /// Mean `||x_hat|| / ||x||` per sample (below 1: shrinkage; samples with `x = 0` left out).
    #[serde(default)]
    pub l2_ratio: f64,
}

/// All reconstruction metrics from data, reconstruction and codes.
pub fn evaluate(x: &Matrix, x_hat: &Matrix, codes: &Matrix) -> ReconMetrics {
    let mut stats = ReconStats::new(x.cols(), codes.cols());
    stats.add(x, x_hat, codes);
    stats.metrics()
}

/// The sums behind [`ReconMetrics`], streamed over chunks of samples: memory is one vector per
/// data dimension and per latent, however many samples.
///
/// The FVU denominator `sum ||x - mean(x)||^2` needs the mean of all samples; it is merged chunk
/// by chunk from each chunk's mean and centred sum of squares (Chan, Golub & LeVeque 1979):
/// `M2 = M2_a + M2_b + delta^2 n_a n_b / n` with `delta` the difference of the two means, which
/// equals the two-pass sum without its cancellation.
#[derive(Clone, Debug)]
pub struct ReconStats {
    rows: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    err: f64,
    active: u64,
    fired: Vec<u64>,
    l1: f64,
    /// Samples with `x != 0`, and the sums of their cosines and norm ratios.
    nonzero: u64,
    cosine: f64,
    l2_ratio: f64,
}

impl ReconStats {
    /// No samples yet, for data of width `d_in` and `latents` codes per sample.
    pub fn new(d_in: usize, latents: usize) -> Self {
        ReconStats {
            rows: 0,
            mean: vec![0.0; d_in],
            m2: vec![0.0; d_in],
            err: 0.0,
            active: 0,
            fired: vec![0; latents],
            l1: 0.0,
            nonzero: 0,
            cosine: 0.0,
            l2_ratio: 0.0,
        }
    }

    /// Adds a chunk: data, its reconstruction and its codes (same rows).
    pub fn add(&mut self, x: &Matrix, x_hat: &Matrix, codes: &Matrix) {
        let rows = x.rows();
        if rows == 0 {
            return;
        }
        self.err += sq_err(x, x_hat);
        let mut mean = vec![0.0f64; x.cols()];
        for r in 0..rows {
            mean.iter_mut()
                .zip(x.row(r))
                .for_each(|(a, v)| *a += *v as f64);
        }
        mean.iter_mut().for_each(|a| *a /= rows as f64);
        let mut m2 = vec![0.0f64; x.cols()];
        for r in 0..rows {
            m2.iter_mut()
                .zip(x.row(r).iter().zip(&mean))
                .for_each(|(q, (v, mu))| *q += (*v as f64 - mu).powi(2));
        }
        self.merge_moments(&mean, &m2, rows as u64);
        for r in 0..codes.rows() {
            for (f, v) in self.fired.iter_mut().zip(codes.row(r)) {
                if *v != 0.0 {
                    *f += 1;
                    self.active += 1;
                    self.l1 += v.abs() as f64;
                }
            }
        }
        for r in 0..rows {
            self.add_alignment(x.row(r), x_hat.row(r));
        }
        self.rows += rows as u64;
    }

    /// Folds in `rows` samples of mean `mean` and centred sum of squares `m2` (Chan's merge;
    /// `self.rows` is not changed).
    fn merge_moments(&mut self, mean: &[f64], m2: &[f64], rows: u64) {
        let (na, nb) = (self.rows as f64, rows as f64);
        let n = na + nb;
        if rows == 0 {
            return;
        }
        for d in 0..self.mean.len() {
            let delta = mean[d] - self.mean[d];
            self.mean[d] += delta * nb / n;
            self.m2[d] += m2[d] + delta * delta * na * nb / n;
        }
    }

    /// Adds the sums of other samples (another process's part of the same evaluation).
    pub fn merge(&mut self, other: &ReconStats) {
        self.merge_moments(&other.mean, &other.m2, other.rows);
        self.err += other.err;
        self.active += other.active;
        self.fired
            .iter_mut()
            .zip(&other.fired)
            .for_each(|(a, b)| *a += b);
        self.l1 += other.l1;
        self.nonzero += other.nonzero;
        self.cosine += other.cosine;
        self.l2_ratio += other.l2_ratio;
        self.rows += other.rows;
    }

    /// The sums as numbers to send between processes (counts are exact below 2^53).
    pub fn to_values(&self) -> Vec<f64> {
        let mut v = vec![
            self.rows as f64,
            self.err,
            self.active as f64,
            self.l1,
            self.nonzero as f64,
            self.cosine,
            self.l2_ratio,
        ];
        v.extend(&self.mean);
        v.extend(&self.m2);
        v.extend(self.fired.iter().map(|c| *c as f64));
        v
    }

    /// The inverse of [`ReconStats::to_values`] for data of width `d_in` and `latents` codes
    /// (None when `v` has another length).
    pub fn from_values(d_in: usize, latents: usize, v: &[f64]) -> Option<Self> {
        let [rows, err, active, l1, nonzero, cosine, l2_ratio, rest @ ..] = v else {
            return None;
        };
        if rest.len() != 2 * d_in + latents {
            return None;
        }
        Some(ReconStats {
            rows: *rows as u64,
            mean: rest[..d_in].to_vec(),
            m2: rest[d_in..2 * d_in].to_vec(),
            err: *err,
            active: *active as u64,
            fired: rest[2 * d_in..].iter().map(|c| *c as u64).collect(),
            l1: *l1,
            nonzero: *nonzero as u64,
            cosine: *cosine,
            l2_ratio: *l2_ratio,
        })
    }

    fn add_alignment(&mut self, x: &[f32], x_hat: &[f32]) {
        let (mut xx, mut yy, mut xy) = (0.0f64, 0.0f64, 0.0f64);
        for (a, b) in x.iter().zip(x_hat) {
            let (a, b) = (*a as f64, *b as f64);
            xx += a * a;
            yy += b * b;
            xy += a * b;
        }
        if xx == 0.0 {
            return;
        }
        self.nonzero += 1;
        self.l2_ratio += (yy / xx).sqrt();
        if yy > 0.0 {
            self.cosine += xy / (xx * yy).sqrt();
        }
    }

    /// The metrics of everything added.
    pub fn metrics(&self) -> ReconMetrics {
        let s = self.rows;
        let freq: Vec<f64> = self
            .fired
            .iter()
            .map(|c| *c as f64 / s.max(1) as f64)
            .collect();
        let per_sample = |v: f64| if s == 0 { f64::NAN } else { v / s as f64 };
        ReconMetrics {
            samples: s as usize,
            mse: per_sample(self.err) / self.mean.len().max(1) as f64,
            fvu: self.err / self.m2.iter().sum::<f64>(),
            l0: per_sample(self.active as f64),
            dead_fraction: freq.iter().filter(|f| **f == 0.0).count() as f64
                / freq.len().max(1) as f64,
            density: density_histogram(&freq, 20),
            l1: per_sample(self.l1),
            cosine: self.cosine / self.nonzero.max(1) as f64,
            l2_ratio: self.l2_ratio / self.nonzero.max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_l2_ratio_and_l1_follow_their_definitions() {
        // Row 1: x_hat = x / 2 (cosine 1, ratio 0.5); row 2: orthogonal, same norm (cosine 0,
        // ratio 1); row 3: x = 0, left out of both means.
        let x = Matrix::from_vec(3, 2, vec![3.0, 4.0, 1.0, 0.0, 0.0, 0.0]).unwrap();
        let x_hat = Matrix::from_vec(3, 2, vec![1.5, 2.0, 0.0, 1.0, 5.0, 5.0]).unwrap();
        let codes = Matrix::from_vec(3, 2, vec![-2.0, 0.0, 1.0, 3.0, 0.0, 0.0]).unwrap();
        let m = evaluate(&x, &x_hat, &codes);
        assert!((m.cosine - 0.5).abs() < 1e-12, "{m:?}");
        assert!((m.l2_ratio - 0.75).abs() < 1e-12, "{m:?}");
        assert!((m.l1 - 2.0).abs() < 1e-12, "{m:?}");
    }

    #[test]
    fn merged_parts_give_the_metrics_of_the_whole() {
        let x = Matrix::standard_normal(50, 3, 1);
        let mut x_hat = x.clone();
        x_hat.as_mut_slice().iter_mut().for_each(|v| *v *= 0.7);
        let mut codes = Matrix::standard_normal(50, 4, 2);
        codes
            .as_mut_slice()
            .iter_mut()
            .for_each(|v| *v = v.max(0.0));
        let want = evaluate(&x, &x_hat, &codes);
        let part = |a: usize, b: usize| {
            let rows = |m: &Matrix| {
                let c = m.cols();
                Matrix::from_vec(b - a, c, m.as_slice()[a * c..b * c].to_vec()).unwrap()
            };
            let mut s = ReconStats::new(3, 4);
            s.add(&rows(&x), &rows(&x_hat), &rows(&codes));
            // Through the values a process sends.
            ReconStats::from_values(3, 4, &s.to_values()).unwrap()
        };
        let mut merged = part(0, 17);
        merged.merge(&part(17, 17));
        merged.merge(&part(17, 50));
        let got = merged.metrics();
        assert_eq!(got.samples, 50);
        assert_eq!((got.l0, got.dead_fraction), (want.l0, want.dead_fraction));
        assert_eq!(got.density, want.density);
        for (a, b) in [
            (got.fvu, want.fvu),
            (got.mse, want.mse),
            (got.l1, want.l1),
            (got.cosine, want.cosine),
            (got.l2_ratio, want.l2_ratio),
        ] {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
        assert!(ReconStats::from_values(3, 4, &[1.0; 5]).is_none());
    }

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
    fn streamed_fvu_equals_the_two_pass_definition() {
        // A mean 1000x the spread: merging chunk moments must not cancel.
        let noise = Matrix::standard_normal(3001, 3, 5);
        let x = Matrix::from_fn(3001, 3, |r, c| 1000.0 + noise.get(r, c));
        let x_hat = Matrix::from_fn(3001, 3, |r, c| x.get(r, c) + 0.1 * ((r + c) % 3) as f32);
        let mut stats = ReconStats::new(3, 3);
        for s in (0..3001).step_by(250) {
            let e = (s + 250).min(3001);
            stats.add(
                &x.slice_rows(s, e),
                &x_hat.slice_rows(s, e),
                &x.slice_rows(s, e),
            );
        }
        let m = stats.metrics();
        let want = fvu(&x, &x_hat);
        assert!((m.fvu - want).abs() < 1e-9 * want, "{} vs {want}", m.fvu);
        assert!((m.mse - mse(&x, &x_hat)).abs() < 1e-12);
        assert_eq!(m.samples, 3001);
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
/// Most dense code values [`evaluate_sae`] holds at once.
const EVAL_CODES: usize = 1 << 26;

/// [`evaluate`] for an SAE on `x`, in chunks of rows, so memory stays at one chunk of codes
/// however wide the SAE (dense codes of 65k samples x 65k latents would need 16 GiB).
pub fn evaluate_sae(sae: &crate::sae::Sae, x: &Matrix, par: crate::Parallelism) -> ReconMetrics {
    let mut stats = ReconStats::new(x.cols(), sae.d_sae());
    // The dense codes of a chunk stay near 256 MiB however wide the SAE (2048 rows up to 32768
    // latents, fewer beyond).
    let rows = (EVAL_CODES / sae.d_sae().max(1)).clamp(1, EVAL_CHUNK);
    for start in (0..x.rows()).step_by(rows) {
        let chunk = x.slice_rows(start, (start + rows).min(x.rows()));
        let codes = sae.encode_dense(&chunk, par);
        stats.add(&chunk, &sae.decode(&codes, par), &codes);
    }
    stats.metrics()
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
