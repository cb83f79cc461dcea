//! Activation stores from Python: `StoreWriterCore` streams arrays into a new store (a PyTorch
//! forward hook appends each batch, the store is committed atomically on close), `StoreCore`
//! opens a finished one (its shape, its first rows, a full check). Training streams a store
//! through `SaeCore.fit_store`.

use crate::{to_numpy, to_py};
use numpy::{PyArray2, PyReadonlyArray2};
use pyo3::exceptions::{PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use sparsecode::data::store::{default_shard_rows, Store, StoreDType, StoreWriter};
use std::path::PathBuf;

/// The store dtype called `name` (numpy's names, or the CLI's).
pub fn dtype_of(name: &str) -> PyResult<StoreDType> {
    match name {
        "float32" | "f32" => Ok(StoreDType::F32),
        "float16" | "f16" => Ok(StoreDType::F16),
        "bfloat16" | "bf16" => Ok(StoreDType::Bf16),
        other => Err(PyValueError::new_err(format!(
            "dtype '{other}': expected float32, float16 or bfloat16"
        ))),
    }
}

/// A store being written; `close` commits it, dropping it unclosed leaves nothing behind.
#[pyclass(module = "sparsecode._native")]
pub struct StoreWriterCore {
    writer: Option<StoreWriter>,
    path: PathBuf,
    appended: u64,
}

impl StoreWriterCore {
    fn writer(&mut self) -> PyResult<&mut StoreWriter> {
        let path = self.path.display().to_string();
        self.writer.as_mut().ok_or_else(|| {
            PyValueError::new_err(format!("the activation store {path} is already closed"))
        })
    }
}

#[pymethods]
impl StoreWriterCore {
    /// Starts a store at `path` for rows of width `d_in`, kept as `dtype` (`float32`,
    /// `float16` or `bfloat16`).
    #[new]
    #[pyo3(signature = (path, d_in, dtype="float32", shard_rows=None, overwrite=false))]
    fn new(
        path: PathBuf,
        d_in: usize,
        dtype: &str,
        shard_rows: Option<usize>,
        overwrite: bool,
    ) -> PyResult<Self> {
        let dtype = dtype_of(dtype)?;
        let rows = shard_rows.unwrap_or_else(|| default_shard_rows(d_in, dtype));
        let writer = StoreWriter::create(&path, d_in, dtype, rows, overwrite).map_err(to_py)?;
        Ok(StoreWriterCore {
            writer: Some(writer),
            path,
            appended: 0,
        })
    }

    /// Appends the rows of `x` (checked: width, finite values).
    fn append(&mut self, py: Python<'_>, x: PyReadonlyArray2<'_, f32>) -> PyResult<()> {
        let context = format!(
            "rows {}.. appended to {}",
            self.appended,
            self.path.display()
        );
        let view = x.as_array();
        let rows = view.nrows() as u64;
        let slice = view
            .as_slice()
            .ok_or_else(|| PyValueError::new_err("append needs a C-contiguous array"))?;
        let writer = self.writer()?;
        py.detach(|| writer.push(slice, &context)).map_err(to_py)?;
        self.appended += rows;
        Ok(())
    }

    /// Rows appended so far.
    fn rows(&self) -> u64 {
        self.appended
    }

    /// Writes the last shard and the manifest (`metadata`: JSON text) and moves the store into
    /// place.
    #[pyo3(signature = (metadata=None))]
    fn close(&mut self, py: Python<'_>, metadata: Option<&str>) -> PyResult<PathBuf> {
        let meta = match metadata {
            Some(m) => serde_json::from_str(m)
                .map_err(|e| PyValueError::new_err(format!("metadata: {e}")))?,
            None => serde_json::json!({ "source": "sparsecode (Python)" }),
        };
        let writer = self.writer.take().ok_or_else(|| {
            PyValueError::new_err(format!(
                "the activation store {} is already closed",
                self.path.display()
            ))
        })?;
        py.detach(|| writer.finish(meta)).map_err(to_py)
    }

    /// Drops what was written (nothing reaches `path`).
    fn abort(&mut self) {
        self.writer = None;
    }
}

/// A finished store, memory-mapped.
#[pyclass(module = "sparsecode._native")]
pub struct StoreCore {
    store: Store,
}

#[pymethods]
impl StoreCore {
    /// Opens the store at `path` (its manifest and shards are checked).
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        if !path.exists() {
            return Err(PyFileNotFoundError::new_err(format!(
                "{}: no such activation store",
                path.display()
            )));
        }
        let store = py.detach(|| Store::open(&path)).map_err(to_py)?;
        Ok(StoreCore { store })
    }

    /// `(rows, d_in)`.
    fn shape(&self) -> (u64, usize) {
        let m = self.store.manifest();
        (m.rows, m.d_in)
    }

    /// The dtype the rows are kept in.
    fn dtype(&self) -> &'static str {
        match self.store.manifest().dtype {
            StoreDType::F32 => "float32",
            StoreDType::F16 => "float16",
            StoreDType::Bf16 => "bfloat16",
        }
    }

    /// The first `n` rows as float32.
    fn head<'py>(&self, py: Python<'py>, n: u64) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let m = py.detach(|| self.store.head(n)).map_err(to_py)?;
        Ok(to_numpy(py, m))
    }

    /// Recomputes every shard's SHA-256 against the manifest (`FormatError` on a mismatch).
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.store.verify()).map_err(to_py)
    }

    /// The manifest's metadata as JSON text.
    fn metadata(&self) -> String {
        self.store.manifest().metadata.to_string()
    }
}
