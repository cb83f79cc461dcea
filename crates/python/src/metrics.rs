//! `sparsecode.metrics` and `sparsecode.synth` natively: the definitions `sparsecode eval` and
//! `sparsecode synth` use, on numpy arrays.

use crate::{matrix, par, to_numpy, to_py};
use numpy::{PyArray2, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sparsecode::data::{generate, SynthConfig};
use sparsecode::eval::{
    abs_cosine, code_mcc as mcc, dictionary_metrics, firing_frequency, fvu as fvu_of, l0 as l0_of,
    HUNGARIAN_MAX,
};

/// Fraction of variance unexplained of `x_hat` against `x` (per-dimension means).
#[pyfunction]
pub fn fvu(x: PyReadonlyArray2<'_, f32>, x_hat: PyReadonlyArray2<'_, f32>) -> PyResult<f64> {
    let (a, b) = (matrix(&x, "X")?, matrix(&x_hat, "X_hat")?);
    if a.shape() != b.shape() {
        return Err(PyValueError::new_err(format!(
            "X {:?} and X_hat {:?} must have the same shape",
            a.shape(),
            b.shape()
        )));
    }
    Ok(fvu_of(&a, &b))
}

/// Mean number of non-zero codes per row.
#[pyfunction]
pub fn l0(codes: PyReadonlyArray2<'_, f32>) -> PyResult<f64> {
    Ok(l0_of(&matrix(&codes, "codes")?))
}

/// Fraction of latents (columns) that never fire on these rows.
#[pyfunction]
pub fn dead_fraction(codes: PyReadonlyArray2<'_, f32>) -> PyResult<f64> {
    let freq = firing_frequency(&matrix(&codes, "codes")?);
    Ok(freq.iter().filter(|f| **f == 0.0).count() as f64 / freq.len().max(1) as f64)
}

/// Code MCC: the matched mean absolute correlation of true and recovered code columns.
#[pyfunction]
#[pyo3(signature = (z_true, z_hat, n_threads=None))]
pub fn code_mcc(
    py: Python<'_>,
    z_true: PyReadonlyArray2<'_, f32>,
    z_hat: PyReadonlyArray2<'_, f32>,
    n_threads: Option<usize>,
) -> PyResult<f64> {
    let (a, b) = (matrix(&z_true, "z_true")?, matrix(&z_hat, "z_hat")?);
    let p = par(n_threads);
    py.detach(|| mcc(&a, &b, HUNGARIAN_MAX, p))
        .map(|r| r.0)
        .map_err(to_py)
}

/// `(dict_mcc, mmcs, best)`: the matched mean |cosine| of true and learned atoms (rows), the
/// mean best |cosine| of each true atom, and those best values.
#[pyfunction]
#[pyo3(signature = (d_true, d_hat, n_threads=None))]
pub fn dictionary_match(
    py: Python<'_>,
    d_true: PyReadonlyArray2<'_, f32>,
    d_hat: PyReadonlyArray2<'_, f32>,
    n_threads: Option<usize>,
) -> PyResult<(f64, f64, Vec<f32>)> {
    let (a, b) = (matrix(&d_true, "d_true")?, matrix(&d_hat, "d_hat")?);
    let p = par(n_threads);
    py.detach(|| {
        let m = dictionary_metrics(&a, &b, HUNGARIAN_MAX, p)?;
        let c = abs_cosine(&a, &b, p)?;
        let best = (0..c.rows())
            .map(|i| c.row(i).iter().copied().fold(0.0, f32::max))
            .collect();
        Ok((m.dict_mcc, m.mmcs, best))
    })
    .map_err(to_py)
}

/// Generated superposition data: `(dictionary, activations, codes, test_activations,
/// test_codes, noise_std)` for a JSON `SynthConfig`.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn superposition<'py>(
    py: Python<'py>,
    config_json: &str,
) -> PyResult<(
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<f32>>,
    Option<Bound<'py, PyArray2<f32>>>,
    Option<Bound<'py, PyArray2<f32>>>,
    f64,
)> {
    let cfg: SynthConfig = serde_json::from_str(config_json)
        .map_err(|e| PyValueError::new_err(format!("superposition parameters: {e}")))?;
    let data = py.detach(|| generate(&cfg, None)).map_err(to_py)?;
    let (test_x, test_z) = match data.test {
        Some(t) => (
            Some(to_numpy(py, t.activations)),
            Some(to_numpy(py, t.codes)),
        ),
        None => (None, None),
    };
    Ok((
        to_numpy(py, data.dictionary),
        to_numpy(py, data.train.activations),
        to_numpy(py, data.train.codes),
        test_x,
        test_z,
        data.noise_std,
    ))
}
