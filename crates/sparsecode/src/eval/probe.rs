//! Linear probes: one-vs-rest logistic probes trained together by mini-batch Adam (SAEBench's
//! multi-probe, with an optional L1 penalty for choosing sparse latents), a class-balanced
//! logistic regression on a few features fitted by Newton's method (its k-sparse probes), and
//! the scores they are judged by (F1, balanced accuracy).
//!
//! Multi-probe loss over `n` rows and `C` probes, logits `z = x W^T + b`, targets `y` one-hot,
//! positive weight `pw_c = negatives_c / positives_c`:
//! `L = 1/(nC) sum -[pw_c y log s(z) + (1 - y) log(1 - s(z))] + l1/C sum |W| + l2/2 |W|^2`,
//! so `dL/dz = (pw_c y (s - 1) + (1 - y) s) / (nC)`.

use crate::linalg::cholesky::{cholesky, cholesky_solve};
use crate::linalg::matmul;
use crate::{Error, Matrix, Parallelism, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// How a multi-probe is trained.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MultiProbeParams {
    /// Passes over the rows.
    pub epochs: usize,
    /// Rows per step.
    pub batch: usize,
    /// Adam's learning rate at the start; it decays geometrically to `end_lr`.
    pub lr: f32,
    /// The learning rate at the end.
    pub end_lr: f32,
    /// L2 penalty (weight decay) on the weights.
    pub l2: f32,
    /// L1 penalty on the weights (per probe, averaged over probes).
    pub l1: f32,
    /// Seed of the row order.
    pub seed: u64,
}

impl Default for MultiProbeParams {
    /// SAEBench's ground-truth probe: 50 epochs of 4096 rows, lr 1e-2 to 1e-5, weight decay 1e-4.
    fn default() -> Self {
        MultiProbeParams {
            epochs: 50,
            batch: 4096,
            lr: 1e-2,
            end_lr: 1e-5,
            l2: 1e-4,
            l1: 0.0,
            seed: 0,
        }
    }
}

/// `C` one-vs-rest logistic probes over `d` features.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiProbe {
    /// `[C, d]`: probe `c`'s direction is row `c`.
    pub weights: Matrix,
    /// `[C]`.
    pub bias: Vec<f32>,
}

impl MultiProbe {
    /// Trains probes for the labels `0..classes` of the rows of `x`.
    pub fn fit(
        x: &Matrix,
        labels: &[usize],
        classes: usize,
        p: &MultiProbeParams,
        par: Parallelism,
    ) -> Result<Self> {
        let (n, d) = x.shape();
        check_fit(n, labels, classes, p)?;
        let mut positives = vec![0usize; classes];
        labels.iter().for_each(|&l| positives[l] += 1);
        let pos_weight: Vec<f32> = positives
            .iter()
            .map(|&k| (n - k) as f32 / k.max(1) as f32)
            .collect();
        let mut probe = MultiProbe {
            weights: Matrix::zeros(classes, d),
            bias: vec![0.0; classes],
        };
        let mut adam = AdamState::new(classes * d + classes);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed);
        let mut order: Vec<usize> = (0..n).collect();
        let steps_per_epoch = n.div_ceil(p.batch);
        let total = (p.epochs * steps_per_epoch).max(1);
        let decay = (p.end_lr / p.lr).powf(1.0 / total as f32);
        let mut lr = p.lr;
        for _ in 0..p.epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(p.batch) {
                let xb = x.select_rows(chunk);
                let yb: Vec<usize> = chunk.iter().map(|&r| labels[r]).collect();
                let g = probe.gradient(&xb, &yb, &pos_weight, p, par);
                adam.step(&mut probe, &g, lr);
                lr *= decay;
            }
        }
        Ok(probe)
    }

    /// Logits `[rows, C]`.
    pub fn scores(&self, x: &Matrix, par: Parallelism) -> Matrix {
        let (n, c) = (x.rows(), self.weights.rows());
        let mut z = Matrix::zeros(n, c);
        matmul(
            z.as_mut_slice(),
            x.view(),
            self.weights.view().t(),
            0.0,
            par,
        );
        for r in 0..n {
            z.row_mut(r)
                .iter_mut()
                .zip(&self.bias)
                .for_each(|(v, b)| *v += b);
        }
        z
    }

    /// The gradient of the loss on one batch: `[C * d]` weights then `[C]` biases.
    fn gradient(
        &self,
        x: &Matrix,
        labels: &[usize],
        pos_weight: &[f32],
        p: &MultiProbeParams,
        par: Parallelism,
    ) -> Vec<f32> {
        let (n, d) = x.shape();
        let c = self.weights.rows();
        let mut dz = self.scores(x, par);
        let norm = 1.0 / (n * c) as f32;
        for (r, &l) in labels.iter().enumerate() {
            for (j, v) in dz.row_mut(r).iter_mut().enumerate() {
                let s = 1.0 / (1.0 + (-*v).exp());
                *v = norm * if j == l { pos_weight[j] * (s - 1.0) } else { s };
            }
        }
        let mut g = vec![0.0f32; c * d + c];
        let (gw, gb) = g.split_at_mut(c * d);
        matmul(gw, dz.view().t(), x.view(), 0.0, par);
        for r in 0..n {
            gb.iter_mut().zip(dz.row(r)).for_each(|(a, v)| *a += v);
        }
        let l1 = p.l1 / c as f32;
        for (gv, w) in gw.iter_mut().zip(self.weights.as_slice()) {
            *gv += p.l2 * w + l1 * w.signum();
        }
        g
    }
}

fn check_fit(n: usize, labels: &[usize], classes: usize, p: &MultiProbeParams) -> Result<()> {
    if n == 0 || labels.len() != n {
        return Err(Error::shape(
            "probe training data",
            "at least one row and one label per row".to_string(),
            format!("{n} rows and {} labels", labels.len()),
        ));
    }
    if let Some(l) = labels.iter().find(|&&l| l >= classes) {
        return Err(Error::param(
            "labels",
            format!("label {l} is not one of the {classes} classes"),
        ));
    }
    if p.batch == 0 || !(p.lr > 0.0 && p.end_lr > 0.0) {
        return Err(Error::param(
            "probe",
            format!(
                "batch {} and learning rates {}, {} must be positive",
                p.batch, p.lr, p.end_lr
            ),
        ));
    }
    Ok(())
}

/// Adam's moments over a probe's parameters (weights then biases).
struct AdamState {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl AdamState {
    fn new(len: usize) -> Self {
        AdamState {
            m: vec![0.0; len],
            v: vec![0.0; len],
            t: 0,
        }
    }

    fn step(&mut self, probe: &mut MultiProbe, g: &[f32], lr: f32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        let params = probe
            .weights
            .as_mut_slice()
            .iter_mut()
            .chain(probe.bias.iter_mut());
        for (((w, &gv), m), v) in params.zip(g).zip(&mut self.m).zip(&mut self.v) {
            *m = b1 * *m + (1.0 - b1) * gv;
            *v = b2 * *v + (1.0 - b2) * gv * gv;
            *w -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
        }
    }
}

/// A class-balanced, lightly ridge-penalised logistic regression on a few features (standardised
/// inside), fitted by Newton's method: `decision(x) > 0` says positive.
#[derive(Clone, Debug, PartialEq)]
pub struct BalancedLogistic {
    /// Per feature: mean and scale of the standardisation.
    standardise: Vec<(f64, f64)>,
    /// Coefficients of the standardised features, then the intercept.
    beta: Vec<f64>,
}

impl BalancedLogistic {
    /// Fits the rows of `x` (a few columns) to `pos`.
    pub fn fit(x: &Matrix, pos: &[bool]) -> Self {
        let (n, k) = x.shape();
        let standardise: Vec<(f64, f64)> = (0..k)
            .map(|j| {
                let m = (0..n).map(|r| x.get(r, j) as f64).sum::<f64>() / n.max(1) as f64;
                let v = (0..n)
                    .map(|r| (x.get(r, j) as f64 - m).powi(2))
                    .sum::<f64>()
                    / n.max(1) as f64;
                (m, v.sqrt().max(1e-9))
            })
            .collect();
        let np = pos.iter().filter(|p| **p).count().max(1) as f64;
        let (wp, wn) = (
            n as f64 / (2.0 * np),
            n as f64 / (2.0 * (n as f64 - np).max(1.0)),
        );
        let mut model = BalancedLogistic {
            standardise,
            beta: vec![0.0; k + 1],
        };
        let d = k + 1;
        for _ in 0..25 {
            let mut g = vec![0.0f64; d];
            let mut h = vec![0.0f64; d * d];
            for (r, p) in pos.iter().enumerate() {
                let f = model.features(x, r);
                let t: f64 = f.iter().zip(&model.beta).map(|(a, b)| a * b).sum();
                let prob = 1.0 / (1.0 + (-t).exp());
                let (y, w) = if *p { (1.0, wp) } else { (0.0, wn) };
                for i in 0..d {
                    g[i] += w * (prob - y) * f[i];
                    for j in 0..d {
                        h[i * d + j] += w * prob * (1.0 - prob) * f[i] * f[j];
                    }
                }
            }
            for i in 0..d {
                g[i] += 1e-3 * model.beta[i];
                h[i * d + i] += 1e-3;
            }
            // The Hessian of the ridge-penalised loss is symmetric positive definite.
            if !cholesky(&mut h, d) {
                break;
            }
            let mut step = g;
            cholesky_solve(&h, d, &mut step);
            model.beta.iter_mut().zip(&step).for_each(|(b, s)| *b -= s);
            if step.iter().map(|s| s.abs()).fold(0.0, f64::max) < 1e-8 {
                break;
            }
        }
        model
    }

    /// Row `r` of `x` standardised, with a trailing 1 for the intercept.
    fn features(&self, x: &Matrix, r: usize) -> Vec<f64> {
        let mut f: Vec<f64> = self
            .standardise
            .iter()
            .enumerate()
            .map(|(j, (m, s))| (x.get(r, j) as f64 - m) / s)
            .collect();
        f.push(1.0);
        f
    }

    /// The decision value of every row (positive: the positive class).
    pub fn decision(&self, x: &Matrix) -> Vec<f64> {
        (0..x.rows())
            .map(|r| {
                let f = self.features(x, r);
                f.iter().zip(&self.beta).map(|(a, b)| a * b).sum()
            })
            .collect()
    }
}

/// The `k` columns whose means differ most between the positive and negative rows.
pub fn top_mean_difference(x: &Matrix, pos: &[bool], k: usize) -> Vec<usize> {
    let (mut a, mut b) = (vec![0.0f64; x.cols()], vec![0.0f64; x.cols()]);
    let np = pos.iter().filter(|p| **p).count().max(1) as f64;
    let nn = (pos.len() as f64 - np).max(1.0);
    for (r, p) in pos.iter().enumerate() {
        let acc = if *p { &mut a } else { &mut b };
        acc.iter_mut()
            .zip(x.row(r))
            .for_each(|(s, v)| *s += *v as f64);
    }
    let mut order: Vec<usize> = (0..x.cols()).collect();
    let diff = |j: usize| (a[j] / np - b[j] / nn).abs();
    order.sort_by(|i, j| diff(*j).total_cmp(&diff(*i)).then(i.cmp(j)));
    order.truncate(k.min(x.cols()));
    order
}

/// Mean of the true-positive rate and the true-negative rate.
pub fn balanced_accuracy(said: &[bool], pos: &[bool]) -> f64 {
    let (tp, fp, fn_, tn) = confusion(said, pos);
    0.5 * (ratio(tp, tp + fn_) + ratio(tn, tn + fp))
}

/// F1 of the positive class (0 when nothing is positive on either side).
pub fn f1(said: &[bool], pos: &[bool]) -> f64 {
    let (tp, fp, fn_, _) = confusion(said, pos);
    ratio(2 * tp, 2 * tp + fp + fn_)
}

fn confusion(said: &[bool], pos: &[bool]) -> (usize, usize, usize, usize) {
    let mut c = (0, 0, 0, 0);
    for (&s, &p) in said.iter().zip(pos) {
        match (s, p) {
            (true, true) => c.0 += 1,
            (true, false) => c.1 += 1,
            (false, true) => c.2 += 1,
            (false, false) => c.3 += 1,
        }
    }
    c
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    /// Rows `x = e_label * 3 + noise` in 8 dimensions, 4 classes.
    fn blobs(n: usize, seed: u64) -> (Matrix, Vec<usize>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<usize> = (0..n).map(|r| (r * 7 + r / 3) % 4).collect();
        let x = Matrix::from_fn(n, 8, |r, j| {
            let v: f32 = StandardNormal.sample(&mut rng);
            v + if j == labels[r] { 3.0 } else { 0.0 }
        });
        (x, labels)
    }

    #[test]
    fn multi_probe_separates_blobs_along_their_axes() {
        let (x, y) = blobs(2000, 1);
        let p = MultiProbeParams {
            epochs: 30,
            batch: 256,
            ..Default::default()
        };
        let probe = MultiProbe::fit(&x, &y, 4, &p, Parallelism::Serial).unwrap();
        let (xt, yt) = blobs(500, 2);
        let z = probe.scores(&xt, Parallelism::Serial);
        for c in 0..4 {
            let said: Vec<bool> = (0..500).map(|r| z.get(r, c) > 0.0).collect();
            let pos: Vec<bool> = yt.iter().map(|&l| l == c).collect();
            // Balanced positives (pos_weight) trade precision for recall.
            assert!(f1(&said, &pos) > 0.75, "class {c}: F1 {}", f1(&said, &pos));
            // The probe's direction points along its class's axis.
            let w = probe.weights.row(c);
            let best = (0..8).max_by(|&a, &b| w[a].total_cmp(&w[b])).unwrap();
            assert_eq!(best, c);
        }
    }

    #[test]
    fn an_l1_penalty_zeroes_the_irrelevant_weights() {
        let (x, y) = blobs(2000, 3);
        let plain = MultiProbeParams {
            epochs: 30,
            batch: 256,
            ..Default::default()
        };
        let sparse = MultiProbeParams {
            l1: 0.05,
            ..plain.clone()
        };
        let small = |p: &MultiProbeParams| {
            let probe = MultiProbe::fit(&x, &y, 4, p, Parallelism::Serial).unwrap();
            // The weight of class 0 on the unused axes 4..8, against its own axis.
            let w = probe.weights.row(0);
            w[4..].iter().map(|v| v.abs()).sum::<f32>() / w[0].abs()
        };
        assert!(
            small(&sparse) < 0.5 * small(&plain),
            "{} vs {}",
            small(&sparse),
            small(&plain)
        );
    }

    #[test]
    fn balanced_logistic_and_scores_on_an_easy_split() {
        let (x, y) = blobs(1000, 4);
        let pos: Vec<bool> = y.iter().map(|&l| l == 2).collect();
        let cols = top_mean_difference(&x, &pos, 1);
        assert_eq!(cols, [2]);
        let one = x.select_columns(&cols);
        let model = BalancedLogistic::fit(&one, &pos);
        let said: Vec<bool> = model.decision(&one).iter().map(|v| *v > 0.0).collect();
        assert!(balanced_accuracy(&said, &pos) > 0.9);
        assert!(f1(&said, &pos) > 0.8);
        assert_eq!(f1(&[false, false], &[false, false]), 0.0);
        assert_eq!(balanced_accuracy(&[true, false], &[true, false]), 1.0);
    }

    #[test]
    fn refuses_labels_out_of_range_and_empty_data() {
        let x = Matrix::zeros(3, 2);
        let p = MultiProbeParams::default();
        assert!(MultiProbe::fit(&x, &[0, 1, 5], 3, &p, Parallelism::Serial).is_err());
        assert!(MultiProbe::fit(&x, &[0, 1], 3, &p, Parallelism::Serial).is_err());
        let bad = MultiProbeParams { batch: 0, ..p };
        assert!(MultiProbe::fit(&x, &[0, 1, 2], 3, &bad, Parallelism::Serial).is_err());
    }
}
