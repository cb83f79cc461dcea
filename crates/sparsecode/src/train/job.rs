//! A training job from a file or store to a finished run folder: which data (in memory or a
//! streamed store) and how it is identified, what a resumed run must find unchanged, what goes
//! into the SAE's metadata, and the record written at the end. The CLI (and any binding) only
//! parses, calls these, and prints.

use super::{
    train_with, CheckedConfig, Observer, RunDir, RunJob, TrainOutcome, TrainRequest, TrainState,
};
use crate::data::store::{Store, MANIFEST};
use crate::data::RowSource;
use crate::eval::{evaluate_sae, ReconMetrics};
use crate::io::record::{fingerprint, fingerprint_str, provenance};
use crate::sae::{Collective, SaeFormat, SingleProcess};
use crate::{Error, Matrix, Parallelism, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Rows of a store used for the end-of-run metrics (all of them for in-memory data).
const EVAL_ROWS: u64 = 32_768;

/// Training data: a `.npy` matrix read into memory, or an activation store streamed from disk.
pub enum TrainingData {
    /// In memory.
    Memory(Matrix),
    /// A store (`store create` or `harvest`).
    Store(Store),
    /// Rows computed as they are read (a model's activations streamed into training).
    Streamed {
        /// The rows.
        rows: Box<dyn RowSource + Send>,
        /// Identifies them (what made them, not their values: they are never all in one place).
        fingerprint: String,
        /// SAELens metadata of an SAE trained on them (model_name, hook_name, ...).
        metadata: Value,
        /// Everything needed to stream them again, for a resumed run ([`RunJob::source`]).
        source: Value,
    },
}

impl TrainingData {
    /// Opens `path`: a store when it holds a manifest, else a `.npy` matrix.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or store"),
            ));
        }
        if path.join(MANIFEST).exists() {
            return Ok(TrainingData::Store(Store::open(path)?));
        }
        Ok(TrainingData::Memory(crate::io::read_data(path)?))
    }

    /// Turns off (or on) checking a store's chunk hashes as rows are read (`--no-verify`).
    pub fn set_verify_reads(&mut self, on: bool) {
        if let TrainingData::Store(s) = self {
            s.set_verify_reads(on);
        }
    }

    /// The rows, for `train`.
    pub fn rows(&self) -> &dyn RowSource {
        match self {
            TrainingData::Memory(m) => m,
            TrainingData::Store(s) => s,
            TrainingData::Streamed { rows, .. } => rows.as_ref(),
        }
    }

    /// `[samples, d_in]`.
    pub fn shape(&self) -> [usize; 2] {
        let r = self.rows();
        [usize::try_from(r.rows()).unwrap_or(usize::MAX), r.cols()]
    }

    /// Identifies the content: a hash of the values in memory, of the shard hashes for a store.
    pub fn fingerprint(&self) -> String {
        match self {
            TrainingData::Memory(m) => fingerprint(m.as_slice()),
            TrainingData::Store(s) => {
                let all: String = s
                    .manifest()
                    .shards
                    .iter()
                    .map(|x| x.sha256.as_str())
                    .collect();
                format!("shards:{}", fingerprint_str(&all))
            }
            TrainingData::Streamed { fingerprint, .. } => fingerprint.clone(),
        }
    }

    /// SAELens `metadata` for an SAE trained on this data read from `path`: a harvested store
    /// names its model, hook, context size and layer.
    pub fn sae_metadata(&self, path: &Path) -> Value {
        let mut meta = json!({ "model_name": null, "hook_name": null, "dataset_path": path, "context_size": null, "trained_with": "sparsecode" });
        if let (TrainingData::Streamed { metadata, .. }, Some(m)) = (self, meta.as_object_mut()) {
            if let Some(extra) = metadata.as_object() {
                m.extend(extra.clone());
            }
            return meta;
        }
        if let TrainingData::Store(store) = self {
            let m = &store.manifest().metadata;
            for key in ["model_name", "hook_name", "context_size"] {
                if !m[key].is_null() {
                    meta[key] = m[key].clone();
                }
            }
            if !m["layer"].is_null() {
                meta["hook_layer"] = m["layer"].clone();
            }
        }
        meta
    }
}

impl RunJob {
    /// The job of training `request` on `data` (read from `path`), defaults decided and checked.
    pub fn plan(
        request: &TrainRequest,
        path: &Path,
        data: &TrainingData,
        dictionary: Option<PathBuf>,
        format: SaeFormat,
    ) -> Result<(RunJob, CheckedConfig)> {
        let checked = request.resolve(data.rows())?;
        if format == SaeFormat::Sparsify && !matches!(checked.arch, super::ArchConfig::TopK { .. })
        {
            return Err(Error::param(
                "format",
                "sparsify folders hold TopK SAEs only (train with arch topk, or save as saelens)",
            ));
        }
        let job = RunJob {
            config: checked.config().clone(),
            data: path.to_path_buf(),
            data_shape: data.shape(),
            data_fingerprint: data.fingerprint(),
            dictionary,
            metadata: with_arch_metadata(data.sae_metadata(path), &checked.arch),
            format,
            source: match data {
                TrainingData::Streamed { source, .. } => Some(source.clone()),
                _ => None,
            },
        };
        Ok((job, checked))
    }

    /// Checks that `data` is what the run started on (for a resume) and the configuration
    /// against it.
    pub fn check_data(&self, data: &TrainingData) -> Result<CheckedConfig> {
        if data.shape() != self.data_shape || data.fingerprint() != self.data_fingerprint {
            return Err(Error::format(
                &self.data,
                "the data changed since the run started (shape or content differs); cannot resume",
            ));
        }
        self.config
            .clone()
            .check(self.data_shape[0], self.data_shape[1])
    }
}

/// SAELens metadata with what the saved inference SAE does not show of its training: a
/// Matryoshka SAE's prefix sizes, as `matryoshka_widths` (SAELens' name), since it is saved as
/// JumpReLU.
fn with_arch_metadata(mut metadata: Value, arch: &super::ArchConfig) -> Value {
    if let (super::ArchConfig::Matryoshka { prefixes, .. }, Some(m)) =
        (arch, metadata.as_object_mut())
    {
        m.insert("matryoshka_widths".into(), json!(prefixes));
    }
    metadata
}

/// Trains `job` on `data` (from `resume` when given), the observer seeing every step.
pub fn train_job(
    job: &RunJob,
    checked: &CheckedConfig,
    data: &TrainingData,
    resume: Option<TrainState>,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome> {
    train_job_with(job, checked, data, resume, obs, &mut SingleProcess)
}

/// [`train_job`] as one process of several ([`train_with`]).
pub fn train_job_with(
    job: &RunJob,
    checked: &CheckedConfig,
    data: &TrainingData,
    resume: Option<TrainState>,
    obs: &mut dyn Observer,
    collective: &mut dyn Collective,
) -> Result<TrainOutcome> {
    let dict = match &job.dictionary {
        Some(p) => Some(crate::io::read_data(p)?),
        None => None,
    };
    train_with(checked, data.rows(), dict.as_ref(), resume, obs, collective)
}

/// Evaluates the trained SAE on (the first rows of) the data, writes it and the run record, and
/// moves the run folder into place. Returns the folder and the metrics.
pub fn finish_job(
    run_dir: RunDir,
    job: &RunJob,
    data: &TrainingData,
    outcome: &TrainOutcome,
    start_step: u64,
) -> Result<(PathBuf, ReconMetrics)> {
    let sae = outcome.model();
    let x = data.rows().head(EVAL_ROWS)?;
    let metrics = evaluate_sae(&sae, &x, Parallelism::threads(job.config.threads));
    let mut record = provenance("train");
    record["job"] = value(job);
    record["seed"] = json!(job.config.seed);
    record["resumed_from_step"] = json!(start_step);
    let samples = (job.config.steps - start_step) as f64 * job.config.batch_size as f64;
    record["timings"] = json!({
        "seconds_this_process": outcome.seconds,
        "samples_per_s": samples / outcome.seconds.max(1e-9),
    });
    record["certified_encoder"] = value(&outcome.certified);
    record["ranks"] = json!(outcome.ranks);
    record["last_step"] = value(&outcome.last);
    record["metrics"] = value(&metrics);
    let dest = run_dir.finish(&sae, job.format, job.metadata.clone(), &record)?;
    Ok((dest, metrics))
}

/// A record field (these types have no maps with non-string keys, so they always serialise).
fn value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
