//! `SaeCore`: the native half of `sparsecode.SparseAutoencoder` (the scikit-learn layer is in
//! Python). Training runs on a thread of its own with the GIL released; the calling (main)
//! thread wakes every 20 ms to let Python check its signals (only the main thread can), and on
//! Ctrl-C raises a flag the trainer reads after every step: `fit` stops after the current step
//! with `KeyboardInterrupt`, and the model keeps what it learned so far.

use crate::{matrix, par, to_numpy, to_py};
use numpy::{PyArray2, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sparsecode::sae::Sae;
use sparsecode::train::{train, ArchConfig, Control, Observer, TrainConfig, TrainState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Stops the trainer after the step in which the flag went up.
struct StopFlag<'a>(&'a AtomicBool);

impl Observer for StopFlag<'_> {
    fn on_step(&mut self, _step: u64) -> Control {
        if self.0.load(Ordering::Relaxed) {
            Control::Stop
        } else {
            Control::Continue
        }
    }
}

/// A sparse autoencoder being trained: its configuration and, once fitted, its state.
#[pyclass(module = "sparsecode._native")]
pub struct SaeCore {
    template: TrainConfig,
    state: Option<TrainState>,
}

fn arch(name: &str, k: Option<usize>, l1: Option<f32>, d_in_hint: usize) -> PyResult<ArchConfig> {
    match name {
        "topk" => {
            let k = k.ok_or_else(|| PyValueError::new_err("arch='topk' needs k"))?;
            Ok(ArchConfig::TopK {
                k,
                aux_k: (d_in_hint / 2).max(1),
                aux_coef: 1.0 / 32.0,
            })
        }
        "relu" => Ok(ArchConfig::Relu {
            l1: l1.ok_or_else(|| PyValueError::new_err("arch='relu' needs l1"))?,
            l1_warmup_steps: 0,
        }),
        other => Err(PyValueError::new_err(format!(
            "unknown arch '{other}' (this slice has topk and relu)"
        ))),
    }
}

impl SaeCore {
    fn model(&self) -> PyResult<&Sae> {
        self.state
            .as_ref()
            .map(|s| &s.sae)
            .ok_or_else(|| PyValueError::new_err("the SparseAutoencoder is not fitted yet"))
    }

    /// Runs `steps` more steps on `x` (from the current state, or from scratch).
    fn run(&mut self, py: Python<'_>, x: sparsecode::Matrix, steps: u64) -> PyResult<()> {
        let mut cfg = self.template.clone();
        let done = self.state.as_ref().map_or(0, |s| s.step);
        cfg.steps = done
            .checked_add(steps)
            .ok_or_else(|| PyValueError::new_err("n_steps overflows the step counter"))?;
        cfg.batch_size = cfg.batch_size.min(x.rows().max(1));
        cfg.log_every = cfg.steps.max(1);
        let checked = cfg.check_for(&x).map_err(to_py)?;
        let resume = self.state.take();
        let stop = AtomicBool::new(false);
        let mut interrupted: Option<PyErr> = None;
        let out = std::thread::scope(|s| {
            let worker = s.spawn(|| train(&checked, &x, None, resume, &mut StopFlag(&stop)));
            while !worker.is_finished() {
                py.detach(|| std::thread::sleep(Duration::from_millis(20)));
                if interrupted.is_none() {
                    if let Err(e) = py.check_signals() {
                        interrupted = Some(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            worker.join()
        });
        let out = match out {
            Ok(r) => r.map_err(to_py)?,
            Err(_) => {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "sparsecode: the training thread panicked (a defect: please report it)",
                ))
            }
        };
        self.state = Some(out.state);
        match interrupted {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl SaeCore {
    #[new]
    #[pyo3(signature = (arch_name, n_latents, k, l1, lr, batch_size, seed, d_in_hint, n_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        arch_name: &str,
        n_latents: usize,
        k: Option<usize>,
        l1: Option<f32>,
        lr: f32,
        batch_size: usize,
        seed: u64,
        d_in_hint: usize,
        n_threads: Option<usize>,
    ) -> PyResult<Self> {
        let a = arch(arch_name, k, l1, d_in_hint)?;
        let mut template = TrainConfig::new(a, n_latents, 1, batch_size, lr, seed);
        template.threads = par(n_threads).count();
        Ok(SaeCore {
            template,
            state: None,
        })
    }

    /// Trains from scratch for `n_steps` steps on `x`.
    fn fit(&mut self, py: Python<'_>, x: PyReadonlyArray2<'_, f32>, n_steps: u64) -> PyResult<()> {
        let x = matrix(&x, "X")?;
        self.state = None;
        self.run(py, x, n_steps)
    }

    /// `n_steps` more steps on the batch `x` (the first call starts the model).
    fn partial_fit(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        n_steps: u64,
    ) -> PyResult<()> {
        let x = matrix(&x, "X")?;
        self.run(py, x, n_steps)
    }

    /// Dense codes of the rows of `x`.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let sae = self.model()?;
        let x = matrix(&x, "X")?;
        sae.check_input(&x, "X").map_err(to_py)?;
        let p = par(Some(self.template.threads));
        Ok(to_numpy(py, py.detach(|| sae.encode_dense(&x, p))))
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
        let p = par(Some(self.template.threads));
        Ok(to_numpy(py, py.detach(|| sae.decode(&z, p))))
    }

    /// The decoder `[n_latents, d_in]` (scikit-learn's `components_`).
    fn components<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        Ok(to_numpy(py, self.model()?.w_dec.clone()))
    }

    /// Steps trained so far.
    fn steps(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.step)
    }
}
