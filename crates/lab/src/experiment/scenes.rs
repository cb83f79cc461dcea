//! The identifiability chain on images with ground truth: rendered scenes whose factors are
//! known and sparse ([`sparsecode::data::scenes`]), a classifier trained on a label derived from
//! them (the kind of the largest object), its penultimate activations (trained and at
//! initialisation) written to activation stores in the run folder ([`super::activations`], with
//! the true factors beside them as `.npy`), and each representation scored from its stores
//! exactly as the planted chain scores its own (linear R^2 both ways, code MCC of a TopK SAE
//! streamed from the store and of dictionary learning; [`super::identifiability::score`]).

use super::activations::{self, StoredSplit};
use super::identifiability::nets::{accuracy, train_net, NetSettings};
use super::identifiability::score::{score_stored, CoderSettings, Repr, ReprScore};
use super::{Report, Table};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sparsecode::classify::{Classifier, Targets};
use sparsecode::data::scenes::{draw, SceneConfig, FACTORS};
use sparsecode::io::npy::write_matrix;
use sparsecode::{Error, Matrix, Parallelism, Result};
use std::path::Path;

/// Parameters of the experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenesParams {
    /// The scenes.
    pub scene: SceneConfig,
    /// Training scenes.
    pub samples: usize,
    /// Held-out scenes.
    pub test_samples: usize,
    /// Width of the representation (the penultimate layer).
    pub width: usize,
    /// The classifier's training.
    pub net: NetSettings,
    /// The sparse coders run on the representation.
    pub coders: CoderSettings,
    /// Seed of the scenes, the networks and the coders.
    pub seed: u64,
}

impl ScenesParams {
    /// Minutes on 2 cores: 16 x 16 scenes.
    pub fn quick() -> Self {
        ScenesParams {
            scene: SceneConfig {
                size: 16,
                ..SceneConfig::default()
            },
            samples: 8_000,
            test_samples: 2_000,
            width: 64,
            net: NetSettings {
                hidden: vec![128],
                steps: 2500,
                batch: 256,
                lr: 2e-3,
                temperature: 1.0,
            },
            coders: CoderSettings {
                sae_steps: 1500,
                dl_rows: 1500,
                dl_lambda: 0.05,
            },
            seed: 0,
        }
    }

    /// 32 x 32 scenes, more of them, longer training.
    pub fn full() -> Self {
        let mut p = Self::quick();
        p.scene.size = 32;
        p.samples = 30_000;
        p.test_samples = 5_000;
        p.width = 128;
        p.net.hidden = vec![256];
        p.net.steps = 8000;
        p.coders = CoderSettings {
            sae_steps: 4000,
            dl_rows: 4000,
            dl_lambda: 0.05,
        };
        p
    }

    fn validate(&self) -> Result<()> {
        self.scene.check()?;
        if self.samples == 0 || self.test_samples == 0 || self.width == 0 {
            return Err(Error::param(
                "samples, test_samples, width",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The scores of the trained and the untrained network.
#[derive(Clone, Debug, Serialize)]
pub struct ScenesResults {
    /// Factors per scene that are non-zero (objects x 5) of all (kinds x 5).
    pub active: (usize, usize),
    /// The trained network's representation.
    pub trained: ReprScore,
    /// The same network at initialisation.
    pub untrained: ReprScore,
}

/// Draws the scenes, trains the classifier, stores both networks' activations and the factors
/// under `run_dir`, and scores both representations.
pub fn run(p: &ScenesParams, run_dir: &Path, par: Parallelism) -> Result<ScenesResults> {
    p.validate()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed);
    let train = draw(&p.scene, p.samples, &mut rng)?;
    let test = draw(&p.scene, p.test_samples, &mut rng)?;
    let kinds = p.scene.kinds();
    let net = train_net(
        &train.x,
        Targets::Labels(&train.labels),
        (p.width, kinds, false),
        &p.net,
        p.seed ^ 0x5ce7e,
        par,
    )?;
    write_factors(run_dir, &train.z, &test.z)?;
    let k = p.scene.objects * FACTORS;
    let scored = |n: &Classifier, name: &str| -> Result<ReprScore> {
        let rep = Repr {
            train: &n.features(&train.x, false, par),
            test: &n.features(&test.x, false, par),
        };
        let meta = json!({"experiment": "scenes", "model_name": format!("scenes MLP ({name})"), "hook_name": "penultimate", "seed": p.seed});
        let stored = StoredSplit::write(run_dir, name, (rep.train, rep.test), &meta)?;
        let z = (&train.z, &test.z);
        let mut s = score_stored(rep, &stored.train, z, k, &p.coders, p.seed, par)?;
        s.accuracy = Some(accuracy(n, &test.x, &test.labels, par));
        Ok(s)
    };
    Ok(ScenesResults {
        active: (k, kinds * FACTORS),
        trained: scored(&net.trained, "trained")?,
        untrained: scored(&net.untrained, "untrained")?,
    })
}

/// The true factors of the stored rows: `activations/factors-{train,test}.npy`.
fn write_factors(run_dir: &Path, train: &Matrix, test: &Matrix) -> Result<()> {
    let dir = run_dir.join(activations::FOLDER);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    write_matrix(&dir.join("factors-train.npy"), train)?;
    write_matrix(&dir.join("factors-test.npy"), test)
}

/// One row per network.
pub fn report(p: &ScenesParams, r: &ScenesResults) -> Report {
    let mut t = Table::new(
        "The classifier's representation against the scenes' true factors (held out)",
        &[
            "network",
            "accuracy",
            "R² h ~ z",
            "R² z ~ h",
            "TopK SAE code MCC",
            "dictionary learning code MCC",
        ],
    );
    for (name, s) in [("trained", &r.trained), ("untrained", &r.untrained)] {
        t.push(vec![
            name.into(),
            format!("{:.3}", s.accuracy.unwrap_or(f64::NAN)),
            format!("{:.3}", s.linear_r2),
            format!("{:.3}", s.inverse_r2),
            format!("{:.3}", s.code_mcc),
            format!("{:.3}", s.dict_code_mcc),
        ]);
    }
    let summary = format!(
        "{n} training and {m} held-out {s}x{s} RGB scenes, {o} of {kinds} object kinds each (3 shapes x 4 colours; position, scale, orientation per object): {a} of {f} factors non-zero. A tanh MLP (hidden {h:?}, representation width {w}) learns the kind of the largest object ({kinds} classes); its representation, trained and at initialisation, is scored against the factors: linear R² both ways, and code MCC of a TopK SAE ({f} latents, k = {a}) and of dictionary learning.",
        n = p.samples,
        m = p.test_samples,
        s = p.scene.size,
        o = p.scene.objects,
        kinds = p.scene.kinds(),
        a = r.active.0,
        f = r.active.1,
        h = p.net.hidden,
        w = p.width,
    );
    Report {
        name: "scenes".into(),
        summary,
        tables: vec![t],
        notes: vec![
            activations::note("trained"),
            format!("The true factors of those rows are `{}/factors-train.npy` and `{}/factors-test.npy`; the untrained network's activations are beside the trained one's.", activations::FOLDER, activations::FOLDER),
        ],
        json: serde_json::to_value(r).unwrap_or_default(),
        plots: Vec::new(),
        images: Vec::new(),
    }
}
