//! The cluster-centric data-generating process of Reizinger et al. 2024 (arXiv 2410.21869,
//! REFERENCE section 7): `C` unit class vectors `v_c` in `R^d`, latents `z | c ~ vMF(v_c, kappa)`
//! on the sphere `S^{d-1}`, and observations `x = g(z)` through a random injective MLP.
//!
//! von Mises-Fisher samples by Wood's rejection sampler (1994): the component along the mean,
//! `w`, is drawn by proposing `w = (1 - (1 + b) B) / (1 - (1 - b) B)` with
//! `B ~ Beta((d-1)/2, (d-1)/2)`, `b = (-2 kappa + sqrt(4 kappa^2 + (d-1)^2)) / (d-1)`, accepted when
//! `kappa w + (d-1) ln(1 - x0 w) - c >= ln U` (`x0 = (1-b)/(1+b)`,
//! `c = kappa x0 + (d-1) ln(1 - x0^2)`); the rest of `z` is a uniform direction orthogonal to the
//! mean, scaled by `sqrt(1 - w^2)`.
//!
//! The generator `g`: layers `D x d`, then `D x D`, with `tanh` after each and weights
//! `N(0, gain^2 / fan_in)`; `tanh` is injective and the random matrices have full column rank
//! with probability one, so `g` is injective; `gain` sets how far from linear it is (measure it:
//! the held-out R^2 of `z` from `x` is reported as a control).

use crate::{Error, Matrix, Result};
use rand::Rng;
use rand_distr::{Beta, Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// The parameters of the cluster-centric process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Latent dimension `d` (latents live on `S^{d-1}`).
    pub dim: usize,
    /// Number of classes `C`.
    pub classes: usize,
    /// vMF concentration around each class vector.
    pub kappa: f64,
    /// Width `D` of the observations.
    pub obs_dim: usize,
    /// Layers of the generator.
    pub depth: usize,
    /// Weight scale of the generator (larger: more nonlinear).
    pub gain: f32,
}

impl ClusterConfig {
    /// Refuses what has no meaning, naming the field.
    pub fn check(&self) -> Result<()> {
        if self.dim < 2 {
            return Err(Error::param(
                "dim",
                format!("{} (the sphere needs d >= 2)", self.dim),
            ));
        }
        if self.classes < 2 {
            return Err(Error::param(
                "classes",
                format!("{} (at least 2)", self.classes),
            ));
        }
        if !(self.kappa > 0.0 && self.kappa.is_finite()) {
            return Err(Error::param(
                "kappa",
                format!("{} (must be positive)", self.kappa),
            ));
        }
        check_generator(self.dim, self.obs_dim, self.depth, self.gain)
    }
}

/// Refuses a generator `R^dim -> R^obs_dim` that cannot be injective or has no meaning
/// (`obs_dim < dim`, no layer, a gain that is not positive), naming the field.
pub(crate) fn check_generator(dim: usize, obs_dim: usize, depth: usize, gain: f32) -> Result<()> {
    if obs_dim < dim || depth == 0 {
        return Err(Error::param(
            "obs_dim",
            format!(
                "{obs_dim} with depth {depth} (an injective generator needs obs_dim >= the latent width {dim} and depth >= 1)"
            ),
        ));
    }
    if !(gain > 0.0 && gain.is_finite()) {
        return Err(Error::param("gain", format!("{gain} (must be positive)")));
    }
    Ok(())
}

/// A random injective MLP `R^d -> R^D`.
#[derive(Clone, Debug, PartialEq)]
pub struct Generator {
    layers: Vec<Matrix>,
}

impl Generator {
    /// Draws the generator's weights.
    pub fn new<R: Rng>(dim: usize, obs_dim: usize, depth: usize, gain: f32, rng: &mut R) -> Self {
        let layers = (0..depth)
            .map(|l| {
                let fan_in = if l == 0 { dim } else { obs_dim };
                let s = gain / (fan_in as f32).sqrt();
                Matrix::from_fn(obs_dim, fan_in, |_, _| {
                    s * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, rng)
                })
            })
            .collect();
        Generator { layers }
    }

    /// `g(z)` for the rows of `z`.
    pub fn apply(&self, z: &Matrix) -> Matrix {
        let mut a = z.clone();
        for w in &self.layers {
            let mut out = Matrix::zeros(a.rows(), w.rows());
            for r in 0..a.rows() {
                for (o, wr) in out.row_mut(r).iter_mut().zip(0..w.rows()) {
                    let dot: f32 = a.row(r).iter().zip(w.row(wr)).map(|(p, q)| p * q).sum();
                    *o = dot.tanh();
                }
            }
            a = out;
        }
        a
    }
}

/// Samples of the process.
#[derive(Clone, Debug)]
pub struct ClusterSamples {
    /// Latents `[n, d]`, unit rows.
    pub z: Matrix,
    /// Class of each sample.
    pub labels: Vec<usize>,
    /// Observations `g(z)`, `[n, D]`.
    pub x: Matrix,
}

/// `count` directions uniform on `S^{d-1}`, as rows.
pub fn unit_vectors<R: Rng>(count: usize, d: usize, rng: &mut R) -> Matrix {
    let mut m = Matrix::from_fn(count, d, |_, _| {
        <StandardNormal as Distribution<f32>>::sample(&StandardNormal, rng)
    });
    crate::linalg::normalize_rows(m.as_mut_slice(), d);
    m
}

/// One vMF sample with unit mean `mu` and concentration `kappa` (Wood 1994).
pub fn von_mises_fisher<R: Rng>(mu: &[f32], kappa: f64, rng: &mut R) -> Vec<f32> {
    let d = mu.len();
    let m1 = (d - 1) as f64;
    let b = (-2.0 * kappa + (4.0 * kappa * kappa + m1 * m1).sqrt()) / m1;
    let x0 = (1.0 - b) / (1.0 + b);
    let c = kappa * x0 + m1 * (1.0 - x0 * x0).ln();
    let beta = Beta::new(m1 / 2.0, m1 / 2.0).expect("(d-1)/2 > 0 for d >= 2");
    let w = loop {
        let z: f64 = beta.sample(rng);
        let w = (1.0 - (1.0 + b) * z) / (1.0 - (1.0 - b) * z);
        let u: f64 = rng.random::<f64>();
        if kappa * w + m1 * (1.0 - x0 * w).ln() - c >= u.max(f64::MIN_POSITIVE).ln() {
            break w;
        }
    };
    // A uniform direction orthogonal to mu.
    let mut v: Vec<f64> = (0..d)
        .map(|_| <StandardNormal as Distribution<f64>>::sample(&StandardNormal, rng))
        .collect();
    let along: f64 = v.iter().zip(mu).map(|(a, m)| a * *m as f64).sum();
    v.iter_mut()
        .zip(mu)
        .for_each(|(a, m)| *a -= along * *m as f64);
    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
    let r = (1.0 - w * w).max(0.0).sqrt();
    v.iter()
        .zip(mu)
        .map(|(a, m)| (w * *m as f64 + r * a / norm) as f32)
        .collect()
}

/// The class vectors, the generator and `n` samples with uniformly drawn classes.
pub fn sample_clusters<R: Rng>(
    cfg: &ClusterConfig,
    n: usize,
    rng: &mut R,
) -> Result<(Matrix, Generator, ClusterSamples)> {
    cfg.check()?;
    crate::memory::admit_array(
        "cluster samples [n, dim + obs_dim]",
        &[n, cfg.dim + cfg.obs_dim],
        8,
    )?;
    let centres = unit_vectors(cfg.classes, cfg.dim, rng);
    let g = Generator::new(cfg.dim, cfg.obs_dim, cfg.depth, cfg.gain, rng);
    let samples = draw(cfg, &centres, &g, n, rng);
    Ok((centres, g, samples))
}

/// `n` more samples of a process already set up (held-out data).
pub fn draw<R: Rng>(
    cfg: &ClusterConfig,
    centres: &Matrix,
    g: &Generator,
    n: usize,
    rng: &mut R,
) -> ClusterSamples {
    let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..cfg.classes)).collect();
    let mut z = Matrix::zeros(n, cfg.dim);
    for (r, &c) in labels.iter().enumerate() {
        let s = von_mises_fisher(centres.row(c), cfg.kappa, rng);
        z.row_mut(r).copy_from_slice(&s);
    }
    let x = g.apply(&z);
    ClusterSamples { z, labels, x }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn vmf_samples_are_unit_and_concentrate_as_kappa_grows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mu = [0.0f32, 0.6, 0.8, 0.0, 0.0];
        for (kappa, lo, hi) in [
            (1.0, 0.17, 0.22),
            (20.0, 0.895, 0.91),
            (500.0, 0.995, 0.997),
        ] {
            let n = 4000;
            let mean_cos: f64 = (0..n)
                .map(|_| {
                    let z = von_mises_fisher(&mu, kappa, &mut rng);
                    let norm: f32 = z.iter().map(|v| v * v).sum::<f32>().sqrt();
                    assert!((norm - 1.0).abs() < 1e-5);
                    z.iter().zip(&mu).map(|(a, b)| (a * b) as f64).sum::<f64>()
                })
                .sum::<f64>()
                / n as f64;
            // E[w] = A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa); for d = 5 the Bessel
            // recurrence gives A_5 = 1 / A_3 - 3 / kappa with A_3 = coth(kappa) - 1 / kappa:
            // 0.194 at kappa = 1, 0.9026 at 20, 0.9960 at 500.
            assert!(mean_cos > lo && mean_cos < hi, "kappa {kappa}: {mean_cos}");
        }
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let ok = ClusterConfig {
            dim: 5,
            classes: 10,
            kappa: 20.0,
            obs_dim: 20,
            depth: 3,
            gain: 2.0,
        };
        assert!(ok.check().is_ok());
        for (cfg, field) in [
            (
                ClusterConfig {
                    classes: 1,
                    ..ok.clone()
                },
                "classes",
            ),
            (
                ClusterConfig {
                    kappa: 0.0,
                    ..ok.clone()
                },
                "kappa",
            ),
            (
                ClusterConfig {
                    dim: 1,
                    ..ok.clone()
                },
                "dim",
            ),
            (
                ClusterConfig {
                    obs_dim: 3,
                    ..ok.clone()
                },
                "obs_dim",
            ),
        ] {
            assert!(
                cfg.check().unwrap_err().to_string().contains(field),
                "{field}"
            );
        }
    }
}
