//! `sparsecode.io`: the core's readers and writers of `.npy` and safetensors files and its
//! store import, from Python, with the same detection and the same errors as the CLI.

use crate::to_py;
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sparsecode::data::store::{import_files, input_width};
use sparsecode::io::npy::to_npy_bytes;
use sparsecode::io::tensors::{read_tensors, write_tensors};
use sparsecode::io::{read_npy as read_npy_file, write_atomic};
use std::path::PathBuf;

fn array<'py>(
    py: Python<'py>,
    shape: &[usize],
    values: Vec<f32>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    values
        .into_pyarray(py)
        .reshape(shape.to_vec())
        .map_err(|e| PyValueError::new_err(format!("shape {shape:?}: {e}")))
}

/// A `.npy` file of any rank as float32 (f32, f64, f16 and bf16 files are read).
#[pyfunction]
pub fn read_npy(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyArrayDyn<f32>>> {
    let (shape, values) = py.detach(|| read_npy_file(&path)).map_err(to_py)?;
    array(py, &shape, values)
}

/// Writes a float32 array as a `.npy` file, atomically.
#[pyfunction]
pub fn write_npy(py: Python<'_>, path: PathBuf, a: PyReadonlyArrayDyn<'_, f32>) -> PyResult<()> {
    let view = a.as_array();
    let shape = view.shape().to_vec();
    let values: Vec<f32> = view.iter().copied().collect();
    py.detach(|| write_atomic(&path, &to_npy_bytes(&shape, &values)))
        .map_err(to_py)
}

/// Every tensor of a safetensors file, by name, as float32.
#[pyfunction]
pub fn read_safetensors(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let tensors = py.detach(|| read_tensors(&path)).map_err(to_py)?;
    let out = PyDict::new(py);
    for (name, t) in tensors {
        out.set_item(name, array(py, &t.shape, t.data)?)?;
    }
    Ok(out)
}

/// Writes named float32 arrays as a safetensors file, atomically.
#[pyfunction]
pub fn write_safetensors(
    py: Python<'_>,
    path: PathBuf,
    tensors: &Bound<'_, PyDict>,
) -> PyResult<()> {
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::with_capacity(tensors.len());
    for (name, value) in tensors.iter() {
        let name: String = name.extract()?;
        let a: PyReadonlyArrayDyn<'_, f32> = value.extract().map_err(|_| {
            PyValueError::new_err(format!("tensor '{name}': expected a float32 numpy array"))
        })?;
        let view = a.as_array();
        owned.push((name, view.shape().to_vec(), view.iter().copied().collect()));
    }
    let refs: Vec<(&str, Vec<usize>, &[f32])> = owned
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.clone(), v.as_slice()))
        .collect();
    py.detach(|| write_tensors(&path, &refs, None))
        .map_err(to_py)
}

/// Builds a store at `dest` from `.npy` and safetensors files (as `sparsecode store create`).
#[pyfunction]
#[pyo3(signature = (inputs, dest, dtype, shard_rows=None, tensor=None, overwrite=false))]
#[allow(clippy::too_many_arguments)]
pub fn import_store(
    py: Python<'_>,
    inputs: Vec<PathBuf>,
    dest: PathBuf,
    dtype: &str,
    shard_rows: Option<usize>,
    tensor: Option<String>,
    overwrite: bool,
) -> PyResult<u64> {
    let dtype = crate::store::dtype_of(dtype)?;
    let width = py
        .detach(|| match inputs.first() {
            Some(first) => input_width(first, tensor.as_deref()),
            None => Ok(1),
        })
        .map_err(to_py)?;
    let shard_rows =
        shard_rows.unwrap_or_else(|| sparsecode::data::store::default_shard_rows(width, dtype));
    let manifest = py
        .detach(|| {
            import_files(
                &inputs,
                &dest,
                dtype,
                shard_rows,
                tensor.as_deref(),
                overwrite,
                &mut |_, _| {},
            )
        })
        .map_err(to_py)?;
    Ok(manifest.rows)
}
