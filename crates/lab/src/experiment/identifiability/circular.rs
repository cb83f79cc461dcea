//! Latents that are not Euclidean: `F` circular factors (angles, such as a day of the week).
//! Each class fixes a centre angle per factor and draws each angle from a von Mises law around
//! it; the generator sees `u = (cos t_1, sin t_1, ..., cos t_F, sin t_F)`. A classifier is
//! trained on `x = g(u)`, then a TopK SAE and dictionary learning with more atoms than `2F` run
//! on its representation.
//!
//! What they make of a circle: each learned feature is assigned to the factor whose angle
//! explains most of its activation (the correlation ratio `eta^2` over 12 angle bins: the
//! variance of the bin means over the total variance, kept when `>= 0.5`), and its arc is the
//! fraction of the circle where its bin mean is above half its largest bin mean. A feature per
//! direction of a linear latent would be one wide arc per sign; SAEs are known to tile a circle
//! with many narrow arcs instead.

use super::chain::ChainParams;
use super::nets::train_net;
use super::score::{train_topk, unit_rms};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sparsecode::classify::Targets;
use sparsecode::coding::{fista, learn_dictionary, DictLearnParams, FistaParams};
use sparsecode::data::clusters::{unit_vectors, von_mises_fisher, Generator};
use sparsecode::eval::{code_mcc, linear_r2, HUNGARIAN_MAX};
use sparsecode::{Error, Matrix, Parallelism, Result};

const BINS: usize = 12;

/// Parameters of the circular study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircularParams {
    /// Circular factors `F`.
    pub factors: usize,
    /// Classes.
    pub classes: usize,
    /// von Mises concentration of each angle around its class's centre.
    pub kappa: f64,
    /// Representation width `M` of the classifier.
    pub width: usize,
    /// Atoms of the SAE and of dictionary learning.
    pub atoms: usize,
    /// k of the TopK SAE.
    pub k: usize,
}

impl CircularParams {
    /// Three circles, 60 classes, M = 16, 32 atoms.
    pub fn full() -> Self {
        CircularParams {
            factors: 3,
            classes: 60,
            kappa: 4.0,
            width: 16,
            atoms: 32,
            k: 6,
        }
    }

    /// The same (it is small).
    pub fn quick() -> Self {
        Self::full()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.factors == 0 || self.classes < 2 || self.width == 0 || self.k == 0 {
            return Err(Error::param(
                "circular",
                format!(
                    "{} factors, {} classes, M = {}, k = {} (need factors, M, k >= 1 and >= 2 classes)",
                    self.factors, self.classes, self.width, self.k
                ),
            ));
        }
        if self.atoms < 2 * self.factors || self.k > self.atoms {
            return Err(Error::param(
                "atoms",
                format!(
                    "{} atoms with k = {} (need 2F = {} <= atoms and k <= atoms)",
                    self.atoms,
                    self.k,
                    2 * self.factors
                ),
            ));
        }
        Ok(())
    }
}

/// What one method made of the circles.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CircularRow {
    /// `SAE` or `dictionary learning`.
    pub method: String,
    /// Features assigned to each factor.
    pub features_per_factor: Vec<usize>,
    /// Median arc of the assigned features (fraction of the circle).
    pub median_arc: f64,
    /// Code MCC against `(cos, sin)` of every factor.
    pub code_mcc: f64,
    /// Held-out R^2 of the representation from `(cos, sin)`.
    pub linear_r2: f64,
}

struct Angles {
    theta: Vec<Vec<f64>>,
    u: Matrix,
    labels: Vec<usize>,
}

fn draw<R: rand::Rng>(p: &CircularParams, centres: &Matrix, n: usize, rng: &mut R) -> Angles {
    let f = p.factors;
    let mut u = Matrix::zeros(n, 2 * f);
    let mut theta = vec![vec![0.0; f]; n];
    let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..p.classes)).collect();
    for (r, &c) in labels.iter().enumerate() {
        for j in 0..f {
            let mu = &centres.row(c)[2 * j..2 * j + 2];
            let s = von_mises_fisher(mu, p.kappa, rng);
            u.row_mut(r)[2 * j..2 * j + 2].copy_from_slice(&s);
            theta[r][j] = (s[1] as f64).atan2(s[0] as f64);
        }
    }
    Angles { theta, u, labels }
}

/// Trains the classifier on the circles and runs both methods on its representation.
pub fn run(
    p: &CircularParams,
    chain: &ChainParams,
    seed: u64,
    par: Parallelism,
) -> Result<Vec<CircularRow>> {
    p.validate()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let f = p.factors;
    let mut centres = Matrix::zeros(p.classes, 2 * f);
    for j in 0..f {
        let dirs = unit_vectors(p.classes, 2, &mut rng);
        for c in 0..p.classes {
            centres.row_mut(c)[2 * j..2 * j + 2].copy_from_slice(dirs.row(c));
        }
    }
    let g = Generator::new(
        2 * f,
        chain.process.obs_dim,
        chain.process.depth,
        2.0,
        &mut rng,
    );
    let train = draw(p, &centres, chain.samples, &mut rng);
    let test = draw(p, &centres, chain.test_samples, &mut rng);
    let (x_train, x_test) = (g.apply(&train.u), g.apply(&test.u));
    let net = train_net(
        &x_train,
        Targets::Labels(&train.labels),
        (p.width, p.classes, false),
        &chain.net,
        seed,
        par,
    )?
    .trained;
    let (h_train, h_test) = unit_rms(
        &net.features(&x_train, false, par),
        &net.features(&x_test, false, par),
    );
    let linear = linear_r2(&train.u, &h_train, &test.u, &h_test)?;
    let sae = train_topk(
        &h_train,
        1.0,
        p.atoms,
        p.k,
        chain.coders.sae_steps,
        seed,
        par,
    )?;
    let sae_codes = sae.encode_dense(&h_test, par);
    let dl = learn_dictionary(
        &h_train.slice_rows(0, chain.coders.dl_rows.clamp(1, h_train.rows())),
        &DictLearnParams {
            atoms: p.atoms,
            lambda: chain.coders.dl_lambda,
            nonneg: true,
            max_iter: 200,
            tol: 1e-4,
            seed,
            restarts: 1,
            ..DictLearnParams::default()
        },
        par,
    )?;
    let fp = FistaParams {
        lambda: chain.coders.dl_lambda,
        nonneg: true,
        ..FistaParams::default()
    };
    let dl_codes = fista(&h_test, &dl.dictionary, None, &fp, par)?.codes;
    [("SAE", sae_codes), ("dictionary learning", dl_codes)]
        .into_iter()
        .map(|(name, codes)| {
            let (per_factor, arcs) = arcs(&codes, &test.theta, f);
            Ok(CircularRow {
                method: name.into(),
                features_per_factor: per_factor,
                median_arc: median(arcs),
                code_mcc: code_mcc(&test.u, &codes, HUNGARIAN_MAX, par)?.0,
                linear_r2: linear,
            })
        })
        .collect()
}

/// Features assigned to each factor and the arcs of the assigned features.
fn arcs(codes: &Matrix, theta: &[Vec<f64>], factors: usize) -> (Vec<usize>, Vec<f64>) {
    let mut per_factor = vec![0usize; factors];
    let mut widths = Vec::new();
    for j in 0..codes.cols() {
        let a: Vec<f64> = (0..codes.rows()).map(|r| codes.get(r, j) as f64).collect();
        let best = (0..factors)
            .map(|f| {
                let t: Vec<f64> = theta.iter().map(|row| row[f]).collect();
                (f, bin_means(&a, &t))
            })
            .map(|(f, (eta2, means))| (f, eta2, means))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        if let Some((f, eta2, means)) = best {
            if eta2 >= 0.5 {
                per_factor[f] += 1;
                let top = means.iter().copied().fold(0.0, f64::max);
                let wide = means.iter().filter(|m| **m > top / 2.0).count();
                widths.push(wide as f64 / BINS as f64);
            }
        }
    }
    (per_factor, widths)
}

/// `eta^2` of `a` over 12 bins of the angle `t`, and the bin means.
fn bin_means(a: &[f64], t: &[f64]) -> (f64, Vec<f64>) {
    let mut sum = [0.0f64; BINS];
    let mut count = [0usize; BINS];
    for (v, th) in a.iter().zip(t) {
        let frac = (th + std::f64::consts::PI) / (2.0 * std::f64::consts::PI);
        let b = ((frac * BINS as f64) as usize).min(BINS - 1);
        sum[b] += v;
        count[b] += 1;
    }
    let n = a.len().max(1) as f64;
    let mean = a.iter().sum::<f64>() / n;
    let total: f64 = a.iter().map(|v| (v - mean).powi(2)).sum();
    let means: Vec<f64> = (0..BINS).map(|b| sum[b] / count[b].max(1) as f64).collect();
    let between: f64 = (0..BINS)
        .map(|b| count[b] as f64 * (means[b] - mean).powi(2))
        .sum();
    let eta2 = if total > 0.0 { between / total } else { 0.0 };
    (eta2, means)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feature that is `max(0, cos t)` covers half the circle (6 of 12 bins above half its
    /// peak... the bins whose mean cosine exceeds 0.5 are 4: |t| < 60 degrees) and is assigned
    /// to its factor; a constant feature is assigned to none.
    #[test]
    fn arcs_assign_features_and_measure_their_width() {
        let n = 12_000;
        let theta: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let t = -std::f64::consts::PI
                    + 2.0 * std::f64::consts::PI * (i as f64 + 0.5) / n as f64;
                vec![t, 0.3]
            })
            .collect();
        let codes = Matrix::from_fn(n, 2, |r, c| {
            if c == 0 {
                theta[r][0].cos().max(0.0) as f32
            } else {
                1.0
            }
        });
        let (per_factor, widths) = arcs(&codes, &theta, 2);
        assert_eq!(per_factor, vec![1, 0]);
        assert_eq!(widths.len(), 1);
        assert!((widths[0] - 4.0 / 12.0).abs() < 1e-9, "{widths:?}");
    }
}
