//! Stability across seeds: R SAEs of one configuration trained on the same data with different
//! seeds, compared pairwise (dictionary MCC of the decoders, code MCC of their held-out codes) and
//! by the share of latents that reappear (|cosine| > 0.9) in every other seed.

use super::plot::HeatMap;
use super::sae_runs::{ExperimentData, Recipe, SaeKind};
use super::{mean_sd, Report, Table};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sparsecode::eval::{abs_cosine, code_mcc, dictionary_metrics, HUNGARIAN_MAX};
use sparsecode::sae::Sae;
use sparsecode::{Error, Matrix, Parallelism, Result};

/// Parameters of the stability experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StabilityParams {
    /// Architecture.
    pub kind: SaeKind,
    /// Its sparsity setting (k or L1).
    pub value: f64,
    /// Number of seeds R (at least 2).
    pub runs: usize,
    /// Training recipe.
    pub recipe: Recipe,
    /// First seed.
    pub seed: u64,
}

impl StabilityParams {
    /// Five TopK (k = 8) SAEs on the sweep's planted N=256, M=64, K=8 problem.
    pub fn full() -> Self {
        StabilityParams {
            kind: SaeKind::Topk,
            value: 8.0,
            runs: 5,
            recipe: super::sweep::SweepParams::full().recipe,
            seed: 0,
        }
    }

    /// Three small runs.
    pub fn quick() -> Self {
        StabilityParams {
            value: 4.0,
            runs: 3,
            recipe: super::sweep::SweepParams::quick().recipe,
            ..StabilityParams::full()
        }
    }
}

impl StabilityParams {
    /// The same runs for another architecture: ReLU at L1 coefficient 0.2 instead of k.
    pub fn with_kind(self, kind: SaeKind) -> Self {
        let value = match kind {
            SaeKind::Topk => self.value,
            SaeKind::Relu => 0.2,
        };
        StabilityParams {
            kind,
            value,
            ..self
        }
    }
}

/// A latent reappears in another run when its best |cosine| with that run's decoder exceeds this.
pub const REAPPEAR: f32 = 0.9;

/// What the runs share, pair by pair.
struct Pairwise {
    /// Dictionary MCC of every pair of runs (1 on the diagonal).
    dict: Vec<Vec<f64>>,
    /// Code MCC of every pair on the held-out rows.
    code: Vec<Vec<f64>>,
    /// Per run: the share of its latents that have a partner above REAPPEAR in every other run.
    shares: Vec<f64>,
}

impl Pairwise {
    /// The values above the diagonal of a symmetric matrix.
    fn upper(m: &[Vec<f64>]) -> Vec<f64> {
        let r = m.len();
        (0..r)
            .flat_map(|a| (a + 1..r).map(move |b| m[a][b]))
            .collect()
    }
}

fn compare(saes: &[Sae], codes: &[Matrix], par: Parallelism) -> Result<Pairwise> {
    let r = saes.len();
    let mut dict = vec![vec![1.0; r]; r];
    let mut code = vec![vec![1.0; r]; r];
    // everywhere[a][j]: latent j of run a has a partner above REAPPEAR in every other run.
    let mut everywhere: Vec<Vec<bool>> = saes.iter().map(|s| vec![true; s.d_sae()]).collect();
    for a in 0..r {
        for b in (0..r).filter(|&b| b != a) {
            let cos = abs_cosine(&saes[a].w_dec, &saes[b].w_dec, par)?;
            for (j, e) in everywhere[a].iter_mut().enumerate() {
                *e &= cos.row(j).iter().any(|c| *c > REAPPEAR);
            }
            if a < b {
                let dm = dictionary_metrics(&saes[a].w_dec, &saes[b].w_dec, HUNGARIAN_MAX, par)?;
                let cm = code_mcc(&codes[a], &codes[b], HUNGARIAN_MAX, par)?.0;
                (dict[a][b], dict[b][a]) = (dm.dict_mcc, dm.dict_mcc);
                (code[a][b], code[b][a]) = (cm, cm);
            }
        }
    }
    let shares = everywhere
        .iter()
        .map(|v| v.iter().filter(|x| **x).count() as f64 / v.len() as f64)
        .collect();
    Ok(Pairwise { dict, code, shares })
}

fn summary_table(p: &StabilityParams, pw: &Pairwise) -> Table {
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let setting = if p.kind == SaeKind::Topk { "k" } else { "L1" };
    let title = format!(
        "{} seeds of a {:?} SAE ({setting} = {}), {} latents",
        p.runs, p.kind, p.value, p.recipe.latents
    );
    let mut table = Table::new(title, &["statistic", "mean", "min"]);
    let (dict, code) = (Pairwise::upper(&pw.dict), Pairwise::upper(&pw.code));
    table.push(vec![
        "pairwise dictionary MCC".into(),
        format!("{:.3}", mean_sd(&dict).0),
        format!("{:.3}", min(&dict)),
    ]);
    table.push(vec![
        "pairwise code MCC (held out)".into(),
        format!("{:.3}", mean_sd(&code).0),
        format!("{:.3}", min(&code)),
    ]);
    table.push(vec![
        format!("latents in every seed (|cos| > {REAPPEAR})"),
        format!("{:.1}%", 100.0 * mean_sd(&pw.shares).0),
        format!("{:.1}%", 100.0 * min(&pw.shares)),
    ]);
    table
}

/// With a planted dictionary: how many true atoms each seed recovers.
fn truth_note(data: &ExperimentData, saes: &[Sae], par: Parallelism) -> Result<Option<String>> {
    let Some((d, _)) = &data.truth else {
        return Ok(None);
    };
    let rec: Vec<String> = saes
        .iter()
        .map(|s| dictionary_metrics(d, &s.w_dec, HUNGARIAN_MAX, par))
        .map(|m| m.map(|m| format!("{:.1}%", 100.0 * m.recovered_090)))
        .collect::<Result<_>>()?;
    Ok(Some(format!(
        "Against the planted dictionary each seed recovers {} of the true atoms at cosine 0.9: the latents that are stable across seeds are the true features.",
        rec.join(", ")
    )))
}

/// Runs the experiment; `progress` is told the fraction done.
pub fn run(
    p: &StabilityParams,
    data: &ExperimentData,
    par: Parallelism,
    progress: &mut dyn FnMut(f64),
) -> Result<Report> {
    if p.runs < 2 {
        return Err(Error::param(
            "runs",
            format!("{} run(s): stability needs at least 2 seeds", p.runs),
        ));
    }
    let arch = p.kind.arch(p.value, data.train.cols(), p.recipe.latents)?;
    let mut saes = Vec::new();
    let mut codes = Vec::new();
    for r in 0..p.runs {
        let sae = p.recipe.train(arch.clone(), data, p.seed + r as u64, par)?;
        codes.push(sae.encode_dense(&data.test, par));
        saes.push(sae);
        progress((r + 1) as f64 / (p.runs + 1) as f64);
    }
    let pw = compare(&saes, &codes, par)?;
    let mut notes = vec![format!("Data: {}.", data.source)];
    notes.extend(truth_note(data, &saes, par)?);
    progress(1.0);
    let r = p.runs;
    let labels: Vec<String> = (0..r)
        .map(|i| format!("seed {}", p.seed + i as u64))
        .collect();
    let map = |title: &str, v: &Vec<Vec<f64>>| HeatMap {
        title: title.into(),
        x_label: "run".into(),
        y_label: "run".into(),
        row_labels: labels.clone(),
        col_labels: labels.clone(),
        values: v.clone(),
        range: (0.0, 1.0),
        diverging: false,
        annotate: true,
    };
    let plots = vec![
        (
            "stability-dict-mcc.svg".into(),
            map("Pairwise dictionary MCC", &pw.dict).to_svg(),
        ),
        (
            "stability-code-mcc.svg".into(),
            map("Pairwise code MCC (held out)", &pw.code).to_svg(),
        ),
    ];
    Ok(Report {
        name: "stability".into(),
        summary: format!(
            "{r} SAEs with identical configuration and data, seeds {}..{}; codes compared on {} held-out rows.",
            p.seed,
            p.seed + r as u64 - 1,
            data.test.rows()
        ),
        tables: vec![summary_table(p, &pw)],
        notes,
        json: json!({"params": p, "source": data.source, "dict_mcc": pw.dict, "code_mcc": pw.code, "share_in_every_seed": pw.shares}),
        images: Vec::new(),
        plots,
    })
}
