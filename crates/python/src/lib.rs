//! `sparsecode._native`: the Rust side of the Python package. Functions take float32 C-contiguous
//! numpy arrays (the Python layer converts anything else, once), release the GIL while they
//! compute, and turn the library's errors into the exceptions a Python user expects:
//! `ValueError` for shapes, non-finite values and impossible parameters, `FileNotFoundError`
//! for missing files, `sparsecode.FormatError` for corrupt ones, `MemoryError` when an
//! allocation is refused before it is made.
//!
//! Here: `sparse_encode` (FISTA for the lasso algorithms, OMP) and the error mapping; the
//! modules hold the SAE (`sae`), dictionary learning (`dictionary`), activation stores
//! (`store`), metrics and synthetic data (`metrics`). The scikit-learn estimators live in
//! Python (`python/sparsecode/`) on top of these.

mod dictionary;
mod files;
mod metrics;
mod sae;
mod store;
mod watch;

use numpy::{IntoPyArray, PyArray2, PyArrayMethods, PyReadonlyArray2};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyKeyboardInterrupt, PyMemoryError, PyOSError,
    PyValueError,
};
use pyo3::prelude::*;
use sparsecode::coding::{fista, omp, FistaParams, OmpParams};
use sparsecode::{Error, Matrix, Parallelism};

create_exception!(
    _native,
    FormatError,
    pyo3::exceptions::PyException,
    "A file sparsecode reads is corrupt or not in the format it claims."
);

/// The library's error as the Python exception of its kind, with the library's message.
fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        Error::OutputExists { path } => PyFileExistsError::new_err(format!(
            "{}: already exists (pass overwrite=True to replace it)",
            path.display()
        )),
        Error::Io { .. } | Error::Locked { .. } => PyOSError::new_err(msg),
        Error::Format { .. } => FormatError::new_err(msg),
        Error::Memory { .. } => PyMemoryError::new_err(msg),
        Error::Interrupted { .. } => PyKeyboardInterrupt::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// A 2-D float32 array as a [`Matrix`] (one copy into the library's owned type).
fn matrix(a: &PyReadonlyArray2<'_, f32>, name: &str) -> PyResult<Matrix> {
    let view = a.as_array();
    let (rows, cols) = view.dim();
    let data: Vec<f32> = match view.as_slice() {
        Some(s) => s.to_vec(),
        None => view.iter().copied().collect(),
    };
    Matrix::from_vec(rows, cols, data).map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
}

fn to_numpy<'py>(py: Python<'py>, m: Matrix) -> Bound<'py, PyArray2<f32>> {
    let (rows, cols) = m.shape();
    let flat = m.into_vec().into_pyarray(py);
    flat.reshape([rows, cols])
        .expect("a [rows * cols] vector reshapes to [rows, cols]")
}

fn par(n_threads: Option<usize>) -> Parallelism {
    Parallelism::threads(n_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }))
}

/// Sparse codes of the rows of `x` against the atoms (rows) of `dictionary`.
///
/// `algorithm` is `"fista"` (the lasso, `1/2 ||x - z D||^2 + alpha ||z||_1`, non-negative
/// when `positive`) or `"omp"` (at most `n_nonzero_coefs` atoms).
#[pyfunction]
#[pyo3(signature = (x, dictionary, algorithm, alpha, n_nonzero_coefs, positive, max_iter, n_threads))]
#[allow(clippy::too_many_arguments)]
fn sparse_encode<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    dictionary: PyReadonlyArray2<'py, f32>,
    algorithm: &str,
    alpha: f32,
    n_nonzero_coefs: Option<usize>,
    positive: bool,
    max_iter: usize,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (y, d) = (matrix(&x, "X")?, matrix(&dictionary, "dictionary")?);
    let p = par(n_threads);
    let codes = match algorithm {
        "fista" => {
            let fp = FistaParams {
                lambda: alpha,
                nonneg: positive,
                max_iter,
                tol: 1e-6,
                accelerated: true,
            };
            py.detach(|| fista(&y, &d, None, &fp, p).map(|r| r.codes))
        }
        "omp" => {
            let op = OmpParams {
                k: n_nonzero_coefs,
                tol: None,
            };
            py.detach(|| omp(&y, &d, &op, p))
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown algorithm '{other}' (the native coders are fista and omp)"
            )))
        }
    }
    .map_err(to_py)?;
    Ok(to_numpy(py, codes))
}

/// The most memory a call may allocate for buffers sized by its inputs (None: the memory free
/// at the time, or the cgroup's limit), like the CLI's `--memory-limit`. Larger requests raise
/// `MemoryError` before any work.
#[pyfunction]
#[pyo3(signature = (nbytes=None))]
fn set_memory_limit(nbytes: Option<u64>) {
    sparsecode::memory::set_limit(nbytes);
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sparse_encode, m)?)?;
    m.add_function(wrap_pyfunction!(set_memory_limit, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::fvu, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::l0, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::dead_fraction, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::code_mcc, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::dictionary_match, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::superposition, m)?)?;
    m.add_function(wrap_pyfunction!(dictionary::learn_dictionary, m)?)?;
    m.add_class::<dictionary::OnlineDictCore>()?;
    m.add_function(wrap_pyfunction!(files::read_npy, m)?)?;
    m.add_function(wrap_pyfunction!(files::write_npy, m)?)?;
    m.add_function(wrap_pyfunction!(files::read_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(files::write_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(files::import_store, m)?)?;
    m.add_class::<sae::SaeCore>()?;
    m.add_class::<store::StoreWriterCore>()?;
    m.add_class::<store::StoreCore>()?;
    m.add("FormatError", m.py().get_type::<FormatError>())?;
    Ok(())
}
