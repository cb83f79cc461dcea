//! Inference-time optimisation: the SAE's codes refined by non-negative FISTA on the SAE's own
//! decoder, `min_{z >= 0} 1/2 ||(x - b_dec) - z W_dec||^2 + lambda ||z||_1`, started at the
//! encoder's output. It closes part of the amortisation gap of a linear-nonlinear encoder.

use super::{fista, FistaParams, FistaResult};
use crate::sae::Sae;
use crate::{Matrix, Parallelism, Result};

/// Refines `sae`'s codes of `x`; the reconstruction is `codes W_dec + b_dec`.
pub fn ito(sae: &Sae, x: &Matrix, p: &FistaParams, par: Parallelism) -> Result<FistaResult> {
    sae.check_input(x, "data")?;
    let init = sae.encode_dense(x, par);
    let mut y = x.clone();
    y.add_to_rows(&sae.b_dec, -1.0);
    fista(
        &y,
        &sae.w_dec,
        Some(&init),
        &FistaParams { nonneg: true, ..*p },
        par,
    )
}
