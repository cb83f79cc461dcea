//! The training loop: shuffled mini-batches, loss and hand-written gradients, decoder-norm
//! constraint, Adam, dead-latent tracking, logging and checkpoint hooks.
//!
//! Determinism: the data order of epoch `e` is a ChaCha8 permutation seeded by `(seed, e)`, the
//! initialisation by `(seed, "init")`, and every kernel gives identical results for a given thread
//! count. So the state after step `s` is a pure function of (config, data, threads), and a run
//! resumed from a checkpoint ends with exactly the bytes of an uninterrupted one.

use super::observer::{Control, Observer, StepRecord};
use super::step::{adam_for, gradients, update, StepInputs};
use super::{Adam, ArchConfig, BDecInit, CheckedConfig, Schedule, TrainConfig};
use crate::data::{Batcher, Plan, RowSource};
use crate::linalg::normalize_rows;
use crate::sae::{Collective, Encoder, Grads, Sae, SingleProcess, StepStats, Workspace};
use crate::seed::sub_seed;
use crate::{Error, Matrix, Parallelism, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Everything needed to continue training exactly where it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// The model.
    pub sae: Sae,
    /// The optimiser with its moments.
    pub adam: Adam,
    /// Steps completed.
    pub step: u64,
    /// Training samples since each latent last fired.
    pub since_fired: Vec<u64>,
}

/// The result of [`train`].
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// The state after the last step taken.
    pub state: TrainState,
    /// The last logged metrics.
    pub last: Option<StepRecord>,
    /// True when the observer asked to stop before the last step.
    pub stopped_early: bool,
    /// Seconds spent in this call.
    pub seconds: f64,
    /// The factor the inputs were multiplied by ([`TrainConfig::input_scale`]).
    pub input_scale: f32,
    /// What TopK's certified encoder selection computed exactly in this call.
    pub certified: crate::sae::CertifiedStats,
    /// Processes that took part in every step (data-parallel ranks; 1 in one process).
    pub ranks: usize,
}

impl TrainOutcome {
    /// The trained SAE for raw (unscaled) inputs: the input scale folded into its weights.
    pub fn model(&self) -> Sae {
        let mut sae = self.state.sae.clone();
        sae.fold_input_scale(self.input_scale);
        sae
    }
}

const STREAM_INIT: u64 = 1;
const STREAM_BLOCK_INIT: u64 = 2;

/// Geometric median of the rows by Weiszfeld's iteration, started at the mean.
pub(crate) fn geometric_median(x: &Matrix) -> Vec<f32> {
    let (s, m) = x.shape();
    let mut y: Vec<f64> = (0..m)
        .map(|c| (0..s).map(|r| x.get(r, c) as f64).sum::<f64>() / s as f64)
        .collect();
    for _ in 0..200 {
        let mut num = vec![0.0f64; m];
        let mut den = 0.0;
        for r in 0..s {
            let d = x
                .row(r)
                .iter()
                .zip(&y)
                .map(|(a, b)| (*a as f64 - b).powi(2))
                .sum::<f64>()
                .sqrt();
            let w = 1.0 / d.max(1e-8);
            num.iter_mut()
                .zip(x.row(r))
                .for_each(|(n, v)| *n += w * *v as f64);
            den += w;
        }
        let new: Vec<f64> = num.iter().map(|n| n / den).collect();
        let moved = new
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let scale = new.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
        y = new;
        if moved <= 1e-7 * scale {
            break;
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}

/// Rows the decoder-bias initialisation looks at (the first ones of the data).
const INIT_ROWS: u64 = 65_536;

pub(crate) fn initial_state(
    cfg: &TrainConfig,
    data: &dyn RowSource,
    fixed_decoder: Option<&Matrix>,
) -> Result<TrainState> {
    let d_in = data.cols();
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, STREAM_INIT));
    let mut sae = Sae::init(
        d_in,
        cfg.latents,
        cfg.arch.activation(),
        cfg.encoder_init,
        &mut rng,
    );
    if let Some(d) = fixed_decoder {
        sae.w_dec = d.clone();
        if cfg.unit_norm_decoder {
            normalize_rows(sae.w_dec.as_mut_slice(), d_in);
        }
        if cfg.encoder_init == crate::sae::EncoderInit::Tied {
            sae.w_enc = sae.w_dec.clone();
        }
    }
    match (&cfg.arch, &mut sae.encoder) {
        (&ArchConfig::Mlp { hidden, .. }, _) => sae = sae.with_hidden_layer(hidden, &mut rng),
        (&ArchConfig::JumpRelu { init_threshold, .. }, Encoder::JumpRelu { threshold }) => {
            threshold.fill(init_threshold)
        }
        _ => {}
    }
    fresh_state(cfg, data, sae)
}

/// Step 0 of training `sae` (its decoder bias from the data when the run learns biases).
fn fresh_state(cfg: &TrainConfig, data: &dyn RowSource, mut sae: Sae) -> Result<TrainState> {
    if cfg.biases {
        sae.b_dec = initial_b_dec(cfg, data)?;
        if let Encoder::Switch { router, .. } = &mut sae.encoder {
            // The router centres its input where the decoder does (arXiv 2410.08201).
            router.b.clone_from(&sae.b_dec);
        }
    }
    Ok(TrainState {
        adam: adam_for(cfg, &sae),
        since_fired: vec![0; sae.d_sae()],
        sae,
        step: 0,
    })
}

/// The decoder bias a run starts from, from the first rows of the data.
fn initial_b_dec(cfg: &TrainConfig, data: &dyn RowSource) -> Result<Vec<f32>> {
    let d_in = data.cols();
    let mut head = data.head(INIT_ROWS)?;
    scale_rows(head.as_mut_slice(), cfg.input_scale);
    Ok(match cfg.b_dec_init {
        BDecInit::Zero => vec![0.0; d_in],
        BDecInit::Mean => (0..d_in)
            .map(|c| {
                ((0..head.rows()).map(|r| head.get(r, c) as f64).sum::<f64>() / head.rows() as f64)
                    as f32
            })
            .collect(),
        BDecInit::GeometricMedian => geometric_median(&head.slice_rows(0, head.rows().min(8192))),
    })
}

/// The block `latents` of a dictionary initialised latent by latent, each latent's rows
/// drawn from a stream of its own: any split into blocks makes the same dictionary, so a
/// latent-sharded run starts (and can be checked) alike at every number of ranks. (A run in
/// one process draws every latent from one stream, so it starts from another dictionary of
/// the same law.)
pub fn initial_block_state(
    cfg: &TrainConfig,
    data: &dyn RowSource,
    latents: std::ops::Range<usize>,
) -> Result<TrainState> {
    let d_in = data.cols();
    let activation = cfg.arch.activation();
    let n = latents.len();
    crate::memory::admit_array("the block's encoder and decoder", &[2, n, d_in], 4)?;
    let mut sae = Sae::zeros(d_in, n, activation, None);
    let base = sub_seed(cfg.seed, STREAM_BLOCK_INIT);
    for (i, j) in latents.enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(base, j as u64));
        let one = Sae::init(d_in, 1, activation, cfg.encoder_init, &mut rng);
        sae.w_dec.row_mut(i).copy_from_slice(one.w_dec.row(0));
        sae.w_enc.row_mut(i).copy_from_slice(one.w_enc.row(0));
    }
    fresh_state(cfg, data, sae)
}

/// The state a run of `cfg` on `data` starts from (what [`train`] builds when not resuming): to
/// inspect it, or to change it (e.g. [`crate::sae::Sae::set_firing_rate`]) and pass it to
/// [`train`] as `resume`.
pub fn initial_state_for(cfg: &CheckedConfig, data: &dyn RowSource) -> Result<TrainState> {
    initial_state(cfg.config(), data, None)
}

/// Trains an SAE on `data` (an in-memory matrix or an activation store). With `fixed_decoder` the decoder starts as that
/// dictionary (and stays fixed when `train_decoder` is false). With `resume` training continues
/// from that state. The observer sees logs and checkpoints and may stop the run.
pub fn train(
    cfg: &CheckedConfig,
    data: &dyn RowSource,
    fixed_decoder: Option<&Matrix>,
    resume: Option<TrainState>,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome> {
    train_with(cfg, data, fixed_decoder, resume, obs, &mut SingleProcess)
}

/// [`train`] as one process of several: `collective` says which rows of each batch this
/// process computes and joins its part of every step to the others' (e.g.
/// [`crate::distributed::DataParallel`]). Every process passes the same configuration, data and
/// starting state, and ends with the same weights.
pub fn train_with(
    cfg: &CheckedConfig,
    data: &dyn RowSource,
    fixed_decoder: Option<&Matrix>,
    resume: Option<TrainState>,
    obs: &mut dyn Observer,
    collective: &mut dyn Collective,
) -> Result<TrainOutcome> {
    let shape = (
        usize::try_from(data.rows()).unwrap_or(usize::MAX),
        data.cols(),
    );
    if shape != cfg.data_shape() {
        return Err(Error::shape(
            "training data",
            format!(
                "{:?} (the shape the configuration was checked for)",
                cfg.data_shape()
            ),
            format!("{shape:?}"),
        ));
    }
    let cfg = cfg.config();
    let d_in = shape.1;
    if let Some(m) = data.as_matrix() {
        m.check_finite("training data")?;
    }
    if let Some(d) = fixed_decoder {
        if d.shape() != (cfg.latents, d_in) {
            return Err(Error::shape(
                "fixed decoder (dictionary)",
                format!("[{}, {d_in}] (latents x data width)", cfg.latents),
                format!("{:?}", d.shape()),
            ));
        }
    }
    if !cfg.train_decoder && fixed_decoder.is_none() {
        return Err(Error::param(
            "train_decoder",
            "false requires a dictionary to keep fixed",
        ));
    }
    // Every kernel of the run (and the batcher's prefetch) runs on the run's own pool.
    check_split(cfg, collective)?;
    Parallelism::threads(cfg.threads).install(|| {
        let block = collective
            .latent_shard()
            .map(|s| s.offset()..s.offset() + s.latents());
        let state = match (block, resume) {
            (None, resume) => start_state(cfg, data, fixed_decoder, resume)?,
            (Some(block), resume) => start_block(cfg, data, fixed_decoder, block, resume)?,
        };
        run(cfg, data, state, collective, obs)
    })
}

/// Multiplies every value by `scale` (nothing to do at 1).
fn scale_rows(values: &mut [f32], scale: f32) {
    if scale != 1.0 {
        values.iter_mut().for_each(|v| *v *= scale);
    }
}

/// The state a run starts from: `resume` (checked against the configuration and data), or a
/// fresh initialisation.
fn start_state(
    cfg: &TrainConfig,
    data: &dyn RowSource,
    fixed_decoder: Option<&Matrix>,
    resume: Option<TrainState>,
) -> Result<TrainState> {
    let d_in = data.cols();
    match resume {
        Some(s) => {
            if s.sae.d_in() != d_in
                || s.sae.d_sae() != cfg.latents
                || s.since_fired.len() != cfg.latents
            {
                return Err(Error::shape(
                    "resumed state",
                    format!("{} latents of width {d_in}", cfg.latents),
                    format!("{} latents of width {}", s.sae.d_sae(), s.sae.d_in()),
                ));
            }
            Ok(s)
        }
        None => initial_state(cfg, data, fixed_decoder),
    }
}

/// The configuration's latent sharding is the collective's.
fn check_split(cfg: &TrainConfig, collective: &mut dyn Collective) -> Result<()> {
    let ranks = collective.ranks();
    if collective.latent_shard().is_none() && cfg.batch_size < ranks {
        return Err(Error::param(
            "batch",
            format!(
                "{} rows split across {ranks} data-parallel processes: at least one row each",
                cfg.batch_size
            ),
        ));
    }
    let holds = match collective.latent_shard() {
        Some(s) if cfg.latent_shards == ranks && s.total_latents() == cfg.latents => return Ok(()),
        None if cfg.latent_shards == 1 => return Ok(()),
        Some(_) => "holding blocks of latents",
        None => "holding every latent",
    };
    Err(Error::param(
        "latent_shards",
        format!(
            "the run splits its latents across {} process(es), and this job has {ranks} {holds}; a sharded run resumes at its number of ranks, with --shard-latents",
            cfg.latent_shards
        ),
    ))
}

/// A latent-sharded run's block `block`: `resume` (checked), or [`initial_block_state`].
fn start_block(
    cfg: &TrainConfig,
    data: &dyn RowSource,
    fixed_decoder: Option<&Matrix>,
    block: std::ops::Range<usize>,
    resume: Option<TrainState>,
) -> Result<TrainState> {
    // Which architectures shard is the configuration's check (`latent_shards`).
    if fixed_decoder.is_some() {
        return Err(Error::param(
            "dictionary",
            "a latent-sharded run starts from its own initialisation, not from a dictionary",
        ));
    }
    let (n, d_in) = (block.len(), data.cols());
    match resume {
        Some(s) if s.sae.d_in() != d_in || s.sae.d_sae() != n || s.since_fired.len() != n => {
            Err(Error::shape(
                "resumed block",
                format!("latents {block:?} of width {d_in}"),
                format!("{} latents of width {}", s.sae.d_sae(), s.sae.d_in()),
            ))
        }
        Some(s) => Ok(s),
        None => initial_block_state(cfg, data, block),
    }
}

/// The training loop from `state`, with `collective` joining this process's part of every
/// step to the others' (a [`SingleProcess`] when the process holds the whole batch).
fn run(
    cfg: &TrainConfig,
    data: &dyn RowSource,
    mut state: TrainState,
    collective: &mut dyn Collective,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome> {
    let started = Instant::now();
    let (samples, d_in) = (data.rows(), data.cols());
    let par = Parallelism::threads(cfg.threads);
    let b = cfg.batch_size;
    let lr = Schedule {
        peak: cfg.lr,
        warmup_steps: cfg.lr_warmup_steps,
        decay_steps: cfg.lr_decay_steps,
        total_steps: cfg.steps,
    };
    let (l1_peak, l1_warmup) = cfg.arch.l1().unwrap_or((0.0, 0));
    let l1_schedule = Schedule {
        peak: l1_peak,
        warmup_steps: l1_warmup,
        decay_steps: 0,
        total_steps: cfg.steps,
    };
    let mut ws = Workspace::default();
    ws.set_encoder_precision(cfg.encoder_precision);
    let mut g = Grads::like(&state.sae);
    let mut stats = StepStats::default();
    let mut batch = vec![0.0f32; b * d_in];
    // In-memory data is shuffled whole; a store through windows of `shuffle_rows` rows.
    let window = if data.as_matrix().is_some() {
        samples
    } else {
        cfg.shuffle_rows
    };
    let plan = Plan::new(data, b, window, cfg.seed)?;
    std::thread::scope(|scope| {
        let mut batcher = Batcher::new(plan, data, Some(scope));
        let mut dead = vec![false; state.since_fired.len()];
        let mut last = None;
        obs.on_start(state.step, cfg.steps);

        while state.step < cfg.steps {
            let step = state.step;
            batcher.batch(step, &mut batch)?;
            scale_rows(&mut batch, cfg.input_scale);
            for (d, s) in dead.iter_mut().zip(&state.since_fired) {
                *d = *s >= cfg.dead_window;
            }
            let l1 = l1_schedule.at(step);
            let part = collective.part(b);
            let inputs = StepInputs {
                rows: &batch[part.start * d_in..part.end * d_in],
                total: b,
                l1,
                dead: &dead,
            };
            let buffers = (&mut ws, &mut g, &mut stats);
            gradients(cfg, &state.sae, inputs, collective, buffers, par)?;
            collective.reduce(&mut g, &mut stats);
            stats.finish();
            let parts = stats.parts;
            if !parts.loss.is_finite() {
                return Err(diverged(step, parts.loss, &batch));
            }
            let lr_now = lr.at(step);
            update(cfg, &mut state, &mut g, &stats, lr_now);

            let done = state.step == cfg.steps;
            if state.step.is_multiple_of(AGREE_EVERY) || done {
                collective.agree(state.step, &|| digest(&state.sae))?;
            }
            if state.step.is_multiple_of(cfg.log_every) || done {
                let mut dead_now = state
                    .since_fired
                    .iter()
                    .filter(|s| **s >= cfg.dead_window)
                    .count();
                if let Some(shard) = collective.latent_shard() {
                    dead_now = shard.sum_count(dead_now as u64) as usize;
                }
                let rec = StepRecord {
                    step: state.step,
                    loss: parts.loss,
                    recon: parts.recon,
                    sparsity: parts.sparsity,
                    mse: parts.recon / d_in as f64,
                    fvu: parts.fvu(),
                    l0: parts.l0,
                    dead_fraction: dead_now as f64 / cfg.latents as f64,
                    lr: lr_now,
                    l1,
                    samples: state.step * b as u64,
                    elapsed_s: started.elapsed().as_secs_f64(),
                };
                obs.on_log(&rec)?;
                last = Some(rec);
            }
            let stop = collective.any(obs.on_step(state.step) == Control::Stop) && !done;
            if cfg.checkpoint_every > 0
                && (state.step.is_multiple_of(cfg.checkpoint_every) || stop)
                && !done
            {
                obs.on_checkpoint(&state)?;
            }
            if stop {
                return Ok(TrainOutcome {
                    state,
                    last,
                    stopped_early: true,
                    seconds: started.elapsed().as_secs_f64(),
                    input_scale: cfg.input_scale,
                    certified: ws.certified_stats(),
                    ranks: collective.ranks(),
                });
            }
        }
        Ok(TrainOutcome {
            state,
            last,
            stopped_early: false,
            seconds: started.elapsed().as_secs_f64(),
            input_scale: cfg.input_scale,
            certified: ws.certified_stats(),
            ranks: collective.ranks(),
        })
    })
}

/// Steps between the ranks' comparisons of their weights (and at the last step): a digest of
/// a 768 x 16384 SAE's weights takes 30 ms on one core (Intel Xeon), 7% of a step.
const AGREE_EVERY: u64 = 100;

/// A digest of the weights (the ranks of a distributed run compare them).
fn digest(sae: &Sae) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let mut bytes = Vec::with_capacity(16_384);
    for (_, t) in sae.tensors() {
        for chunk in t.chunks(4096) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            h.update(&bytes);
        }
    }
    *h.finalize().as_bytes()
}

/// Why the loss stopped being finite: inputs so large that their squares overflow f32 (then
/// the learning rate is not the cause), or else a learning rate too high.
fn diverged(step: u64, loss: f64, batch: &[f32]) -> Error {
    let peak = batch.iter().fold(0f32, |m, v| m.max(v.abs()));
    // Squared errors of values past ~1e19 overflow f32 (3.4e38) however small the step.
    if !peak.is_finite() || peak > 1e18 {
        return Error::param(
            "data",
            format!(
                "training overflowed at step {step} (loss {loss}): the inputs reach {peak:e}, and their squares overflow 32-bit floats; normalise them (`--normalize expected-average-only-in`, the default) or rescale the data"
            ),
        );
    }
    Error::param(
        "lr",
        format!("training diverged at step {step} (loss {loss}); lower the learning rate"),
    )
}
