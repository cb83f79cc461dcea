//! `sparsecode train`: train an SAE into an SAELens-format run folder, or resume a killed run.

use crate::progress::Progress;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use indicatif::MultiProgress;
use sparsecode::distributed::{DataParallel, Transport};
use sparsecode::sae::{EncoderInit, SaeFormat};
use sparsecode::train::{
    finish_job, train_job, train_job_with, ArchKind, BDecInit, CheckedConfig, NoObserver,
    Normalize, RunDir, RunJob, TrainRequest, TrainState, TrainingData,
};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Activations, [samples, d_in] .npy (loaded into memory).
    #[arg(long, required_unless_present_any = ["resume", "store", "model"], conflicts_with_all = ["store", "model"])]
    pub(super) data: Option<PathBuf>,
    /// An activation store (`sparsecode store create`), streamed from disk.
    #[arg(long, conflicts_with = "model")]
    pub(super) store: Option<PathBuf>,
    #[command(flatten)]
    stream: super::train_stream::StreamArgs,
    /// Rows in the shuffle window when streaming a store.
    #[arg(long, default_value_t = 65_536)]
    shuffle_rows: u64,
    /// relu, topk, batchtopk, matryoshka (BatchTopK), jumprelu, gated, mlp or switch.
    #[arg(long, required_unless_present = "resume")]
    arch: Option<ArchKind>,
    /// Active latents per sample (topk, switch; the batch mean for batchtopk and matryoshka).
    #[arg(long)]
    k: Option<usize>,
    /// L1 coefficient (relu, gated, mlp; default 3 on normalised inputs).
    #[arg(long)]
    l1: Option<f32>,
    /// L0 coefficient (jumprelu; default 0.1 on normalised inputs).
    #[arg(long)]
    l0: Option<f32>,
    /// Rectangle-kernel width of the threshold's pseudo-gradient (jumprelu; default 0.001).
    #[arg(long)]
    bandwidth: Option<f32>,
    /// Starting threshold (jumprelu; default 0.001).
    #[arg(long)]
    init_threshold: Option<f32>,
    /// Hidden width of the encoder (mlp; default d_in).
    #[arg(long)]
    hidden: Option<usize>,
    /// Nested prefix sizes, comma-separated and increasing (matryoshka; the number of latents
    /// ends the list; default latents/64,/16,/4).
    #[arg(long, value_delimiter = ',')]
    prefixes: Option<Vec<usize>>,
    /// Experts of a Switch SAE: blocks of latents/experts latents, one chosen per sample by a
    /// router (switch; required there).
    #[arg(long)]
    experts: Option<usize>,
    /// Load-balancing coefficient of a Switch SAE (default 0.01).
    #[arg(long)]
    lb_coef: Option<f32>,
    /// Number of latents (d_sae).
    #[arg(long, required_unless_present = "resume")]
    latents: Option<usize>,
    /// Optimiser steps (default: 100 passes over the data, 3,000 to 100,000 steps).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<u64>,
    /// Passes over the data (converted to steps).
    #[arg(long)]
    epochs: Option<f64>,
    /// Samples per step (default: min(4096, samples)).
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate (default: 2e-4 / sqrt(latents / 2^14)).
    #[arg(long)]
    lr: Option<f32>,
    /// Linear learning-rate warm-up, in steps.
    #[arg(long, default_value_t = 0)]
    lr_warmup: u64,
    /// Linear decay to zero over the last this many steps.
    #[arg(long, default_value_t = 0)]
    lr_decay: u64,
    /// Linear L1 warm-up, in steps (relu).
    #[arg(long, default_value_t = 0)]
    l1_warmup: u64,
    /// Dead latents used by the AuxK loss (topk, batchtopk, matryoshka; 0 disables). Default: min(256, d_in / 2); switch: of each token's expert, default 0.
    #[arg(long)]
    aux_k: Option<usize>,
    /// AuxK coefficient (default 1/32).
    #[arg(long)]
    aux_coef: Option<f32>,
    /// Samples without firing after which a latent counts as dead (default: a twentieth of the
    /// samples the run sees, 10 batches to 10M).
    #[arg(long)]
    dead_window: Option<u64>,
    /// Input scaling: expected-average-only-in (rows scaled to mean norm sqrt(d_in), folded
    /// into the saved weights) or none.
    #[arg(long, default_value = "expected-average-only-in")]
    normalize: Normalize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Start the decoder from this dictionary ([latents, d_in] .npy).
    #[arg(long)]
    pub(super) dictionary: Option<PathBuf>,
    /// Keep the decoder fixed at --dictionary (known-dictionary setting).
    #[arg(long, requires = "dictionary")]
    freeze_decoder: bool,
    /// No biases: b_enc and b_dec stay zero.
    #[arg(long)]
    no_bias: bool,
    /// tied or fan-in-uniform.
    #[arg(long, default_value = "tied")]
    encoder_init: EncoderInit,
    /// mean, geometric-median or zero.
    #[arg(long, default_value = "mean")]
    b_dec_init: BDecInit,
    /// Write a checkpoint every this many steps (0: never).
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 100)]
    log_every: u64,
    /// Folder format of the finished SAE: saelens (every architecture) or sparsify (topk).
    #[arg(long, default_value = "saelens")]
    pub(super) format: SaeFormat,
    /// Output run folder (written as RUN.partial until training finishes).
    #[arg(long, required_unless_present = "resume")]
    pub(super) out: Option<PathBuf>,
    /// Replace an existing run folder.
    #[arg(long)]
    pub(super) force: bool,
    /// Do not check a store's chunk hashes as rows are read (they catch a corrupt shard at the
    /// first read of the damaged chunk; the check costs little next to training).
    #[arg(long)]
    pub(super) no_verify: bool,
    /// TopK's encoder products before its certified selection: auto (bfloat16 on CPUs with
    /// AVX512_BF16, 16-bit integers on AVX2 without AVX-512, else f32), int16 or f32. Speed only:
    /// the selected latents and values are the same.
    #[arg(long, default_value = "auto")]
    encoder_precision: EncoderPrecisionArg,
    /// Split the latents across the ranks of an MPI job (TopK, BatchTopK): each rank holds a
    /// block of latents with their Adam state and sees every batch, so the model may be larger
    /// than one process's memory. Resume at the same number of ranks, with this flag.
    #[arg(long)]
    shard_latents: bool,
    /// Continue the killed run in this folder.
    #[arg(long, conflicts_with_all = ["data", "store", "model", "arch", "latents", "out"])]
    pub(super) resume: Option<PathBuf>,
}

/// `--encoder-precision`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum EncoderPrecisionArg {
    Auto,
    Int16,
    F32,
}

impl From<EncoderPrecisionArg> for sparsecode::sae::EncoderPrecision {
    fn from(a: EncoderPrecisionArg) -> Self {
        match a {
            EncoderPrecisionArg::Auto => Self::Auto,
            EncoderPrecisionArg::Int16 => Self::Int16,
            EncoderPrecisionArg::F32 => Self::F32,
        }
    }
}

/// The request the flags make; everything left out is the library's default.
pub(super) fn request(a: &Args, threads: usize) -> Result<TrainRequest> {
    let mut r = TrainRequest::new(
        a.arch.context("missing --arch")?,
        a.latents.context("missing --latents")?,
    );
    r.k = a.k;
    r.l1 = a.l1;
    r.l1_warmup_steps = a.l1_warmup;
    r.l0 = a.l0;
    r.bandwidth = a.bandwidth;
    r.init_threshold = a.init_threshold;
    r.hidden = a.hidden;
    r.prefixes = a.prefixes.clone();
    r.experts = a.experts;
    r.lb_coef = a.lb_coef;
    r.aux_k = a.aux_k;
    r.aux_coef = a.aux_coef;
    r.steps = a.steps;
    r.epochs = a.epochs;
    r.batch_size = a.batch;
    r.lr = a.lr;
    r.lr_warmup_steps = a.lr_warmup;
    r.lr_decay_steps = a.lr_decay;
    r.dead_window = a.dead_window;
    r.normalize = a.normalize;
    r.seed = a.seed;
    r.encoder_init = a.encoder_init;
    r.b_dec_init = a.b_dec_init;
    r.train_decoder = !a.freeze_decoder;
    r.biases = !a.no_bias;
    r.checkpoint_every = a.checkpoint_every;
    r.log_every = Some(a.log_every);
    r.threads = threads;
    r.shuffle_rows = Some(a.shuffle_rows);
    r.encoder_precision = Some(a.encoder_precision.into());
    Ok(r)
}

/// Trains in this process, or with `ranks` as one rank of a data-parallel job (rank 0 writes
/// the run folder; every rank reads the same data and checkpoint).
pub fn run(a: Args, threads: usize, ranks: Option<Box<dyn Transport>>) -> Result<Outcome> {
    if a.stream.model.is_some() {
        if ranks.is_some() {
            bail!("training on a model's streamed activations (--model) runs in one process; harvest a store and train on it with --store across ranks");
        }
        return run_streamed(&a, threads);
    }
    match ranks {
        Some(mut t) if a.shard_latents => super::train_sharded::run(&a, threads, t.as_mut()),
        None if a.shard_latents => bail!("--shard-latents splits the latents across the ranks of an MPI job: start it with mpirun -np P (P >= 2) or srun, from a build with --features mpi"),
        Some(mut t) if t.rank() > 0 => run_follower(&a, threads, t.as_mut()),
        Some(mut t) => run_planned(&a, threads, Some(t.as_mut())),
        None => run_planned(&a, threads, None),
    }
}

/// Rank 0 of a job, or the only process: plans (or resumes) the run folder and writes it.
fn run_planned(a: &Args, threads: usize, ranks: Option<&mut dyn Transport>) -> Result<Outcome> {
    let planned = match &a.resume {
        Some(path) => {
            let (dir, job, state) = RunDir::resume(path)?;
            let data = open_data(&job, a.no_verify)?;
            let checked = job.check_data(&data)?;
            (dir, job, checked, state, data)
        }
        None => {
            let (path, data) = open_flagged(a)?;
            let out = a.out.clone().context("missing --out")?;
            let (dir, job, checked) = plan(a, threads, &path, &data, &out)?;
            (dir, job, checked, None, data)
        }
    };
    train_planned(planned, None, ranks)
}

/// A rank past 0: the same job and starting state as rank 0 (planned from the same flags, or
/// read from the run folder without its lock), trained in step with the others; rank 0 alone
/// writes.
fn run_follower(a: &Args, threads: usize, ranks: &mut dyn Transport) -> Result<Outcome> {
    let (job, checked, state, data) = match &a.resume {
        Some(path) => {
            let (job, state) = RunDir::peek(path)?;
            let data = open_data(&job, a.no_verify)?;
            let checked = job.check_data(&data)?;
            (job, checked, state, data)
        }
        None => {
            let (path, data) = open_flagged(a)?;
            let (job, checked) = RunJob::plan(
                &request(a, threads)?,
                &path,
                &data,
                a.dictionary.clone(),
                a.format,
            )?;
            (job, checked, None, data)
        }
    };
    let mut dp = DataParallel::new(ranks);
    train_job_with(&job, &checked, &data, state, &mut NoObserver, &mut dp)?;
    Ok(Outcome::Ok)
}

/// The data `--data` or `--store` names, and its path.
pub(super) fn open_flagged(a: &Args) -> Result<(PathBuf, TrainingData)> {
    let path = a
        .data
        .clone()
        .or(a.store.clone())
        .context("missing --data or --store")?;
    let mut data = TrainingData::open(&path)?;
    data.set_verify_reads(!a.no_verify);
    Ok((path, data))
}

/// The data a planned `job` trains on.
pub(super) fn open_data(job: &RunJob, no_verify: bool) -> Result<TrainingData> {
    let mut data = match &job.source {
        Some(source) => super::train_stream::reopen(source)?,
        None => TrainingData::open(&job.data)?,
    };
    data.set_verify_reads(!no_verify);
    Ok(data)
}

/// A new run of the flags' request on `data` (read from `path`) into `out`.
fn plan(
    a: &Args,
    threads: usize,
    path: &std::path::Path,
    data: &TrainingData,
    out: &std::path::Path,
) -> Result<(RunDir, RunJob, CheckedConfig)> {
    let (job, checked) = RunJob::plan(
        &request(a, threads)?,
        path,
        data,
        a.dictionary.clone(),
        a.format,
    )?;
    Ok((RunDir::create(out, a.force, &job)?, job, checked))
}

/// A run ready to train: its folder, job, checked configuration, resumed state and data.
type Planned = (
    RunDir,
    RunJob,
    CheckedConfig,
    Option<TrainState>,
    TrainingData,
);

/// One SAE per layer, all fed by the same forward passes of the model; every run is planned
/// (and refused, on bad flags) before any trains.
fn run_streamed(a: &Args, threads: usize) -> Result<Outcome> {
    let out = a.out.clone().context("missing --out")?;
    let hooks = super::train_stream::open(&a.stream, a.shuffle_rows)?;
    let several = hooks.len() > 1;
    let mut planned = Vec::new();
    for (data, corpus, hook) in hooks {
        let dest = if several { out.join(hook) } else { out.clone() };
        let (dir, job, checked) = plan(a, threads, &corpus, &data, &dest)?;
        planned.push((dir, job, checked, None, data));
    }
    let bars = MultiProgress::new();
    std::thread::scope(|scope| {
        let runs: Vec<_> = planned
            .into_iter()
            .map(|p| {
                let label = p.1.metadata["hook_name"].as_str().unwrap_or("").to_string();
                let bar = several.then_some((&bars, label));
                scope.spawn(move || train_planned(p, bar, None))
            })
            .collect();
        let mut first_error = None;
        for r in runs {
            let result = r
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a training thread panicked")));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(Outcome::Ok), Err)
    })
}

/// Trains a planned run to the end and writes it; with `bars`, its progress bar is one of
/// several drawn together, labelled.
fn train_planned(
    (mut run_dir, job, checked, resume_state, data): Planned,
    bars: Option<(&MultiProgress, String)>,
    ranks: Option<&mut dyn Transport>,
) -> Result<Outcome> {
    let start_step = resume_state.as_ref().map_or(0, |s| s.step);
    if start_step > 0 {
        eprintln!("resuming {} at step {start_step}", run_dir.path().display());
    }
    let outcome = {
        let mut progress = Progress::new(&mut run_dir);
        if let Some((multi, label)) = bars {
            progress.bar = multi.add(progress.bar.clone());
            progress.bar.set_prefix(label);
        }
        match ranks {
            Some(t) => {
                let mut dp = DataParallel::new(t);
                train_job_with(&job, &checked, &data, resume_state, &mut progress, &mut dp)?
            }
            None => train_job(&job, &checked, &data, resume_state, &mut progress)?,
        }
    };
    let (dest, metrics) = finish_job(run_dir, &job, &data, &outcome, start_step)?;
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
