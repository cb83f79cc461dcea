//! Static HTML feature dashboards: an index of every feature (sortable by density, largest
//! activation and interpretability score, with a search box over the top tokens) and one page
//! per feature with its top activating contexts (tokens shaded by the feature's activation,
//! the value on hover), contexts sampled from activation quantiles, a histogram, the nearest
//! features by decoder cosine, and (for a language model) the tokens its decoder direction
//! promotes and suppresses through the unembedding. Inline CSS and a few lines of inline
//! script: the folder opens from disk, fetches nothing, needs no server.

mod html;
pub mod neuronpedia;

use super::activations::activations_at;
use super::features::FeatureScan;
use html::{FeaturePage, IndexPage, Shown};
use rayon::prelude::*;
use serde::Serialize;
use sparsecode::data::tokens::TokenTable;
use sparsecode::data::RowSource;
use sparsecode::io::{write_atomic, write_json_atomic, OutputDir};
use sparsecode::sae::Codes;
use sparsecode::{Error, Matrix, Parallelism, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Tokens shown before and after the activating token.
const LEFT: usize = 14;
const RIGHT: usize = 4;
/// Nearest features listed by decoder cosine.
const NEAREST: usize = 8;

/// What a dashboard shows.
pub struct DashboardInput<'a> {
    /// Heading (model, hook, SAE).
    pub title: String,
    /// Lines of provenance under the heading.
    pub subtitle: Vec<String>,
    /// The per-feature summaries of a scan over the store.
    pub scan: &'a FeatureScan,
    /// Token provenance of the store's rows.
    pub tokens: &'a TokenTable,
    /// Decoder directions `[features, d_in]` (nearest features by cosine).
    pub decoder: &'a Matrix,
    /// Per feature: (promoted, suppressed) tokens with their logit effect; empty if unknown.
    pub logits: Vec<html::Logits>,
    /// Per feature: interpretability score, if scored.
    pub scores: Vec<Option<f64>>,
    /// Top contexts shown per feature.
    pub top_contexts: usize,
    /// Contexts shown per quantile band (four bands of the positive activations).
    pub quantile_contexts: usize,
    /// Threads for reading contexts and ranking nearest features.
    pub par: Parallelism,
    /// Also write the data in Neuronpedia's upload layout (`neuronpedia/` in the folder).
    pub neuronpedia: Option<neuronpedia::NeuronpediaMeta>,
}

/// One feature in the index (also written as `features.json`).
#[derive(Clone, Debug, Serialize)]
pub struct FeatureRow {
    /// Feature index.
    pub id: usize,
    /// Fraction of rows where it fires.
    pub density: f64,
    /// Largest activation.
    pub max: f32,
    /// Mean positive activation.
    pub mean: f64,
    /// Interpretability score, if scored.
    pub score: Option<f64>,
    /// The most frequent tokens among its top activations.
    pub top_tokens: Vec<String>,
}

/// Rows sampled from four quantile bands of a feature's positive activations (`per` each).
fn quantile_rows(sample: &[(f32, u32)], per: usize) -> Vec<(usize, Vec<u32>)> {
    let n = sample.len();
    if n == 0 || per == 0 {
        return Vec::new();
    }
    (0..4)
        .map(|b| {
            let lo = b * n / 4;
            let hi = ((b + 1) * n / 4).max(lo + 1).min(n);
            let step = ((hi - lo) / per).max(1);
            let rows = (lo..hi)
                .step_by(step)
                .take(per)
                .map(|i| sample[i].1)
                .collect();
            (b, rows)
        })
        .collect()
}

fn window(tokens: &TokenTable, row: usize) -> std::ops::Range<usize> {
    let ctx = tokens.context_of(row);
    row.saturating_sub(LEFT).max(ctx.start)..(row + RIGHT + 1).min(ctx.end)
}

/// Nearest features by cosine of decoder rows (excluding itself), `NEAREST` each. The Gram
/// matrix is formed a block of rows at a time, so wide dictionaries fit in memory.
fn nearest(decoder: &Matrix) -> Vec<Vec<(usize, f32)>> {
    let n = decoder.rows();
    let d = decoder.cols();
    let mut unit = decoder.as_slice().to_vec();
    sparsecode::linalg::normalize_rows(&mut unit, d);
    let par = sparsecode::Parallelism::Threads(rayon::current_num_threads());
    let mut out = Vec::with_capacity(n);
    const BLOCK: usize = 1024;
    for lo in (0..n).step_by(BLOCK) {
        let hi = (lo + BLOCK).min(n);
        let mut g = vec![0.0f32; (hi - lo) * n];
        let block = sparsecode::linalg::MatRef::new(&unit[lo * d..hi * d], hi - lo, d);
        let all = sparsecode::linalg::MatRef::new(&unit, n, d);
        sparsecode::linalg::matmul(&mut g, block, all.t(), 0.0, par);
        out.par_extend((lo..hi).into_par_iter().map(|i| {
            let row = &g[(i - lo) * n..(i - lo + 1) * n];
            let mut c: Vec<(usize, f32)> =
                (0..n).filter(|&j| j != i).map(|j| (j, row[j])).collect();
            let k = NEAREST.min(c.len());
            if k > 0 {
                c.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
                c.truncate(k);
                c.sort_by(|a, b| b.1.total_cmp(&a.1));
            }
            c
        }));
    }
    out
}

/// What `write` produced.
#[derive(Clone, Debug, Serialize)]
pub struct DashboardSummary {
    /// The output folder.
    pub dir: PathBuf,
    /// Features in the index.
    pub features: usize,
    /// Features with a page (those that fired).
    pub pages: usize,
    /// The Neuronpedia export, when asked for.
    pub neuronpedia: Option<neuronpedia::NeuronpediaSummary>,
}

/// Writes the dashboard into `out` (refused if it exists, unless `force`): `index.html`,
/// `features.json` and `f/NNNNN.html` for every feature that fired. `source` and `encode` give
/// the feature's activation on the tokens around each shown row.
pub fn write(
    out: &Path,
    force: bool,
    input: &DashboardInput,
    source: &dyn RowSource,
    encode: &(dyn Fn(&Matrix) -> Result<Codes> + Sync),
) -> Result<DashboardSummary> {
    input
        .par
        .install(|| write_on_pool(out, force, input, source, encode))
}

fn write_on_pool(
    out: &Path,
    force: bool,
    input: &DashboardInput,
    source: &dyn RowSource,
    encode: &(dyn Fn(&Matrix) -> Result<Codes> + Sync),
) -> Result<DashboardSummary> {
    check(input, source)?;
    let selected = select_rows(input);
    let pairs = window_pairs(input.tokens, &selected);
    let acts = activations_at(source, &pairs, encode)?;
    let near = nearest(input.decoder);
    let rows = index_rows(input);
    let fired: Vec<usize> = selected.iter().map(|s| s.feature).collect();
    let pages: Vec<(usize, String)> = selected
        .par_iter()
        .enumerate()
        .map(|(k, sel)| {
            let page = FeaturePage {
                id: sel.feature,
                title: &input.title,
                row: &rows[sel.feature],
                prev: k.checked_sub(1).map(|i| fired[i]),
                next: fired.get(k + 1).copied(),
                sample: &input.scan.features[sel.feature].sample,
                nearest: &near[sel.feature],
                logits: input.logits.get(sel.feature),
                top: shown_all(input.tokens, &acts, sel.feature, &sel.top),
                bands: (sel.bands.iter())
                    .map(|(b, r)| (*b, shown_all(input.tokens, &acts, sel.feature, r)))
                    .collect(),
            };
            (sel.feature, html::feature_page(&page))
        })
        .collect();
    let index = html::index_page(&IndexPage {
        title: &input.title,
        subtitle: &input.subtitle,
        rows: &rows,
        fired: fired.len(),
        scanned: input.scan.rows,
    });
    let dir = OutputDir::create(out, force)?;
    std::fs::create_dir_all(dir.join("f")).map_err(|e| Error::io(dir.join("f"), e))?;
    for (j, page) in &pages {
        write_atomic(&dir.join(&format!("f/{j:05}.html")), page.as_bytes())?;
    }
    write_atomic(&dir.join("index.html"), index.as_bytes())?;
    write_json_atomic(&dir.join("features.json"), &rows)?;
    let exported = match &input.neuronpedia {
        Some(meta) => {
            let data = (&acts, rows.as_slice(), near.as_slice());
            let to = dir.join("neuronpedia");
            Some(neuronpedia::export(&to, meta, input, &selected, data)?)
        }
        None => None,
    };
    Ok(DashboardSummary {
        dir: dir.commit()?,
        features: rows.len(),
        pages: pages.len(),
        neuronpedia: exported,
    })
}

/// The decoder and the token table must match the scan and the store.
fn check(input: &DashboardInput, source: &dyn RowSource) -> Result<()> {
    let n = input.scan.features.len();
    if input.decoder.rows() != n {
        return Err(Error::shape(
            "dashboard decoder",
            format!("{n} rows (one per feature)"),
            format!("{} rows", input.decoder.rows()),
        ));
    }
    if input.tokens.rows.len() as u64 != source.rows() {
        return Err(Error::shape(
            "dashboard token table",
            format!("{} rows (the store's)", source.rows()),
            format!("{} rows", input.tokens.rows.len()),
        ));
    }
    Ok(())
}

/// The rows one feature's page shows.
struct Selected {
    feature: usize,
    top: Vec<u32>,
    /// Rows per quantile band of the positive activations.
    bands: Vec<(usize, Vec<u32>)>,
}

/// Top rows and quantile samples of every feature that fired.
fn select_rows(input: &DashboardInput) -> Vec<Selected> {
    let features = input.scan.features.iter().enumerate();
    features
        .filter(|(_, f)| f.count > 0)
        .map(|(j, f)| Selected {
            feature: j,
            top: f.top.iter().take(input.top_contexts).map(|t| t.1).collect(),
            bands: quantile_rows(&f.sample, input.quantile_contexts),
        })
        .collect()
}

/// Every `(row, feature)` whose activation a page shows: each token of each shown window.
fn window_pairs(tokens: &TokenTable, selected: &[Selected]) -> Vec<(u32, u32)> {
    let mut pairs = Vec::new();
    for sel in selected {
        let bands = sel.bands.iter().flat_map(|b| b.1.iter());
        for &r in sel.top.iter().chain(bands) {
            for w in window(tokens, r as usize) {
                pairs.push((w as u32, sel.feature as u32));
            }
        }
    }
    pairs
}

/// The windows around `rows`, with feature `j`'s activation on each token.
fn shown_all(
    tokens: &TokenTable,
    acts: &HashMap<(u32, u32), f32>,
    j: usize,
    rows: &[u32],
) -> Vec<Shown> {
    let shown = |row: u32| {
        let w = window(tokens, row as usize);
        let r = &tokens.rows[row as usize];
        let act = |i: usize| *acts.get(&(i as u32, j as u32)).unwrap_or(&0.0);
        Shown {
            tokens: (w.clone())
                .map(|i| (tokens.text(i).to_string(), act(i)))
                .collect(),
            focus: row as usize - w.start,
            doc: tokens.documents[r.doc as usize].clone(),
            pos: r.pos,
        }
    };
    rows.iter().map(|&r| shown(r)).collect()
}

/// One index row per feature: density, activations, score and its most frequent top tokens.
fn index_rows(input: &DashboardInput) -> Vec<FeatureRow> {
    let (scan, tokens) = (input.scan, input.tokens);
    let row = |(j, f): (usize, &super::features::FeatureStats)| {
        let mut freq: HashMap<&str, usize> = HashMap::new();
        for &(_, r) in &f.top {
            *freq.entry(tokens.text(r as usize)).or_default() += 1;
        }
        let mut freq: Vec<(&str, usize)> = freq.into_iter().collect();
        freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        FeatureRow {
            id: j,
            density: f.density(scan.rows),
            max: f.max,
            mean: f.mean_active(),
            score: input.scores.get(j).copied().flatten(),
            top_tokens: freq.iter().take(4).map(|t| t.0.to_string()).collect(),
        }
    };
    scan.features.iter().enumerate().map(row).collect()
}
