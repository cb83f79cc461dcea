//! Synthetic superposition: `x = z D (+ noise)` with `z` sparse (exactly K active per sample, or
//! each latent active with probability p), magnitudes from a chosen distribution, and `D` a
//! dictionary of unit-norm atoms (rows), Gaussian unless given.
//!
//! Two kinds of structure between supports can be planted, with the truth kept in the config:
//! - **Hierarchy** ([`Hierarchy`]): latents `0..P` are parents, and parent `p` has the children
//!   `P + p C .. P + (p + 1) C`; a sample in which a child is active also carries its parent
//!   (drawn with its own magnitude when the base draw left it silent), so a child implies its
//!   parent and a parent can fire alone. The feature-absorption setting of arXiv 2409.14507.
//!   The parents a child brings come on top of the base draw's K.
//! - **Correlation** ([`Correlation`]): consecutive blocks of latents share a Gaussian factor,
//!   `g_j = sqrt(rho) f_block(j) + sqrt(1 - rho) e_j`; with exactly K active the K largest `g_j`
//!   fire, with firing probability p those with `g_j` above the `1 - p` quantile of N(0, 1). The
//!   marginal rate of each latent is unchanged; `rho` is the correlation of the latent
//!   Gaussians, and supports within a block co-occur more the larger it is.

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

/// Parents with children that imply them (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hierarchy {
    /// Parent latents, `0..parents`.
    pub parents: usize,
    /// Children per parent, after the parents.
    pub children: usize,
}

impl Hierarchy {
    /// Every (parent, child) pair, parents in order.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        (0..self.parents)
            .flat_map(|p| {
                let first = self.parents + p * self.children;
                (first..first + self.children).map(move |c| (p, c))
            })
            .collect()
    }

    /// The parent of latent `j`, when `j` is a child.
    fn parent_of(&self, j: usize) -> Option<usize> {
        let c = j.checked_sub(self.parents)?;
        (c < self.parents * self.children).then(|| c / self.children)
    }
}

/// Correlated supports within blocks of latents (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correlation {
    /// Correlation of the latent Gaussians within a block, in [0, 1).
    pub rho: f64,
    /// Latents per block (consecutive indices).
    pub block: usize,
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
    /// Parents and the children that imply them.
    #[serde(default)]
    pub hierarchy: Option<Hierarchy>,
    /// Correlated supports.
    #[serde(default)]
    pub correlation: Option<Correlation>,
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
            hierarchy: None,
            correlation: None,
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
        self.validate_structure()?;
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

    /// The hierarchy fits in the latents; the correlation is a number in [0, 1) over blocks of
    /// at least one latent.
    fn validate_structure(&self) -> Result<()> {
        if let Some(h) = self.hierarchy {
            let used = h
                .children
                .checked_add(1)
                .and_then(|c| c.checked_mul(h.parents));
            if h.parents == 0 || h.children == 0 || used.is_none_or(|u| u > self.latents) {
                return Err(Error::param(
                    "hierarchy",
                    format!(
                        "{} parents with {} children each need 1 + children latents per parent, at least one of each, within the {} latents",
                        h.parents, h.children, self.latents
                    ),
                ));
            }
        }
        if let Some(c) = self.correlation {
            if !(c.rho >= 0.0 && c.rho < 1.0) {
                return Err(Error::param(
                    "correlation",
                    format!("rho = {} must be in [0, 1)", c.rho),
                ));
            }
            if c.block == 0 {
                return Err(Error::param(
                    "correlation",
                    "a block needs at least 1 latent",
                ));
            }
        }
        Ok(())
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
    let mut scores = Vec::new();
    let bernoulli_cut = match (cfg.correlation, cfg.support) {
        (Some(_), Support::Bernoulli { p }) => normal_upper_quantile(p),
        _ => f64::INFINITY,
    };
    for r in 0..rows {
        let row = z.row_mut(r);
        match (cfg.correlation, cfg.support) {
            (None, Support::Exact { k }) => {
                // Partial Fisher-Yates: the first k of a uniform random permutation.
                for i in 0..k {
                    let j = rng.random_range(i..n);
                    idx.swap(i, j);
                }
                for &j in &idx[..k] {
                    row[j] = magnitude(cfg.magnitude, rng);
                }
            }
            (None, Support::Bernoulli { p }) => {
                for v in row.iter_mut() {
                    if rng.random_bool(p) {
                        *v = magnitude(cfg.magnitude, rng);
                    }
                }
            }
            (Some(c), support) => {
                factor_scores(c, n, rng, &mut scores);
                let fire: Vec<usize> = match support {
                    Support::Exact { k } => {
                        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
                        idx[..k].to_vec()
                    }
                    Support::Bernoulli { .. } => {
                        (0..n).filter(|&j| scores[j] > bernoulli_cut).collect()
                    }
                };
                for j in fire {
                    row[j] = magnitude(cfg.magnitude, rng);
                }
            }
        }
        if let Some(h) = cfg.hierarchy {
            imply_parents(h, row, cfg.magnitude, rng);
        }
    }
    z
}

/// `g_j = sqrt(rho) f_block(j) + sqrt(1 - rho) e_j` for every latent, into `out`.
fn factor_scores(c: Correlation, n: usize, rng: &mut ChaCha8Rng, out: &mut Vec<f64>) {
    out.clear();
    let (shared, own) = (c.rho.sqrt(), (1.0 - c.rho).sqrt());
    let mut factor = 0.0;
    for j in 0..n {
        if j % c.block == 0 {
            factor = Distribution::<f64>::sample(&StandardNormal, rng);
        }
        out.push(shared * factor + own * Distribution::<f64>::sample(&StandardNormal, rng));
    }
}

/// Every active child's parent fires too (with a magnitude of its own when it was silent).
fn imply_parents(h: Hierarchy, row: &mut [f32], m: Magnitude, rng: &mut ChaCha8Rng) {
    for j in h.parents..h.parents + h.parents * h.children {
        if let (true, Some(p)) = (row[j] != 0.0, h.parent_of(j)) {
            if row[p] == 0.0 {
                row[p] = magnitude(m, rng);
            }
        }
    }
}

/// The `t` with `P(N(0, 1) > t) = p`, by bisection on `erfc` (to far below f32 resolution).
fn normal_upper_quantile(p: f64) -> f64 {
    let tail = |t: f64| 0.5 * libm::erfc(t / std::f64::consts::SQRT_2);
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if tail(mid) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
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
            hierarchy: None,
            correlation: None,
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

    /// Pearson correlation of the supports (active or not) of latents `a` and `b`.
    fn support_correlation(z: &Matrix, a: usize, b: usize) -> f64 {
        let on = |r: usize, j: usize| (z.get(r, j) != 0.0) as u8 as f64;
        let n = z.rows() as f64;
        let (ma, mb) = (
            (0..z.rows()).map(|r| on(r, a)).sum::<f64>() / n,
            (0..z.rows()).map(|r| on(r, b)).sum::<f64>() / n,
        );
        let cov = (0..z.rows())
            .map(|r| (on(r, a) - ma) * (on(r, b) - mb))
            .sum::<f64>()
            / n;
        cov / (ma * (1.0 - ma) * mb * (1.0 - mb)).sqrt()
    }

    #[test]
    fn a_child_implies_its_parent_and_parents_also_fire_alone() {
        let h = Hierarchy {
            parents: 2,
            children: 3,
        };
        assert_eq!(h.pairs(), [(0, 2), (0, 3), (0, 4), (1, 5), (1, 6), (1, 7)]);
        let cfg = SynthConfig {
            latents: 20,
            support: Support::Bernoulli { p: 0.15 },
            samples: 4000,
            hierarchy: Some(h),
            ..SynthConfig::e2(4)
        };
        let z = generate(&cfg, None).unwrap().train.codes;
        let (mut with_child, mut alone) = (0, 0);
        for r in 0..z.rows() {
            for (p, c) in h.pairs() {
                if z.get(r, c) != 0.0 {
                    assert!(z.get(r, p) > 0.0, "row {r}: child {c} without parent {p}");
                    with_child += 1;
                }
            }
            let children_of_0 = (2..5).any(|c| z.get(r, c) != 0.0);
            alone += (z.get(r, 0) != 0.0 && !children_of_0) as usize;
        }
        assert!(with_child > 1000 && alone > 200, "{with_child} {alone}");
        // A parent fires when drawn or brought by a child: 1 - 0.85^4; latents outside the
        // hierarchy keep their rate and stay independent of it.
        let rate = |j: usize| (0..z.rows()).filter(|&r| z.get(r, j) != 0.0).count() as f64 / 4000.0;
        assert!(
            (rate(0) - (1.0 - 0.85f64.powi(4))).abs() < 0.03,
            "{}",
            rate(0)
        );
        assert!((rate(12) - 0.15).abs() < 0.02, "{}", rate(12));
        let unrelated = support_correlation(&z, 0, 12);
        assert!(unrelated.abs() < 0.05, "{unrelated}");
        assert!(support_correlation(&z, 0, 2) > 0.2);
    }

    #[test]
    fn correlated_supports_co_occur_within_blocks_at_the_same_rate() {
        for support in [Support::Exact { k: 4 }, Support::Bernoulli { p: 0.15 }] {
            let make = |rho: f64| {
                let cfg = SynthConfig {
                    latents: 24,
                    support,
                    samples: 8000,
                    correlation: Some(Correlation { rho, block: 4 }),
                    ..SynthConfig::e2(5)
                };
                generate(&cfg, None).unwrap().train.codes
            };
            let (none, some, strong) = (make(0.0), make(0.5), make(0.9));
            let within = |z: &Matrix| support_correlation(z, 8, 9);
            let across = |z: &Matrix| support_correlation(z, 8, 12);
            // Exactly K makes any two supports anti-correlated by about 1 / (N - 1).
            assert!(within(&none).abs() < 0.08, "{support:?}: {}", within(&none));
            assert!(within(&some) > 0.1, "{support:?}: {}", within(&some));
            assert!(within(&strong) > within(&some) + 0.1, "{support:?}");
            // Across blocks: no positive co-occurrence (exactly K makes it slightly negative).
            assert!(across(&strong) < 0.05, "{support:?}: {}", across(&strong));
            // The marginal rate of a latent is unchanged.
            let rate = |z: &Matrix| {
                (0..z.rows()).filter(|&r| z.get(r, 9) != 0.0).count() as f64 / z.rows() as f64
            };
            assert!((rate(&strong) - rate(&none)).abs() < 0.02, "{support:?}");
        }
    }

    #[test]
    fn the_upper_normal_quantile_inverts_the_tail() {
        for (p, t) in [
            (0.5, 0.0),
            (0.15865525393145707, 1.0),
            (0.022750131948179195, 2.0),
        ] {
            assert!((normal_upper_quantile(p) - t).abs() < 1e-9, "{p}");
        }
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
        for (hierarchy, correlation) in [
            (
                Some(Hierarchy {
                    parents: 4,
                    children: 4,
                }),
                None,
            ),
            (
                Some(Hierarchy {
                    parents: 0,
                    children: 3,
                }),
                None,
            ),
            (None, Some(Correlation { rho: 1.0, block: 4 })),
            (None, Some(Correlation { rho: 0.5, block: 0 })),
            (
                None,
                Some(Correlation {
                    rho: f64::NAN,
                    block: 2,
                }),
            ),
        ] {
            let cfg = SynthConfig {
                hierarchy,
                correlation,
                ..SynthConfig::e2(0)
            };
            let e = cfg.validate(None).unwrap_err().to_string();
            let field = if hierarchy.is_some() {
                "hierarchy"
            } else {
                "correlation"
            };
            assert!(e.contains(field), "{e}");
        }
    }
}
