//! `sparsecode train`: train an SAE into an SAELens-format run folder, or resume a killed run.

use crate::progress::Progress;
use crate::Outcome;
use anyhow::{Context, Result};
use clap::ValueEnum;
use serde_json::json;
use sparsecode::data::store::{Store, MANIFEST};
use sparsecode::data::RowSource;
use sparsecode::eval::evaluate_sae;
use sparsecode::io::record::{fingerprint, fingerprint_str, provenance};
use sparsecode::sae::EncoderInit;
use sparsecode::train::{train, ArchConfig, BDecInit, RunDir, RunJob, TrainConfig};
use sparsecode::{Matrix, Parallelism};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, ValueEnum)]
pub enum Arch {
    Relu,
    Topk,
    Batchtopk,
    Jumprelu,
    Gated,
    Mlp,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EncInit {
    Tied,
    FanInUniform,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BDec {
    Mean,
    GeometricMedian,
    Zero,
}

#[derive(clap::Args)]
pub struct Args {
    /// Activations, [samples, d_in] .npy (loaded into memory).
    #[arg(long, required_unless_present_any = ["resume", "store"], conflicts_with = "store")]
    data: Option<PathBuf>,
    /// An activation store (`sparsecode store create`), streamed from disk.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Rows in the shuffle window when streaming a store.
    #[arg(long, default_value_t = 65_536)]
    shuffle_rows: u64,
    #[arg(long, value_enum, required_unless_present = "resume")]
    arch: Option<Arch>,
    /// Active latents per sample (topk; the batch mean for batchtopk).
    #[arg(long)]
    k: Option<usize>,
    /// L1 coefficient (relu, gated, mlp).
    #[arg(long)]
    l1: Option<f32>,
    /// L0 coefficient (jumprelu).
    #[arg(long)]
    l0: Option<f32>,
    /// Rectangle-kernel width of the threshold's pseudo-gradient (jumprelu).
    #[arg(long, default_value_t = 0.001)]
    bandwidth: f32,
    /// Starting threshold (jumprelu).
    #[arg(long, default_value_t = 0.001)]
    init_threshold: f32,
    /// Hidden width of the encoder (mlp).
    #[arg(long)]
    hidden: Option<usize>,
    /// Number of latents (d_sae).
    #[arg(long, required_unless_present = "resume")]
    latents: Option<usize>,
    /// Optimiser steps.
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<u64>,
    /// Passes over the data (converted to steps).
    #[arg(long)]
    epochs: Option<f64>,
    /// Samples per step (default: min(4096, samples)).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, default_value_t = 3e-4)]
    lr: f32,
    /// Linear learning-rate warm-up, in steps.
    #[arg(long, default_value_t = 0)]
    lr_warmup: u64,
    /// Linear decay to zero over the last this many steps.
    #[arg(long, default_value_t = 0)]
    lr_decay: u64,
    /// Linear L1 warm-up, in steps (relu).
    #[arg(long, default_value_t = 0)]
    l1_warmup: u64,
    /// Dead latents used by the AuxK loss (topk; 0 disables). Default: min(256, d_in / 2).
    #[arg(long)]
    aux_k: Option<usize>,
    #[arg(long, default_value_t = 1.0 / 32.0)]
    aux_coef: f32,
    /// Samples without firing after which a latent counts as dead.
    #[arg(long, default_value_t = 1_000_000)]
    dead_window: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Start the decoder from this dictionary ([latents, d_in] .npy).
    #[arg(long)]
    dictionary: Option<PathBuf>,
    /// Keep the decoder fixed at --dictionary (known-dictionary setting).
    #[arg(long, requires = "dictionary")]
    freeze_decoder: bool,
    /// No biases: b_enc and b_dec stay zero.
    #[arg(long)]
    no_bias: bool,
    #[arg(long, value_enum, default_value = "tied")]
    encoder_init: EncInit,
    #[arg(long, value_enum, default_value = "mean")]
    b_dec_init: BDec,
    /// Write a checkpoint every this many steps (0: never).
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 100)]
    log_every: u64,
    /// Output run folder (written as RUN.partial until training finishes).
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Replace an existing run folder.
    #[arg(long)]
    force: bool,
    /// Continue the killed run in this folder.
    #[arg(long, conflicts_with_all = ["data", "store", "arch", "latents", "out"])]
    resume: Option<PathBuf>,
}

fn build_job(
    a: &Args,
    threads: usize,
    samples: usize,
    d_in: usize,
    data_fp: String,
) -> Result<RunJob> {
    let latents = a.latents.context("missing --latents")?;
    let aux_k = a.aux_k.unwrap_or((d_in / 2).clamp(1, 256)).min(latents);
    let arch = match a.arch.context("missing --arch")? {
        Arch::Topk => ArchConfig::TopK {
            k: a.k.context("`--arch topk` needs `--k`")?,
            aux_k,
            aux_coef: a.aux_coef,
        },
        Arch::Batchtopk => ArchConfig::BatchTopK {
            k: a.k.context("`--arch batchtopk` needs `--k`")?,
            aux_k,
            aux_coef: a.aux_coef,
        },
        Arch::Relu => ArchConfig::Relu {
            l1: a.l1.context("`--arch relu` needs `--l1`")?,
            l1_warmup_steps: a.l1_warmup,
        },
        Arch::Jumprelu => ArchConfig::JumpRelu {
            l0: a.l0.context("`--arch jumprelu` needs `--l0`")?,
            bandwidth: a.bandwidth,
            init_threshold: a.init_threshold,
        },
        Arch::Gated => ArchConfig::Gated {
            l1: a.l1.context("`--arch gated` needs `--l1`")?,
        },
        Arch::Mlp => ArchConfig::Mlp {
            l1: a.l1.context("`--arch mlp` needs `--l1`")?,
            hidden: a.hidden.context("`--arch mlp` needs `--hidden`")?,
            l1_warmup_steps: a.l1_warmup,
        },
    };
    let batch = a.batch.unwrap_or(samples.min(4096));
    let steps = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) if e.is_finite() && e > 0.0 => {
            ((e * samples as f64 / batch.max(1) as f64).ceil() as u64).max(1)
        }
        (None, Some(e)) => anyhow::bail!("invalid `--epochs`: {e} must be a positive number"),
        (None, None) => anyhow::bail!("give `--steps` or `--epochs`"),
    };
    let mut config = TrainConfig::new(arch, latents, steps, batch, a.lr, a.seed);
    config.lr_warmup_steps = a.lr_warmup;
    config.lr_decay_steps = a.lr_decay;
    config.dead_window = a.dead_window;
    config.encoder_init = match a.encoder_init {
        EncInit::Tied => EncoderInit::Tied,
        EncInit::FanInUniform => EncoderInit::FanInUniform,
    };
    config.b_dec_init = match a.b_dec_init {
        BDec::Mean => BDecInit::Mean,
        BDec::GeometricMedian => BDecInit::GeometricMedian,
        BDec::Zero => BDecInit::Zero,
    };
    config.train_decoder = !a.freeze_decoder;
    config.biases = !a.no_bias;
    config.checkpoint_every = a.checkpoint_every;
    config.log_every = a.log_every;
    config.threads = threads;
    config.shuffle_rows = a.shuffle_rows;
    config.validate(samples, d_in)?;
    let data = a
        .data
        .clone()
        .or(a.store.clone())
        .context("missing --data or --store")?;
    Ok(RunJob {
        config,
        metadata: json!({ "model_name": null, "hook_name": null, "dataset_path": data, "context_size": null, "trained_with": "sparsecode" }),
        data,
        data_shape: [samples, d_in],
        data_fingerprint: data_fp,
        dictionary: a.dictionary.clone(),
    })
}

/// Training data: an in-memory matrix or a streamed store.
enum Source {
    Memory(Matrix),
    Store(Store),
}

impl Source {
    fn open(path: &Path) -> Result<Self> {
        if path.join(MANIFEST).exists() {
            Ok(Source::Store(Store::open(path)?))
        } else {
            Ok(Source::Memory(super::read_data(path)?))
        }
    }

    fn rows(&self) -> &dyn RowSource {
        match self {
            Source::Memory(m) => m,
            Source::Store(s) => s,
        }
    }

    /// Identifies the content: a hash of the values in memory, of the shard hashes for a store.
    fn fingerprint(&self) -> String {
        match self {
            Source::Memory(m) => fingerprint(m.as_slice()),
            Source::Store(s) => {
                let all: String = s
                    .manifest()
                    .shards
                    .iter()
                    .map(|x| x.sha256.as_str())
                    .collect();
                format!("shards:{}", fingerprint_str(&all))
            }
        }
    }
}

/// Rows of a store used for the end-of-run metrics (all of them for in-memory data).
const EVAL_ROWS: u64 = 32_768;

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let (mut run_dir, job, resume_state, source) = match &a.resume {
        Some(path) => {
            let (dir, job, state) = RunDir::resume(path)?;
            let source = Source::open(&job.data)?;
            let rows = source.rows();
            if [rows.rows() as usize, rows.cols()] != job.data_shape
                || source.fingerprint() != job.data_fingerprint
            {
                anyhow::bail!("{}: the data changed since the run started (shape or content differs); cannot resume", job.data.display());
            }
            (dir, job, state, source)
        }
        None => {
            let path = a
                .data
                .clone()
                .or(a.store.clone())
                .context("missing --data or --store")?;
            if !path.exists() {
                anyhow::bail!("{}: no such file or store", path.display());
            }
            let source = Source::open(&path)?;
            let rows = source.rows();
            let mut job = build_job(
                &a,
                threads,
                rows.rows() as usize,
                rows.cols(),
                source.fingerprint(),
            )?;
            if let Source::Store(store) = &source {
                // A harvested store names its model and hook: carry them into cfg.json.
                let m = &store.manifest().metadata;
                for key in ["model_name", "hook_name", "context_size"] {
                    if !m[key].is_null() {
                        job.metadata[key] = m[key].clone();
                    }
                }
                if !m["layer"].is_null() {
                    job.metadata["hook_layer"] = m["layer"].clone();
                }
            }
            let out = a.out.clone().context("missing --out")?;
            (RunDir::create(&out, a.force, &job)?, job, None, source)
        }
    };
    let dict = job
        .dictionary
        .as_deref()
        .map(super::read_data)
        .transpose()?;
    let start_step = resume_state.as_ref().map(|s| s.step).unwrap_or(0);
    if start_step > 0 {
        eprintln!("resuming {} at step {start_step}", run_dir.path().display());
    }
    let outcome = {
        let mut progress = Progress::new(&mut run_dir);
        train(
            &job.config,
            source.rows(),
            dict.as_ref(),
            resume_state,
            &mut progress,
        )?
    };
    let sae = &outcome.state.sae;
    let par = Parallelism::threads(job.config.threads);
    let x = source.rows().head(EVAL_ROWS)?;
    let metrics = evaluate_sae(sae, &x, par);
    let mut record = provenance("train");
    record["job"] = serde_json::to_value(&job)?;
    record["seed"] = json!(job.config.seed);
    record["resumed_from_step"] = json!(start_step);
    record["timings"] = json!({
        "seconds_this_process": outcome.seconds,
        "samples_per_s": (job.config.steps - start_step) as f64 * job.config.batch_size as f64 / outcome.seconds.max(1e-9),
    });
    record["last_step"] = serde_json::to_value(&outcome.last)?;
    record["metrics"] = serde_json::to_value(&metrics)?;
    let dest = run_dir.finish(sae, job.metadata.clone(), &record)?;
    eprintln!(
        "wrote {}: {} steps, training-data mse {:.6} fvu {:.4} l0 {:.2} dead {:.1}% ({:.1}s)",
        dest.display(),
        job.config.steps,
        metrics.mse,
        metrics.fvu,
        metrics.l0,
        100.0 * metrics.dead_fraction,
        outcome.seconds
    );
    Ok(Outcome::Ok)
}
