//! Training by mini-batch Adam on the cross-entropy: batches drawn with replacement from a
//! seeded stream, so a run is the same for the same seed and thread count.

use super::Classifier;
use crate::{Error, Matrix, Parallelism, Result};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitParams {
    /// Optimiser steps.
    pub steps: usize,
    /// Rows per step.
    pub batch: usize,
    /// Adam's learning rate.
    pub lr: f32,
    /// Seed of the batch stream.
    pub seed: u64,
}

/// What the network is trained to output.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// A class per row (cross-entropy).
    Labels(&'a [usize]),
    /// A target vector per row (mean squared error; plain head only).
    Values(&'a Matrix),
}

impl Targets<'_> {
    fn rows(&self) -> usize {
        match self {
            Targets::Labels(l) => l.len(),
            Targets::Values(v) => v.rows(),
        }
    }
}

/// Trains `net` on `x` and `targets`; returns the loss of every step.
pub fn fit(
    net: &mut Classifier,
    x: &Matrix,
    targets: Targets<'_>,
    p: &FitParams,
    par: Parallelism,
) -> Result<Vec<f64>> {
    if x.rows() == 0 || targets.rows() != x.rows() {
        return Err(Error::shape(
            "classifier training data",
            "at least one row, and one target per row".to_string(),
            format!("{} rows and {} targets", x.rows(), targets.rows()),
        ));
    }
    if p.batch == 0 || !(p.lr > 0.0 && p.lr.is_finite()) {
        return Err(Error::param(
            "batch/lr",
            format!("batch {} and lr {} (both must be positive)", p.batch, p.lr),
        ));
    }
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let sizes: Vec<usize> = net.params().iter().map(|t| t.len()).collect();
    let mut m: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
    let mut v = m.clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed);
    let mut losses = Vec::with_capacity(p.steps);
    for step in 1..=p.steps {
        let rows: Vec<usize> = (0..p.batch)
            .map(|_| rng.random_range(0..x.rows()))
            .collect();
        let bx = x.select_rows(&rows);
        let (loss, grads) = match targets {
            Targets::Labels(labels) => {
                let by: Vec<usize> = rows.iter().map(|&r| labels[r]).collect();
                net.loss_grad(&bx, &by, par)?
            }
            Targets::Values(y) => net.regression_loss_grad(&bx, &y.select_rows(&rows), par)?,
        };
        losses.push(loss);
        let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for (((param, g), m), v) in net
            .params_mut()
            .into_iter()
            .zip(&grads)
            .zip(&mut m)
            .zip(&mut v)
        {
            for k in 0..param.len() {
                m[k] = b1 * m[k] + (1.0 - b1) * g[k];
                v[k] = b2 * v[k] + (1.0 - b2) * g[k] * g[k];
                param[k] -= p.lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps);
            }
        }
    }
    Ok(losses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Act, ClassifierShape};
    use crate::data::clusters::{draw, sample_clusters, ClusterConfig};
    use crate::eval::linear_r2;

    /// The theorem's setting (d = 5, C = 100, kappa = 20, a 3-layer tanh generator, as the
    /// PyTorch check of REFERENCE section 7): after training, the unit features are far more
    /// linear in the latents than an untrained network's, and more than the raw observations.
    #[test]
    fn cross_entropy_training_makes_the_features_linear_in_the_latents() {
        let cfg = ClusterConfig {
            dim: 5,
            classes: 100,
            kappa: 20.0,
            obs_dim: 20,
            depth: 3,
            gain: 6.0,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (centres, g, train) = sample_clusters(&cfg, 10000, &mut rng).unwrap();
        let test = draw(&cfg, &centres, &g, 2000, &mut rng);
        let shape = ClassifierShape {
            d_in: 20,
            hidden: vec![64, 64],
            features: 5,
            classes: 100,
            act: Act::Tanh,
            normalized: true,
        };
        let untrained = Classifier::init(shape, &mut rng).unwrap();
        let mut net = untrained.clone();
        let par = Parallelism::Serial;
        let p = FitParams {
            steps: 3000,
            batch: 256,
            lr: 3e-3,
            seed: 1,
        };
        let losses = fit(&mut net, &train.x, Targets::Labels(&train.labels), &p, par).unwrap();
        let r2 = |n: &Classifier| {
            linear_r2(
                &n.features(&train.x, true, par),
                &train.z,
                &n.features(&test.x, true, par),
                &test.z,
            )
            .unwrap()
        };
        let (trained, before) = (r2(&net), r2(&untrained));
        let raw = linear_r2(&train.x, &train.z, &test.x, &test.z).unwrap();
        assert!(
            losses[losses.len() - 1] < 0.7 * losses[0],
            "{} -> {}",
            losses[0],
            losses[losses.len() - 1]
        );
        // Measured at this seed: trained 0.83, untrained 0.34, raw observations 0.72 (a
        // strongly nonlinear generator; at gain 2 the trained network reaches 0.98).
        assert!(
            trained > before + 0.3 && trained > raw,
            "trained {trained}, untrained {before}, raw {raw}"
        );
    }
}
