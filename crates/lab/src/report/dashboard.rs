//! Static HTML feature dashboards: an index of every feature (sortable by density, largest
//! activation and interpretability score, with a search box over the top tokens) and one page
//! per feature with its top activating contexts (tokens shaded by the feature's activation,
//! the value on hover), contexts sampled from activation quantiles, a histogram, the nearest
//! features by decoder cosine, and (for a language model) the tokens its decoder direction
//! promotes and suppresses through the unembedding. Inline CSS and a few lines of inline
//! script: the folder opens from disk, fetches nothing, needs no server.

use super::features::FeatureScan;
use crate::experiment::plot::esc;
use rayon::prelude::*;
use serde::Serialize;
use sparsecode::data::tokens::TokenTable;
use sparsecode::data::RowSource;
use sparsecode::io::{write_atomic, write_json_atomic, OutputDir};
use sparsecode::sae::Codes;
use sparsecode::{Error, Matrix, Parallelism, Result};
use std::collections::HashMap;
use std::fmt::Write;
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
    pub logits: Vec<(Vec<(String, f32)>, Vec<(String, f32)>)>,
    /// Per feature: interpretability score, if scored.
    pub scores: Vec<Option<f64>>,
    /// Top contexts shown per feature.
    pub top_contexts: usize,
    /// Contexts shown per quantile band (four bands of the positive activations).
    pub quantile_contexts: usize,
    /// Threads for reading contexts and ranking nearest features.
    pub par: Parallelism,
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

/// A context window around one row, with the feature's activation on each token.
struct Shown {
    tokens: Vec<(String, f32)>,
    focus: usize,
    doc: String,
    pos: u32,
}

/// Reads arbitrary rows (global indices) of a source into a matrix.
pub fn read_rows(source: &dyn RowSource, rows: &[u32]) -> Result<Matrix> {
    let d = source.cols();
    let shards = source.shard_rows();
    let mut starts = Vec::with_capacity(shards.len());
    let mut acc = 0u64;
    for &s in &shards {
        starts.push(acc);
        acc += s;
    }
    let mut out = vec![0.0f32; rows.len() * d];
    for (i, &r) in rows.iter().enumerate() {
        let r = r as u64;
        if r >= acc {
            return Err(Error::shape(
                source.describe(),
                format!("row < {acc}"),
                format!("row {r}"),
            ));
        }
        let s = starts.partition_point(|&st| st <= r) - 1;
        source.read(s, r - starts[s], &mut out[i * d..(i + 1) * d])?;
    }
    Matrix::from_vec(rows.len(), d, out)
}

/// Activations of `(row, feature)` pairs: the distinct rows are read and encoded once, in chunks.
pub fn activations_at(
    source: &dyn RowSource,
    pairs: &[(u32, u32)],
    encode: &(dyn Fn(&Matrix) -> Result<Codes> + Sync),
) -> Result<HashMap<(u32, u32), f32>> {
    let mut rows: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    rows.sort_unstable();
    rows.dedup();
    let mut wanted: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(r, f) in pairs {
        wanted.entry(r).or_default().push(f);
    }
    let mut out = HashMap::with_capacity(pairs.len());
    for chunk in rows.chunks(4096) {
        let x = read_rows(source, chunk)?;
        let codes = encode(&x)?;
        for (i, &r) in chunk.iter().enumerate() {
            for &f in &wanted[&r] {
                let v = match &codes {
                    Codes::Dense(m) => m.as_slice()[i * m.cols() + f as usize],
                    Codes::Sparse(t) => (i * t.k..(i + 1) * t.k)
                        .find(|&s| t.indices[s] == f)
                        .map(|s| t.values[s])
                        .unwrap_or(0.0),
                };
                out.insert((r, f), v);
            }
        }
    }
    Ok(out)
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

fn shade(v: f32, max: f32) -> String {
    if v <= 0.0 || max <= 0.0 {
        return String::new();
    }
    let a = (v / max).clamp(0.0, 1.0);
    format!(
        " style=\"background:rgba(230,97,1,{:.2})\"",
        0.08 + 0.82 * a
    )
}

fn token_html(t: &str) -> String {
    let t = t.replace('\n', "⏎").replace('\t', "⇥");
    esc(&t)
}

fn context_html(s: &Shown, max: f32) -> String {
    let mut h = String::from("<div class=\"ctx\">");
    for (i, (t, v)) in s.tokens.iter().enumerate() {
        let cls = if i == s.focus { "tok focus" } else { "tok" };
        let _ = write!(
            h,
            "<span class=\"{cls}\" title=\"{v:.3}\"{}>{}</span>",
            shade(*v, max),
            token_html(t)
        );
    }
    let _ = write!(
        h,
        "<span class=\"src\">{} · token {}</span></div>",
        esc(&s.doc),
        s.pos
    );
    h
}

fn histogram_svg(sample: &[(f32, u32)], max: f32) -> String {
    const BINS: usize = 40;
    let (w, h) = (560.0, 150.0);
    let mut counts = [0usize; BINS];
    for &(v, _) in sample {
        let b = ((v / max.max(1e-12)) * BINS as f32) as usize;
        counts[b.min(BINS - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"activation histogram\">",
        h + 22.0
    );
    let bw = w / BINS as f64;
    for (i, &c) in counts.iter().enumerate() {
        let bh = h * c as f64 / top;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#e66101\"><title>{:.3}–{:.3}: {c}</title></rect>",
            i as f64 * bw,
            h - bh,
            bw - 1.0,
            max as f64 * i as f64 / BINS as f64,
            max as f64 * (i + 1) as f64 / BINS as f64
        );
    }
    let _ = write!(
        s,
        "<text x=\"0\" y=\"{}\" font-size=\"11\">0</text><text x=\"{w}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{max:.2}</text></svg>",
        h + 16.0,
        h + 16.0
    );
    s
}

const STYLE: &str = r#"<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.4em;margin-bottom:4px}h2{font-size:1.1em;margin-top:28px;border-bottom:1px solid #ddd}
.sub{color:#666;font-size:.9em}.stats span{margin-right:18px}
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;white-space:pre-wrap;padding:4px 6px;border-bottom:1px solid #f0f0f0}
.tok{border-radius:2px}.tok:hover{outline:1px solid #555}.focus{outline:2px solid #b35806}
.src{color:#999;font-size:11px;margin-left:10px;font-family:system-ui,sans-serif}
table{border-collapse:collapse;width:100%;font-size:14px}th{cursor:pointer;text-align:left;background:#f6f6f6;position:sticky;top:0}
th,td{padding:4px 8px;border-bottom:1px solid #eee}td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:8px;background:#e66101;vertical-align:middle;margin-right:6px}
.cols{display:flex;gap:40px;flex-wrap:wrap}.cols>div{min-width:240px}
.logit{font-family:ui-monospace,monospace;font-size:13px}.pos{color:#1a7f37}.neg{color:#b42318}
input{font-size:15px;padding:6px;width:320px;margin:10px 0}a{color:#0b62a4}.nav{float:right}
</style>"#;

const INDEX_SCRIPT: &str = r#"<script>
(function(){
var tb=document.querySelector('#features tbody');
var rows=Array.prototype.slice.call(tb.rows);
var dir={};
function sortBy(key){dir[key]=-(dir[key]||1);
 rows.sort(function(a,b){var x=parseFloat(a.dataset[key]),y=parseFloat(b.dataset[key]);
  if(isNaN(x))x=-Infinity;if(isNaN(y))y=-Infinity;return dir[key]*(x-y);});
 rows.forEach(function(r){tb.appendChild(r);});}
function filter(q){q=q.toLowerCase();
 rows.forEach(function(r){r.style.display=(q===''||r.dataset.search.indexOf(q)>=0||r.dataset.id===q)?'':'none';});}
document.getElementById('search').addEventListener('input',function(e){filter(e.target.value);});
document.querySelectorAll('#features th[data-key]').forEach(function(th){
 th.addEventListener('click',function(){sortBy(th.dataset.key);});});
// Shareable views: index.html#sort=density&q=war sorts (largest first) and filters on load.
var h=new URLSearchParams(location.hash.slice(1));
if(h.get('sort')){sortBy(h.get('sort'));}
if(h.get('q')){document.getElementById('search').value=h.get('q');filter(h.get('q'));}
})();
</script>"#;

fn page(title: &str, body: &str, script: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>{STYLE}</head><body>{body}{script}</body></html>\n",
        esc(title)
    )
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
    let scan = input.scan;
    let tokens = input.tokens;
    let n = scan.features.len();
    if input.decoder.rows() != n {
        return Err(Error::shape(
            "dashboard decoder",
            format!("{n} rows (one per feature)"),
            format!("{} rows", input.decoder.rows()),
        ));
    }
    if tokens.rows.len() as u64 != source.rows() {
        return Err(Error::shape(
            "dashboard token table",
            format!("{} rows (the store's)", source.rows()),
            format!("{} rows", tokens.rows.len()),
        ));
    }
    // Which rows each page shows: top rows and quantile samples, each with its window.
    let mut shown_rows: Vec<(usize, Vec<u32>, Vec<(usize, Vec<u32>)>)> = Vec::new();
    let mut pairs = Vec::new();
    for (j, f) in scan.features.iter().enumerate() {
        if f.count == 0 {
            continue;
        }
        let top: Vec<u32> = f.top.iter().take(input.top_contexts).map(|t| t.1).collect();
        let q = quantile_rows(&f.sample, input.quantile_contexts);
        for &r in top.iter().chain(q.iter().flat_map(|b| b.1.iter())) {
            for w in window(tokens, r as usize) {
                pairs.push((w as u32, j as u32));
            }
        }
        shown_rows.push((j, top, q));
    }
    let acts = activations_at(source, &pairs, encode)?;
    let near = nearest(input.decoder);
    let dir = OutputDir::create(out, force)?;
    std::fs::create_dir_all(dir.join("f")).map_err(|e| Error::io(dir.join("f"), e))?;
    let shown = |j: usize, row: u32| -> Shown {
        let w = window(tokens, row as usize);
        let r = &tokens.rows[row as usize];
        Shown {
            tokens: w
                .clone()
                .map(|i| {
                    (
                        tokens.text(i).to_string(),
                        *acts.get(&(i as u32, j as u32)).unwrap_or(&0.0),
                    )
                })
                .collect(),
            focus: row as usize - w.start,
            doc: tokens.documents[r.doc as usize].clone(),
            pos: r.pos,
        }
    };
    let rows_total = scan.rows;
    let mut index_rows: Vec<FeatureRow> = Vec::with_capacity(n);
    for (j, f) in scan.features.iter().enumerate() {
        let mut freq: HashMap<&str, usize> = HashMap::new();
        for &(_, r) in &f.top {
            *freq.entry(tokens.text(r as usize)).or_default() += 1;
        }
        let mut freq: Vec<(&str, usize)> = freq.into_iter().collect();
        freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        index_rows.push(FeatureRow {
            id: j,
            density: f.density(rows_total),
            max: f.max,
            mean: f.mean_active(),
            score: input.scores.get(j).copied().flatten(),
            top_tokens: freq.iter().take(4).map(|t| t.0.to_string()).collect(),
        });
    }
    let alive: Vec<usize> = shown_rows.iter().map(|s| s.0).collect();
    let pages: Vec<(usize, String)> = shown_rows
        .par_iter()
        .enumerate()
        .map(|(k, (j, top, q))| {
            let j = *j;
            let f = &scan.features[j];
            let fr = &index_rows[j];
            let mut b = String::new();
            let _ = write!(b, "<p class=\"nav\"><a href=\"../index.html\">index</a>");
            if k > 0 {
                let _ = write!(b, " · <a href=\"{:05}.html\">← {}</a>", alive[k - 1], alive[k - 1]);
            }
            if k + 1 < alive.len() {
                let _ = write!(b, " · <a href=\"{:05}.html\">{} →</a>", alive[k + 1], alive[k + 1]);
            }
            let _ = write!(
                b,
                "</p><h1>Feature {j}</h1><p class=\"sub\">{}</p><p class=\"stats\"><span>density <b>{:.4}%</b></span><span>max <b>{:.3}</b></span><span>mean when active <b>{:.3}</b></span>",
                esc(&input.title),
                100.0 * fr.density,
                fr.max,
                fr.mean
            );
            if let Some(s) = fr.score {
                let _ = write!(b, "<span>intrusion score <b>{s:.2}</b></span>");
            }
            b.push_str("</p><h2>Activation histogram (positive activations, sampled)</h2>");
            b.push_str(&histogram_svg(&f.sample, f.max));
            b.push_str("<div class=\"cols\"><div><h2>Nearest features (decoder cosine)</h2>");
            for &(i, c) in &near[j] {
                let _ = write!(
                    b,
                    "<div><a href=\"{i:05}.html\">feature {i}</a> {c:.3}</div>"
                );
            }
            b.push_str("</div>");
            if let Some((up, down)) = input.logits.get(j).filter(|l| !l.0.is_empty()) {
                for (name, list, cls) in [("Promotes", up, "pos"), ("Suppresses", down, "neg")] {
                    let _ = write!(b, "<div><h2>{name} (logit effect)</h2>");
                    for (t, v) in list {
                        let _ = write!(
                            b,
                            "<div class=\"logit\"><span class=\"{cls}\">{v:+.3}</span> {}</div>",
                            token_html(t)
                        );
                    }
                    b.push_str("</div>");
                }
            }
            b.push_str("</div><h2>Top activations</h2><div id=\"top\">");
            for &r in top {
                b.push_str(&context_html(&shown(j, r), f.max));
            }
            b.push_str("</div>");
            let names = ["0–25%", "25–50%", "50–75%", "75–100%"];
            for (band, rows) in q.iter().rev() {
                let _ = write!(
                    b,
                    "<h2>Quantile {} of positive activations</h2>",
                    names[*band]
                );
                for &r in rows {
                    b.push_str(&context_html(&shown(j, r), f.max));
                }
            }
            (j, page(&format!("Feature {j}"), &b, ""))
        })
        .collect();
    for (j, html) in &pages {
        write_atomic(&dir.join(&format!("f/{j:05}.html")), html.as_bytes())?;
    }
    // The index.
    let mut b = String::new();
    let alive_n = alive.len();
    let _ = write!(
        b,
        "<h1>{}</h1>{}<p class=\"stats\"><span><b>{n}</b> features</span><span><b>{alive_n}</b> fired</span><span><b>{}</b> dead</span><span><b>{rows_total}</b> tokens scanned</span></p><input id=\"search\" type=\"search\" placeholder=\"search top tokens or a feature number\" aria-label=\"search\"><table id=\"features\"><thead><tr><th data-key=\"id\">feature</th><th data-key=\"density\">density</th><th data-key=\"max\">max act</th><th data-key=\"score\">intrusion score</th><th>top tokens</th></tr></thead><tbody>",
        esc(&input.title),
        input
            .subtitle
            .iter()
            .map(|s| format!("<p class=\"sub\">{}</p>", esc(s)))
            .collect::<String>(),
        n - alive_n
    );
    let max_density = index_rows
        .iter()
        .map(|r| r.density)
        .fold(0.0f64, f64::max)
        .max(1e-12);
    for r in &index_rows {
        let toks = r
            .top_tokens
            .iter()
            .map(|t| format!("<code>{}</code>", token_html(t)))
            .collect::<Vec<_>>()
            .join(" ");
        let search = r.top_tokens.join(" ").to_lowercase();
        let link = if r.density > 0.0 {
            format!("<a href=\"f/{:05}.html\">{}</a>", r.id, r.id)
        } else {
            format!("{} (dead)", r.id)
        };
        let _ = write!(
            b,
            "<tr data-id=\"{}\" data-density=\"{}\" data-max=\"{}\" data-score=\"{}\" data-search=\"{}\"><td>{link}</td><td class=\"num\"><span class=\"bar\" style=\"width:{:.0}px\"></span>{:.4}%</td><td class=\"num\">{:.3}</td><td class=\"num\">{}</td><td>{toks}</td></tr>",
            r.id,
            r.density,
            r.max,
            r.score.map(|s| s.to_string()).unwrap_or_else(|| "NaN".into()),
            esc(&search),
            60.0 * (r.density / max_density).sqrt(),
            100.0 * r.density,
            r.max,
            r.score.map(|s| format!("{s:.2}")).unwrap_or_else(|| "–".into()),
        );
    }
    b.push_str("</tbody></table>");
    write_atomic(
        &dir.join("index.html"),
        page(&input.title, &b, INDEX_SCRIPT).as_bytes(),
    )?;
    write_json_atomic(&dir.join("features.json"), &index_rows)?;
    let dest = dir.commit()?;
    Ok(DashboardSummary {
        dir: dest,
        features: n,
        pages: pages.len(),
    })
}
