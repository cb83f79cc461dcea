//! `SaeCore`: the native half of `sparsecode.SparseAutoencoder` (the scikit-learn layer is in
//! Python). The estimator's parameters arrive as a [`TrainRequest`] (JSON), so every default is
//! decided by the library exactly as for `sparsecode train`: the same data, seed and threads give
//! the same model from Python and from the CLI.
//!
//! Training runs on a thread of its own with the GIL released; the calling (main) thread wakes
//! every 20 ms to let Python check its signals (only the main thread can) and to hand logged
//! steps to the progress callback. On Ctrl-C (or an exception in the callback) it raises a flag
//! the trainer reads after every step: `fit` stops after the current step with that exception,
//! and the model keeps what it learned so far.

use crate::watch::watch;
use crate::{matrix, par, to_numpy, to_py};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use sparsecode::data::store::Store;
use sparsecode::data::RowSource;
use sparsecode::io::OutputDir;
use sparsecode::sae::{Activation, Codes, Sae, SaeFormat};
use sparsecode::train::{
    train, CheckedConfig, Control, Observer, StepRecord, TrainConfig, TrainOutcome, TrainRequest,
    TrainState,
};
use sparsecode::Matrix;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Stops the trainer after the step in which the flag went up; queues logged steps for the
/// main thread.
struct Progress<'a> {
    stop: &'a AtomicBool,
    logs: &'a Mutex<Vec<StepRecord>>,
}

impl Observer for Progress<'_> {
    fn on_step(&mut self, _step: u64) -> Control {
        if self.stop.load(Ordering::Relaxed) {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn on_log(&mut self, record: &StepRecord) -> sparsecode::Result<()> {
        if let Ok(mut q) = self.logs.lock() {
            q.push(record.clone());
        }
        Ok(())
    }
}

/// A sparse autoencoder: the request it trains by, and once fitted (or loaded) its model.
#[pyclass(module = "sparsecode._native")]
pub struct SaeCore {
    request: TrainRequest,
    /// The resolved configuration of the current model (`partial_fit` keeps extending it).
    config: Option<TrainConfig>,
    /// The trainer's state (none for a loaded model until it trains).
    state: Option<TrainState>,
    /// The model for raw inputs (the input scale folded in).
    model: Option<Sae>,
}

impl SaeCore {
    fn model(&self) -> PyResult<&Sae> {
        self.model
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the SparseAutoencoder is not fitted yet"))
    }

    /// The codes of the rows of `x`; a C-contiguous float32 array (what the Python layer hands
    /// over) is read in place, without a copy.
    fn codes(&self, py: Python<'_>, x: &PyReadonlyArray2<'_, f32>) -> PyResult<Codes> {
        let sae = self.model()?;
        let view = x.as_array();
        if view.ncols() != sae.d_in() {
            return Err(PyValueError::new_err(format!(
                "X has {} columns but the SAE reads {} (its d_in)",
                view.ncols(),
                sae.d_in()
            )));
        }
        let p = self.threads();
        let owned;
        let rows = match view.as_slice() {
            Some(s) => s,
            None => {
                owned = view.iter().copied().collect::<Vec<f32>>();
                &owned[..]
            }
        };
        py.detach(|| sae.encode_rows(rows, p)).map_err(to_py)
    }

    fn threads(&self) -> sparsecode::Parallelism {
        par(Some(self.request.threads))
    }

    /// Runs `checked` on `data` from `resume` on a worker thread, handing logs to `callback`.
    fn run(
        &mut self,
        py: Python<'_>,
        checked: CheckedConfig,
        data: &dyn RowSource,
        resume: Option<TrainState>,
        callback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let stop = AtomicBool::new(false);
        let logs = Mutex::new(Vec::new());
        let (stop_flag, queue, cfg) = (&stop, &logs, &checked);
        let (out, raised) = watch(
            py,
            move || {
                let mut obs = Progress {
                    stop: stop_flag,
                    logs: queue,
                };
                train(cfg, data, None, resume, &mut obs)
            },
            |py| deliver(py, &logs, callback),
            || stop.store(true, Ordering::Relaxed),
        )?;
        let out: TrainOutcome = out.map_err(to_py)?;
        self.model = Some(out.model());
        self.state = Some(out.state);
        self.config = Some(checked.config().clone());
        match raised {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Trains from scratch on `data` by the request.
    fn fit_source(
        &mut self,
        py: Python<'_>,
        data: &dyn RowSource,
        callback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let checked = py.detach(|| self.request.resolve(data)).map_err(to_py)?;
        self.state = None;
        self.run(py, checked, data, None, callback)
    }
}

/// Hands the queued step records to `callback` as JSON lines.
fn deliver(
    py: Python<'_>,
    logs: &Mutex<Vec<StepRecord>>,
    callback: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let records = logs.lock().map(|mut q| std::mem::take(&mut *q));
    let (Some(cb), Ok(records)) = (callback, records) else {
        return Ok(());
    };
    for r in records {
        let line = serde_json::to_string(&r).unwrap_or_default();
        cb.call1((line,))?;
        py.check_signals()?;
    }
    Ok(())
}

/// CSR parts of `codes`: non-zero values, their column indices (sorted within a row), row
/// starts.
fn csr_parts(codes: &Codes) -> (Vec<f32>, Vec<i64>, Vec<i64>) {
    let (mut data, mut indices, mut indptr) = (Vec::new(), Vec::new(), vec![0i64]);
    let mut push_row = |row: &mut Vec<(u32, f32)>| {
        row.sort_unstable_by_key(|(j, _)| *j);
        for &(j, v) in row.iter() {
            indices.push(i64::from(j));
            data.push(v);
        }
        indptr.push(data.len() as i64);
        row.clear();
    };
    let mut row = Vec::new();
    match codes {
        Codes::Sparse(t) => {
            for (idx, val) in t
                .indices
                .chunks(t.k.max(1))
                .zip(t.values.chunks(t.k.max(1)))
            {
                row.extend(
                    idx.iter()
                        .zip(val)
                        .filter(|(_, v)| **v != 0.0)
                        .map(|(j, v)| (*j, *v)),
                );
                push_row(&mut row);
            }
        }
        Codes::Dense(m) => {
            for r in 0..m.rows() {
                let nz = m.row(r).iter().enumerate().filter(|(_, v)| **v != 0.0);
                row.extend(nz.map(|(j, v)| (j as u32, *v)));
                push_row(&mut row);
            }
        }
    }
    (data, indices, indptr)
}

/// The architecture name, `k` and experts of a model, as the Python estimator spells them.
fn describe(sae: &Sae) -> (&'static str, Option<usize>, Option<usize>) {
    match (sae.activation(), sae.encoder.hidden().is_some()) {
        (_, true) => ("mlp", None, None),
        (Activation::Relu, _) => ("relu", None, None),
        (Activation::TopK { k }, _) => ("topk", Some(k), None),
        (Activation::JumpRelu, _) => ("jumprelu", None, None),
        (Activation::Gated, _) => ("gated", None, None),
        (Activation::Switch { k, experts }, _) => ("switch", Some(k), Some(experts)),
    }
}

#[pymethods]
impl SaeCore {
    /// A model to be trained by `request` (a JSON `TrainRequest`).
    #[new]
    fn new(request: &str) -> PyResult<Self> {
        let request: TrainRequest = serde_json::from_str(request)
            .map_err(|e| PyValueError::new_err(format!("SparseAutoencoder parameters: {e}")))?;
        Ok(SaeCore {
            request,
            config: None,
            state: None,
            model: None,
        })
    }

    /// Trains from scratch on the rows of `x`.
    #[pyo3(signature = (x, callback=None))]
    fn fit(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        callback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let x = matrix(&x, "X")?;
        self.fit_source(py, &x, callback.as_ref())
    }

    /// Trains from scratch on an activation store, streamed from disk.
    #[pyo3(signature = (path, verify=true, callback=None))]
    fn fit_store(
        &mut self,
        py: Python<'_>,
        path: PathBuf,
        verify: bool,
        callback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let mut store = Store::open(&path).map_err(to_py)?;
        store.set_verify_reads(verify);
        self.fit_source(py, &store, callback.as_ref())
    }

    /// `n_steps` more steps on the batch `x`; the first call resolves the request on it.
    #[pyo3(signature = (x, n_steps, callback=None))]
    fn partial_fit(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        n_steps: u64,
        callback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let x = matrix(&x, "X")?;
        if let Some(s) = &self.state {
            if x.cols() != s.sae.d_in() {
                return Err(PyValueError::new_err(format!(
                    "X has {} features but the SparseAutoencoder was started on {}",
                    x.cols(),
                    s.sae.d_in()
                )));
            }
        }
        let mut cfg = match (&self.config, &self.state) {
            (Some(c), Some(_)) => c.clone(),
            _ => {
                let mut first = self.request.clone();
                first.steps = Some(first.steps.unwrap_or(n_steps).max(1));
                first.epochs = None;
                first.resolve(&x).map_err(to_py)?.config().clone()
            }
        };
        let done = self.state.as_ref().map_or(0, |s| s.step);
        cfg.steps = done
            .checked_add(n_steps)
            .ok_or_else(|| PyValueError::new_err("n_steps overflows the step counter"))?;
        cfg.batch_size = cfg.batch_size.min(x.rows().max(1));
        // Checked before the state is handed over: a bad batch leaves the model as it was.
        let checked = cfg.check_for(&x).map_err(to_py)?;
        let resume = self.state.take();
        self.run(py, checked, &x, resume, callback.as_ref())
    }

    /// Dense codes of the rows of `x`.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let dense = match self.codes(py, &x)? {
            Codes::Dense(m) => m,
            Codes::Sparse(t) => t.to_dense(self.model()?.d_sae()),
        };
        Ok(to_numpy(py, dense))
    }

    /// The codes of the rows of `x` as CSR parts `(data, indices, indptr)`, column indices
    /// sorted within each row, zeros left out. TopK codes go straight from the selected slots
    /// to CSR: the dense `[rows, latents]` matrix is never made.
    #[allow(clippy::type_complexity)]
    fn encode_csr<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<(
        Bound<'py, PyArray1<f32>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
    )> {
        let codes = self.codes(py, &x)?;
        let (data, indices, indptr) = py.detach(|| csr_parts(&codes));
        Ok((
            data.into_pyarray(py),
            indices.into_pyarray(py),
            indptr.into_pyarray(py),
        ))
    }

    /// Reconstructions `z W_dec + b_dec` of the codes `z`.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        z: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let sae = self.model()?;
        let z = matrix(&z, "Z")?;
        if z.cols() != sae.d_sae() {
            return Err(PyValueError::new_err(format!(
                "Z has {} columns but the SAE has {} latents",
                z.cols(),
                sae.d_sae()
            )));
        }
        let p = self.threads();
        Ok(to_numpy(py, py.detach(|| sae.decode(&z, p))))
    }

    /// The decoder `[n_latents, d_in]` (scikit-learn's `components_`).
    fn components<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        Ok(to_numpy(py, self.model()?.w_dec.clone()))
    }

    /// The decoder bias `[1, d_in]`.
    fn decoder_bias<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let b = self.model()?.b_dec.clone();
        let m = Matrix::from_vec(1, b.len(), b).map_err(to_py)?;
        Ok(to_numpy(py, m))
    }

    /// Steps trained so far.
    fn steps(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.step)
    }

    /// `(d_in, n_latents, arch, k, n_experts)` of the model.
    #[allow(clippy::type_complexity)]
    fn shape(&self) -> PyResult<(usize, usize, &'static str, Option<usize>, Option<usize>)> {
        let sae = self.model()?;
        let (arch, k, experts) = describe(sae);
        Ok((sae.d_in(), sae.d_sae(), arch, k, experts))
    }

    /// The resolved training configuration as JSON (None before the first fit).
    fn config_json(&self) -> Option<String> {
        self.config
            .as_ref()
            .and_then(|c| serde_json::to_string(c).ok())
    }

    /// Writes the model as an SAE folder (`saelens` or `sparsify`), atomically.
    #[pyo3(signature = (path, format, overwrite=false))]
    fn save(&self, py: Python<'_>, path: PathBuf, format: &str, overwrite: bool) -> PyResult<()> {
        let sae = self.model()?;
        let format: SaeFormat = sparsecode::io::parse_name(format).map_err(|_| {
            PyValueError::new_err(format!(
                "format '{format}': expected 'saelens' or 'sparsify'"
            ))
        })?;
        let metadata = serde_json::json!({
            "sparsecode_version": sparsecode::VERSION,
            "trained_by": "sparsecode (Python)",
            "train_config": self.config,
        });
        py.detach(|| {
            let out = OutputDir::create(&path, overwrite)?;
            sparsecode::sae::save(out.path(), sae, format, metadata)?;
            out.commit().map(|_| ())
        })
        .map_err(to_py)
    }

    /// Reads an SAE folder (SAELens or sparsify, told apart by content).
    #[staticmethod]
    #[pyo3(signature = (path, n_threads=None))]
    fn load(py: Python<'_>, path: PathBuf, n_threads: Option<usize>) -> PyResult<SaeCore> {
        if !path.exists() {
            return Err(PyFileNotFoundError::new_err(format!(
                "{}: no such SAE folder",
                path.display()
            )));
        }
        let sae = py.detach(|| sparsecode::sae::load(&path)).map_err(to_py)?;
        let (arch, k, experts) = describe(&sae);
        let mut request: TrainRequest = serde_json::from_value(serde_json::json!({
            "arch": arch,
            "latents": sae.d_sae(),
            "k": k,
            "experts": experts,
        }))
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        request.threads = par(n_threads).count();
        Ok(SaeCore {
            request,
            config: None,
            state: None,
            model: Some(sae),
        })
    }
}
