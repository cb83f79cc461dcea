//! The seed's whole chain with ground truth at both ends: K-sparse latents `z` in `R^N` from the
//! sparse-prototype process, observations `x = g(z)`, a classifier of representation width `M`
//! trained by cross-entropy, then how linear `h` is in `z` and what an SAE and dictionary
//! learning recover from `h`, against the controls: the same network untrained, a network of
//! the same shape trained by MSE regression onto a fixed random nonlinear function of `x` (an
//! objective with no reason to identify `z`), sparse coding on `x` itself (nonlinear mixing),
//! and a random linear projection `z P` to width `M` (what a perfectly linear network would
//! give: the compressed-sensing part alone).
//!
//! The theorem's statement for latents in `R^N` (Roeder et al. 2021; Reizinger et al. 2024)
//! concerns the unnormalised `h` of a network whose logits are `<h, v_c> + b_c`: at the
//! optimum they equal the log-posterior, affine in `z` here by construction, so `h = A z + c`
//! when the class vectors span `R^M`. The classifier here therefore has a plain head with class
//! biases; the unit features `h / ||h||` are scored too, for comparison.

use super::nets::{accuracy, train_net, NetSettings};
use super::score::{score, with_unit_features, CoderSettings, Repr, ReprScore};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sparsecode::classify::{Classifier, Targets};
use sparsecode::data::clusters::{unit_vectors, ClusterSamples, Generator};
use sparsecode::data::prototypes::{PrototypeConfig, Prototypes};
use sparsecode::{Matrix, Parallelism, Result};
use std::collections::BTreeMap;

/// Parameters of the sparse chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainParams {
    /// The process.
    pub process: PrototypeConfig,
    /// Representation widths `M` to sweep.
    pub widths: Vec<usize>,
    /// Training samples.
    pub samples: usize,
    /// Held-out samples.
    pub test_samples: usize,
    /// The networks' training.
    pub net: NetSettings,
    /// The sparse coders.
    pub coders: CoderSettings,
    /// Outputs of the regression control's random target function.
    pub regression_outputs: usize,
}

/// One run of the chain: the process, the width and what is done to the training.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Variation {
    /// Name in the tables.
    pub label: String,
    /// The process.
    pub process: PrototypeConfig,
    /// Width `M`.
    pub width: usize,
    /// Fraction of training labels replaced by uniformly drawn classes.
    pub label_noise: f64,
    /// Extra input columns that encode the (training) label: a shortcut.
    pub shortcut_dims: usize,
    /// Training steps.
    pub steps: usize,
    /// Whether to run the controls too.
    pub controls: bool,
}

/// The scores of one variation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChainResult {
    /// The variation's name.
    pub setting: String,
    /// Width `M`.
    pub width: usize,
    /// Active latents `K`.
    pub k: usize,
    /// Classes.
    pub classes: usize,
    /// The trained classifier.
    pub trained: ReprScore,
    /// The same network at initialisation.
    pub untrained: ReprScore,
    /// The controls, by name.
    pub controls: BTreeMap<String, ReprScore>,
}

/// The planted data of one variation.
struct Planted {
    train: ClusterSamples,
    test: ClusterSamples,
    train_labels: Vec<usize>,
    x_train: Matrix,
    x_test: Matrix,
}

fn plant<R: Rng>(v: &Variation, p: &ChainParams, rng: &mut R) -> Result<Planted> {
    let process = Prototypes::new(&v.process, rng)?;
    let train = process.draw(p.samples, rng)?;
    let test = process.draw(p.test_samples, rng)?;
    let classes = v.process.classes;
    let train_labels: Vec<usize> = train
        .labels
        .iter()
        .map(|&c| {
            if rng.random::<f64>() < v.label_noise {
                rng.random_range(0..classes)
            } else {
                c
            }
        })
        .collect();
    let (x_train, x_test) = if v.shortcut_dims > 0 {
        let codes = unit_vectors(classes, v.shortcut_dims, rng);
        (
            with_shortcut(&train.x, &codes, &train_labels),
            with_shortcut(&test.x, &codes, &test.labels),
        )
    } else {
        (train.x.clone(), test.x.clone())
    };
    Ok(Planted {
        train,
        test,
        train_labels,
        x_train,
        x_test,
    })
}

/// `[x, codes[label]]` row by row.
fn with_shortcut(x: &Matrix, codes: &Matrix, labels: &[usize]) -> Matrix {
    let d = x.cols();
    Matrix::from_fn(x.rows(), d + codes.cols(), |r, c| {
        if c < d {
            x.get(r, c)
        } else {
            codes.get(labels[r], c - d)
        }
    })
}

/// Runs one variation.
pub fn run_variation(
    v: &Variation,
    p: &ChainParams,
    seed: u64,
    par: Parallelism,
) -> Result<ChainResult> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let d = plant(v, p, &mut rng)?;
    let k = v.process.k;
    let net_settings = NetSettings {
        steps: v.steps,
        ..p.net.clone()
    };
    let net = train_net(
        &d.x_train,
        Targets::Labels(&d.train_labels),
        (v.width, v.process.classes, false),
        &net_settings,
        seed ^ 0xc1a55,
        par,
    )?;
    let mut scored = Vec::new();
    for n in [&net.trained, &net.untrained] {
        let mut s = score_network(n, &d, k, &p.coders, seed, par)?;
        s.accuracy = Some(accuracy(n, &d.x_test, &d.test.labels, par));
        scored.push(s);
    }
    let untrained = scored.pop().expect("two scores");
    let trained = scored.pop().expect("two scores");
    let controls = if v.controls {
        controls(v, p, &d, seed, par)?
    } else {
        BTreeMap::new()
    };
    Ok(ChainResult {
        setting: v.label.clone(),
        width: v.width,
        k,
        classes: v.process.classes,
        trained,
        untrained,
        controls,
    })
}

/// A network's representation `h`, scored, with its unit features' R^2.
fn score_network(
    net: &Classifier,
    d: &Planted,
    k: usize,
    coders: &CoderSettings,
    seed: u64,
    par: Parallelism,
) -> Result<ReprScore> {
    let z = (&d.train.z, &d.test.z);
    let (h_train, h_test) = (
        net.features(&d.x_train, false, par),
        net.features(&d.x_test, false, par),
    );
    let rep = || Repr {
        train: &h_train,
        test: &h_test,
    };
    let s = score(rep(), z, k, coders, seed, par)?;
    with_unit_features(s, rep(), z)
}

/// The regression network, the observations and the linear projection, scored alike.
fn controls(
    v: &Variation,
    p: &ChainParams,
    d: &Planted,
    seed: u64,
    par: Parallelism,
) -> Result<BTreeMap<String, ReprScore>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xc0ffee);
    let z = (&d.train.z, &d.test.z);
    let k = v.process.k;
    let mut out = BTreeMap::new();

    let target = Generator::new(d.x_train.cols(), p.regression_outputs, 2, 2.0, &mut rng);
    let y = target.apply(&d.x_train);
    let mse = train_net(
        &d.x_train,
        Targets::Values(&y),
        (v.width, p.regression_outputs, false),
        &NetSettings {
            steps: v.steps,
            ..p.net.clone()
        },
        seed ^ 0x3e5,
        par,
    )?
    .trained;
    out.insert(
        "mse_regression".into(),
        score_network(&mse, d, k, &p.coders, seed, par)?,
    );

    let obs = Repr {
        train: &d.train.x,
        test: &d.test.x,
    };
    out.insert(
        "observations".into(),
        score(obs, z, k, &p.coders, seed, par)?,
    );

    let n = v.process.latents;
    let proj = Matrix::from_fn(n, v.width, |_, _| {
        rng.sample::<f32, _>(rand_distr::StandardNormal) / (n as f32).sqrt()
    });
    let (l_train, l_test) = (project(&d.train.z, &proj), project(&d.test.z, &proj));
    let lin = Repr {
        train: &l_train,
        test: &l_test,
    };
    out.insert(
        "linear_projection".into(),
        score(lin, z, k, &p.coders, seed, par)?,
    );
    Ok(out)
}

fn project(z: &Matrix, p: &Matrix) -> Matrix {
    Matrix::from_fn(z.rows(), p.cols(), |r, c| {
        z.row(r)
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, v)| v * p.get(i, c))
            .sum()
    })
}
