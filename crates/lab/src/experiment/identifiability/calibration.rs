//! Sparsity calibration (the seed's third check): for planted K-sparse latents behind a trained
//! classifier, TopK SAEs over a grid of k on the representation `h`; the knee of the held-out
//! FVU-against-L0 curve (the point farthest below the chord, [`crate::experiment::sweep::knee`])
//! is the sparsity the SAE would report, and it is set against the true K.

use super::chain::{ChainParams, Variation};
use super::nets::train_net;
use super::score::{train_topk, unit_rms};
use rand::SeedableRng;
use serde::Serialize;
use sparsecode::classify::Targets;
use sparsecode::data::prototypes::{PrototypeConfig, Prototypes};
use sparsecode::eval::{fvu, l0};
use sparsecode::{Parallelism, Result};

/// The k values of the SAE grid.
pub const K_GRID: [usize; 9] = [1, 2, 3, 4, 6, 8, 12, 16, 24];

/// One true K.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalibrationRow {
    /// The planted K.
    pub true_k: usize,
    /// `(k, held-out L0, held-out FVU)` over the grid.
    pub curve: Vec<(usize, f64, f64)>,
    /// The k of the SAE at the knee (`None`: the curve does not bend).
    pub knee_k: Option<usize>,
    /// Its held-out L0.
    pub knee_l0: Option<f64>,
}

/// Runs every true K at representation width `width`.
pub fn run(
    p: &ChainParams,
    width: usize,
    ks: &[usize],
    seed: u64,
    par: Parallelism,
) -> Result<Vec<CalibrationRow>> {
    ks.iter()
        .map(|&k| {
            let process = PrototypeConfig {
                k,
                ..p.process.clone()
            };
            let v = Variation {
                label: format!("K = {k}"),
                process,
                width,
                label_noise: 0.0,
                shortcut_dims: 0,
                steps: p.net.steps,
                controls: false,
            };
            one(&v, p, seed, par)
        })
        .collect()
}

fn one(v: &Variation, p: &ChainParams, seed: u64, par: Parallelism) -> Result<CalibrationRow> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let process = Prototypes::new(&v.process, &mut rng)?;
    let train = process.draw(p.samples, &mut rng)?;
    let test = process.draw(p.test_samples, &mut rng)?;
    let net = train_net(
        &train.x,
        Targets::Labels(&train.labels),
        (v.width, v.process.classes, false),
        &p.net,
        seed ^ 0xc1a55,
        par,
    )?
    .trained;
    let (h_train, h_test) = unit_rms(
        &net.features(&train.x, false, par),
        &net.features(&test.x, false, par),
    );
    let n = v.process.latents;
    let mut curve = Vec::new();
    for &k in K_GRID.iter().filter(|&&k| k < n) {
        let sae = train_topk(&h_train, 1.0, n, k, p.coders.sae_steps, seed, par)?;
        let codes = sae.encode_dense(&h_test, par);
        let recon = sae.decode(&codes, par);
        curve.push((k, l0(&codes), fvu(&h_test, &recon)));
    }
    let points: Vec<(f64, f64)> = curve.iter().map(|c| (c.1, c.2)).collect();
    let knee = crate::experiment::sweep::knee(&points);
    Ok(CalibrationRow {
        true_k: v.process.k,
        knee_k: knee.map(|i| curve[i].0),
        knee_l0: knee.map(|i| curve[i].1),
        curve,
    })
}
