//! SVG figures: line/scatter plots and annotated heat maps, described as data here and drawn with
//! `plotters` (`line.rs`, `heat.rs`).
//!
//! plotters is built with its SVG backend only: without its `ttf` feature it estimates text
//! extents instead of reading a font, so the build needs no native font library, and the browser
//! lays out the `<text>` it writes. The output has no scripts and fetches nothing.

mod axis;
mod heat;
mod line;

use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, DrawingAreaErrorKind, SVGBackend, Text};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontDesc, FontFamily, FontStyle, IntoFont, IntoTextStyle, RGBColor};

/// Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0xF0, 0xE4, 0x42),
];

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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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

// plotters writes font sizes at 1/1.24 of what it is given: these come out at 15 and 12 pixels.

fn title_font() -> FontDesc<'static> {
    ("sans-serif", 19).into_font().style(FontStyle::Bold)
}

fn label_font() -> FontDesc<'static> {
    FontDesc::new(FontFamily::SansSerif, 15.0, FontStyle::Normal)
}

/// Draws the title centred in a band of `height` pixels at the top and returns the area below.
fn titled<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    title: &str,
    height: u32,
) -> Result<DrawingArea<SVGBackend<'a>, Shift>, DrawingAreaErrorKind<std::io::Error>> {
    let (band, rest) = root.split_vertically(height);
    let (w, h) = band.dim_in_pixel();
    let font = title_font()
        .into_text_style(&band)
        .pos(Pos::new(HPos::Center, VPos::Center));
    band.draw(&Text::new(title, (w as i32 / 2, h as i32 / 2), font))?;
    Ok(rest)
}

/// What a figure shows when plotters reports an error (it does not for an in-memory SVG, but a
/// figure is not worth a panic).
fn failed_svg(title: &str, error: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="720" height="60"><text x="10" y="30">{}: {}</text></svg>
"#,
        esc(title),
        esc(error)
    )
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
fn colour(t: f64, diverging: bool) -> RGBColor {
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
    let c = |k: usize| (a.1[k] + f * (b.1[k] - a.1[k])).round() as u8;
    RGBColor(c(0), c(1), c(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contents of every `<text>` element, trimmed.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim()))
            .collect()
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(fmt_tick(0.25), "0.25");
        assert_eq!(fmt_tick(40.0), "40");
        assert_eq!(fmt_tick(0.6000000001), "0.6");
        assert_eq!(fmt_tick(2e-5), "2e-5");
        assert_eq!(fmt_tick(0.0), "0");
    }

    #[test]
    fn line_plots_are_svg_with_every_series_escaped_and_split_at_gaps() {
        let p = LinePlot {
            title: "FVU <vs> L0".into(),
            x_label: "L0".into(),
            y_label: "FVU".into(),
            series: vec![
                Series::line(
                    "topk",
                    vec![(1.0, 0.5), (2.0, f64::NAN), (3.0, 0.1), (4.0, 0.05)],
                ),
                Series::dashed("theory & co", vec![(1.0, 0.4), (4.0, 0.0)]),
                Series::scatter("points", vec![(2.0, 0.2), (-1.0, 0.3)]),
            ],
            log_x: true,
            annotations: vec![(3.0, 0.1, "knee".into())],
            ..LinePlot::default()
        };
        let svg = p.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let texts = texts(&svg);
        for text in [
            "FVU &lt;vs&gt; L0",
            "theory &amp; co",
            "topk",
            "points",
            "knee",
            "L0",
        ] {
            assert!(texts.contains(&text), "{text} missing from {texts:?}");
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // 3 drawable markers of "topk", 1 of "points" (x = -1 is off a log axis), the knee's ring
        // and the scatter's legend dot.
        assert_eq!(svg.matches("<circle").count(), 3 + 1 + 1 + 1);
        // Each series' colour is used: blue, vermilion, green.
        for c in ["#0072B2", "#D55E00", "#009E73"] {
            assert!(svg.to_uppercase().contains(c), "{c} missing");
        }
    }

    #[test]
    fn heat_maps_colour_every_finite_cell_and_write_its_value() {
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
        assert!(h.starts_with("<svg") && h.trim_end().ends_with("</svg>"));
        let texts = texts(&h);
        for text in ["map", "0.00", "1.00", "0.50", "a", "b", "x", "y", "0", "1"] {
            assert!(texts.contains(&text), "{text} missing from {texts:?}");
        }
        assert_eq!(h.matches("0.50").count(), 1, "the NaN cell is blank");
        assert!(!h.contains("NaN"));
        assert_eq!(colour(0.0, false), RGBColor(0x44, 0x01, 0x54));
        assert_eq!(colour(1.0, true), RGBColor(0xb2, 0x18, 0x2b));
    }

    #[test]
    fn empty_figures_still_draw() {
        assert!(LinePlot::default().to_svg().contains("</svg>"));
        assert!(HeatMap::default().to_svg().contains("</svg>"));
    }
}
