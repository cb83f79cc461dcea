//! `mpirun -np P sparsecode train --shard-latents ...`: a TopK SAE whose latents are split
//! across the ranks. Every rank plans the same job (rank 0 creates or resumes the run folder
//! and writes the log), trains its block, checkpoints it into `RUN.partial/blocks/R-of-P/`, and
//! writes its finished block; rank 0 joins the blocks into the SAE and finishes the run.

use super::train::{open_data, open_flagged, request, Args};
use crate::progress::Progress;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use sparsecode::distributed::{join_blocks, part_of, LatentSharded, Transport};
use sparsecode::sae::Sae;
use sparsecode::train::{
    finish_job, train_job_with, BlockCheckpoints, CheckedConfig, Observer, RunDir, RunJob,
    StepRecord, TrainState, TrainingData,
};
use std::path::PathBuf;

/// Rank 0's observer: the log into the run folder, the checkpoints into its block.
struct LogAndBlock<'a> {
    run: &'a mut RunDir,
    block: &'a mut BlockCheckpoints,
}

impl Observer for LogAndBlock<'_> {
    fn on_log(&mut self, r: &StepRecord) -> sparsecode::Result<()> {
        self.run.on_log(r)
    }
    fn on_checkpoint(&mut self, s: &TrainState) -> sparsecode::Result<()> {
        self.block.on_checkpoint(s)
    }
}

/// The job, its run folder (rank 0) and the path that names the run.
type Planned = (RunJob, CheckedConfig, TrainingData, Option<RunDir>, PathBuf);

fn plan(a: &Args, threads: usize, rank: usize, size: usize) -> Result<Planned> {
    if let Some(path) = &a.resume {
        let (dir, job) = if rank == 0 {
            let (dir, job, _) = RunDir::resume(path)?;
            (Some(dir), job)
        } else {
            (None, RunDir::peek(path)?.0)
        };
        let data = open_data(&job, a.no_verify)?;
        let checked = job.check_data(&data)?;
        return Ok((job, checked, data, dir, path.clone()));
    }
    let (path, data) = open_flagged(a)?;
    let out = a.out.clone().context("missing --out")?;
    let mut req = request(a, threads)?;
    req.latent_shards = Some(size);
    let (job, checked) = RunJob::plan(&req, &path, &data, a.dictionary.clone(), a.format)?;
    let dir = (rank == 0)
        .then(|| RunDir::create(&out, a.force, &job))
        .transpose()?;
    Ok((job, checked, data, dir, out))
}

/// The newest step every block has a checkpoint of (None: start from the beginning).
fn common_step(t: &mut dyn Transport, block: &BlockCheckpoints) -> Result<Option<u64>> {
    let mine: Vec<u8> = block
        .steps()?
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let all: Vec<Vec<u64>> = t
        .all_gather_bytes(&mine)
        .iter()
        .map(|b| {
            b.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect()
        })
        .collect();
    let common = all[0]
        .iter()
        .copied()
        .filter(|s| all.iter().all(|a| a.contains(s)))
        .max();
    if common.is_none() && all.iter().any(|a| !a.is_empty()) {
        bail!("the blocks' checkpoints share no step ({all:?} by rank); the run cannot resume");
    }
    Ok(common)
}

pub fn run(a: &Args, threads: usize, t: &mut dyn Transport) -> Result<Outcome> {
    let (rank, size) = (t.rank(), t.size());
    let (job, checked, data, mut run_dir, path) = plan(a, threads, rank, size)?;
    let cfg = &job.config;
    if cfg.latent_shards != size {
        bail!(
            "the run splits its latents across {} ranks; resume it with mpirun -np {}",
            cfg.latent_shards,
            cfg.latent_shards
        );
    }
    let mut block = BlockCheckpoints::new(&path, rank, size);
    let latents = part_of(cfg.latents, rank, size);
    let step = common_step(t, &block)?;
    let state = step
        .map(|s| block.load(cfg, latents.len(), s))
        .transpose()?;
    if let (Some(dir), Some(s)) = (run_dir.as_mut(), step) {
        dir.cut_log(s)?;
        eprintln!("resuming {} at step {s}", dir.path().display());
    }
    let start_step = step.unwrap_or(0);
    let outcome = {
        let mut sh = LatentSharded::new(t, cfg.latents);
        match run_dir.as_mut() {
            Some(dir) => {
                let mut both = LogAndBlock {
                    run: dir,
                    block: &mut block,
                };
                let mut progress = Progress::new(&mut both);
                train_job_with(&job, &checked, &data, state, &mut progress, &mut sh)?
            }
            None => train_job_with(&job, &checked, &data, state, &mut block, &mut sh)?,
        }
    };
    block.write_final(&outcome.state.sae)?;
    // Every block written before rank 0 reads them.
    sparsecode::distributed::reduce::barrier(t);
    let Some(dir) = run_dir else {
        return Ok(Outcome::Ok);
    };
    // Rank 0's block and Adam state go before the whole SAE is built (it may be most of the
    // memory a rank has).
    let d_in = outcome.state.sae.d_in();
    let mut whole = outcome;
    whole.state.adam.state.m = Default::default();
    whole.state.adam.state.v = Default::default();
    whole.state.sae = Sae::zeros(d_in, 0, cfg.arch.activation(), None);
    let mut blocks = Vec::with_capacity(size);
    for r in 0..size {
        let b = BlockCheckpoints::new(&path, r, size);
        blocks.push(b.read_final(cfg, part_of(cfg.latents, r, size).len(), d_in)?);
    }
    whole.state.sae = join_blocks(&blocks).context("joining the blocks")?;
    drop(blocks);
    let (dest, metrics) = finish_job(dir, &job, &data, &whole, start_step)?;
    eprintln!(
        "wrote {}: {} steps across {size} ranks' latent blocks, training-data mse {:.6} fvu {:.4} l0 {:.2} ({:.1}s)",
        dest.display(),
        cfg.steps,
        metrics.mse,
        metrics.fvu,
        metrics.l0,
        whole.seconds
    );
    Ok(Outcome::Ok)
}
