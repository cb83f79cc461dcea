//! What a user asks of `train`, with every choice the library can make for them left open:
//! [`TrainRequest::resolve`] looks at the data and turns it into a complete [`TrainConfig`]
//! (every default decided here, once, not in the CLI or the Python binding), which
//! [`TrainConfig::check`] then validates into the [`CheckedConfig`] that `train` accepts.
//!
//! Defaults, all on inputs normalised to `E||x|| = sqrt(d_in)` (SAELens'
//! `expected_average_only_in`, on unless [`Normalize::None`]), so that they do not depend on the
//! activations' scale:
//! - batch: `min(4096, samples)`;
//! - budget: [`DEFAULT_EPOCHS`] passes over the data, at least [`MIN_STEPS`] and at most
//!   [`MAX_STEPS`] steps (`epochs` or `steps` override it);
//! - learning rate: the TopK scaling rule `2e-4 / sqrt(latents / 2^14)` (arXiv 2406.04093,
//!   sparsify's default), for every architecture;
//! - L1 (relu, gated, mlp): [`DEFAULT_L1`]; L0 (jumprelu): [`DEFAULT_L0`];
//! - AuxK: `min(256, d_in / 2)` dead latents, coefficient 1/32;
//! - dead window: a twentieth of the samples the run sees, between 10 batches and 10M samples.

use super::{ArchConfig, BDecInit, TrainConfig};
use crate::data::RowSource;
use crate::sae::EncoderInit;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The architectures `train` builds, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchKind {
    /// ReLU + L1 (SAELens "standard").
    Relu,
    /// TopK + AuxK.
    Topk,
    /// BatchTopK + AuxK (saved as JumpReLU).
    Batchtopk,
    /// Matryoshka BatchTopK + AuxK (saved as JumpReLU).
    Matryoshka,
    /// JumpReLU with an L0 penalty.
    Jumprelu,
    /// Gated.
    Gated,
    /// MLP encoder.
    Mlp,
    /// Switch: a router picks one block of latents per sample, TopK within it.
    Switch,
}

/// How inputs are scaled before training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Multiply every row by `s = sqrt(d_in) / E||x||` (estimated on the first rows); the saved
    /// SAE has `s` folded into its weights, so it reads raw activations.
    #[default]
    ExpectedAverageOnlyIn,
    /// Train on the activations as they are.
    None,
}

/// Passes over the data when no budget is given.
pub const DEFAULT_EPOCHS: f64 = 100.0;
/// The fewest steps a default budget takes.
pub const MIN_STEPS: u64 = 3_000;
/// The most steps a default budget takes.
pub const MAX_STEPS: u64 = 100_000;
/// Default L1 coefficient on normalised inputs (relu, gated, mlp).
pub const DEFAULT_L1: f32 = 3.0;
/// Default L0 coefficient on normalised inputs (jumprelu).
pub const DEFAULT_L0: f32 = 0.1;
/// Rows the input scale is estimated on.
const SCALE_ROWS: u64 = 65_536;

/// A training request: the architecture and width, and whatever else the user chose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// Architecture.
    pub arch: ArchKind,
    /// Number of latents.
    pub latents: usize,
    /// Active latents per sample (topk; the batch mean for batchtopk and matryoshka). Required
    /// for those.
    #[serde(default)]
    pub k: Option<usize>,
    /// L1 coefficient (relu, gated, mlp).
    #[serde(default)]
    pub l1: Option<f32>,
    /// Steps of linear L1 warm-up (relu, mlp).
    #[serde(default)]
    pub l1_warmup_steps: u64,
    /// L0 coefficient (jumprelu).
    #[serde(default)]
    pub l0: Option<f32>,
    /// Rectangle-kernel width of the threshold's pseudo-gradient (jumprelu).
    #[serde(default)]
    pub bandwidth: Option<f32>,
    /// Starting threshold (jumprelu).
    #[serde(default)]
    pub init_threshold: Option<f32>,
    /// Hidden width of an MLP encoder (mlp; default: d_in).
    #[serde(default)]
    pub hidden: Option<usize>,
    /// Nested prefix sizes (matryoshka; default `latents / 64, / 16, / 4`); the number of latents
    /// is appended when the list stops short of it.
    #[serde(default)]
    pub prefixes: Option<Vec<usize>>,
    /// Blocks of latents a router chooses among (switch; required there).
    #[serde(default)]
    pub experts: Option<usize>,
    /// Load-balancing coefficient (switch; default 0.01).
    #[serde(default)]
    pub lb_coef: Option<f32>,
    /// Dead latents used by AuxK (topk, batchtopk, matryoshka, switch; 0 disables).
    #[serde(default)]
    pub aux_k: Option<usize>,
    /// AuxK coefficient.
    #[serde(default)]
    pub aux_coef: Option<f32>,
    /// Optimiser steps (conflicts with `epochs`).
    #[serde(default)]
    pub steps: Option<u64>,
    /// Passes over the data, converted to steps.
    #[serde(default)]
    pub epochs: Option<f64>,
    /// Samples per step.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Peak learning rate.
    #[serde(default)]
    pub lr: Option<f32>,
    /// Linear learning-rate warm-up, in steps.
    #[serde(default)]
    pub lr_warmup_steps: u64,
    /// Linear decay to zero over the last this many steps.
    #[serde(default)]
    pub lr_decay_steps: u64,
    /// Samples without firing after which a latent is dead.
    #[serde(default)]
    pub dead_window: Option<u64>,
    /// Input normalisation.
    #[serde(default)]
    pub normalize: Normalize,
    /// Seed of every random choice.
    #[serde(default)]
    pub seed: u64,
    /// How the encoder starts.
    #[serde(default)]
    pub encoder_init: EncoderInit,
    /// How the decoder bias starts.
    #[serde(default)]
    pub b_dec_init: BDecInit,
    /// Learn the decoder (false keeps a given dictionary fixed).
    #[serde(default = "yes")]
    pub train_decoder: bool,
    /// Learn the biases.
    #[serde(default = "yes")]
    pub biases: bool,
    /// Checkpoint every this many steps (0: never).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Log every this many steps (default 100).
    #[serde(default)]
    pub log_every: Option<u64>,
    /// Threads for the kernels.
    #[serde(default = "one")]
    pub threads: usize,
    /// Rows of the shuffle window when streaming a store.
    #[serde(default)]
    pub shuffle_rows: Option<u64>,
    /// How TopK's encoder products are approximated (speed only; default: the CPU's best).
    pub encoder_precision: Option<crate::sae::EncoderPrecision>,
    /// Processes the latents are split across (TopK; default 1).
    #[serde(default)]
    pub latent_shards: Option<usize>,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}

impl TrainRequest {
    /// A request for `latents` latents of `arch`, everything else left to the defaults.
    pub fn new(arch: ArchKind, latents: usize) -> Self {
        TrainRequest {
            arch,
            latents,
            k: None,
            l1: None,
            l1_warmup_steps: 0,
            l0: None,
            bandwidth: None,
            init_threshold: None,
            hidden: None,
            prefixes: None,
            experts: None,
            lb_coef: None,
            aux_k: None,
            aux_coef: None,
            steps: None,
            epochs: None,
            batch_size: None,
            lr: None,
            lr_warmup_steps: 0,
            lr_decay_steps: 0,
            dead_window: None,
            normalize: Normalize::default(),
            seed: 0,
            encoder_init: EncoderInit::default(),
            b_dec_init: BDecInit::default(),
            train_decoder: true,
            biases: true,
            checkpoint_every: 0,
            log_every: None,
            threads: 1,
            shuffle_rows: None,
            encoder_precision: None,
            latent_shards: None,
        }
    }

    /// Decides every default against `data` and checks the result.
    pub fn resolve(&self, data: &dyn RowSource) -> Result<super::CheckedConfig> {
        let (samples, d_in) = (
            usize::try_from(data.rows()).unwrap_or(usize::MAX),
            data.cols(),
        );
        if samples == 0 || d_in == 0 {
            return Err(Error::Empty {
                context: "training data".into(),
                reason: format!("{samples} samples of width {d_in}"),
            });
        }
        let batch = self.batch_size.unwrap_or(samples.min(4096));
        let steps = self.budget(samples, batch)?;
        let mut cfg = TrainConfig::new(
            self.arch_config(d_in)?,
            self.latents,
            steps,
            batch,
            self.lr.unwrap_or_else(|| topk_lr(self.latents)),
            self.seed,
        );
        let seen = steps.saturating_mul(batch as u64);
        // A twentieth of the samples seen, at least ten batches, at most ten million samples
        // (the cap wins over a batch of more than a million rows).
        let floor = (batch as u64).saturating_mul(10).min(10_000_000);
        cfg.dead_window = self
            .dead_window
            .unwrap_or_else(|| (seen / 20).clamp(floor, 10_000_000));
        cfg.lr_warmup_steps = self.lr_warmup_steps;
        cfg.lr_decay_steps = self.lr_decay_steps;
        cfg.encoder_init = self.encoder_init;
        cfg.b_dec_init = self.b_dec_init;
        cfg.train_decoder = self.train_decoder;
        cfg.biases = self.biases;
        cfg.checkpoint_every = self.checkpoint_every;
        cfg.log_every = self.log_every.unwrap_or(cfg.log_every);
        cfg.threads = self.threads;
        cfg.shuffle_rows = self.shuffle_rows.unwrap_or(cfg.shuffle_rows);
        cfg.encoder_precision = self.encoder_precision.unwrap_or_default();
        cfg.latent_shards = self.latent_shards.unwrap_or(1);
        cfg.input_scale = match self.normalize {
            Normalize::None => 1.0,
            Normalize::ExpectedAverageOnlyIn => input_scale(data)?,
        };
        cfg.check(samples, d_in)
    }

    /// Steps: `steps`, or `epochs` passes, or the default budget.
    fn budget(&self, samples: usize, batch: usize) -> Result<u64> {
        let per_epoch = samples as f64 / batch.max(1) as f64;
        match (self.steps, self.epochs) {
            (Some(_), Some(_)) => Err(Error::param(
                "epochs",
                "give either steps or epochs, not both",
            )),
            (Some(s), None) => Ok(s),
            (None, Some(e)) if e.is_finite() && e > 0.0 => {
                Ok(((e * per_epoch).ceil() as u64).max(1))
            }
            (None, Some(e)) => Err(Error::param(
                "epochs",
                format!("{e} must be a positive number"),
            )),
            (None, None) => {
                Ok(((DEFAULT_EPOCHS * per_epoch).ceil() as u64).clamp(MIN_STEPS, MAX_STEPS))
            }
        }
    }

    /// The architecture with its hyper-parameters, defaults filled in, for inputs of width
    /// `d_in`.
    pub fn arch_config(&self, d_in: usize) -> Result<ArchConfig> {
        let need_k = |name: &str| {
            self.k.ok_or_else(|| {
                Error::param("k", format!("`{name}` needs k (active latents per sample)"))
            })
        };
        // Only the default is fitted to the latents; a chosen --aux-k above them is refused
        // by the config check, not quietly lowered.
        let aux_k = self
            .aux_k
            .unwrap_or_else(|| (d_in / 2).clamp(1, 256).min(self.latents));
        let aux_coef = self.aux_coef.unwrap_or(1.0 / 32.0);
        let l1 = self.l1.unwrap_or(DEFAULT_L1);
        let jump = 0.001;
        if self.prefixes.is_some() && self.arch != ArchKind::Matryoshka {
            return Err(Error::param(
                "prefixes",
                format!("prefix sizes belong to matryoshka, not {:?}", self.arch),
            ));
        }
        let switch_only = [
            ("experts", self.experts.is_some()),
            ("lb_coef", self.lb_coef.is_some()),
        ];
        if let Some((name, _)) = switch_only
            .iter()
            .find(|(_, given)| *given && self.arch != ArchKind::Switch)
        {
            return Err(Error::param(
                *name,
                format!("{name} belongs to switch, not {:?}", self.arch),
            ));
        }
        Ok(match self.arch {
            ArchKind::Relu => ArchConfig::Relu {
                l1,
                l1_warmup_steps: self.l1_warmup_steps,
            },
            ArchKind::Topk => ArchConfig::TopK {
                k: need_k("topk")?,
                aux_k,
                aux_coef,
            },
            ArchKind::Batchtopk => ArchConfig::BatchTopK {
                k: need_k("batchtopk")?,
                aux_k,
                aux_coef,
            },
            ArchKind::Matryoshka => ArchConfig::Matryoshka {
                k: need_k("matryoshka")?,
                aux_k,
                aux_coef,
                prefixes: self.matryoshka_prefixes(),
            },
            ArchKind::Jumprelu => ArchConfig::JumpRelu {
                l0: self.l0.unwrap_or(DEFAULT_L0),
                bandwidth: self.bandwidth.unwrap_or(jump),
                init_threshold: self.init_threshold.unwrap_or(jump),
            },
            ArchKind::Gated => ArchConfig::Gated { l1 },
            ArchKind::Mlp => ArchConfig::Mlp {
                l1,
                hidden: self.hidden.unwrap_or(d_in),
                l1_warmup_steps: self.l1_warmup_steps,
            },
            ArchKind::Switch => ArchConfig::Switch {
                k: need_k("switch")?,
                experts: self.experts.ok_or_else(|| {
                    Error::param("experts", "`switch` needs experts (blocks of latents)")
                })?,
                lb_coef: self.lb_coef.unwrap_or(super::config::DEFAULT_LB_COEF),
                // Off unless asked: within an expert it measured no better (BENCHMARKS.md).
                aux_k: self.aux_k.unwrap_or(0),
                aux_coef,
            },
        })
    }
}

impl TrainRequest {
    /// The prefix sizes asked for, ending at the number of latents, or by default a quarter, a
    /// sixteenth and a sixty-fourth of the latents (those that are at least 1) before them.
    fn matryoshka_prefixes(&self) -> Vec<usize> {
        let n = self.latents;
        let mut prefixes = match &self.prefixes {
            Some(p) => p.clone(),
            None => [64, 16, 4]
                .iter()
                .map(|d| n / d)
                .filter(|&p| p >= 1)
                .collect(),
        };
        if prefixes.last().is_none_or(|&p| p < n) {
            prefixes.push(n);
        }
        prefixes
    }
}

/// The TopK learning-rate rule: `2e-4 / sqrt(latents / 2^14)`.
pub fn topk_lr(latents: usize) -> f32 {
    (2e-4 / (latents.max(1) as f64 / 16384.0).sqrt()) as f32
}

/// `sqrt(d_in) / mean ||x||` over the first rows of `data` (1 when every row is zero).
pub fn input_scale(data: &dyn RowSource) -> Result<f32> {
    let head = data.head(SCALE_ROWS)?;
    let d = head.cols();
    let mean_norm = (0..head.rows())
        .map(|r| {
            head.row(r)
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum::<f64>()
        / head.rows().max(1) as f64;
    if !(mean_norm.is_finite() && mean_norm > 0.0) {
        return Ok(1.0);
    }
    Ok(((d as f64).sqrt() / mean_norm) as f32)
}

impl std::str::FromStr for Normalize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Normalize::None),
            "expected-average-only-in" | "expected_average_only_in" => {
                Ok(Normalize::ExpectedAverageOnlyIn)
            }
            other => Err(format!(
                "'{other}' is not a normalisation (expected 'expected-average-only-in' or 'none')"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Matrix;

    #[test]
    fn defaults_follow_the_data_and_the_rules() {
        let x = Matrix::from_fn(3000, 16, |r, c| 1000.0 * ((r * 7 + c * 3) % 11) as f32);
        let cfg = TrainRequest {
            k: Some(4),
            ..TrainRequest::new(ArchKind::Topk, 64)
        }
        .resolve(&x)
        .unwrap();
        assert_eq!(cfg.batch_size, 3000);
        assert_eq!(cfg.steps, MIN_STEPS);
        assert!((cfg.lr - 2e-4 * 16.0).abs() < 1e-9, "{}", cfg.lr);
        assert!(matches!(cfg.arch, ArchConfig::TopK { k: 4, aux_k: 8, .. }));
        // The scale makes the mean row norm sqrt(16) = 4.
        let mean: f64 = (0..3000)
            .map(|r| {
                x.row(r)
                    .iter()
                    .map(|v| (*v as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .sum::<f64>()
            / 3000.0;
        assert!((mean * cfg.input_scale as f64 - 4.0).abs() < 1e-3);
        let e = TrainRequest::new(ArchKind::Topk, 64)
            .resolve(&x)
            .unwrap_err();
        assert!(e.to_string().contains("`k`"), "{e}");
        let both = TrainRequest {
            steps: Some(5),
            epochs: Some(1.0),
            ..TrainRequest::new(ArchKind::Relu, 64)
        };
        assert!(both
            .resolve(&x)
            .unwrap_err()
            .to_string()
            .contains("`epochs`"));
        let relu = TrainRequest {
            normalize: Normalize::None,
            ..TrainRequest::new(ArchKind::Relu, 64)
        }
        .resolve(&x)
        .unwrap();
        assert_eq!(relu.input_scale, 1.0);
        assert!(matches!(relu.arch, ArchConfig::Relu { l1, .. } if l1 == DEFAULT_L1));
        assert!("topk".parse::<ArchKind>().is_ok());
        assert!("sparse".parse::<ArchKind>().unwrap_err().contains("topk"));
    }
}
