//! What the SAE experiments (sweep, stability) share: the data they train on (a user's matrix or
//! a planted problem with its truth) and one SAE training recipe.

use serde::{Deserialize, Serialize};
use sparsecode::data::{generate, Magnitude, RowSource, Support, SynthConfig};
use sparsecode::sae::Sae;
use sparsecode::train::{train, ArchConfig, NoObserver, TrainConfig};
use sparsecode::{Error, Matrix, Parallelism, Result};

/// Training and held-out activations, with the planted truth when there is one.
#[derive(Clone, Debug)]
pub struct ExperimentData {
    /// Where the data came from (for the report).
    pub source: String,
    /// Training rows.
    pub train: Matrix,
    /// Held-out rows (metrics are measured here).
    pub test: Matrix,
    /// The true dictionary and the true codes of `test`, for planted data.
    pub truth: Option<(Matrix, Matrix)>,
}

impl ExperimentData {
    /// A planted problem: N latents, M dims, K active, |N(0,1)| values.
    pub fn planted(n: usize, m: usize, k: usize, samples: usize, seed: u64) -> Result<Self> {
        let cfg = SynthConfig {
            latents: n,
            dims: m,
            support: Support::Exact { k },
            magnitude: Magnitude::AbsNormal,
            samples,
            test_samples: (samples / 4).max(1),
            snr_db: None,
            seed,
            hierarchy: None,
            correlation: None,
        };
        let d = generate(&cfg, None)?;
        let test = d
            .test
            .ok_or_else(|| Error::param("test_samples", "needed"))?;
        Ok(ExperimentData {
            source: format!("planted N={n}, M={m}, K={k}, {samples} samples (seed {seed})"),
            train: d.train.activations,
            test: test.activations,
            truth: Some((d.dictionary, test.codes)),
        })
    }

    /// A user's matrix: the last `test_fraction` of the rows are held out.
    pub fn from_matrix(source: String, x: Matrix, test_fraction: f64) -> Result<Self> {
        x.check_finite(&source)?;
        let rows = x.rows();
        let test = ((rows as f64 * test_fraction).round() as usize)
            .clamp(1, rows.saturating_sub(1).max(1));
        if rows < 2 {
            return Err(Error::Empty {
                context: source,
                reason: "need at least 2 rows (training and held-out)".into(),
            });
        }
        Ok(ExperimentData {
            source,
            train: x.slice_rows(0, rows - test),
            test: x.slice_rows(rows - test, rows),
            truth: None,
        })
    }
}

/// The SAE family a sweep or stability run trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaeKind {
    /// TopK with AuxK; the swept value is k.
    Topk,
    /// ReLU + L1; the swept value is the L1 coefficient.
    Relu,
}

impl SaeKind {
    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "topk" => Ok(SaeKind::Topk),
            "relu" => Ok(SaeKind::Relu),
            other => Err(Error::param(
                "arch",
                format!("unknown architecture '{other}' (expected topk or relu)"),
            )),
        }
    }

    /// The architecture with sparsity setting `value` (k for TopK, L1 for ReLU).
    pub fn arch(self, value: f64, d_in: usize, latents: usize) -> Result<ArchConfig> {
        match self {
            SaeKind::Topk => {
                if value.fract() != 0.0 || value < 1.0 || value as usize > latents {
                    return Err(Error::param(
                        "values",
                        format!("k = {value} must be a whole number in 1..={latents}"),
                    ));
                }
                Ok(ArchConfig::TopK {
                    k: value as usize,
                    aux_k: (d_in / 2).max(1),
                    aux_coef: 1.0 / 32.0,
                })
            }
            SaeKind::Relu => {
                if !(value >= 0.0 && value.is_finite()) {
                    return Err(Error::param(
                        "values",
                        format!("L1 coefficient {value} must be finite and >= 0"),
                    ));
                }
                Ok(ArchConfig::Relu {
                    l1: value as f32,
                    l1_warmup_steps: 0,
                })
            }
        }
    }
}

/// One SAE training recipe: mini-batch Adam with a decay over the last fifth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// Latents.
    pub latents: usize,
    /// Steps.
    pub steps: u64,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f32,
}

impl Recipe {
    /// Trains an SAE of `arch` on `data.train` with `seed`.
    pub fn train(
        &self,
        arch: ArchConfig,
        data: &ExperimentData,
        seed: u64,
        par: Parallelism,
    ) -> Result<Sae> {
        self.train_on(arch, &data.train, 1.0, seed, par)
    }

    /// Trains an SAE of `arch` on `rows` (in memory or a streamed store), each multiplied by
    /// `input_scale` on the way in; the SAE returned reads the rows as they are (the scale
    /// folded into its weights).
    pub fn train_on(
        &self,
        arch: ArchConfig,
        rows: &dyn RowSource,
        input_scale: f32,
        seed: u64,
        par: Parallelism,
    ) -> Result<Sae> {
        let samples = usize::try_from(rows.rows()).unwrap_or(usize::MAX);
        let mut tc = TrainConfig::new(
            arch,
            self.latents,
            self.steps,
            self.batch_size.min(samples),
            self.lr,
            seed,
        );
        tc.lr_decay_steps = self.steps / 5;
        if let ArchConfig::Relu {
            l1_warmup_steps, ..
        } = &mut tc.arch
        {
            *l1_warmup_steps = self.steps / 20;
        }
        tc.dead_window = (self.batch_size as u64 * 200).max(10_000);
        tc.threads = par.count();
        tc.log_every = self.steps.max(1);
        tc.input_scale = input_scale;
        Ok(train(&tc.check_for(rows)?, rows, None, None, &mut NoObserver)?.model())
    }
}
