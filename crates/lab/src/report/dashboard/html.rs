//! The dashboard's pages as maud templates: every value from the data (tokens, document names,
//! titles) is escaped by construction; only the fixed style sheet and index script go in raw.

use super::FeatureRow;
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// A context window around one row, with the feature's activation on each token.
pub(super) struct Shown {
    /// `(token text, activation)` for each token of the window.
    pub tokens: Vec<(String, f32)>,
    /// Position of the row itself in the window.
    pub focus: usize,
    /// Document the row comes from.
    pub doc: String,
    /// Token position in the document.
    pub pos: u32,
}

/// Tokens a feature's decoder direction promotes and suppresses, with their logit effect.
pub(super) type Logits = (Vec<(String, f32)>, Vec<(String, f32)>);

/// Everything one feature's page shows.
pub(super) struct FeaturePage<'a> {
    pub id: usize,
    /// The dashboard's heading (model, hook, SAE).
    pub title: &'a str,
    pub row: &'a FeatureRow,
    /// The fired features before and after this one (page links).
    pub prev: Option<usize>,
    pub next: Option<usize>,
    /// Sampled positive activations (the histogram).
    pub sample: &'a [(f32, u32)],
    pub nearest: &'a [(usize, f32)],
    pub logits: Option<&'a Logits>,
    pub top: Vec<Shown>,
    /// Contexts per quantile band of the positive activations (band 0 = lowest quarter).
    pub bands: Vec<(usize, Vec<Shown>)>,
}

/// Everything the index shows.
pub(super) struct IndexPage<'a> {
    pub title: &'a str,
    pub subtitle: &'a [String],
    pub rows: &'a [FeatureRow],
    /// Features that fired at least once.
    pub fired: usize,
    /// Rows (tokens) the scan read.
    pub scanned: u64,
}

const STYLE: &str = r#"
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
"#;

const INDEX_SCRIPT: &str = r#"
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
"#;

const BANDS: [&str; 4] = ["0–25%", "25–50%", "50–75%", "75–100%"];

fn page(title: &str, body: Markup, script: Option<&str>) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (body)
                @if let Some(script) = script {
                    script { (PreEscaped(script)) }
                }
            }
        }
    };
    page.into_string() + "\n"
}

/// Line breaks and tabs inside a token shown as visible marks.
fn visible(token: &str) -> String {
    token.replace('\n', "⏎").replace('\t', "⇥")
}

/// Background of a token: orange, deeper with its share of the feature's largest activation.
fn shade(v: f32, max: f32) -> Option<String> {
    if v <= 0.0 || max <= 0.0 {
        return None;
    }
    let a = (v / max).clamp(0.0, 1.0);
    Some(format!("background:rgba(230,97,1,{:.2})", 0.08 + 0.82 * a))
}

fn context(s: &Shown, max: f32) -> Markup {
    html! {
        div.ctx {
            @for (i, (token, v)) in s.tokens.iter().enumerate() {
                span.tok.focus[i == s.focus] title=(format!("{v:.3}")) style=[shade(*v, max)] {
                    (visible(token))
                }
            }
            span.src { (s.doc) " · token " (s.pos) }
        }
    }
}

/// Bars of 40 equal bins from 0 to the largest activation, the range and count on hover.
fn histogram(sample: &[(f32, u32)], max: f32) -> Markup {
    const BINS: usize = 40;
    let (w, h) = (560.0, 150.0);
    let mut counts = [0usize; BINS];
    for &(v, _) in sample {
        let b = ((v / max.max(1e-12)) * BINS as f32) as usize;
        counts[b.min(BINS - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bw = w / BINS as f64;
    let edge = |i: usize| max as f64 * i as f64 / BINS as f64;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(w) height=(h + 22.0) role="img"
            aria-label="activation histogram" {
            @for (i, &c) in counts.iter().enumerate() {
                @let bh = h * c as f64 / top;
                rect x=(format!("{:.1}", i as f64 * bw)) y=(format!("{:.1}", h - bh))
                    width=(format!("{:.1}", bw - 1.0)) height=(format!("{bh:.1}")) fill="#e66101" {
                    title { (format!("{:.3}–{:.3}: {c}", edge(i), edge(i + 1))) }
                }
            }
            text x="0" y=(h + 16.0) font-size="11" { "0" }
            text x=(w) y=(h + 16.0) font-size="11" text-anchor="end" { (format!("{max:.2}")) }
        }
    }
}

fn nav(p: &FeaturePage) -> Markup {
    html! {
        p.nav {
            a href="../index.html" { "index" }
            @if let Some(i) = p.prev {
                " · " a href=(format!("{i:05}.html")) { "← " (i) }
            }
            @if let Some(i) = p.next {
                " · " a href=(format!("{i:05}.html")) { (i) " →" }
            }
        }
    }
}

fn stats(row: &FeatureRow) -> Markup {
    html! {
        p.stats {
            span { "density " b { (format!("{:.4}%", 100.0 * row.density)) } }
            span { "max " b { (format!("{:.3}", row.max)) } }
            span { "mean when active " b { (format!("{:.3}", row.mean)) } }
            @if let Some(s) = row.score {
                span { "intrusion score " b { (format!("{s:.2}")) } }
            }
        }
    }
}

fn neighbours(p: &FeaturePage) -> Markup {
    html! {
        div {
            h2 { "Nearest features (decoder cosine)" }
            @for &(i, c) in p.nearest {
                div { a href=(format!("{i:05}.html")) { "feature " (i) } " " (format!("{c:.3}")) }
            }
        }
        @if let Some((up, down)) = p.logits.filter(|l| !l.0.is_empty()) {
            @for (name, list, class) in [("Promotes", up, "pos"), ("Suppresses", down, "neg")] {
                div {
                    h2 { (name) " (logit effect)" }
                    @for (token, v) in list {
                        div.logit { span class=(class) { (format!("{v:+.3}")) } " " (visible(token)) }
                    }
                }
            }
        }
    }
}

/// One feature's page.
pub(super) fn feature_page(p: &FeaturePage) -> String {
    let max = p.row.max;
    let body = html! {
        (nav(p))
        h1 { "Feature " (p.id) }
        p.sub { (p.title) }
        (stats(p.row))
        h2 { "Activation histogram (positive activations, sampled)" }
        (histogram(p.sample, max))
        div.cols { (neighbours(p)) }
        h2 { "Top activations" }
        div #top { @for s in &p.top { (context(s, max)) } }
        @for (band, shown) in p.bands.iter().rev() {
            h2 { "Quantile " (BANDS[*band % BANDS.len()]) " of positive activations" }
            @for s in shown { (context(s, max)) }
        }
    };
    page(&format!("Feature {}", p.id), body, None)
}

fn index_row(r: &FeatureRow, max_density: f64) -> Markup {
    let score = r
        .score
        .map(|s| s.to_string())
        .unwrap_or_else(|| "NaN".into());
    let shown_score = r
        .score
        .map(|s| format!("{s:.2}"))
        .unwrap_or_else(|| "–".into());
    let bar = format!("width:{:.0}px", 60.0 * (r.density / max_density).sqrt());
    html! {
        tr data-id=(r.id) data-density=(r.density) data-max=(r.max) data-score=(score)
            data-search=(r.top_tokens.join(" ").to_lowercase()) {
            td {
                @if r.density > 0.0 {
                    a href=(format!("f/{:05}.html", r.id)) { (r.id) }
                } @else {
                    (r.id) " (dead)"
                }
            }
            td.num { span.bar style=(bar) {} (format!("{:.4}%", 100.0 * r.density)) }
            td.num { (format!("{:.3}", r.max)) }
            td.num { (shown_score) }
            td {
                @for (i, t) in r.top_tokens.iter().enumerate() {
                    @if i > 0 { " " }
                    code { (visible(t)) }
                }
            }
        }
    }
}

/// The index of every feature: sortable columns, a search box over the top tokens.
pub(super) fn index_page(p: &IndexPage) -> String {
    let n = p.rows.len();
    let max_density = p
        .rows
        .iter()
        .map(|r| r.density)
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let body = html! {
        h1 { (p.title) }
        @for line in p.subtitle { p.sub { (line) } }
        p.stats {
            span { b { (n) } " features" }
            span { b { (p.fired) } " fired" }
            span { b { (n - p.fired) } " dead" }
            span { b { (p.scanned) } " tokens scanned" }
        }
        input #search type="search" placeholder="search top tokens or a feature number"
            aria-label="search";
        table #features {
            thead {
                tr {
                    th data-key="id" { "feature" }
                    th data-key="density" { "density" }
                    th data-key="max" { "max act" }
                    th data-key="score" { "intrusion score" }
                    th { "top tokens" }
                }
            }
            tbody { @for r in p.rows { (index_row(r, max_density)) } }
        }
    };
    page(p.title, body, Some(INDEX_SCRIPT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: usize, density: f64, tokens: &[&str]) -> FeatureRow {
        FeatureRow {
            id,
            density,
            max: 2.5,
            mean: 1.0,
            score: None,
            top_tokens: tokens.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn every_value_from_the_data_is_escaped() {
        let rows = [row(0, 0.5, &["<script>", "a&b"]), row(1, 0.0, &[])];
        let html = index_page(&IndexPage {
            title: "model <x>",
            subtitle: &["\"quoted\"".to_string()],
            rows: &rows,
            fired: 1,
            scanned: 10,
        });
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>model &lt;x&gt;</title>"));
        assert!(html.contains("<code>&lt;script&gt;</code> <code>a&amp;b</code>"));
        assert!(html.contains("data-search=\"&lt;script&gt; a&amp;b\""));
        assert!(html.contains("&quot;quoted&quot;"));
        assert!(html.contains("<a href=\"f/00000.html\">0</a>"));
        assert!(html.contains("1 (dead)"));
        assert_eq!(html.matches("<script>").count(), 1, "only the index script");
    }

    #[test]
    fn a_feature_page_marks_the_focus_token_and_shades_by_activation() {
        let r = row(7, 0.1, &["whale"]);
        let shown = || Shown {
            tokens: vec![("the".into(), 0.0), (" whale\n".into(), 2.5)],
            focus: 1,
            doc: "moby <1>.txt".into(),
            pos: 42,
        };
        let logits: Logits = (vec![("sea".into(), 1.5)], vec![("land".into(), -0.5)]);
        let html = feature_page(&FeaturePage {
            id: 7,
            title: "t",
            row: &r,
            prev: Some(3),
            next: None,
            sample: &[(1.0, 0), (2.5, 1)],
            nearest: &[(3, 0.9)],
            logits: Some(&logits),
            top: vec![shown()],
            bands: vec![(0, vec![shown()]), (3, vec![])],
        });
        assert!(html.contains("<h1>Feature 7</h1>"));
        assert!(html.contains(
            "<span class=\"tok focus\" title=\"2.500\" style=\"background:rgba(230,97,1,0.90)\"> whale⏎</span>"
        ));
        assert!(html.contains("<span class=\"tok\" title=\"0.000\">the</span>"));
        assert!(html.contains("moby &lt;1&gt;.txt · token 42"));
        assert!(html.contains("<a href=\"00003.html\">← 3</a>"));
        assert!(html.contains("+1.500</span> sea") && html.contains("-0.500</span> land"));
        // Highest band first.
        let hi = html.find("Quantile 75–100%").unwrap();
        assert!(hi < html.find("Quantile 0–25%").unwrap());
        assert_eq!(html.matches("<rect").count(), 40);
    }
}
