//! Sparse inference with a given dictionary `D` (`[N, M]`, atoms are rows): batched ISTA/FISTA
//! for the L1 problem, OMP for the L0-constrained one, and inference-time optimisation (FISTA
//! started from an SAE's codes with that SAE's decoder).

mod coder;
mod dictionary;
mod fista;
mod ito;
mod omp;
mod working_set;

pub use coder::{Basis, Coder};
pub use dictionary::{
    learn_dictionary, learn_dictionary_from, AtomUpdate, DictLearnParams, DictLearnResult,
    InnerCoder, OnlineDictionary,
};
pub use fista::{fista, objective, FistaParams, FistaResult};
pub use ito::ito;
pub use omp::{omp, OmpParams};

use crate::{Error, Matrix, Result};

/// Checks that `y` (`[S, M]`) and `d` (`[N, M]`) agree and are finite.
pub(crate) fn check_problem(y: &Matrix, d: &Matrix) -> Result<()> {
    if y.cols() != d.cols() {
        return Err(Error::shape(
            "sparse coding",
            format!(
                "data width equal to the dictionary's atom width {}",
                d.cols()
            ),
            format!("data width {}", y.cols()),
        ));
    }
    if d.rows() == 0 {
        return Err(Error::Empty {
            context: "dictionary".into(),
            reason: "no atoms".into(),
        });
    }
    y.check_finite("data")?;
    d.check_finite("dictionary")
}
