//! A cluster-centric process with K-sparse latents (issue 13's sparse chain): each of `C` classes
//! has a sparse prototype, a set `P_c` of `K` of the `N` latents, and its samples are an
//! exponential tilt of one sparse base law towards it, so that the class posterior is
//! log-linear in `z`, as in the theorem of Reizinger et al. 2024 (REFERENCE section 7).
//!
//! ```text
//! base q(z):     support S uniform among the K-subsets of {1..N}, z_i ~ Exp(1) for i in S, else 0
//! class c:       p(z | c) ∝ q(z) exp(<theta_c, z>),   theta_ci = 1 - 1/mu for i in P_c, else 0
//! posterior:     log p(c | z) = <theta_c, z> - log Z_c + const(z)        (affine in z)
//! ```
//!
//! Sampling the tilt exactly: it factorises into a support law `P(S | c) ∝ prod_{i in S} r_ci`
//! with `r_ci = 1 / (1 - theta_ci)` (`mu` on the prototype, 1 elsewhere) and magnitudes
//! `z_i | S, c ~ Exp(1 - theta_ci)` (mean `mu` on the prototype, 1 elsewhere). The support is
//! drawn item by item from the elementary symmetric polynomials `e_j` of the `r` over the items
//! not yet decided: item `i` is taken with probability `r_i e_{j-1}(i+1..) / e_j(i..)` while `j`
//! items remain to take. `z` is then divided by `mu` (prototype entries `Exp(1)`, the others of
//! mean `1 / mu`); `mu` (`contrast`) sets how strongly a class pins its support.
//!
//! Observations `x = g(s z)` through the same random injective `tanh` MLP as the vMF process,
//! with `s = sqrt(N / 2K)` so that `||s z||^2` is about `N` (the scale the generator's gain is
//! set for; `E z_i^2 = 2` on the prototype).

use super::clusters::{ClusterSamples, Generator};
use crate::{Error, Matrix, Result};
use rand::seq::index::sample;
use rand::Rng;
use rand_distr::{Distribution, Exp1};
use serde::{Deserialize, Serialize};

/// The parameters of the sparse-prototype process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrototypeConfig {
    /// Latents `N`.
    pub latents: usize,
    /// Active latents per sample `K` (and per prototype).
    pub k: usize,
    /// Classes `C`.
    pub classes: usize,
    /// Mean magnitude on a class's prototype relative to elsewhere (`mu >= 1`; 1: no classes).
    pub contrast: f64,
    /// Width `D` of the observations.
    pub obs_dim: usize,
    /// Layers of the generator.
    pub depth: usize,
    /// Weight scale of the generator (larger: more nonlinear).
    pub gain: f32,
}

impl PrototypeConfig {
    /// Refuses what has no meaning, naming the field.
    pub fn check(&self) -> Result<()> {
        if self.k == 0 || self.k >= self.latents {
            return Err(Error::param(
                "k",
                format!(
                    "{} active of {} latents (need 1 <= K < N)",
                    self.k, self.latents
                ),
            ));
        }
        if self.classes < 2 {
            return Err(Error::param(
                "classes",
                format!("{} (at least 2)", self.classes),
            ));
        }
        if !(self.contrast >= 1.0 && self.contrast.is_finite()) {
            return Err(Error::param(
                "contrast",
                format!("{} (must be a finite number >= 1)", self.contrast),
            ));
        }
        super::clusters::check_generator(self.latents, self.obs_dim, self.depth, self.gain)
    }
}

/// A drawn process: the prototypes and the generator.
#[derive(Clone, Debug)]
pub struct Prototypes {
    cfg: PrototypeConfig,
    /// Each class's support weights' elementary symmetric polynomials, `[(N + 1) x (K + 1)]`.
    tables: Vec<Vec<f64>>,
    /// Each class's prototype (sorted latent indices).
    supports: Vec<Vec<usize>>,
    generator: Generator,
}

impl Prototypes {
    /// Draws the prototypes (uniform K-subsets) and the generator.
    pub fn new<R: Rng>(cfg: &PrototypeConfig, rng: &mut R) -> Result<Self> {
        cfg.check()?;
        crate::memory::admit_array(
            "prototype tables [classes, (N + 1) (K + 1)]",
            &[cfg.classes, cfg.latents + 1, cfg.k + 1],
            8,
        )?;
        let supports: Vec<Vec<usize>> = (0..cfg.classes)
            .map(|_| {
                let mut s = sample(rng, cfg.latents, cfg.k).into_vec();
                s.sort_unstable();
                s
            })
            .collect();
        let tables = supports.iter().map(|s| symmetric_table(cfg, s)).collect();
        let generator = Generator::new(cfg.latents, cfg.obs_dim, cfg.depth, cfg.gain, rng);
        Ok(Prototypes {
            cfg: cfg.clone(),
            tables,
            supports,
            generator,
        })
    }

    /// Class `c`'s prototype.
    pub fn support(&self, c: usize) -> &[usize] {
        &self.supports[c]
    }

    /// `n` samples with uniformly drawn classes.
    pub fn draw<R: Rng>(&self, n: usize, rng: &mut R) -> Result<ClusterSamples> {
        let cfg = &self.cfg;
        crate::memory::admit_array(
            "prototype samples [n, N + obs_dim]",
            &[n, cfg.latents + cfg.obs_dim],
            8,
        )?;
        let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..cfg.classes)).collect();
        let mut z = Matrix::zeros(n, cfg.latents);
        for (r, &c) in labels.iter().enumerate() {
            self.draw_one(c, z.row_mut(r), rng);
        }
        let s = (cfg.latents as f32 / (2 * cfg.k) as f32).sqrt();
        let mut scaled = z.clone();
        scaled.as_mut_slice().iter_mut().for_each(|v| *v *= s);
        let x = self.generator.apply(&scaled);
        Ok(ClusterSamples { z, labels, x })
    }

    fn draw_one<R: Rng>(&self, c: usize, out: &mut [f32], rng: &mut R) {
        let (n, k, mu) = (self.cfg.latents, self.cfg.k, self.cfg.contrast);
        let e = &self.tables[c];
        let on = &self.supports[c];
        let mut left = k;
        for i in 0..n {
            if left == 0 {
                break;
            }
            let r = if on.binary_search(&i).is_ok() {
                mu
            } else {
                1.0
            };
            let take = r * e[(i + 1) * (k + 1) + left - 1] / e[i * (k + 1) + left];
            if rng.random::<f64>() < take {
                let mean = r / mu;
                let v: f64 = Exp1.sample(rng);
                out[i] = (v * mean) as f32;
                left -= 1;
            }
        }
    }
}

/// `e[i][j]`: the degree-`j` elementary symmetric polynomial of the weights of items `i..N`.
fn symmetric_table(cfg: &PrototypeConfig, support: &[usize]) -> Vec<f64> {
    let (n, k) = (cfg.latents, cfg.k);
    let mut e = vec![0.0f64; (n + 1) * (k + 1)];
    e[n * (k + 1)] = 1.0;
    for i in (0..n).rev() {
        let r = if support.binary_search(&i).is_ok() {
            cfg.contrast
        } else {
            1.0
        };
        for j in 0..=k {
            let mut v = e[(i + 1) * (k + 1) + j];
            if j > 0 {
                v += r * e[(i + 1) * (k + 1) + j - 1];
            }
            e[i * (k + 1) + j] = v;
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cfg() -> PrototypeConfig {
        PrototypeConfig {
            latents: 8,
            k: 2,
            classes: 3,
            contrast: 6.0,
            obs_dim: 12,
            depth: 2,
            gain: 2.0,
        }
    }

    /// The support law against its definition: with weights `mu` on the prototype and 1
    /// elsewhere, `P(S = P_c) = mu^2 / e_2` where `e_2 = C(6, 2) + 2 * 6 mu + mu^2` for N = 8,
    /// K = 2 (prototype pairs, one-in-one-out pairs, prototype-free pairs).
    #[test]
    fn supports_follow_the_tilted_law_and_samples_are_k_sparse() {
        let c = cfg();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let p = Prototypes::new(&c, &mut rng).unwrap();
        let s = p.draw(20000, &mut rng).unwrap();
        let mu = c.contrast;
        let expect = mu * mu / (15.0 + 12.0 * mu + mu * mu);
        let mut hits = 0usize;
        let mut count = 0usize;
        for r in 0..s.z.rows() {
            let row = s.z.row(r);
            assert_eq!(row.iter().filter(|v| **v > 0.0).count(), c.k);
            assert!(row.iter().all(|v| *v >= 0.0));
            if s.labels[r] == 0 {
                count += 1;
                hits += p.support(0).iter().all(|&i| row[i] > 0.0) as usize;
            }
        }
        let got = hits as f64 / count as f64;
        assert!((got - expect).abs() < 0.03, "{got} vs {expect}");
        assert_eq!(s.x.shape(), (20000, 12));
        assert!(s.x.as_slice().iter().all(|v| v.abs() < 1.0));
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        for (bad, field) in [
            (PrototypeConfig { k: 8, ..cfg() }, "k"),
            (PrototypeConfig { k: 0, ..cfg() }, "k"),
            (
                PrototypeConfig {
                    classes: 1,
                    ..cfg()
                },
                "classes",
            ),
            (
                PrototypeConfig {
                    contrast: 0.5,
                    ..cfg()
                },
                "contrast",
            ),
            (
                PrototypeConfig {
                    obs_dim: 4,
                    ..cfg()
                },
                "obs_dim",
            ),
        ] {
            let e = bad.check().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
