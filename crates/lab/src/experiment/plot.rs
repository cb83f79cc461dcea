//! Self-contained SVG figures: line/scatter plots and annotated heat maps.
//!
//! Written here rather than taken from `plotters`: that crate measures text with a font backend
//! (system fonts through font-kit, or a bundled TTF), which drags native libraries into a build
//! that must work on a bare CI machine, while these figures need only axes, polylines, rectangles
//! and `<text>` that the browser lays out. The output has no scripts and fetches nothing.

use std::fmt::Write;

/// Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;

/// One named sequence of points.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// `(x, y)` points; non-finite ones are skipped (and break the line).
    pub points: Vec<(f64, f64)>,
    /// Draw a marker at every point.
    pub markers: bool,
    /// Draw the line dashed (theory curves, references).
    pub dashed: bool,
    /// Draw no line, only markers.
    pub scatter: bool,
}

impl Series {
    /// A solid line with markers.
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
            markers: true,
            ..Series::default()
        }
    }

    /// A dashed line without markers.
    pub fn dashed(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
            dashed: true,
            ..Series::default()
        }
    }

    /// Markers only.
    pub fn scatter(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
            markers: true,
            scatter: true,
            ..Series::default()
        }
    }
}

/// A line or scatter plot.
#[derive(Clone, Debug, Default)]
pub struct LinePlot {
    /// Title above the plot.
    pub title: String,
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis.
    pub y_label: String,
    /// The data.
    pub series: Vec<Series>,
    /// Logarithmic horizontal axis (base 10; non-positive x are skipped).
    pub log_x: bool,
    /// Logarithmic vertical axis.
    pub log_y: bool,
    /// Fixed vertical range (default: the data's).
    pub y_range: Option<(f64, f64)>,
    /// Fixed horizontal range (default: the data's).
    pub x_range: Option<(f64, f64)>,
    /// Extra labelled points (e.g. a knee): `(x, y, text)`.
    pub annotations: Vec<(f64, f64, String)>,
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// About `n` round tick values covering `[lo, hi]`.
pub(crate) fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|f| f * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    // Multiples of the step, rounded to shed the binary representation error (0.6, not 0.6000001).
    let scale = 10f64.powi((1.0 - step.log10().floor()).max(0.0) as i32);
    let round = |v: f64| (v * scale).round() / scale;
    (first..)
        .map(|i| round(i as f64 * step))
        .take_while(|t| *t <= hi + step * 1e-9)
        .collect()
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn header(s: &mut String, title: &str, w: f64, h: f64) {
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        w / 2.0,
        esc(title)
    );
}

impl LinePlot {
    /// Renders the plot as an SVG document.
    pub fn to_svg(&self) -> String {
        let tx = |x: f64| if self.log_x { x.log10() } else { x };
        let ty = |y: f64| if self.log_y { y.log10() } else { y };
        let ok = |(x, y): &(f64, f64)| {
            x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0) && (!self.log_y || *y > 0.0)
        };
        let pts = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|p| ok(p))
        };
        let span = |vals: Vec<f64>| {
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            match (lo.is_finite(), hi > lo) {
                (false, _) => (0.0, 1.0),
                (true, true) => (lo, hi),
                (true, false) => (lo - 0.5, lo + 0.5),
            }
        };
        let (x0, x1) = self
            .x_range
            .map(|(a, b)| (tx(a), tx(b)))
            .unwrap_or_else(|| span(pts().map(|p| tx(p.0)).collect()));
        let (y0, y1) = self
            .y_range
            .map(|(a, b)| (ty(a), ty(b)))
            .unwrap_or_else(|| {
                let (a, b) = span(pts().map(|p| ty(p.1)).collect());
                let pad = 0.05 * (b - a);
                (a - pad, b + pad)
            });
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let px = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + ph - (ty(y) - y0) / (y1 - y0) * ph;
        let mut s = String::new();
        header(&mut s, &self.title, W, H);
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
        );
        let ticks = |lo: f64, hi: f64, log: bool| -> Vec<(f64, String)> {
            if log {
                // Decades, and 2x and 5x between them when fewer than three decades show.
                let steps: &[f64] = if hi - lo < 3.0 {
                    &[1.0, 2.0, 5.0]
                } else {
                    &[1.0]
                };
                (lo.floor() as i32..=hi.ceil() as i32)
                    .flat_map(|e| steps.iter().map(move |f| f * 10f64.powi(e)))
                    .filter(|v| v.log10() >= lo - 1e-9 && v.log10() <= hi + 1e-9)
                    .map(|v| (v, fmt_tick(v)))
                    .collect()
            } else {
                nice_ticks(lo, hi, 6)
                    .into_iter()
                    .map(|t| (t, fmt_tick(t)))
                    .collect()
            }
        };
        for (v, label) in ticks(x0, x1, self.log_x) {
            let x = px(v);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                TOP + ph,
                TOP + ph + 16.0
            );
        }
        for (v, label) in ticks(y0, y1, self.log_y) {
            let y = py(v);
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 14.0,
            esc(&self.x_label),
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        let _ = write!(
            s,
            r#"<clipPath id="plot"><rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/></clipPath><g clip-path="url(#plot)">"#
        );
        for (i, ser) in self.series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            if !ser.scatter {
                let dash = if ser.dashed {
                    r#" stroke-dasharray="6,4""#
                } else {
                    ""
                };
                // Non-finite points split the line into runs.
                for run in ser.points.split(|p| !ok(p)) {
                    if run.len() < 2 {
                        continue;
                    }
                    let path: Vec<String> = run
                        .iter()
                        .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                        .collect();
                    let _ = write!(
                        s,
                        r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"{dash}/>"#,
                        path.join(" ")
                    );
                }
            }
            if ser.markers {
                for &(x, y) in ser.points.iter().filter(|p| ok(p)) {
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}"><title>{}: ({}, {})</title></circle>"#,
                        px(x),
                        py(y),
                        esc(&ser.label),
                        fmt_tick(x),
                        fmt_tick(y)
                    );
                }
            }
        }
        for (x, y, text) in &self.annotations {
            if ok(&(*x, *y)) {
                let _ = write!(
                    s,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="7" fill="none" stroke="#000" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"##,
                    px(*x),
                    py(*y),
                    px(*x) + 9.0,
                    py(*y) - 9.0,
                    esc(text)
                );
            }
        }
        s.push_str("</g>");
        for (i, ser) in self.series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            let y = TOP + 10.0 + 20.0 * i as f64;
            let x = W - RIGHT + 12.0;
            let dash = if ser.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            if ser.scatter {
                let _ = write!(
                    s,
                    r#"<circle cx="{}" cy="{y}" r="3.5" fill="{c}"/>"#,
                    x + 11.0
                );
            } else {
                let _ = write!(
                    s,
                    r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{c}" stroke-width="2"{dash}/>"#,
                    x + 22.0
                );
            }
            let _ = write!(
                s,
                r#"<text x="{}" y="{}">{}</text>"#,
                x + 28.0,
                y + 4.0,
                esc(&ser.label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// A grid of values drawn as coloured cells, with the value written in each cell.
#[derive(Clone, Debug, Default)]
pub struct HeatMap {
    /// Title above the map.
    pub title: String,
    /// Label under the columns.
    pub x_label: String,
    /// Label beside the rows.
    pub y_label: String,
    /// One label per row (top to bottom).
    pub row_labels: Vec<String>,
    /// One label per column.
    pub col_labels: Vec<String>,
    /// `values[row][col]`; NaN cells are left blank.
    pub values: Vec<Vec<f64>>,
    /// Colour scale `(low, high)`.
    pub range: (f64, f64),
    /// Blue-white-red around the middle of the range instead of a sequential scale.
    pub diverging: bool,
    /// Write each value in its cell.
    pub annotate: bool,
}

/// Sequential scale (dark blue to yellow, perceptually ordered) or diverging (blue-white-red).
fn colour(t: f64, diverging: bool) -> String {
    let t = t.clamp(0.0, 1.0);
    let stops: &[(f64, [f64; 3])] = if diverging {
        &[
            (0.0, [33.0, 102.0, 172.0]),
            (0.5, [247.0, 247.0, 247.0]),
            (1.0, [178.0, 24.0, 43.0]),
        ]
    } else {
        &[
            (0.0, [68.0, 1.0, 84.0]),
            (0.25, [59.0, 82.0, 139.0]),
            (0.5, [33.0, 145.0, 140.0]),
            (0.75, [94.0, 201.0, 98.0]),
            (1.0, [253.0, 231.0, 37.0]),
        ]
    };
    let i = stops
        .windows(2)
        .position(|w| t <= w[1].0)
        .unwrap_or(stops.len() - 2);
    let (a, b) = (stops[i], stops[i + 1]);
    let f = (t - a.0) / (b.0 - a.0);
    let c: Vec<u8> = (0..3)
        .map(|k| (a.1[k] + f * (b.1[k] - a.1[k])).round() as u8)
        .collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

impl HeatMap {
    /// Renders the map as an SVG document.
    pub fn to_svg(&self) -> String {
        let rows = self.values.len();
        let cols = self.values.iter().map(Vec::len).max().unwrap_or(0);
        let cell = (480.0 / cols.max(rows).max(1) as f64).clamp(14.0, 70.0);
        let (left, top) = (110.0, 45.0);
        let w = left + cell * cols as f64 + 90.0;
        let h = top + cell * rows as f64 + 60.0;
        let (lo, hi) = self.range;
        let norm = |v: f64| {
            if hi > lo {
                (v - lo) / (hi - lo)
            } else {
                0.5
            }
        };
        let mut s = String::new();
        header(&mut s, &self.title, w.max(300.0), h);
        for (r, row) in self.values.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                let t = norm(v);
                let (x, y) = (left + c as f64 * cell, top + r as f64 * cell);
                let _ = write!(
                    s,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="{}"><title>{}</title></rect>"#,
                    colour(t, self.diverging),
                    fmt_tick(v)
                );
                if self.annotate && cell >= 28.0 {
                    let ink = if self.diverging {
                        if (t - 0.5).abs() > 0.3 {
                            "white"
                        } else {
                            "black"
                        }
                    } else if t < 0.6 {
                        "white"
                    } else {
                        "black"
                    };
                    let _ = write!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{ink}" font-size="11">{:.2}</text>"#,
                        x + cell / 2.0,
                        y + cell / 2.0 + 4.0,
                        v
                    );
                }
            }
        }
        for (r, label) in self.row_labels.iter().enumerate() {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 6.0,
                top + (r as f64 + 0.5) * cell + 4.0,
                esc(label)
            );
        }
        // Narrow cells: label every other column so the labels do not run into each other.
        let every = if cell < 36.0 { 2 } else { 1 };
        for (c, label) in self.col_labels.iter().enumerate().step_by(every) {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                left + (c as f64 + 0.5) * cell,
                top + rows as f64 * cell + 16.0,
                esc(label)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            left + cols as f64 * cell / 2.0,
            top + rows as f64 * cell + 40.0,
            esc(&self.x_label),
            top + rows as f64 * cell / 2.0,
            esc(&self.y_label)
        );
        // Colour bar.
        let bx = left + cols as f64 * cell + 20.0;
        let bh = cell * rows as f64;
        for i in 0..50 {
            let t = 1.0 - i as f64 / 49.0;
            let _ = write!(
                s,
                r#"<rect x="{bx:.1}" y="{:.1}" width="16" height="{:.2}" fill="{}"/>"#,
                top + bh * i as f64 / 50.0,
                bh / 50.0 + 0.5,
                colour(t, self.diverging)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}">{}</text></svg>"#,
            bx + 20.0,
            top + 10.0,
            fmt_tick(hi),
            bx + 20.0,
            top + bh,
            fmt_tick(lo)
        );
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let t = nice_ticks(3.0, 97.0, 6);
        assert_eq!(t.first(), Some(&20.0));
        assert!(t.windows(2).all(|w| (w[1] - w[0] - 20.0).abs() < 1e-9));
        assert_eq!(fmt_tick(0.25), "0.25");
        assert_eq!(fmt_tick(40.0), "40");
    }

    #[test]
    fn plots_are_well_formed_svg_with_every_series() {
        let p = LinePlot {
            title: "FVU <vs> L0".into(),
            x_label: "L0".into(),
            y_label: "FVU".into(),
            series: vec![
                Series::line(
                    "topk",
                    vec![(1.0, 0.5), (2.0, f64::NAN), (3.0, 0.1), (4.0, 0.05)],
                ),
                Series::dashed("theory", vec![(1.0, 0.4), (4.0, 0.0)]),
            ],
            log_x: true,
            annotations: vec![(3.0, 0.1, "knee".into())],
            ..LinePlot::default()
        };
        let svg = p.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("FVU &lt;vs&gt; L0"));
        // The NaN splits the first series into a 1-point run (no line) and a 2-point run.
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 3 + 1);
        assert!(svg.contains(">knee<"));
        let h = HeatMap {
            title: "map".into(),
            row_labels: vec!["a".into(), "b".into()],
            col_labels: vec!["x".into(), "y".into()],
            values: vec![vec![0.0, 1.0], vec![f64::NAN, 0.5]],
            range: (0.0, 1.0),
            annotate: true,
            ..HeatMap::default()
        }
        .to_svg();
        assert_eq!(h.matches("<title>").count(), 3);
        assert!(h.contains(">0.50<"));
        assert_eq!(colour(0.0, false), "#440154");
        assert_eq!(colour(1.0, true), "#b2182b");
    }
}
