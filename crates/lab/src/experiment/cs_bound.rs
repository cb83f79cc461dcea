//! The compressed-sensing check ("dimensionality sufficiency", arXiv 2503.01824): given
//! activations and the dictionary that codes them (an SAE's decoder, or a dictionary with FISTA
//! codes), is the width M large enough for K-sparse codes over N atoms to be recoverable?
//! Reported two ways: the classical ratio `M / (K ln(N/K))` (>= 1 taken as met, the constant of
//! the bound being of order one) and, constant-free, `rho = K/M` against the Donoho-Tanner weak
//! threshold at `delta = M/N` for codes of the same sign.

use super::phase::weak_threshold;
use super::{Report, Table};
use serde::Serialize;
use serde_json::json;
use sparsecode::coding::{Basis, Coder, FistaParams};
use sparsecode::{Error, Matrix, Parallelism, Result};

/// FISTA codes at L1 weight `lambda`, non-negative when `nonneg`.
pub fn fista_codes(lambda: f32, nonneg: bool) -> Coder {
    Coder::Fista(FistaParams {
        lambda,
        nonneg,
        ..FistaParams::default()
    })
}

/// The check on one dataset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CsCheck {
    /// What was checked.
    pub label: String,
    /// Atoms N (all of them).
    pub atoms: usize,
    /// Atoms that fire at least once on the data.
    pub alive: usize,
    /// Width M.
    pub dims: usize,
    /// Mean non-zero codes per sample.
    pub mean_k: f64,
    /// `M / (K ln(N/K))` with N the alive atoms.
    pub ratio: f64,
    /// `K / M`.
    pub rho: f64,
    /// `M / N_alive`.
    pub delta: f64,
    /// The weak threshold at `delta`.
    pub rho_limit: f64,
    /// Whether the codes are non-negative (which threshold applies).
    pub nonneg: bool,
    /// `ratio >= 1`.
    pub ratio_met: bool,
    /// `rho <= rho_limit`.
    pub threshold_met: bool,
}

/// Runs the check on the codes of `x` (`[samples, M]`) that `coder` finds against `basis`.
pub fn check(
    label: &str,
    x: &Matrix,
    (basis, coder): (Basis<'_>, Coder),
    par: Parallelism,
) -> Result<CsCheck> {
    x.check_finite(label)?;
    let nonneg = match coder {
        Coder::Fista(p) => p.nonneg,
        Coder::Omp(_) => false,
        Coder::Sae | Coder::Ito(_) => true,
    };
    let codes = coder.encode(basis, x, par)?;
    let (s, n) = codes.shape();
    if s == 0 {
        return Err(Error::Empty {
            context: label.into(),
            reason: "no samples".into(),
        });
    }
    let m = x.cols();
    let freq = sparsecode::eval::firing_frequency(&codes);
    let alive = freq.iter().filter(|f| **f > 0.0).count().max(1);
    let mean_k = sparsecode::eval::l0(&codes);
    let ratio = if mean_k > 0.0 && (alive as f64) > mean_k {
        m as f64 / (mean_k * (alive as f64 / mean_k).ln())
    } else {
        f64::INFINITY
    };
    let delta = (m as f64 / alive as f64).min(0.999);
    let rho_limit = weak_threshold(delta, nonneg);
    let rho = mean_k / m as f64;
    Ok(CsCheck {
        label: label.into(),
        atoms: n,
        alive,
        dims: m,
        mean_k,
        ratio,
        rho,
        delta,
        rho_limit,
        nonneg,
        ratio_met: ratio >= 1.0,
        threshold_met: rho <= rho_limit,
    })
}

/// The checks as a report.
pub fn report(checks: &[CsCheck]) -> Report {
    let mut t = Table::new(
        "Compressed-sensing sufficiency",
        &[
            "data",
            "N (alive)",
            "M",
            "mean K",
            "M / (K ln(N/K))",
            "rho = K/M",
            "DT limit at M/N",
            "verdict",
        ],
    );
    let mut notes = Vec::new();
    for c in checks {
        let verdict = match (c.ratio_met, c.threshold_met) {
            (true, true) => "met",
            (false, true) => "met (DT), ratio < 1",
            (true, false) => "ratio met, above DT limit",
            (false, false) => "not met",
        };
        t.push(vec![
            c.label.clone(),
            format!("{} ({})", c.atoms, c.alive),
            c.dims.to_string(),
            format!("{:.2}", c.mean_k),
            format!("{:.2}", c.ratio),
            format!("{:.3}", c.rho),
            format!("{:.3}", c.rho_limit),
            verdict.into(),
        ]);
        notes.push(format!(
            "{}: {} atoms alive of {}; with codes of this sparsity a {} dictionary of this shape {} recover them by L1 (rho {:.3} vs limit {:.3}).",
            c.label,
            c.alive,
            c.atoms,
            if c.nonneg { "non-negative-coded" } else { "signed-coded" },
            if c.threshold_met { "can" } else { "cannot" },
            c.rho,
            c.rho_limit
        ));
    }
    Report {
        name: "cs-bound".into(),
        summary: "Is the activation width enough for the codes' sparsity? M / (K ln(N/K)) >= 1 is the classical sufficient scale; the Donoho-Tanner weak threshold at delta = M/N gives the sharp limit on rho = K/M for random dictionaries.".into(),
        tables: vec![t],
        notes,
        json: json!({"checks": checks}),
        images: Vec::new(),
        plots: Vec::new(),
    }
}

/// The quick demonstration: planted problems with the true dictionary, one sparse enough
/// (K = 5 of 512 atoms in 64 dims) and one too dense (K = 30).
pub fn quick(par: Parallelism) -> Result<Report> {
    let mut checks = Vec::new();
    for k in [5usize, 30] {
        let data = super::amortisation::dataset(512, 64, k, 2000, 7)?;
        let c = check(
            &format!("planted N=512, M=64, K={k}"),
            &data.train.activations,
            (Basis::Dictionary(&data.dictionary), fista_codes(0.01, true)),
            par,
        )?;
        checks.push(c);
    }
    Ok(report(&checks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_problem_meets_the_bound_and_dense_one_does_not() {
        let r = quick(Parallelism::Serial).unwrap();
        let checks = r.json["checks"].as_array().unwrap();
        assert_eq!(checks[0]["threshold_met"], true);
        assert!((checks[0]["mean_k"].as_f64().unwrap() - 5.0).abs() < 0.5);
        assert_eq!(checks[1]["threshold_met"], false);
        assert_eq!(checks[1]["ratio_met"], false);
    }
}
