//! The run folder of `train`: built as `RUN.partial/` (job, metrics, checkpoints) and renamed to
//! `RUN/` only when training finished, so a killed run never looks complete and never replaces a
//! finished one. `--resume RUN` continues from the last checkpoint in `RUN.partial/`.
//!
//! Finished layout: `cfg.json` + `sae_weights.safetensors` (SAELens), `train_config.json` (the
//! resolved job, written before step 0), `metrics.jsonl` (one [`StepRecord`] per log), `run.json`
//! (provenance, config, seed, timings, final metrics).

use super::observer::{Observer, StepRecord};
use super::{Adam, AdamState, TrainConfig, TrainState};
use crate::io::tensors::{read_tensors, write_tensors};
use crate::io::{read_json, replace_dir, write_json_atomic};
use crate::sae::{Grads, Sae};
use crate::{Error, Matrix, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Suffix of an unfinished run folder.
pub const RUN_PARTIAL_SUFFIX: &str = ".partial";
const JOB_FILE: &str = "train_config.json";
const METRICS_FILE: &str = "metrics.jsonl";
const CKPT_DIR: &str = "checkpoint";

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
}

/// An open run folder.
#[derive(Debug)]
pub struct RunDir {
    partial: PathBuf,
    dest: PathBuf,
    force: bool,
    metrics: std::fs::File,
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
            partial,
            dest: dest.to_path_buf(),
            force,
            metrics,
        })
    }

    /// Opens an unfinished run (`path` is `RUN` or `RUN.partial`) and loads its last checkpoint
    /// (None when it was killed before the first one). `metrics.jsonl` is cut back to the
    /// checkpoint so the finished log equals that of an uninterrupted run.
    pub fn resume(path: &Path) -> Result<(Self, RunJob, Option<TrainState>)> {
        let s = path.to_string_lossy();
        let dest = PathBuf::from(
            s.strip_suffix(RUN_PARTIAL_SUFFIX)
                .unwrap_or(&s)
                .trim_end_matches('/'),
        );
        let partial = partial_of(&dest);
        if !partial.is_dir() {
            let why = if dest.join(crate::sae::saelens::CFG_FILE).exists() {
                "the run already finished"
            } else {
                "no unfinished run there"
            };
            return Err(Error::format(&partial, format!("cannot resume: {why}")));
        }
        let job: RunJob = read_json(&partial.join(JOB_FILE))?;
        let state = load_checkpoint(&partial.join(CKPT_DIR), &job.config)?;
        let step = state.as_ref().map(|s| s.step).unwrap_or(0);
        let mpath = partial.join(METRICS_FILE);
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
        let metrics = open_append(&mpath)?;
        Ok((
            RunDir {
                partial,
                dest,
                force: true,
                metrics,
            },
            job,
            state,
        ))
    }

    /// The folder being written (`RUN.partial`).
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// Writes the finished SAE and record, removes the checkpoint and moves the folder to `RUN`.
    pub fn finish(self, sae: &Sae, metadata: Value, record: &Value) -> Result<PathBuf> {
        crate::sae::saelens::save(&self.partial, sae, metadata)?;
        write_json_atomic(&self.partial.join("run.json"), record)?;
        let ck = self.partial.join(CKPT_DIR);
        if ck.exists() {
            std::fs::remove_dir_all(&ck).map_err(|e| Error::io(&ck, e))?;
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
        // Build the new checkpoint beside the old one, then swap folders.
        let tmp = self.partial.join(format!("{CKPT_DIR}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        save_checkpoint(&tmp, state)?;
        replace_dir(&tmp, &self.partial.join(CKPT_DIR), true)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointMeta {
    step: u64,
    adam_t: u64,
    since_fired: Vec<u64>,
}

/// Every non-empty tensor of `g` as a flat safetensors entry named `prefix + name`.
fn flat_tensors<'a>(prefix: &str, g: &'a Grads) -> Vec<(String, Vec<usize>, &'a [f32])> {
    g.named()
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(name, v)| (format!("{prefix}{name}"), vec![v.len()], &v[..]))
        .collect()
}

/// The parameters of `sae` laid out like its gradients.
fn params_of(sae: &Sae) -> Grads {
    Grads {
        w_enc: sae.w_enc.as_slice().to_vec(),
        b_enc: sae.b_enc.clone(),
        w_dec: sae.w_dec.as_slice().to_vec(),
        b_dec: sae.b_dec.clone(),
        threshold: sae.threshold.clone(),
        b_mag: sae.b_mag.clone(),
        r_mag: sae.r_mag.clone(),
        w_hidden: sae
            .hidden
            .as_ref()
            .map_or(Vec::new(), |h| h.w.as_slice().to_vec()),
        b_hidden: sae.hidden.as_ref().map_or(Vec::new(), |h| h.b.clone()),
    }
}

fn save_checkpoint(dir: &Path, s: &TrainState) -> Result<()> {
    let params = params_of(&s.sae);
    let mut all = flat_tensors("param.", &params);
    all.extend(flat_tensors("adam_m.", &s.adam.state.m));
    all.extend(flat_tensors("adam_v.", &s.adam.state.v));
    let refs: Vec<(&str, Vec<usize>, &[f32])> = all
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.clone(), *c))
        .collect();
    write_tensors(&dir.join("state.safetensors"), &refs, None)?;
    write_json_atomic(
        &dir.join("state.json"),
        &CheckpointMeta {
            step: s.step,
            adam_t: s.adam.state.t,
            since_fired: s.since_fired.clone(),
        },
    )
}

/// Reads the tensors `prefix + name`; the four of every SAE must be there, the others may not.
fn load_flat(
    map: &mut std::collections::BTreeMap<String, crate::io::tensors::Tensor>,
    path: &Path,
    prefix: &str,
) -> Result<Grads> {
    let mut g = Grads::default();
    let names: Vec<&str> = g.named().iter().map(|(n, _)| *n).collect();
    for (i, name) in names.into_iter().enumerate() {
        let key = format!("{prefix}{name}");
        let slot = g.by_name_mut(name).expect("a name from Grads::named");
        match map.remove(&key) {
            Some(t) => *slot = t.data,
            None if i < 4 => {
                return Err(Error::format(path, format!("missing tensor '{key}'")));
            }
            None => {}
        }
    }
    Ok(g)
}

fn load_checkpoint(dir: &Path, cfg: &TrainConfig) -> Result<Option<TrainState>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let meta: CheckpointMeta = read_json(&dir.join("state.json"))?;
    let tpath = dir.join("state.safetensors");
    let mut map = read_tensors(&tpath)?;
    let n = cfg.latents;
    let p = load_flat(&mut map, &tpath, "param.")?;
    let m = p.b_dec.len();
    if meta.since_fired.len() != n {
        return Err(Error::shape(
            format!("{}: since_fired", dir.display()),
            n.to_string(),
            meta.since_fired.len().to_string(),
        ));
    }
    let bad = |what: &str| {
        Error::format(
            &tpath,
            format!("{what} does not fit {n} latents of width {m}"),
        )
    };
    let width = p.b_hidden.len();
    let hidden = if width > 0 {
        Some(crate::sae::HiddenLayer {
            w: Matrix::from_vec(width, m, p.w_hidden).map_err(|_| bad("param.w_hidden"))?,
            b: p.b_hidden,
        })
    } else {
        None
    };
    let e = if width > 0 { width } else { m };
    let sae = Sae {
        activation: cfg.arch.activation(),
        w_enc: Matrix::from_vec(n, e, p.w_enc).map_err(|_| bad("param.w_enc"))?,
        b_enc: p.b_enc,
        w_dec: Matrix::from_vec(n, m, p.w_dec).map_err(|_| bad("param.w_dec"))?,
        b_dec: p.b_dec,
        apply_b_dec_to_input: true,
        threshold: p.threshold,
        b_mag: p.b_mag,
        r_mag: p.r_mag,
        hidden,
    };
    sae.validate(&tpath.display().to_string())?;
    let mut adam = Adam::for_sae(cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps, &sae);
    adam.state = AdamState {
        t: meta.adam_t,
        m: load_flat(&mut map, &tpath, "adam_m.")?,
        v: load_flat(&mut map, &tpath, "adam_v.")?,
    };
    if adam
        .state
        .m
        .named()
        .iter()
        .zip(params_of(&sae).named().iter())
        .any(|(a, b)| a.1.len() != b.1.len())
    {
        return Err(bad("the optimiser state"));
    }
    Ok(Some(TrainState {
        sae,
        adam,
        step: meta.step,
        since_fired: meta.since_fired,
    }))
}
