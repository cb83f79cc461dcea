//! The theorem's setting (Reizinger et al. 2024): latents on `S^{d-1}` in vMF clusters, a tanh
//! generator, a classifier with unit features, unit class vectors and a learned temperature;
//! the held-out R^2 of a linear map from its features to the latents, against the same network
//! untrained and against the raw observations, as the generator's gain makes `g` less linear.
//! The same with a plain (unnormalised, biased) head shows what the normalisation buys.

use super::nets::{train_net, NetSettings};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sparsecode::classify::Targets;
use sparsecode::data::clusters::{draw, sample_clusters, ClusterConfig};
use sparsecode::eval::linear_r2;
use sparsecode::{Parallelism, Result};

/// Parameters of the theorem's setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TheoremParams {
    /// The process (its `gain` is overridden by each of `gains`).
    pub process: ClusterConfig,
    /// Generator gains to run.
    pub gains: Vec<f32>,
    /// Training samples.
    pub samples: usize,
    /// Held-out samples.
    pub test_samples: usize,
    /// The classifier's training.
    pub net: NetSettings,
}

/// One run: a gain and a head.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TheoremRow {
    /// Generator gain.
    pub gain: f32,
    /// `normalised` (the theorem's) or `plain`.
    pub head: String,
    /// Held-out R^2 of the latents from the trained network's unit features.
    pub trained: f64,
    /// The same for the network at initialisation.
    pub untrained: f64,
    /// Held-out R^2 of the latents from the raw observations.
    pub observations: f64,
    /// Held-out accuracy of the trained classifier.
    pub accuracy: f64,
}

impl TheoremRow {
    /// The row as results.json holds it (`trained` / `untrained` / `controls`).
    pub fn json(&self) -> Value {
        json!({
            "setting": format!("theorem gain {} {} head", self.gain, self.head),
            "gain": self.gain,
            "head": self.head,
            "trained": {"linear_r2": self.trained, "accuracy": self.accuracy},
            "untrained": {"linear_r2": self.untrained},
            "controls": {"observations": {"linear_r2": self.observations}},
        })
    }
}

/// Runs every gain with both heads.
pub fn run(p: &TheoremParams, seed: u64, par: Parallelism) -> Result<Vec<TheoremRow>> {
    let mut rows = Vec::new();
    for (i, &gain) in p.gains.iter().enumerate() {
        let cfg = ClusterConfig {
            gain,
            ..p.process.clone()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64));
        let (centres, g, train) = sample_clusters(&cfg, p.samples, &mut rng)?;
        let test = draw(&cfg, &centres, &g, p.test_samples, &mut rng);
        let observations = linear_r2(&train.x, &train.z, &test.x, &test.z)?;
        for normalized in [true, false] {
            let net = train_net(
                &train.x,
                Targets::Labels(&train.labels),
                (cfg.dim, cfg.classes, normalized),
                &p.net,
                seed.wrapping_add(100 + i as u64),
                par,
            )?;
            let r2 = |n: &sparsecode::classify::Classifier| {
                linear_r2(
                    &n.features(&train.x, true, par),
                    &train.z,
                    &n.features(&test.x, true, par),
                    &test.z,
                )
            };
            rows.push(TheoremRow {
                gain,
                head: if normalized { "normalised" } else { "plain" }.into(),
                trained: r2(&net.trained)?,
                untrained: r2(&net.untrained)?,
                observations,
                accuracy: super::nets::accuracy(&net.trained, &test.x, &test.labels, par),
            });
        }
    }
    Ok(rows)
}
