//! The run folder of `train`: built as `RUN.partial/` (job, metrics, checkpoints) and renamed to
//! `RUN/` only when training finished, so a killed run never looks complete and never replaces a
//! finished one. `--resume RUN` continues from the last checkpoint in `RUN.partial/`.
//!
//! Finished layout: `cfg.json` + `sae_weights.safetensors` (SAELens), `train_config.json` (the
//! resolved job, written before step 0), `metrics.jsonl` (one [`StepRecord`] per log), `run.json`
//! (provenance, config, seed, timings, final metrics).

use super::observer::{Observer, StepRecord};
use super::{TrainConfig, TrainState};
use crate::io::tensors::{read_tensors, write_tensors};
use crate::io::{read_json, replace_dir, write_json_atomic};
use crate::sae::{ParamId, Sae, SaeFormat};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Suffix of an unfinished run folder.
pub const RUN_PARTIAL_SUFFIX: &str = ".partial";
const JOB_FILE: &str = "train_config.json";
const METRICS_FILE: &str = "metrics.jsonl";
const CKPT_DIR: &str = "checkpoint";
const PREVIOUS_DIR: &str = "checkpoint.previous";
const BLOCKS_DIR: &str = "blocks";
const FINAL_FILE: &str = "final.safetensors";

/// What a run trains on and how: enough to resume it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunJob {
    /// The resolved training configuration.
    pub config: TrainConfig,
    /// The training data file.
    pub data: PathBuf,
    /// `[samples, d_in]` of the data.
    pub data_shape: [usize; 2],
    /// Fingerprint of the data values (see [`crate::io::record::fingerprint`]).
    pub data_fingerprint: String,
    /// A dictionary the decoder started from (and stayed at, unless trained).
    #[serde(default)]
    pub dictionary: Option<PathBuf>,
    /// SAELens `metadata` for cfg.json.
    #[serde(default)]
    pub metadata: Value,
    /// The folder format of the finished SAE.
    #[serde(default)]
    pub format: SaeFormat,
    /// For data streamed from a model rather than read from `data`: how to stream it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Value>,
}

/// An open run folder.
#[derive(Debug)]
pub struct RunDir {
    /// Held for the whole run: one writer per run folder.
    _lock: crate::io::OutputLock,
    partial: PathBuf,
    dest: PathBuf,
    force: bool,
    metrics: std::fs::File,
}

/// The finished folder's path `RUN` for `RUN` or `RUN.partial`.
fn dest_of(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    PathBuf::from(
        s.strip_suffix(RUN_PARTIAL_SUFFIX)
            .unwrap_or(&s)
            .trim_end_matches('/'),
    )
}

fn partial_of(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(RUN_PARTIAL_SUFFIX);
    PathBuf::from(s)
}

impl RunDir {
    /// Starts a new run for `dest`, writing the job before any step. Refuses an existing `dest`
    /// unless `force`, and an unfinished run of the same name unless `force` (which restarts it).
    pub fn create(dest: &Path, force: bool, job: &RunJob) -> Result<Self> {
        let lock = crate::io::OutputLock::acquire(dest)?;
        if dest.exists() && !force {
            return Err(Error::OutputExists {
                path: dest.to_path_buf(),
            });
        }
        let partial = partial_of(dest);
        if partial.exists() {
            if !force {
                return Err(Error::param(
                    "out",
                    format!("{} holds an unfinished run: continue it with --resume {} or pass --force to start over", partial.display(), dest.display()),
                ));
            }
            std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        }
        std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        write_json_atomic(&partial.join(JOB_FILE), job)?;
        let metrics = open_append(&partial.join(METRICS_FILE))?;
        Ok(RunDir {
            _lock: lock,
            partial,
            dest: dest.to_path_buf(),
            force,
            metrics,
        })
    }

    /// The job and last checkpoint of the unfinished run at `path` (`RUN` or `RUN.partial`),
    /// read without taking the run's lock or changing anything: how the other ranks of a
    /// distributed run start, while rank 0 holds the folder through [`RunDir::resume`].
    pub fn peek(path: &Path) -> Result<(RunJob, Option<TrainState>)> {
        let partial = partial_of(&dest_of(path));
        let job: RunJob = read_json(&partial.join(JOB_FILE))?;
        let [samples, d_in] = job.data_shape;
        job.config.clone().check(samples, d_in)?;
        let state = match job.config.latent_shards {
            1 => load_checkpoint(&partial.join(CKPT_DIR), &job.config, job.config.latents)?,
            _ => None,
        };
        Ok((job, state))
    }

    /// Opens an unfinished run (`path` is `RUN` or `RUN.partial`) and loads its last checkpoint
    /// (None when it was killed before the first one). `metrics.jsonl` is cut back to the
    /// checkpoint so the finished log equals that of an uninterrupted run.
    pub fn resume(path: &Path) -> Result<(Self, RunJob, Option<TrainState>)> {
        let dest = dest_of(path);
        let lock = crate::io::OutputLock::acquire(&dest)?;
        let partial = partial_of(&dest);
        if !partial.is_dir() {
            return Err(if dest.is_dir() {
                Error::format(&dest, "cannot resume: the run already finished (train again with --force to replace it)")
            } else {
                Error::format(
                    &dest,
                    format!(
                        "cannot resume: no unfinished run there (no {})",
                        partial.display()
                    ),
                )
            });
        }
        let job: RunJob = read_json(&partial.join(JOB_FILE))?;
        // The saved config is input like any other: checked (and its memory admitted) before
        // the checkpoint is sized by it.
        let [samples, d_in] = job.data_shape;
        job.config.clone().check(samples, d_in)?;
        let metrics = open_append(&partial.join(METRICS_FILE))?;
        let mut dir = RunDir {
            _lock: lock,
            partial,
            dest,
            force: true,
            metrics,
        };
        if job.config.latent_shards > 1 {
            // Each rank loads its block ([`BlockCheckpoints`]); the log is cut back once the
            // ranks agree on the step ([`RunDir::cut_log`]).
            return Ok((dir, job, None));
        }
        let state = load_checkpoint(&dir.partial.join(CKPT_DIR), &job.config, job.config.latents)?;
        dir.cut_log(state.as_ref().map(|s| s.step).unwrap_or(0))?;
        Ok((dir, job, state))
    }

    /// Cuts `metrics.jsonl` back to the records up to `step` (the checkpoint a resumed run
    /// continues from), so that the finished log equals that of an uninterrupted run.
    pub fn cut_log(&mut self, step: u64) -> Result<()> {
        let mpath = self.partial.join(METRICS_FILE);
        let kept: String = std::fs::read_to_string(&mpath)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<StepRecord>(l)
                    .map(|r| r.step <= step)
                    .unwrap_or(false)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        crate::io::write_atomic(&mpath, kept.as_bytes())?;
        self.metrics = open_append(&mpath)?;
        Ok(())
    }

    /// The folder being written (`RUN.partial`).
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// Writes the finished SAE (in `format`) and record, removes the checkpoint and moves the
    /// folder to `RUN`.
    pub fn finish(
        self,
        sae: &Sae,
        format: SaeFormat,
        metadata: Value,
        record: &Value,
    ) -> Result<PathBuf> {
        crate::sae::save(&self.partial, sae, format, metadata)?;
        write_json_atomic(&self.partial.join("run.json"), record)?;
        for ck in [self.partial.join(CKPT_DIR), self.partial.join(BLOCKS_DIR)] {
            if ck.exists() {
                std::fs::remove_dir_all(&ck).map_err(|e| Error::io(&ck, e))?;
            }
        }
        drop(self.metrics);
        replace_dir(&self.partial, &self.dest, self.force)?;
        Ok(self.dest)
    }
}

fn open_append(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

impl Observer for RunDir {
    fn on_log(&mut self, record: &StepRecord) -> Result<()> {
        let mut line = serde_json::to_string(record)
            .map_err(|e| Error::format(&self.partial, e.to_string()))?;
        line.push('\n');
        let path = self.partial.join(METRICS_FILE);
        self.metrics
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&path, e))
    }

    fn on_checkpoint(&mut self, state: &TrainState) -> Result<()> {
        write_checkpoint(&self.partial.join(CKPT_DIR), state)
    }
}

/// Builds the checkpoint of `state` beside `dest`, then swaps folders.
fn write_checkpoint(dest: &Path, state: &TrainState) -> Result<()> {
    let tmp = dest.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    save_checkpoint(&tmp, state)?;
    replace_dir(&tmp, dest, true)
}

/// The checkpoints of one rank's block of a latent-sharded run, in
/// `RUN.partial/blocks/R-of-P/`: the newest and the one before it, so that a job killed while
/// its ranks were writing still finds a step every block has.
#[derive(Debug)]
pub struct BlockCheckpoints {
    dir: PathBuf,
}

impl BlockCheckpoints {
    /// Rank `rank` of `ranks` of the run at `path` (`RUN` or `RUN.partial`).
    pub fn new(path: &Path, rank: usize, ranks: usize) -> Self {
        let partial = partial_of(&dest_of(path));
        BlockCheckpoints {
            dir: partial.join(BLOCKS_DIR).join(format!("{rank}-of-{ranks}")),
        }
    }

    /// The steps this block has checkpoints of, newest first.
    pub fn steps(&self) -> Result<Vec<u64>> {
        let mut steps = Vec::new();
        for name in [CKPT_DIR, PREVIOUS_DIR] {
            let meta = self.dir.join(name).join("state.json");
            if meta.exists() {
                steps.push(read_json::<CheckpointMeta>(&meta)?.step);
            }
        }
        Ok(steps)
    }

    /// This block's checkpoint at `step` (`latents` latents).
    pub fn load(&self, cfg: &TrainConfig, latents: usize, step: u64) -> Result<TrainState> {
        for name in [CKPT_DIR, PREVIOUS_DIR] {
            let dir = self.dir.join(name);
            if let Some(s) = load_checkpoint(&dir, cfg, latents)?.filter(|s| s.step == step) {
                return Ok(s);
            }
        }
        Err(Error::format(
            &self.dir,
            format!("no checkpoint of step {step} in this block"),
        ))
    }

    /// Writes the block's finished weights (`final.safetensors`) for rank 0 to join.
    pub fn write_final(&self, sae: &Sae) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        write_flat(
            &self.dir.join(FINAL_FILE),
            &flat_tensors("param.", sae.tensors()),
        )
    }

    /// The block's finished weights, `latents` of them.
    pub fn read_final(&self, cfg: &TrainConfig, latents: usize, d_in: usize) -> Result<Sae> {
        let path = self.dir.join(FINAL_FILE);
        let mut map = read_tensors(&path)?;
        let mut sae = Sae::zeros(d_in, latents, cfg.arch.activation(), None);
        fill_from(&mut map, &path, "param.", sae.tensors_mut())?;
        sae.validate(&path.display().to_string())?;
        Ok(sae)
    }
}

impl Observer for BlockCheckpoints {
    fn on_checkpoint(&mut self, state: &TrainState) -> Result<()> {
        let (newest, previous) = (self.dir.join(CKPT_DIR), self.dir.join(PREVIOUS_DIR));
        if newest.exists() {
            replace_dir(&newest, &previous, true)?;
        }
        write_checkpoint(&newest, state)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointMeta {
    step: u64,
    adam_t: u64,
    since_fired: Vec<u64>,
}

/// Every tensor of `named` as a flat safetensors entry called `prefix + name`.
fn flat_tensors<'a>(
    prefix: &str,
    named: impl IntoIterator<Item = (ParamId, &'a [f32])>,
) -> Vec<(String, Vec<usize>, &'a [f32])> {
    named
        .into_iter()
        .map(|(id, v)| (format!("{prefix}{}", id.name()), vec![v.len()], v))
        .collect()
}

/// Writes [`flat_tensors`]' entries as one safetensors file.
fn write_flat(path: &Path, all: &[(String, Vec<usize>, &[f32])]) -> Result<()> {
    let refs: Vec<(&str, Vec<usize>, &[f32])> = all
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.clone(), *c))
        .collect();
    write_tensors(path, &refs, None)
}

fn save_checkpoint(dir: &Path, s: &TrainState) -> Result<()> {
    let mut all = flat_tensors("param.", s.sae.tensors());
    for (prefix, moments) in [("adam_m.", &s.adam.state.m), ("adam_v.", &s.adam.state.v)] {
        all.extend(flat_tensors(
            prefix,
            moments.named().into_iter().map(|(id, v)| (id, &v[..])),
        ));
    }
    write_flat(&dir.join("state.safetensors"), &all)?;
    write_json_atomic(
        &dir.join("state.json"),
        &CheckpointMeta {
            step: s.step,
            adam_t: s.adam.state.t,
            since_fired: s.since_fired.clone(),
        },
    )
}

/// Fills every tensor `named` lists from the entry `prefix + name` of `map`, which must be
/// there with exactly that many values.
fn fill_from<'a>(
    map: &mut std::collections::BTreeMap<String, crate::io::tensors::Tensor>,
    path: &Path,
    prefix: &str,
    named: impl IntoIterator<Item = (ParamId, &'a mut [f32])>,
) -> Result<()> {
    for (id, slot) in named {
        let key = format!("{prefix}{}", id.name());
        let t = map
            .remove(&key)
            .ok_or_else(|| Error::format(path, format!("missing tensor '{key}'")))?;
        if t.data.len() != slot.len() {
            return Err(Error::format(
                path,
                format!(
                    "tensor '{key}' has {} values, the model needs {}",
                    t.data.len(),
                    slot.len()
                ),
            ));
        }
        slot.copy_from_slice(&t.data);
    }
    Ok(())
}

/// The checkpoint in `dir` (None when there is none) of a model of `n` latents.
fn load_checkpoint(dir: &Path, cfg: &TrainConfig, n: usize) -> Result<Option<TrainState>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let meta: CheckpointMeta = read_json(&dir.join("state.json"))?;
    let tpath = dir.join("state.safetensors");
    let mut map = read_tensors(&tpath)?;
    if meta.since_fired.len() != n {
        return Err(Error::shape(
            format!("{}: since_fired", dir.display()),
            n.to_string(),
            meta.since_fired.len().to_string(),
        ));
    }
    let d_in = map
        .get("param.b_dec")
        .map(|t| t.data.len())
        .ok_or_else(|| Error::format(&tpath, "missing tensor 'param.b_dec'"))?;
    let hidden = match cfg.arch {
        crate::train::ArchConfig::Mlp { hidden, .. } => Some(hidden),
        _ => None,
    };
    let mut sae = Sae::zeros(d_in, n, cfg.arch.activation(), hidden);
    fill_from(&mut map, &tpath, "param.", sae.tensors_mut())?;
    sae.validate(&tpath.display().to_string())?;
    let mut adam = super::step::adam_for(cfg, &sae);
    adam.state.t = meta.adam_t;
    for (prefix, moments) in [
        ("adam_m.", &mut adam.state.m),
        ("adam_v.", &mut adam.state.v),
    ] {
        let slots = moments
            .named_mut()
            .into_iter()
            .map(|(id, v)| (id, &mut v[..]));
        fill_from(&mut map, &tpath, prefix, slots)?;
    }
    Ok(Some(TrainState {
        sae,
        adam,
        step: meta.step,
        since_fired: meta.since_fired,
    }))
}
