//! Synthetic superposition: `x = z D (+ noise)` with `z` sparse (exactly K active per sample, or
//! each latent active with probability p), magnitudes from a chosen distribution, and `D` a
//! dictionary of unit-norm atoms (rows), Gaussian unless given.

use crate::linalg::normalize_rows;
use crate::{Error, Matrix, Result};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1, StandardNormal};
use serde::{Deserialize, Serialize};

/// Which latents are active in a sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Support {
    /// Exactly `k` latents, uniformly at random.
    Exact {
        /// Active latents per sample.
        k: usize,
    },
    /// Each latent independently with probability `p`.
    Bernoulli {
        /// Firing probability of each latent.
        p: f64,
    },
}

/// Distribution of the value of an active latent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Magnitude {
    /// `|N(0, 1)|` (arXiv 2411.13117).
    AbsNormal,
    /// `U[0, 1]`.
    Uniform,
    /// `Exp(1)`.
    Exponential,
    /// Always 1.
    Constant,
    /// `N(0, 1)`, signed (scikit-learn's make_sparse_coded_signal style).
    SignedNormal,
}

/// Parameters of a synthetic dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// Number of true latents N.
    pub latents: usize,
    /// Activation width M.
    pub dims: usize,
    /// Which latents are active.
    pub support: Support,
    /// Law of the active values.
    pub magnitude: Magnitude,
    /// Training samples.
    pub samples: usize,
    /// Held-out samples drawn from the same process (0: none).
    #[serde(default)]
    pub test_samples: usize,
    /// Additive Gaussian noise at this signal-to-noise ratio in dB (None: noiseless).
    #[serde(default)]
    pub snr_db: Option<f64>,
    /// Seed of the dictionary, codes and noise.
    pub seed: u64,
}

impl SynthConfig {
    /// The setting of arXiv 2411.13117 (REFERENCE E2): N=16, M=8, K=3, |N(0,1)| values, Gaussian
    /// unit-norm dictionary, 1024 train and 1024 test samples, noiseless.
    pub fn e2(seed: u64) -> Self {
        SynthConfig {
            latents: 16,
            dims: 8,
            support: Support::Exact { k: 3 },
            magnitude: Magnitude::AbsNormal,
            samples: 1024,
            test_samples: 1024,
            snr_db: None,
            seed,
        }
    }

    /// Checks the parameters; `dictionary` is a given dictionary, if any.
    pub fn validate(&self, dictionary: Option<&Matrix>) -> Result<()> {
        if self.latents == 0 {
            return Err(Error::param("latents", "must be at least 1"));
        }
        if self.dims == 0 {
            return Err(Error::param("dims", "must be at least 1"));
        }
        if self.samples == 0 {
            return Err(Error::param("samples", "must be at least 1"));
        }
        match self.support {
            Support::Exact { k } if k == 0 || k > self.latents => {
                return Err(Error::param(
                    "active",
                    format!(
                        "K = {k} must be in 1..={} (the number of latents)",
                        self.latents
                    ),
                ));
            }
            Support::Bernoulli { p } if !(p > 0.0 && p <= 1.0) => {
                return Err(Error::param(
                    "p",
                    format!("firing probability {p} must be in (0, 1]"),
                ));
            }
            _ => {}
        }
        if let Some(s) = self.snr_db {
            if !s.is_finite() {
                return Err(Error::param(
                    "snr_db",
                    format!("{s} must be a finite number of dB"),
                ));
            }
        }
        if let Some(d) = dictionary {
            if d.shape() != (self.latents, self.dims) {
                return Err(Error::shape(
                    "dictionary",
                    format!("[{}, {}] (latents x dims)", self.latents, self.dims),
                    format!("{:?}", d.shape()),
                ));
            }
            if let Some(r) = crate::linalg::row_norms(d).iter().position(|n| *n < 1e-12) {
                return Err(Error::param(
                    "dictionary",
                    format!("atom {r} has zero norm"),
                ));
            }
        }
        self.admit()
    }

    /// The data, its dense codes and the dictionary must fit in memory.
    fn admit(&self) -> Result<()> {
        use crate::memory::{admit, bytes_of};
        let what = "the planted data (--samples + --test-samples) x (--dims + --latents)";
        let rows = self.samples.checked_add(self.test_samples);
        let cols = self.dims.checked_add(self.latents);
        let overflow = || Error::param("samples", "the data's size overflows");
        let data = bytes_of(
            what,
            &[rows.ok_or_else(overflow)?, cols.ok_or_else(overflow)?],
            4,
        )?;
        let dict = bytes_of(what, &[self.latents, self.dims], 4)?;
        admit(what, data.checked_add(dict).ok_or_else(overflow)?)
    }
}

/// Activations and the codes that made them.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSplit {
    /// `[samples, dims]`.
    pub activations: Matrix,
    /// `[samples, latents]`.
    pub codes: Matrix,
}

/// A generated dataset with its ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthData {
    /// `[latents, dims]`, unit-norm rows.
    pub dictionary: Matrix,
    /// The training split.
    pub train: SynthSplit,
    /// The held-out split, when `test_samples > 0`.
    pub test: Option<SynthSplit>,
    /// Standard deviation of the added noise (0 when noiseless).
    pub noise_std: f64,
}

fn magnitude(m: Magnitude, rng: &mut ChaCha8Rng) -> f32 {
    match m {
        Magnitude::AbsNormal => Distribution::<f32>::sample(&StandardNormal, rng).abs(),
        Magnitude::Uniform => rng.random::<f32>(),
        Magnitude::Exponential => Distribution::<f32>::sample(&Exp1, rng),
        Magnitude::Constant => 1.0,
        Magnitude::SignedNormal => Distribution::<f32>::sample(&StandardNormal, rng),
    }
}

fn codes(cfg: &SynthConfig, rows: usize, rng: &mut ChaCha8Rng) -> Matrix {
    let n = cfg.latents;
    let mut z = Matrix::zeros(rows, n);
    let mut idx: Vec<usize> = (0..n).collect();
    for r in 0..rows {
        let row = z.row_mut(r);
        match cfg.support {
            Support::Exact { k } => {
                // Partial Fisher-Yates: the first k of a uniform random permutation.
                for i in 0..k {
                    let j = rng.random_range(i..n);
                    idx.swap(i, j);
                }
                for &j in &idx[..k] {
                    row[j] = magnitude(cfg.magnitude, rng);
                }
            }
            Support::Bernoulli { p } => {
                for v in row.iter_mut() {
                    if rng.random_bool(p) {
                        *v = magnitude(cfg.magnitude, rng);
                    }
                }
            }
        }
    }
    z
}

/// Generates the dataset. A given `dictionary` is used with its rows scaled to unit norm.
pub fn generate(cfg: &SynthConfig, dictionary: Option<&Matrix>) -> Result<SynthData> {
    cfg.validate(dictionary)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut d = match dictionary {
        Some(d) => d.clone(),
        None => Matrix::from_fn(cfg.latents, cfg.dims, |_, _| {
            StandardNormal.sample(&mut rng)
        }),
    };
    normalize_rows(d.as_mut_slice(), cfg.dims);
    let make = |rows: usize, rng: &mut ChaCha8Rng| {
        let z = codes(cfg, rows, rng);
        SynthSplit {
            activations: crate::linalg::synthesize(&z, &d, None, crate::Parallelism::Serial),
            codes: z,
        }
    };
    let mut train = make(cfg.samples, &mut rng);
    let mut test = (cfg.test_samples > 0).then(|| make(cfg.test_samples, &mut rng));
    let mut noise_std = 0.0;
    if let Some(snr) = cfg.snr_db {
        let x = train.activations.as_slice();
        let power = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        noise_std = (power / 10f64.powf(snr / 10.0)).sqrt();
        for split in std::iter::once(&mut train).chain(test.as_mut()) {
            for v in split.activations.as_mut_slice() {
                *v += (noise_std * Distribution::<f64>::sample(&StandardNormal, &mut rng)) as f32;
            }
        }
    }
    Ok(SynthData {
        dictionary: d,
        train,
        test,
        noise_std,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_support_and_generative_model() {
        let cfg = SynthConfig {
            samples: 200,
            ..SynthConfig::e2(3)
        };
        let data = generate(&cfg, None).unwrap();
        for r in 0..200 {
            assert_eq!(
                data.train
                    .codes
                    .row(r)
                    .iter()
                    .filter(|v| **v != 0.0)
                    .count(),
                3
            );
            assert!(data.train.codes.row(r).iter().all(|v| *v >= 0.0));
        }
        let norms = crate::linalg::row_norms(&data.dictionary);
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5));
        let mut x = Matrix::zeros(200, 8);
        crate::linalg::matmul(
            x.as_mut_slice(),
            data.train.codes.view(),
            data.dictionary.view(),
            0.0,
            crate::Parallelism::Serial,
        );
        assert_eq!(x, data.train.activations);
        assert_eq!(data.test.as_ref().unwrap().codes.rows(), 1024);
        assert_eq!(generate(&cfg, None).unwrap(), data, "same seed, same bytes");
    }

    #[test]
    fn noise_reaches_target_snr_and_bernoulli_rate() {
        let cfg = SynthConfig {
            support: Support::Bernoulli { p: 0.1 },
            magnitude: Magnitude::SignedNormal,
            samples: 4000,
            test_samples: 0,
            snr_db: Some(10.0),
            latents: 50,
            dims: 20,
            seed: 1,
        };
        let noisy = generate(&cfg, None).unwrap();
        let clean = generate(
            &SynthConfig {
                snr_db: None,
                ..cfg.clone()
            },
            None,
        )
        .unwrap();
        let sig: f64 = clean
            .train
            .activations
            .as_slice()
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum();
        let noise: f64 = noisy
            .train
            .activations
            .as_slice()
            .iter()
            .zip(clean.train.activations.as_slice())
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let snr = 10.0 * (sig / noise).log10();
        assert!((snr - 10.0).abs() < 0.2, "{snr}");
        let rate = crate::eval::l0(&clean.train.codes) / 50.0;
        assert!((rate - 0.1).abs() < 0.01, "{rate}");
    }

    #[test]
    fn rejects_impossible_parameters() {
        let e = SynthConfig {
            support: Support::Exact { k: 17 },
            ..SynthConfig::e2(0)
        }
        .validate(None)
        .unwrap_err();
        assert!(e.to_string().contains("`active`"), "{e}");
        let d = Matrix::zeros(16, 7);
        assert!(SynthConfig::e2(0)
            .validate(Some(&d))
            .unwrap_err()
            .to_string()
            .contains("dictionary"));
    }
}
