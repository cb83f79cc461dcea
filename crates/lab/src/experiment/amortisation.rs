//! The amortisation gap (REFERENCE E2 and E4, arXiv 2411.13117): with the dictionary known (E2)
//! and unknown (E4), how far the SAE's one-shot encoder falls short of optimisation-based sparse
//! inference on the same data, seed by seed, next to the published numbers.

use super::methods::{run_methods, Method, MethodSettings, Score};
use super::plot::{LinePlot, Series};
use super::{fmt_mean_sd, mean_sd, require_grid, Report, Table};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sparsecode::data::{generate, Magnitude, Support, SynthConfig};
use sparsecode::{Error, Parallelism, Result};

/// Parameters of the amortisation experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AmortisationParams {
    /// Latents N.
    pub latents: usize,
    /// Dimensions M.
    pub dims: usize,
    /// Active latents K.
    pub k: usize,
    /// Training samples (the test split has as many).
    pub samples: usize,
    /// Seeds (each draws its own dictionary, data and initialisation).
    pub seeds: usize,
    /// Full-batch steps of the SAE with the dictionary known (E2: 20k).
    pub steps_known: u64,
    /// Full-batch steps with the dictionary unknown (E4: 40k).
    pub steps_unknown: u64,
    /// Methods to compare.
    pub methods: Vec<Method>,
    /// First seed.
    pub seed: u64,
}

impl AmortisationParams {
    /// The published setting: N=16, M=8, K=3, 1024/1024 samples, 5 seeds, 20k/40k steps.
    pub fn full() -> Self {
        AmortisationParams {
            latents: 16,
            dims: 8,
            k: 3,
            samples: 1024,
            seeds: 5,
            steps_known: 20_000,
            steps_unknown: 40_000,
            methods: vec![
                Method::Sae,
                Method::SaeIto,
                Method::Mlp(32),
                Method::Mlp(256),
                Method::SparseCoding,
            ],
            seed: 0,
        }
    }

    /// Three seeds, a quarter of the steps, no MLP h=256 (the slowest to train).
    pub fn quick() -> Self {
        AmortisationParams {
            methods: vec![
                Method::Sae,
                Method::SaeIto,
                Method::Mlp(32),
                Method::SparseCoding,
            ],
            seeds: 3,
            steps_known: 5_000,
            steps_unknown: 10_000,
            ..AmortisationParams::full()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_problem(self.latents, self.dims, self.k)?;
        sparsecode::error::require_positive_count("seeds", self.seeds)?;
        sparsecode::error::require_positive_count("samples", self.samples)?;
        require_grid("methods", &self.methods)
    }
}

/// Checks an (N, M, K) problem of the paper's kind.
pub(crate) fn validate_problem(n: usize, m: usize, k: usize) -> Result<()> {
    if k == 0 || k >= m {
        return Err(Error::param(
            "k",
            format!("K = {k} active latents must be in 1..M = {m} (K >= M cannot be recovered)"),
        ));
    }
    if n < m {
        return Err(Error::param(
            "latents",
            format!("N = {n} latents must be at least M = {m} dimensions"),
        ));
    }
    Ok(())
}

/// The dataset of one seed: Gaussian unit-norm dictionary, K-sparse |N(0,1)| codes.
pub(crate) fn dataset(
    n: usize,
    m: usize,
    k: usize,
    samples: usize,
    seed: u64,
) -> Result<sparsecode::data::SynthData> {
    generate(
        &SynthConfig {
            latents: n,
            dims: m,
            support: Support::Exact { k },
            magnitude: Magnitude::AbsNormal,
            samples,
            test_samples: samples,
            snr_db: None,
            seed,
            hierarchy: None,
            correlation: None,
        },
        None,
    )
}

/// Published numbers (REFERENCE E2/E4): `(known, method, code MCC, dict MCC)`.
fn published(known: bool, m: Method) -> (&'static str, &'static str) {
    match (known, m) {
        (true, Method::Sae) => (".609 ± .038", "-"),
        (true, Method::SaeIto) => (".967", "-"),
        (true, Method::SparseCoding) => (".967", "-"),
        (true, Method::Mlp(32)) => (".781 ± .063", "-"),
        (true, Method::Mlp(256)) => (".818 ± .113", "-"),
        (false, Method::Mlp(256)) => (".623-.643", ".851"),
        (_, Method::Mlp(_)) => ("-", "-"),
        (false, Method::Sae) => (".566 ± .011", ".745"),
        (false, Method::SaeIto) => (".583 ± .020", "-"),
        (false, Method::SparseCoding) => (".691 ± .051", ".838"),
    }
}

/// Scores of every method on every seed, `[method][seed]`, with the dictionary known or not.
fn measure(
    p: &AmortisationParams,
    known: bool,
    settings: &MethodSettings,
    par: Parallelism,
    tick: &mut dyn FnMut(),
) -> Result<Vec<Vec<Score>>> {
    let mut scores: Vec<Vec<Score>> = vec![Vec::new(); p.methods.len()];
    for s in 0..p.seeds {
        let seed = p.seed + s as u64;
        let data = dataset(p.latents, p.dims, p.k, p.samples, seed)?;
        let results = run_methods(&data, known, &p.methods, settings, seed, par)?;
        for (i, (_, sc)) in results.into_iter().enumerate() {
            scores[i].push(sc);
        }
        tick();
    }
    Ok(scores)
}

/// One setting's table (mean ± sd against the published values), its methods as JSON, and each
/// method's mean code MCC.
fn setting_table(
    p: &AmortisationParams,
    known: bool,
    scores: &[Vec<Score>],
) -> (Table, Vec<Value>, Vec<(Method, f64)>) {
    let id = if known {
        "E2, dictionary known"
    } else {
        "E4, dictionary unknown"
    };
    let title = format!(
        "{id}: N={}, M={}, K={}, {} seeds (test split)",
        p.latents, p.dims, p.k, p.seeds
    );
    let header = [
        "method",
        "code MCC",
        "published",
        "dict MCC",
        "published",
        "inference FLOPs/sample",
        "seconds",
    ];
    let mut table = Table::new(title, &header);
    let mut per_method = Vec::new();
    let mut means = Vec::new();
    for (i, &m) in p.methods.iter().enumerate() {
        let col = |f: fn(&Score) -> f64| scores[i].iter().map(f).collect::<Vec<f64>>();
        let (pc, pd) = published(known, m);
        let label = match (known, m) {
            (true, Method::SparseCoding) => "sparse coding (true D)".to_string(),
            (false, Method::SparseCoding) => "dictionary learning".to_string(),
            _ => m.label(),
        };
        let dict = if known {
            "1 (given)".into()
        } else {
            fmt_mean_sd(&col(|s| s.dict_mcc))
        };
        table.push(vec![
            label.clone(),
            fmt_mean_sd(&col(|s| s.code_mcc)),
            pc.into(),
            dict,
            pd.into(),
            format!("{:.0}", mean_sd(&col(|s| s.flops)).0),
            format!("{:.1}", mean_sd(&col(|s| s.seconds)).0),
        ]);
        means.push((m, mean_sd(&col(|s| s.code_mcc)).0));
        per_method.push(json!({"method": m, "label": label, "scores": scores[i]}));
    }
    (table, per_method, means)
}

/// Every seed's code MCC at its method's x (known D a little left, unknown D a little right).
fn seed_series(known: bool, scores: &[Vec<Score>]) -> Series {
    let shift = if known { -0.1 } else { 0.1 };
    let points = scores
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.iter().map(move |s| (i as f64 + shift, s.code_mcc)))
        .collect();
    let which = if known { "known D" } else { "unknown D" };
    Series::scatter(format!("code MCC, {which}"), points)
}

fn seeds_plot(p: &AmortisationParams, series: Vec<Series>) -> (String, String) {
    let labels: Vec<String> = (p.methods.iter().enumerate())
        .map(|(i, m)| format!("{i} = {}", m.label()))
        .collect();
    let plot = LinePlot {
        title: "Code MCC per seed (left: known D, right: unknown D)".into(),
        x_label: format!("method: {}", labels.join(", ")),
        y_label: "code MCC (test)".into(),
        series,
        x_range: Some((-0.5, p.methods.len() as f64 - 0.5)),
        y_range: Some((0.0, 1.0)),
        ..LinePlot::default()
    };
    ("amortisation.svg".into(), plot.to_svg())
}

/// The setup, and the gap between ITO and the SAE when both were run with the dictionary known.
fn notes(known_means: &[(Method, f64)]) -> Vec<String> {
    let mut notes = vec![
        "SAE: bias-free linear encoder + ReLU, loss MSE + 0.01 mean|z|, full-batch Adam lr 1e-3 (the paper's). ITO: non-negative FISTA (lambda 0.001) started from the SAE's codes with the SAE's decoder. Dictionary learning: sparsecode's alternating minimisation (alpha 0.05, block-coordinate atom updates, 10 debiasing alternations, up to 4 atom swaps), codes by non-negative FISTA at 0.001 (scikit-learn DictionaryLearning with REFERENCE E4b's settings: .986 code / .999 dict MCC at this size). MLPs: Linear-ReLU-Linear-ReLU without biases, same loss and optimiser as the SAE.".into(),
        "FLOPs count one multiply-add as two; FISTA and ITO are charged 2 products per iteration at the largest iteration count (an upper bound: the working-set solver touches fewer atoms).".into(),
    ];
    let get = |m: Method| known_means.iter().find(|r| r.0 == m).map(|r| r.1);
    if let (Some(sae), Some(ito)) = (get(Method::Sae), get(Method::SaeIto)) {
        notes.push(format!(
            "Amortisation gap with the dictionary known: ITO {ito:.3} vs SAE {sae:.3} code MCC ({:+.3}).",
            ito - sae
        ));
    }
    notes
}

/// Runs the experiment; `progress` is told the fraction done.
pub fn run(
    p: &AmortisationParams,
    par: Parallelism,
    progress: &mut dyn FnMut(f64),
) -> Result<Report> {
    p.validate()?;
    let mut tables = Vec::new();
    let mut json_settings = Vec::new();
    let mut series = Vec::new();
    let mut known_means = Vec::new();
    let total = 2 * p.seeds;
    let mut done = 0;
    let mut tick = || {
        done += 1;
        progress(done as f64 / total as f64);
    };
    for known in [true, false] {
        let sae_steps = if known {
            p.steps_known
        } else {
            p.steps_unknown
        };
        let settings = MethodSettings {
            sae_steps,
            ..MethodSettings::default()
        };
        let scores = measure(p, known, &settings, par, &mut tick)?;
        let (table, per_method, means) = setting_table(p, known, &scores);
        if known {
            known_means = means;
        }
        series.push(seed_series(known, &scores));
        tables.push(table);
        json_settings.push(json!({"known": known, "steps": sae_steps, "methods": per_method}));
    }
    let labels: Vec<String> = p.methods.iter().map(|m| m.label()).collect();
    Ok(Report {
        name: "amortisation".into(),
        summary: format!(
            "The amortisation gap (REFERENCE E2, E4): {} seeds of N={}, M={}, K={} with |N(0,1)| codes; every method is scored on {} held-out samples. Methods on the x axis of the figure: {}.",
            p.seeds, p.latents, p.dims, p.k, p.samples, labels.join(", ")
        ),
        tables,
        notes: notes(&known_means),
        json: json!({"params": p, "settings": json_settings}),
        images: Vec::new(),
        plots: vec![seeds_plot(p, series)],
    })
}
