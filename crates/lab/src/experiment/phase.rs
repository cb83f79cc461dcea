//! Donoho-Tanner phase transition (REFERENCE E1): for a Gaussian dictionary of `N` unit-norm atoms
//! in `M = delta N` dimensions and codes with `K = rho M` non-zeros, the share of trials that
//! basis pursuit (FISTA at a small L1 weight, then least squares on the found support) and OMP
//! (stopped at `K` atoms) recover exactly (`||z_hat - z|| / ||z|| < 1e-3`), for signed and
//! non-negative codes, with the asymptotic weak threshold drawn over the measured rates.

use super::plot::{HeatMap, LinePlot, Series};
use super::{require_grid, Report, Table};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sparsecode::coding::{fista, omp, FistaParams, OmpParams};
use sparsecode::data::{generate, Magnitude, Support, SynthConfig};
use sparsecode::linalg::cholesky::least_squares_on;
use sparsecode::{Error, Matrix, Parallelism, Result};

/// A recovery method of the phase-transition experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseMethod {
    /// L1 minimisation by FISTA at a small weight, debiased on the support.
    BasisPursuit,
    /// Orthogonal matching pursuit with the true sparsity.
    Omp,
}

impl PhaseMethod {
    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "bp" | "basis-pursuit" | "fista" => Ok(PhaseMethod::BasisPursuit),
            "omp" => Ok(PhaseMethod::Omp),
            other => Err(Error::param(
                "methods",
                format!("unknown method '{other}' (expected bp or omp)"),
            )),
        }
    }

    fn label(self) -> &'static str {
        match self {
            PhaseMethod::BasisPursuit => "basis pursuit",
            PhaseMethod::Omp => "OMP",
        }
    }
}

/// Parameters of the phase-transition experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseParams {
    /// Number of atoms N.
    pub atoms: usize,
    /// Undersampling ratios `delta = M / N`, each in (0, 1).
    pub deltas: Vec<f64>,
    /// Sparsity ratios `rho = K / M`, each in (0, 1].
    pub rhos: Vec<f64>,
    /// Trials per cell (each a fresh code; a fresh dictionary per cell).
    pub trials: usize,
    /// Methods to run.
    pub methods: Vec<PhaseMethod>,
    /// Run non-negative codes as well as signed ones.
    pub nonneg: bool,
    /// Seed.
    pub seed: u64,
}

impl PhaseParams {
    /// Minutes on 2 cores: N = 200, three deltas, rho in steps of 0.04 around the transition.
    pub fn quick() -> Self {
        PhaseParams {
            atoms: 200,
            deltas: vec![0.25, 0.5, 0.75],
            rhos: (2..=22).map(|i| i as f64 * 0.04).collect(),
            trials: 24,
            methods: vec![PhaseMethod::BasisPursuit, PhaseMethod::Omp],
            nonneg: true,
            seed: 0,
        }
    }

    /// REFERENCE E1: N = 400, delta and rho in steps of 0.05, 40 trials a cell.
    pub fn full() -> Self {
        PhaseParams {
            atoms: 400,
            deltas: (1..=19).map(|i| i as f64 * 0.05).collect(),
            rhos: (1..=19).map(|i| i as f64 * 0.05).collect(),
            trials: 40,
            ..PhaseParams::quick()
        }
    }

    fn validate(&self) -> Result<()> {
        require_grid("deltas", &self.deltas)?;
        require_grid("rhos", &self.rhos)?;
        require_grid("methods", &self.methods)?;
        sparsecode::error::require_positive_count("trials", self.trials)?;
        if self.atoms < 4 {
            return Err(Error::param("atoms", "need at least 4 atoms"));
        }
        if let Some(d) = self.deltas.iter().find(|d| !(**d > 0.0 && **d < 1.0)) {
            return Err(Error::param(
                "deltas",
                format!("delta = M/N = {d} must be in (0, 1)"),
            ));
        }
        if let Some(r) = self.rhos.iter().find(|r| !(**r > 0.0 && **r <= 1.0)) {
            return Err(Error::param(
                "rhos",
                format!("rho = K/M = {r} must be in (0, 1] (K >= M cannot be recovered)"),
            ));
        }
        Ok(())
    }
}

/// Standard normal density.
fn phi(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Standard normal lower tail `P(Z <= z)`.
fn big_phi(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// The asymptotic weak phase transition `rho(delta)` of L1 recovery: the cross-polytope
/// (signed codes) or the simplex (non-negative codes). It equals the minimax threshold of soft
/// thresholding (Donoho, Maleki & Montanari 2009):
/// `rho = max_z [1 - (c/delta) g(z)] / [1 + z^2 - c g(z)]`, `g(z) = (1 + z^2) Phi(-z) - z phi(z)`,
/// `c = 2` for signed and `1` for non-negative codes.
pub fn weak_threshold(delta: f64, nonneg: bool) -> f64 {
    let c = if nonneg { 1.0 } else { 2.0 };
    let f = |z: f64| {
        let g = (1.0 + z * z) * big_phi(-z) - z * phi(z);
        (1.0 - c / delta * g) / (1.0 + z * z - c * g)
    };
    // f is unimodal in z > 0: a coarse scan, then golden-section refinement.
    let mut best = (0.0, f64::NEG_INFINITY);
    for i in 1..=400 {
        let z = i as f64 * 0.02;
        let v = f(z);
        if v > best.1 {
            best = (z, v);
        }
    }
    let (mut a, mut b) = (best.0 - 0.02, best.0 + 0.02);
    let gr = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..60 {
        let c1 = b - gr * (b - a);
        let c2 = a + gr * (b - a);
        if f(c1) > f(c2) {
            b = c2;
        } else {
            a = c1;
        }
    }
    f(0.5 * (a + b)).clamp(0.0, 1.0)
}

fn relative_error(z_true: &[f32], z_hat: &[f64]) -> f64 {
    let num: f64 = z_true
        .iter()
        .zip(z_hat)
        .map(|(a, b)| (*a as f64 - b).powi(2))
        .sum();
    let den: f64 = z_true.iter().map(|a| (*a as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

/// Success threshold on the relative error.
const SUCCESS: f64 = 1e-3;

/// Share of the trials of one cell that `method` recovers.
fn cell_success(
    y: &Matrix,
    d: &Matrix,
    z: &Matrix,
    k: usize,
    method: PhaseMethod,
    nonneg: bool,
    par: Parallelism,
) -> Result<f64> {
    let (trials, n) = z.shape();
    let m = d.cols();
    let codes = match method {
        PhaseMethod::BasisPursuit => {
            let p = FistaParams {
                lambda: 1e-3,
                nonneg,
                max_iter: 20000,
                tol: 1e-7,
                accelerated: true,
            };
            fista(y, d, None, &p, par)?.codes
        }
        PhaseMethod::Omp => omp(
            y,
            d,
            &OmpParams {
                k: Some(k),
                tol: None,
            },
            par,
        )?,
    };
    let mut ok = 0usize;
    for t in 0..trials {
        // Every non-zero is kept: least squares on a superset of the true support still returns
        // the true codes (the extra coefficients come out zero) as long as it has at most M atoms.
        let row = codes.row(t);
        let support: Vec<usize> = (0..n).filter(|&j| row[j] != 0.0).collect();
        if support.is_empty() || support.len() > m {
            continue;
        }
        if let Some(coef) = least_squares_on(d, y.row(t), &support) {
            let mut full = vec![0.0f64; n];
            for (&j, c) in support.iter().zip(coef) {
                full[j] = c;
            }
            ok += (relative_error(z.row(t), &full) < SUCCESS) as usize;
        }
    }
    Ok(ok as f64 / trials as f64)
}

/// The `rho` where the success rate first falls below one half, by linear interpolation
/// between the two grid points around it (NaN when it never crosses).
pub fn crossing(rhos: &[f64], rates: &[f64]) -> f64 {
    for i in 1..rhos.len() {
        if rates[i - 1] >= 0.5 && rates[i] < 0.5 {
            let t = (rates[i - 1] - 0.5) / (rates[i - 1] - rates[i]);
            return rhos[i - 1] + t * (rhos[i] - rhos[i - 1]);
        }
    }
    f64::NAN
}

/// Published 50% crossings (REFERENCE E1): `(delta, signed, non-negative)`.
const PUBLISHED: [(f64, f64, f64); 4] = [
    (0.1, 0.189, 0.241),
    (0.25, 0.267, 0.365),
    (0.5, 0.386, 0.558),
    (0.75, 0.534, 0.766),
];

/// Success rates indexed `[sign][method][delta][rho]`, NaN where `K` is 0 or not below `M`.
type Rates = Vec<Vec<Vec<Vec<f64>>>>;

/// Runs the experiment; `progress` is told the fraction done.
pub fn run(p: &PhaseParams, par: Parallelism, progress: &mut dyn FnMut(f64)) -> Result<Report> {
    p.validate()?;
    // Signed codes always; non-negative ones too unless switched off.
    let signs: Vec<bool> = if p.nonneg {
        vec![false, true]
    } else {
        vec![false]
    };
    let rates = measure(p, &signs, par, progress)?;
    let (table, crossings) = crossing_table(p, &signs, &rates);
    let mut plots = Vec::new();
    for (si, &nonneg) in signs.iter().enumerate() {
        for (mi, &method) in p.methods.iter().enumerate() {
            plots.push(heat_map(p, nonneg, method, &rates[si][mi]));
        }
        plots.push(crossing_plot(p, nonneg, &rates[si]));
    }
    let notes = vec![
        "Success: ||z_hat - z|| / ||z|| < 1e-3 after least squares on the atoms the method chose (at most M of them, else a failure). Basis pursuit is FISTA at lambda = 1e-3; OMP stops at the true K.".into(),
        "Theory: the asymptotic weak threshold of the cross-polytope (signed) and simplex (non-negative), computed from the minimax soft-thresholding formula; finite N blurs the transition but keeps its midpoint.".into(),
    ];
    Ok(Report {
        name: "phase-transition".into(),
        summary: format!(
            "Donoho-Tanner phase transition (REFERENCE E1): Gaussian dictionary with N = {} unit-norm atoms, {} trials per cell, delta = M/N in {}.",
            p.atoms,
            p.trials,
            p.deltas.iter().map(|d| format!("{d:.2}")).collect::<Vec<_>>().join(", ")
        ),
        tables: vec![table],
        notes,
        json: json!({ "params": p, "crossings": crossings, "rates": rates }),
        images: Vec::new(),
        plots,
    })
}

/// The success rate of every method in every cell of the grid, one planted problem per cell.
fn measure(
    p: &PhaseParams,
    signs: &[bool],
    par: Parallelism,
    progress: &mut dyn FnMut(f64),
) -> Result<Rates> {
    let n = p.atoms;
    let mut rates = vec![
        vec![vec![vec![f64::NAN; p.rhos.len()]; p.deltas.len()]; p.methods.len()];
        signs.len()
    ];
    let cells = signs.len() * p.deltas.len() * p.rhos.len();
    let mut done = 0;
    for (si, &nonneg) in signs.iter().enumerate() {
        for (di, &delta) in p.deltas.iter().enumerate() {
            let m = ((delta * n as f64).round() as usize).max(1);
            for (ri, &rho) in p.rhos.iter().enumerate() {
                let k = (rho * m as f64).round() as usize;
                done += 1;
                if k == 0 || k >= m {
                    continue;
                }
                let cfg = SynthConfig {
                    latents: n,
                    dims: m,
                    support: Support::Exact { k },
                    magnitude: if nonneg {
                        Magnitude::AbsNormal
                    } else {
                        Magnitude::SignedNormal
                    },
                    samples: p.trials,
                    test_samples: 0,
                    snr_db: None,
                    seed: p.seed ^ ((si * 1_000_003 + di * 1009 + ri) as u64) << 20,
                    hierarchy: None,
                    correlation: None,
                };
                let data = generate(&cfg, None)?;
                for (mi, &method) in p.methods.iter().enumerate() {
                    rates[si][mi][di][ri] = cell_success(
                        &data.train.activations,
                        &data.dictionary,
                        &data.train.codes,
                        k,
                        method,
                        nonneg,
                        par,
                    )?;
                }
                progress(done as f64 / cells as f64);
            }
        }
    }
    Ok(rates)
}

fn codes_name(nonneg: bool) -> &'static str {
    if nonneg {
        "non-negative"
    } else {
        "signed"
    }
}

/// The measured 50% crossing of every (codes, method, delta) against theory and the published
/// value: the table (deltas with a published value, or all of a short list) and every row as
/// JSON.
fn crossing_table(p: &PhaseParams, signs: &[bool], rates: &Rates) -> (Table, Vec<Value>) {
    let header = [
        "codes",
        "method",
        "delta",
        "measured",
        "theory (N -> inf)",
        "published",
    ];
    let mut table = Table::new("50% success crossing rho = K/M", &header);
    let mut crossings = Vec::new();
    for (si, &nonneg) in signs.iter().enumerate() {
        let codes = codes_name(nonneg);
        for (mi, &method) in p.methods.iter().enumerate() {
            for (di, &delta) in p.deltas.iter().enumerate() {
                let c = crossing(&p.rhos, &rates[si][mi][di]);
                let theory = weak_threshold(delta, nonneg);
                let published = PUBLISHED
                    .iter()
                    .find(|r| (r.0 - delta).abs() < 1e-9)
                    .map(|r| if nonneg { r.2 } else { r.1 });
                crossings.push(json!({
                    "codes": codes, "method": method, "delta": delta,
                    "crossing": if c.is_finite() { json!(c) } else { json!(null) },
                    "theory": theory, "published": published,
                }));
                if published.is_some() || p.deltas.len() <= 6 {
                    let measured = if c.is_finite() {
                        format!("{c:.3}")
                    } else {
                        "-".into()
                    };
                    table.push(vec![
                        codes.into(),
                        method.label().into(),
                        format!("{delta:.2}"),
                        measured,
                        format!("{theory:.3}"),
                        published.map_or("-".into(), |v| format!("{v:.3}")),
                    ]);
                }
            }
        }
    }
    (table, crossings)
}

/// Heat map of one method's success rate (rho up the side, top = largest).
fn heat_map(
    p: &PhaseParams,
    nonneg: bool,
    method: PhaseMethod,
    rates: &[Vec<f64>],
) -> (String, String) {
    let codes = codes_name(nonneg);
    let rows: Vec<usize> = (0..p.rhos.len()).rev().collect();
    let map = HeatMap {
        title: format!(
            "{} success rate, {codes} codes, N = {}",
            method.label(),
            p.atoms
        ),
        x_label: "delta = M / N".into(),
        y_label: "rho = K / M".into(),
        row_labels: rows.iter().map(|&r| format!("{:.2}", p.rhos[r])).collect(),
        col_labels: p.deltas.iter().map(|d| format!("{d:.2}")).collect(),
        values: rows
            .iter()
            .map(|&r| (0..p.deltas.len()).map(|d| rates[d][r]).collect())
            .collect(),
        range: (0.0, 1.0),
        diverging: false,
        annotate: p.deltas.len() <= 6,
    };
    let file = format!("phase-{}-{}.svg", codes, method_slug(method));
    (file, map.to_svg())
}

/// The measured crossings of every method over the theoretical curve (`rates[method]`).
fn crossing_plot(p: &PhaseParams, nonneg: bool, rates: &[Vec<Vec<f64>>]) -> (String, String) {
    let codes = codes_name(nonneg);
    let theory: Vec<(f64, f64)> = (1..100)
        .map(|i| {
            let d = i as f64 / 100.0;
            (d, weak_threshold(d, nonneg))
        })
        .collect();
    let mut series = vec![Series::dashed("theory (N -> inf)", theory)];
    for (mi, &method) in p.methods.iter().enumerate() {
        series.push(Series::line(
            format!("{} (N = {})", method.label(), p.atoms),
            p.deltas
                .iter()
                .enumerate()
                .map(|(di, &d)| (d, crossing(&p.rhos, &rates[mi][di])))
                .collect(),
        ));
    }
    let plot = LinePlot {
        title: format!("50% recovery curve, {codes} codes"),
        x_label: "delta = M / N".into(),
        y_label: "rho = K / M".into(),
        series,
        x_range: Some((0.0, 1.0)),
        y_range: Some((0.0, 1.0)),
        ..LinePlot::default()
    };
    (format!("phase-{codes}-crossing.svg"), plot.to_svg())
}

fn method_slug(m: PhaseMethod) -> &'static str {
    match m {
        PhaseMethod::BasisPursuit => "bp",
        PhaseMethod::Omp => "omp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_threshold_matches_published_curve() {
        for (delta, signed, nonneg) in PUBLISHED {
            let s = weak_threshold(delta, false);
            let p = weak_threshold(delta, true);
            assert!((s - signed).abs() < 0.006, "delta {delta}: {s} vs {signed}");
            assert!((p - nonneg).abs() < 0.006, "delta {delta}: {p} vs {nonneg}");
        }
    }

    #[test]
    fn crossing_interpolates_and_reports_none() {
        let rhos = [0.1, 0.2, 0.3, 0.4];
        assert!((crossing(&rhos, &[1.0, 0.9, 0.3, 0.0]) - (0.2 + 0.1 * 0.4 / 0.6)).abs() < 1e-12);
        assert!(crossing(&rhos, &[1.0, 1.0, 1.0, 0.9]).is_nan());
    }

    #[test]
    fn least_squares_recovers_exact_codes() {
        let data = generate(
            &SynthConfig {
                latents: 30,
                dims: 12,
                support: Support::Exact { k: 3 },
                magnitude: Magnitude::SignedNormal,
                samples: 1,
                test_samples: 0,
                snr_db: None,
                seed: 4,
                hierarchy: None,
                correlation: None,
            },
            None,
        )
        .unwrap();
        let z = data.train.codes.row(0);
        let support: Vec<usize> = (0..30).filter(|&j| z[j] != 0.0).collect();
        let c =
            least_squares_on(&data.dictionary, data.train.activations.row(0), &support).unwrap();
        for (&j, v) in support.iter().zip(c) {
            assert!((v - z[j] as f64).abs() < 1e-4);
        }
    }

    #[test]
    fn bad_grids_are_refused() {
        let mut p = PhaseParams::quick();
        p.rhos = vec![0.5, 1.2];
        assert!(run(&p, Parallelism::Serial, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("K >= M"));
        p.rhos.clear();
        assert!(run(&p, Parallelism::Serial, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(PhaseMethod::parse("lasso").is_err());
    }
}
