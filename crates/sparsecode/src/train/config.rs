//! The training configuration: one serde type, validated in one place.

use crate::error::{require_non_negative, require_positive_count};
use crate::sae::{Activation, EncoderInit};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Architecture and its sparsity hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArchConfig {
    /// ReLU + L1 penalty weighted by decoder row norms.
    Relu {
        /// L1 coefficient (on `1/B sum_bj z_bj ||W_dec_j||`).
        l1: f32,
        /// Steps over which the L1 coefficient ramps linearly from 0.
        #[serde(default)]
        l1_warmup_steps: u64,
    },
    /// TopK with the AuxK loss.
    #[serde(rename = "topk")]
    TopK {
        /// Active latents per sample.
        k: usize,
        /// Dead latents used by AuxK (0 disables AuxK).
        #[serde(default = "default_aux_k")]
        aux_k: usize,
        /// AuxK coefficient.
        #[serde(default = "default_aux_coef")]
        aux_coef: f32,
    },
    /// BatchTopK (arXiv 2412.06410): the `k * B` largest activations of the batch, AuxK for dead
    /// latents; saved for inference as JumpReLU with one threshold (a running average of the
    /// smallest kept activation).
    #[serde(rename = "batchtopk")]
    BatchTopK {
        /// Mean active latents per sample.
        k: usize,
        /// Dead latents used by AuxK (0 disables AuxK).
        #[serde(default = "default_aux_k")]
        aux_k: usize,
        /// AuxK coefficient.
        #[serde(default = "default_aux_coef")]
        aux_coef: f32,
    },
    /// Matryoshka BatchTopK (arXiv 2503.17547): BatchTopK codes and one reconstruction loss per
    /// nested prefix of the latents; saved for inference as JumpReLU, like BatchTopK.
    Matryoshka {
        /// Mean active latents per sample.
        k: usize,
        /// Dead latents used by AuxK (0 disables AuxK).
        #[serde(default = "default_aux_k")]
        aux_k: usize,
        /// AuxK coefficient.
        #[serde(default = "default_aux_coef")]
        aux_coef: f32,
        /// Increasing prefix sizes, the last the number of latents.
        prefixes: Vec<usize>,
    },
    /// JumpReLU with learnable thresholds and an L0 penalty (straight-through estimator).
    #[serde(rename = "jumprelu")]
    JumpRelu {
        /// L0 coefficient (on the mean number of active latents per sample).
        l0: f32,
        /// Width of the rectangle kernel of the threshold's pseudo-gradient.
        #[serde(default = "default_bandwidth")]
        bandwidth: f32,
        /// Starting threshold of every latent.
        #[serde(default = "default_bandwidth")]
        init_threshold: f32,
    },
    /// Gated SAE with the L1 penalty on the gate and the frozen-decoder auxiliary loss.
    Gated {
        /// L1 coefficient (on `1/B sum_bj ReLU(gate_bj) ||W_dec_j||`).
        l1: f32,
    },
    /// MLP encoder (Linear-ReLU-Linear-ReLU) with a linear decoder and the L1 penalty.
    Mlp {
        /// L1 coefficient, as for ReLU.
        l1: f32,
        /// Hidden width of the encoder.
        hidden: usize,
        /// Steps over which the L1 coefficient ramps linearly from 0.
        #[serde(default)]
        l1_warmup_steps: u64,
    },
    /// Switch SAE (arXiv 2410.08201): a router sends each sample to one of `experts` equal
    /// blocks of latents, TopK within the block, codes scaled by the router's probability, and
    /// the Switch Transformer's load-balancing loss (see [`crate::sae::switch_loss_grad`]).
    Switch {
        /// Active latents per sample.
        k: usize,
        /// Blocks of latents, one chosen per sample.
        experts: usize,
        /// Load-balancing coefficient (on `mean ||x||^2 * experts * sum_e f_e P_e`).
        #[serde(default = "default_lb_coef")]
        lb_coef: f32,
        /// Dead latents of a row's expert used by AuxK (0, the default, disables AuxK, as the
        /// paper trains; on MiniLM activations it revived at most 4% of the latents and moved
        /// the held-out FVU by under 0.4%, BENCHMARKS.md).
        #[serde(default)]
        aux_k: usize,
        /// AuxK coefficient.
        #[serde(default = "default_aux_coef")]
        aux_coef: f32,
    },
}

/// The Switch SAE's load-balancing coefficient by default (the paper's training code).
pub const DEFAULT_LB_COEF: f32 = 0.01;

fn default_lb_coef() -> f32 {
    DEFAULT_LB_COEF
}

fn default_bandwidth() -> f32 {
    0.001
}

fn default_aux_k() -> usize {
    256
}
fn default_aux_coef() -> f32 {
    1.0 / 32.0
}

impl ArchConfig {
    /// The inference-time activation of this architecture.
    pub fn activation(&self) -> Activation {
        match *self {
            ArchConfig::Relu { .. } | ArchConfig::Mlp { .. } => Activation::Relu,
            ArchConfig::TopK { k, .. } => Activation::TopK { k },
            ArchConfig::BatchTopK { .. }
            | ArchConfig::Matryoshka { .. }
            | ArchConfig::JumpRelu { .. } => Activation::JumpRelu,
            ArchConfig::Gated { .. } => Activation::Gated,
            ArchConfig::Switch { k, experts, .. } => Activation::Switch { k, experts },
        }
    }

    /// The L1 coefficient and its warm-up, for the architectures that have one.
    pub fn l1(&self) -> Option<(f32, u64)> {
        match *self {
            ArchConfig::Relu {
                l1,
                l1_warmup_steps,
            }
            | ArchConfig::Mlp {
                l1,
                l1_warmup_steps,
                ..
            } => Some((l1, l1_warmup_steps)),
            ArchConfig::Gated { l1 } => Some((l1, 0)),
            _ => None,
        }
    }
}

/// How the decoder bias starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BDecInit {
    /// Zero.
    Zero,
    /// Mean of the data.
    #[default]
    Mean,
    /// Geometric median of (up to 8192 rows of) the data, by Weiszfeld's iteration.
    GeometricMedian,
}

/// Everything that determines a training run (with the data and the thread count).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Architecture and its sparsity hyper-parameters.
    pub arch: ArchConfig,
    /// Number of latents (d_sae).
    pub latents: usize,
    /// Optimiser steps.
    pub steps: u64,
    /// Samples per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear warm-up of the learning rate from 0, in steps.
    #[serde(default)]
    pub lr_warmup_steps: u64,
    /// Linear decay of the learning rate to 0 over the last this many steps.
    #[serde(default)]
    pub lr_decay_steps: u64,
    #[serde(default = "default_beta1")]
    /// Adam's first-moment decay.
    pub adam_beta1: f32,
    #[serde(default = "default_beta2")]
    /// Adam's second-moment decay.
    pub adam_beta2: f32,
    #[serde(default = "default_eps")]
    /// Adam's epsilon.
    pub adam_eps: f32,
    /// Seed of every random choice (initialisation, shuffling).
    pub seed: u64,
    #[serde(default)]
    /// How the encoder starts.
    pub encoder_init: EncoderInit,
    #[serde(default)]
    /// How the decoder bias starts.
    pub b_dec_init: BDecInit,
    /// Keep decoder rows at unit norm (the gradient's parallel part is removed before each step).
    #[serde(default = "yes")]
    pub unit_norm_decoder: bool,
    /// Learn the decoder; `false` keeps a given dictionary fixed (known-dictionary setting).
    #[serde(default = "yes")]
    pub train_decoder: bool,
    /// Learn `b_enc` and `b_dec`; `false` fixes both at zero (a bias-free linear encoder).
    #[serde(default = "yes")]
    pub biases: bool,
    /// Write a checkpoint every this many steps (0: never).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Log metrics every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// A latent that has not fired in this many training samples is dead (for AuxK and logs).
    #[serde(default = "default_dead_window")]
    pub dead_window: u64,
    /// Threads for the kernels (results are identical for the same value).
    #[serde(default = "one")]
    pub threads: usize,
    /// Rows in the shuffle window when streaming from a store (in-memory data is shuffled whole).
    #[serde(default = "default_shuffle_rows")]
    pub shuffle_rows: u64,
    /// Every input row is multiplied by this before the SAE sees it (1: inputs as they are); the
    /// finished SAE has it folded into its weights ([`crate::sae::Sae::fold_input_scale`]).
    #[serde(default = "unit_scale")]
    pub input_scale: f32,
    /// How TopK's encoder products are approximated before its certified selection: a speed
    /// setting only, the selection and every result are the same ([`crate::sae::EncoderPrecision`]).
    #[serde(default)]
    pub encoder_precision: crate::sae::EncoderPrecision,
    /// Processes the latents are split across (latent sharding, TopK and BatchTopK; 1: every process
    /// holds every latent). Each holds `latents / latent_shards` of them, so the memory checked
    /// is a block's.
    #[serde(default = "one")]
    pub latent_shards: usize,
}

fn unit_scale() -> f32 {
    1.0
}

/// A [`TrainConfig`] that passed [`TrainConfig::check`] for data of a given shape: the only form
/// `train` accepts, so validation can be neither skipped nor repeated.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedConfig {
    config: TrainConfig,
    shape: (usize, usize),
}

impl std::ops::Deref for CheckedConfig {
    type Target = TrainConfig;
    fn deref(&self) -> &TrainConfig {
        &self.config
    }
}

impl CheckedConfig {
    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// `(samples, d_in)` of the data it was checked for.
    pub fn data_shape(&self) -> (usize, usize) {
        self.shape
    }
}

fn default_shuffle_rows() -> u64 {
    65_536
}

fn default_beta1() -> f32 {
    0.9
}
fn default_beta2() -> f32 {
    0.999
}
fn default_eps() -> f32 {
    1e-8
}
fn yes() -> bool {
    true
}
fn default_log_every() -> u64 {
    100
}
fn default_dead_window() -> u64 {
    1_000_000
}
fn one() -> usize {
    1
}

impl TrainConfig {
    /// A config with the defaults for everything but the essentials.
    pub fn new(
        arch: ArchConfig,
        latents: usize,
        steps: u64,
        batch_size: usize,
        lr: f32,
        seed: u64,
    ) -> Self {
        TrainConfig {
            arch,
            latents,
            steps,
            batch_size,
            lr,
            lr_warmup_steps: 0,
            lr_decay_steps: 0,
            adam_beta1: default_beta1(),
            adam_beta2: default_beta2(),
            adam_eps: default_eps(),
            seed,
            encoder_init: EncoderInit::default(),
            b_dec_init: BDecInit::default(),
            unit_norm_decoder: true,
            train_decoder: true,
            biases: true,
            checkpoint_every: 0,
            log_every: default_log_every(),
            dead_window: default_dead_window(),
            threads: 1,
            shuffle_rows: default_shuffle_rows(),
            input_scale: 1.0,
            encoder_precision: Default::default(),
            latent_shards: 1,
        }
    }

    /// [`TrainConfig::check`] against the shape of `data`.
    pub fn check_for(self, data: &dyn crate::data::RowSource) -> Result<CheckedConfig> {
        let samples = usize::try_from(data.rows()).unwrap_or(usize::MAX);
        self.check(samples, data.cols())
    }

    /// Checks every field against the data it will train on (`samples x d_in`); the error names
    /// the field and the allowed range.
    pub fn check(self, samples: usize, d_in: usize) -> Result<CheckedConfig> {
        self.validate(samples, d_in)?;
        Ok(CheckedConfig {
            config: self,
            shape: (samples, d_in),
        })
    }

    fn validate(&self, samples: usize, d_in: usize) -> Result<()> {
        let bad = |f: &str, r: String| Err(Error::param(f, r));
        if samples == 0 || d_in == 0 {
            return Err(Error::Empty {
                context: "training data".into(),
                reason: format!("{samples} samples of width {d_in}"),
            });
        }
        require_positive_count("latents", self.latents)?;
        if self.steps == 0 {
            return bad("steps", "must be at least 1".into());
        }
        if self.batch_size == 0 || self.batch_size > samples {
            return bad(
                "batch_size",
                format!(
                    "{} must be in 1..={samples} (the number of samples)",
                    self.batch_size
                ),
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{} must be a positive number", self.lr));
        }
        for (name, b) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return bad(name, format!("{b} must be in [0, 1)"));
            }
        }
        if !(self.adam_eps.is_finite() && self.adam_eps > 0.0) {
            return bad("adam_eps", format!("{} must be positive", self.adam_eps));
        }
        if self.lr_warmup_steps + self.lr_decay_steps > self.steps {
            return bad(
                "lr_warmup_steps",
                format!(
                    "warm-up ({}) + decay ({}) exceed the {} steps",
                    self.lr_warmup_steps, self.lr_decay_steps, self.steps
                ),
            );
        }
        if !(self.input_scale.is_finite() && self.input_scale > 0.0) {
            return bad(
                "input_scale",
                format!("{} must be a positive number", self.input_scale),
            );
        }
        if self.log_every == 0 {
            return bad("log_every", "must be at least 1".into());
        }
        require_positive_count("threads", self.threads)?;
        if self.shuffle_rows < self.batch_size as u64 {
            return bad(
                "shuffle_rows",
                format!(
                    "{} must be at least the batch size {}",
                    self.shuffle_rows, self.batch_size
                ),
            );
        }
        match self.arch {
            ArchConfig::Relu { l1, .. } | ArchConfig::Gated { l1 } => {
                require_non_negative("l1", l1 as f64)?;
            }
            ArchConfig::Mlp { l1, hidden, .. } => {
                require_non_negative("l1", l1 as f64)?;
                require_positive_count("hidden", hidden)?;
            }
            ArchConfig::JumpRelu {
                l0,
                bandwidth,
                init_threshold,
            } => {
                require_non_negative("l0", l0 as f64)?;
                for (name, v) in [("bandwidth", bandwidth), ("init_threshold", init_threshold)] {
                    if !(v.is_finite() && v > 0.0) {
                        return bad(name, format!("{v} must be a positive number"));
                    }
                }
            }
            ArchConfig::Matryoshka {
                k,
                aux_k,
                aux_coef,
                ref prefixes,
            } => {
                self.check_prefixes(prefixes)?;
                self.check_k_and_aux(k, aux_k, aux_coef)?;
            }
            ArchConfig::TopK { k, aux_k, aux_coef }
            | ArchConfig::BatchTopK { k, aux_k, aux_coef } => {
                self.check_k_and_aux(k, aux_k, aux_coef)?;
            }
            ArchConfig::Switch {
                k,
                experts,
                lb_coef,
                aux_k,
                aux_coef,
            } => {
                crate::sae::check_experts("switch", self.latents, k, experts)?;
                require_non_negative("lb_coef", lb_coef as f64)?;
                self.check_k_and_aux(k, aux_k, aux_coef)?;
            }
        }
        self.check_shards()?;
        self.admit(d_in)
    }

    /// TopK, BatchTopK and Matryoshka: `k` and `aux_k` within the latents.
    fn check_k_and_aux(&self, k: usize, aux_k: usize, aux_coef: f32) -> Result<()> {
        let n = self.latents;
        if k == 0 || k > n {
            let msg = format!("{k} must be in 1..={n} (the number of latents)");
            return Err(Error::param("k", msg));
        }
        if aux_k > n {
            let msg = format!("{aux_k} must be at most {n} (the number of latents)");
            return Err(Error::param("aux_k", msg));
        }
        require_non_negative("aux_coef", aux_coef as f64)
    }

    /// Matryoshka: prefix sizes strictly increasing from at least 1, the last the latents.
    fn check_prefixes(&self, prefixes: &[usize]) -> Result<()> {
        let n = self.latents;
        let increasing =
            prefixes.first().is_some_and(|&p| p >= 1) && prefixes.windows(2).all(|w| w[0] < w[1]);
        if !increasing || prefixes.last() != Some(&n) {
            let msg = format!(
                "{prefixes:?} must be strictly increasing sizes from 1 up to the number of latents ({n}), which ends them"
            );
            return Err(Error::param("prefixes", msg));
        }
        Ok(())
    }

    /// Latent sharding: TopK and BatchTopK only, every block at least one latent.
    fn check_shards(&self) -> Result<()> {
        let p = self.latent_shards;
        if p == 0 || p > self.latents {
            return Err(Error::param(
                "latent_shards",
                format!(
                    "{p}: between 1 and the number of latents ({})",
                    self.latents
                ),
            ));
        }
        if p > 1
            && !matches!(
                self.arch,
                ArchConfig::TopK { .. } | ArchConfig::BatchTopK { .. }
            )
        {
            return Err(Error::param(
                "latent_shards",
                "only TopK and BatchTopK train with their latents sharded across processes",
            ));
        }
        Ok(())
    }

    /// The SAE (weights, gradients, two Adam moments) and a batch's latent activations must fit
    /// (a block's, when the latents are sharded).
    fn admit(&self, d_in: usize) -> Result<()> {
        use crate::memory::{admit, bytes_of};
        let what = "training (--latents x d_in weights with gradients and Adam moments, --batch x --latents activations, and an MLP encoder's --hidden layer alike)";
        let hidden = match self.arch {
            ArchConfig::Mlp { hidden, .. } => hidden,
            _ => 0,
        };
        let latents = self.latents.div_ceil(self.latent_shards.max(1));
        // A Switch SAE computes one expert's latents per sample.
        let computed = match self.arch {
            ArchConfig::Switch { experts, .. } => latents / experts.max(1),
            _ => latents,
        };
        let parts = [
            bytes_of(what, &[latents, d_in, 2 * 4], 4)?,
            bytes_of(what, &[self.batch_size, computed, 3], 4)?,
            // The hidden layer: [hidden, d_in] in, [latents, hidden] out, each x 4 buffers.
            bytes_of(what, &[hidden, d_in.saturating_add(self.latents), 4], 4)?,
            bytes_of(what, &[self.batch_size, hidden, 3], 4)?,
        ];
        let total = parts
            .into_iter()
            .try_fold(0u64, u64::checked_add)
            .ok_or_else(|| Error::param("latents", "the model's size overflows"))?;
        admit(what, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let mut v = serde_json::to_value(TrainConfig::new(
            ArchConfig::TopK {
                k: 4,
                aux_k: 8,
                aux_coef: 0.1,
            },
            16,
            10,
            8,
            1e-3,
            0,
        ))
        .unwrap();
        let ok: TrainConfig = serde_json::from_value(v.clone()).unwrap();
        assert!(ok.clone().check(100, 4).is_ok());
        v["learning_rate"] = serde_json::json!(1);
        assert!(serde_json::from_value::<TrainConfig>(v)
            .unwrap_err()
            .to_string()
            .contains("learning_rate"));
        let cases: Vec<(TrainConfig, &str)> = vec![
            (
                TrainConfig {
                    lr: 0.0,
                    ..ok.clone()
                },
                "lr",
            ),
            (
                TrainConfig {
                    lr: -1.0,
                    ..ok.clone()
                },
                "lr",
            ),
            (
                TrainConfig {
                    batch_size: 101,
                    ..ok.clone()
                },
                "batch_size",
            ),
            (
                TrainConfig {
                    arch: ArchConfig::TopK {
                        k: 17,
                        aux_k: 0,
                        aux_coef: 0.0,
                    },
                    ..ok.clone()
                },
                "k",
            ),
            (
                TrainConfig {
                    arch: ArchConfig::Relu {
                        l1: f32::NAN,
                        l1_warmup_steps: 0,
                    },
                    ..ok.clone()
                },
                "l1",
            ),
            (
                TrainConfig {
                    latents: 0,
                    ..ok.clone()
                },
                "latents",
            ),
            (
                TrainConfig {
                    adam_beta2: 1.0,
                    ..ok.clone()
                },
                "adam_beta2",
            ),
        ];
        for (c, field) in cases {
            let e = c.check(100, 4).unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "{field}: {e}");
        }
        assert!(ok.check(0, 4).unwrap_err().to_string().contains("empty"));
    }
}
