//! The networks of the experiment: one training recipe for the classifier (and for the
//! regression control), and their held-out accuracy.

use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sparsecode::classify::{fit, Act, Classifier, ClassifierShape, FitParams, Targets};
use sparsecode::{Matrix, Parallelism, Result};

/// How the networks are trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetSettings {
    /// Widths of the hidden layers before the representation.
    pub hidden: Vec<usize>,
    /// Adam steps.
    pub steps: usize,
    /// Rows per step.
    pub batch: usize,
    /// Adam's learning rate.
    pub lr: f32,
    /// Initial temperature `e^t` of the normalised head (learned from there).
    pub temperature: f32,
}

/// A network before and after training.
pub struct Trained {
    /// At initialisation.
    pub untrained: Classifier,
    /// After training.
    pub trained: Classifier,
    /// Loss of the first and the last step.
    pub loss: (f64, f64),
}

/// Initialises a tanh MLP of representation width `width` with `outputs` outputs and trains it
/// on `targets` (steps from `s`, or `steps` when given).
pub fn train_net(
    x: &Matrix,
    targets: Targets<'_>,
    (width, outputs, normalized): (usize, usize, bool),
    s: &NetSettings,
    seed: u64,
    par: Parallelism,
) -> Result<Trained> {
    let shape = ClassifierShape {
        d_in: x.cols(),
        hidden: s.hidden.clone(),
        features: width,
        classes: outputs,
        act: Act::Tanh,
        normalized,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut untrained = Classifier::init(shape, &mut rng)?;
    untrained.set_temperature(s.temperature)?;
    let mut trained = untrained.clone();
    let p = FitParams {
        steps: s.steps,
        batch: s.batch,
        lr: s.lr,
        seed: seed ^ 0x5eed,
    };
    let losses = fit(&mut trained, x, targets, &p, par)?;
    let loss = (
        losses.first().copied().unwrap_or(f64::NAN),
        losses.last().copied().unwrap_or(f64::NAN),
    );
    Ok(Trained {
        untrained,
        trained,
        loss,
    })
}

/// Fraction of rows whose largest logit is their label.
pub fn accuracy(net: &Classifier, x: &Matrix, labels: &[usize], par: Parallelism) -> f64 {
    let logits = net.outputs(x, par);
    let hits = labels
        .iter()
        .enumerate()
        .filter(|(r, &y)| {
            let row = logits.row(*r);
            let best = (0..row.len())
                .max_by(|a, b| row[*a].total_cmp(&row[*b]))
                .unwrap_or(0);
            best == y
        })
        .count();
    hits as f64 / labels.len().max(1) as f64
}
