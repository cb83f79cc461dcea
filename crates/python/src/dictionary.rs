//! Dictionary learning from Python: the whole-data learner behind `DictionaryLearning` and
//! `MiniBatchDictionaryLearning.fit`, and the online learner behind `partial_fit`. Parameters
//! arrive as a JSON [`DictLearnParams`] built by the Python estimators.

use crate::watch::interruptible;
use crate::{matrix, par, to_numpy, to_py};
use numpy::{PyArray2, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sparsecode::coding::OnlineDictionary;
use sparsecode::coding::{learn_dictionary as learn, learn_dictionary_from, DictLearnParams};

fn params(json: &str) -> PyResult<DictLearnParams> {
    serde_json::from_str(json)
        .map_err(|e| PyValueError::new_err(format!("dictionary learning parameters: {e}")))
}

/// Learns a dictionary from the rows of `x` (from `init` when given): returns the atoms
/// `[atoms, d_in]`, the codes of `x` and the objective after every alternation.
#[pyfunction]
#[pyo3(signature = (x, params_json, init=None, n_threads=None))]
#[allow(clippy::type_complexity)]
pub fn learn_dictionary<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    params_json: &str,
    init: Option<PyReadonlyArray2<'py, f32>>,
    n_threads: Option<usize>,
) -> PyResult<(
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<f32>>,
    Vec<f64>,
)> {
    let p = params(params_json)?;
    let y = matrix(&x, "X")?;
    let init = init.map(|d| matrix(&d, "dict_init")).transpose()?;
    let threads = par(n_threads);
    let r = interruptible(py, || match &init {
        Some(d) => learn_dictionary_from(&y, d, &p, threads),
        None => learn(&y, &p, threads),
    })?;
    Ok((
        to_numpy(py, r.dictionary),
        to_numpy(py, r.codes),
        r.objective,
    ))
}

/// Online dictionary learning one mini-batch at a time.
#[pyclass(module = "sparsecode._native")]
pub struct OnlineDictCore {
    params: DictLearnParams,
    threads: usize,
    learner: Option<OnlineDictionary>,
}

#[pymethods]
impl OnlineDictCore {
    #[new]
    #[pyo3(signature = (params_json, n_threads=None))]
    fn new(params_json: &str, n_threads: Option<usize>) -> PyResult<Self> {
        Ok(OnlineDictCore {
            params: params(params_json)?,
            threads: par(n_threads).count(),
            learner: None,
        })
    }

    /// Learns from the batch `x`; the first call starts the atoms from it (or from `init`).
    #[pyo3(signature = (x, init=None))]
    fn update(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        init: Option<PyReadonlyArray2<'_, f32>>,
    ) -> PyResult<()> {
        let y = matrix(&x, "X")?;
        if self.learner.is_none() {
            let init = init.map(|d| matrix(&d, "dict_init")).transpose()?;
            let start = OnlineDictionary::new(&y, init.as_ref(), &self.params).map_err(to_py)?;
            self.learner = Some(start);
        }
        let p = par(Some(self.threads));
        let learner = self.learner.as_mut().expect("set above");
        py.detach(|| learner.update(&y, p)).map_err(to_py)
    }

    /// The atoms `[atoms, d_in]`.
    fn dictionary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let l = self
            .learner
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("no batch has been learned from yet"))?;
        Ok(to_numpy(py, l.dictionary().clone()))
    }

    /// Mini-batches learned from.
    fn batches(&self) -> u64 {
        self.learner.as_ref().map_or(0, |l| l.batches())
    }
}
