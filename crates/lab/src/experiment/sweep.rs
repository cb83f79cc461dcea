//! Sparsity sweep: one SAE architecture trained at several sparsity settings (k for TopK, the L1
//! coefficient for ReLU), FVU against L0 on held-out rows, the Pareto front, and its knee found
//! automatically: the front point farthest from the chord between the front's ends, in
//! coordinates scaled to [0, 1] (the Kneedle criterion).

use super::plot::{LinePlot, Series};
use super::sae_runs::{ExperimentData, Recipe, SaeKind};
use super::{require_grid, Report, Table};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sparsecode::eval::{code_mcc, dictionary_metrics, evaluate_sae, HUNGARIAN_MAX};
use sparsecode::{Parallelism, Result};

/// Parameters of the sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepParams {
    /// Architecture.
    pub kind: SaeKind,
    /// Sparsity settings: k values (TopK) or L1 coefficients (ReLU).
    pub values: Vec<f64>,
    /// Training recipe.
    pub recipe: Recipe,
    /// Seed.
    pub seed: u64,
}

impl SweepParams {
    /// TopK at k = 1..32 on a planted N=256, M=64, K=8 problem.
    pub fn full() -> Self {
        SweepParams {
            kind: SaeKind::Topk,
            values: vec![1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0],
            recipe: Recipe {
                latents: 256,
                steps: 6_000,
                batch_size: 512,
                lr: 1e-3,
            },
            seed: 0,
        }
    }

    /// Fewer settings and steps on a smaller problem (see [`SweepParams::quick_data`]).
    pub fn quick() -> Self {
        SweepParams {
            values: vec![1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0],
            recipe: Recipe {
                latents: 128,
                steps: 4_000,
                batch_size: 256,
                lr: 2e-3,
            },
            ..SweepParams::full()
        }
    }

    /// The same sweep for another architecture: ReLU sweeps L1 coefficients instead of k.
    pub fn with_kind(self, kind: SaeKind) -> Self {
        let values = match kind {
            SaeKind::Topk => self.values,
            SaeKind::Relu => vec![0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0],
        };
        SweepParams {
            kind,
            values,
            ..self
        }
    }

    /// The planted default data of the full setting.
    pub fn full_data(seed: u64) -> Result<ExperimentData> {
        ExperimentData::planted(256, 64, 8, 40_000, seed)
    }

    /// The planted default data of the quick setting.
    pub fn quick_data(seed: u64) -> Result<ExperimentData> {
        ExperimentData::planted(128, 32, 4, 12_000, seed)
    }
}

/// Indices of the points on the lower-left Pareto front of `(l0, fvu)` (no other point has both
/// lower or equal L0 and lower FVU), sorted by L0.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].0.is_finite() && points[i].1.is_finite())
        .collect();
    idx.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[a].1.total_cmp(&points[b].1))
    });
    let mut front = Vec::new();
    let mut best = f64::INFINITY;
    for i in idx {
        if points[i].1 < best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}

/// The knee of a decreasing curve given by `points` in order of x: the point farthest below the
/// straight line between the first and the last point, after scaling both axes to [0, 1].
/// `None` with fewer than three points.
pub fn knee(points: &[(f64, f64)]) -> Option<usize> {
    if points.len() < 3 {
        return None;
    }
    let (x0, x1) = (points[0].0, points[points.len() - 1].0);
    let (ylo, yhi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    if x1 <= x0 || yhi <= ylo {
        return None;
    }
    let norm = |p: (f64, f64)| ((p.0 - x0) / (x1 - x0), (p.1 - ylo) / (yhi - ylo));
    let a = norm(points[0]);
    let b = norm(points[points.len() - 1]);
    // Signed distance below the chord (positive when the curve bends towards the origin).
    let below = |p: (f64, f64)| {
        let t = (p.0 - a.0) / (b.0 - a.0);
        (a.1 + t * (b.1 - a.1)) - p.1
    };
    (1..points.len() - 1)
        .map(|i| (i, below(norm(points[i]))))
        .filter(|(_, d)| *d > 0.0)
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(i, _)| i)
}

/// Runs the sweep on `data`; `progress` is told the fraction done.
pub fn run(
    p: &SweepParams,
    data: &ExperimentData,
    par: Parallelism,
    progress: &mut dyn FnMut(f64),
) -> Result<Report> {
    require_grid("values", &p.values)?;
    sparsecode::error::require_positive_count("latents", p.recipe.latents)?;
    let d_in = data.train.cols();
    let archs = p
        .values
        .iter()
        .map(|&v| p.kind.arch(v, d_in, p.recipe.latents))
        .collect::<Result<Vec<_>>>()?;
    let setting = match p.kind {
        SaeKind::Topk => "k",
        SaeKind::Relu => "L1",
    };
    let mut table = Table::new(
        format!(
            "{:?} SAE, {} latents, held-out metrics",
            p.kind, p.recipe.latents
        ),
        &[setting, "L0", "FVU", "dead %", "code MCC", "dict MCC"],
    );
    let mut points = Vec::new();
    let mut rows = Vec::new();
    for (i, (&v, arch)) in p.values.iter().zip(&archs).enumerate() {
        let sae = p.recipe.train(arch.clone(), data, p.seed, par)?;
        let m = evaluate_sae(&sae, &data.test, par);
        let (cm, dm) = match &data.truth {
            Some((d, z)) => {
                let codes = sae.encode_dense(&data.test, par);
                (
                    Some(code_mcc(z, &codes, HUNGARIAN_MAX, par)?.0),
                    Some(dictionary_metrics(d, &sae.w_dec, HUNGARIAN_MAX, par)?.dict_mcc),
                )
            }
            None => (None, None),
        };
        let f = |o: Option<f64>| o.map_or("-".into(), |v| format!("{v:.3}"));
        table.push(vec![
            format!("{v}"),
            format!("{:.2}", m.l0),
            format!("{:.4}", m.fvu),
            format!("{:.1}", 100.0 * m.dead_fraction),
            f(cm),
            f(dm),
        ]);
        points.push((m.l0, m.fvu));
        rows.push(json!({"value": v, "l0": m.l0, "fvu": m.fvu, "mse": m.mse, "dead_fraction": m.dead_fraction, "code_mcc": cm, "dict_mcc": dm}));
        progress((i + 1) as f64 / p.values.len() as f64);
    }
    let front = pareto_front(&points);
    let front_pts: Vec<(f64, f64)> = front.iter().map(|&i| points[i]).collect();
    let knee_i = knee(&front_pts).map(|j| front[j]);
    let mut notes = vec![format!("Data: {}.", data.source)];
    let mut annotations = Vec::new();
    match knee_i {
        Some(i) => {
            notes.push(format!(
                "Knee of the Pareto front: {setting} = {} (L0 {:.2}, FVU {:.4}): beyond it each extra active latent buys less reconstruction.",
                p.values[i], points[i].0, points[i].1
            ));
            annotations.push((
                points[i].0,
                points[i].1,
                format!("knee: {setting} = {}", p.values[i]),
            ));
        }
        None => {
            notes.push("No knee: the front has fewer than three points or does not bend.".into())
        }
    }
    let plot = LinePlot {
        title: "Sparsity-reconstruction trade-off (held out)".into(),
        x_label: "L0 (active latents per sample)".into(),
        y_label: "FVU".into(),
        series: vec![
            Series::scatter("runs", points.clone()),
            Series::line("Pareto front", front_pts),
        ],
        log_y: true,
        annotations,
        ..LinePlot::default()
    };
    Ok(Report {
        name: "sweep".into(),
        summary: format!(
            "{:?} SAE trained at {} sparsity settings ({} steps, batch {}); FVU and L0 on {} held-out rows.",
            p.kind,
            p.values.len(),
            p.recipe.steps,
            p.recipe.batch_size,
            data.test.rows()
        ),
        tables: vec![table],
        notes,
        json: json!({"params": p, "source": data.source, "runs": rows, "pareto_front": front, "knee": knee_i.map(|i| p.values[i])}),
        images: Vec::new(),
        plots: vec![("sweep-pareto.svg".into(), plot.to_svg())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_drops_dominated_points() {
        let pts = [(1.0, 0.5), (2.0, 0.6), (2.0, 0.3), (4.0, 0.1), (8.0, 0.12)];
        assert_eq!(pareto_front(&pts), vec![0, 2, 3]);
    }

    #[test]
    fn knee_of_an_elbow_and_of_a_straight_line() {
        // 1/x on [1, 16] in scaled coordinates lies farthest below the chord at x = 4
        // (distances 0.47, 0.58, 0.60, 0.47 at x = 2, 3, 4, 8).
        let curve: Vec<(f64, f64)> = [1.0, 2.0, 3.0, 4.0, 8.0, 16.0]
            .iter()
            .map(|&x| (x, 1.0 / x))
            .collect();
        assert_eq!(knee(&curve), Some(3));
        let line: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 4.0 - i as f64)).collect();
        assert_eq!(knee(&line), None);
        assert_eq!(knee(&curve[..2]), None);
    }

    #[test]
    fn impossible_settings_are_refused() {
        let data = ExperimentData::planted(16, 8, 2, 200, 0).unwrap();
        let mut p = SweepParams::quick();
        p.values = vec![0.0];
        assert!(run(&p, &data, Parallelism::Serial, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("k = 0"));
        p.values = vec![];
        assert!(run(&p, &data, Parallelism::Serial, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("empty"));
        p.kind = SaeKind::Relu;
        p.values = vec![-1.0];
        assert!(run(&p, &data, Parallelism::Serial, &mut |_| {}).is_err());
    }
}
