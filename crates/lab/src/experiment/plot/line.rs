//! [`LinePlot`] drawn with plotters: axes, ticks and grid from its mesh, the series clipped to the
//! plotting area, the legend in a column of its own on the right.

use super::axis::Axis;
use super::{fmt_tick, LinePlot, PALETTE};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Canvas, and the width of the legend column on its right.
const SIZE: (u32, u32) = (720, 420);
const LEGEND: u32 = 240;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

impl LinePlot {
    /// Renders the plot as an SVG document.
    pub fn to_svg(&self) -> String {
        let mut svg = String::new();
        let drawn = {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            self.draw(&root).and_then(|()| root.present())
        };
        match drawn {
            Ok(()) => svg,
            Err(e) => super::failed_svg(&self.title, &e.to_string()),
        }
    }

    fn draw(&self, root: &Area) -> DrawResult {
        root.fill(&WHITE)?;
        let root = super::titled(root, &self.title, 36)?;
        let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND);
        let ((x0, x1), (y0, y1)) = (self.x_span(), self.y_span());
        let x = Axis::new(x0, x1, self.log_x);
        let y = Axis::new(y0, y1, self.log_y);
        self.chart(&plot, x, y)?;
        self.legend(&legend)
    }

    /// Whether a point can be drawn on these axes.
    fn drawable(&self, &(x, y): &(f64, f64)) -> bool {
        x.is_finite() && y.is_finite() && (!self.log_x || x > 0.0) && (!self.log_y || y > 0.0)
    }

    fn points(&self) -> impl Iterator<Item = &(f64, f64)> {
        self.series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| self.drawable(p))
    }

    fn x_span(&self) -> (f64, f64) {
        self.x_range
            .unwrap_or_else(|| span(self.points().map(|p| p.0), self.log_x, 0.0))
    }

    /// The data's range with 5% room above and below (in the axis' own scale).
    fn y_span(&self) -> (f64, f64) {
        self.y_range
            .unwrap_or_else(|| span(self.points().map(|p| p.1), self.log_y, 0.05))
    }

    fn chart(&self, area: &Area, x: Axis, y: Axis) -> DrawResult {
        let mut chart = ChartBuilder::on(area)
            .margin(8)
            .x_label_area_size(44)
            .y_label_area_size(58)
            .build_cartesian_2d(x, y)?;
        let tick = |v: &f64| fmt_tick(*v);
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .bold_line_style(RGBColor(221, 221, 221))
            .light_line_style(TRANSPARENT)
            .axis_style(RGBColor(68, 68, 68))
            .label_style(super::label_font())
            .draw()?;
        frame(area, chart.plotting_area())?;
        for (i, series) in self.series.iter().enumerate() {
            let style = ShapeStyle::from(colour_of(i)).stroke_width(2);
            if !series.scatter {
                // Non-finite points split the line into runs.
                for run in series.points.split(|p| !self.drawable(p)) {
                    let run = run.iter().copied();
                    if series.dashed {
                        chart.draw_series(DashedLineSeries::new(run, 6, 4, style))?;
                    } else {
                        chart.draw_series(LineSeries::new(run, style))?;
                    }
                }
            }
            if series.markers {
                let points = series.points.iter().filter(|p| self.drawable(p));
                chart.draw_series(points.map(|&p| Circle::new(p, 3, style.filled())))?;
            }
        }
        for (x, y, text) in &self.annotations {
            if self.drawable(&(*x, *y)) {
                let ring = ShapeStyle::from(BLACK).stroke_width(2);
                chart.draw_series([Circle::new((*x, *y), 7, ring)])?;
                let label = Text::new(text.clone(), (9, -9), super::label_font());
                chart.draw_series([EmptyElement::at((*x, *y)) + label])?;
            }
        }
        Ok(())
    }

    /// One row per series: a line (or a dot for a scatter) in its colour, then its label.
    fn legend(&self, area: &Area) -> DrawResult {
        for (i, series) in self.series.iter().enumerate() {
            let y = 20 + 20 * i as i32;
            let style = ShapeStyle::from(colour_of(i)).stroke_width(2);
            if series.scatter {
                area.draw(&Circle::new((23, y), 3, style.filled()))?;
            } else if series.dashed {
                area.draw(&PathElement::new([(12, y), (20, y)], style))?;
                area.draw(&PathElement::new([(26, y), (34, y)], style))?;
            } else {
                area.draw(&PathElement::new([(12, y), (34, y)], style))?;
            }
            let font = super::label_font()
                .into_text_style(area)
                .pos(Pos::new(HPos::Left, VPos::Center));
            area.draw(&Text::new(series.label.as_str(), (40, y), font))?;
        }
        Ok(())
    }
}

/// A grey box around the plotting area (drawn on the enclosing area: the plotting area clips its
/// own edge away).
fn frame(area: &Area, plotting: &DrawingArea<SVGBackend, Cartesian2d<Axis, Axis>>) -> DrawResult {
    let (xs, ys) = plotting.get_pixel_range();
    let (bx, by) = area.get_base_pixel();
    let corners = [(xs.start - bx, ys.start - by), (xs.end - bx, ys.end - by)];
    let grey = ShapeStyle::from(RGBColor(68, 68, 68)).stroke_width(1);
    area.draw(&Rectangle::new(corners, grey))
}

/// The i-th colour of the palette.
fn colour_of(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// `[lo, hi]` of the values, widened by `pad` of its width on each side (a single value gets a
/// unit-wide range, none at all `[0, 1]`); on a log axis the padding is in decades.
fn span(values: impl Iterator<Item = f64>, log: bool, pad: f64) -> (f64, f64) {
    let to = |v: f64| if log { v.log10() } else { v };
    let from = |v: f64| if log { 10f64.powf(v) } else { v };
    let (lo, hi) = values
        .map(to)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = match (lo.is_finite(), hi > lo) {
        (false, _) => return (from(0.0), from(1.0)),
        (true, true) => (lo, hi),
        (true, false) => (lo - 0.5, lo + 0.5),
    };
    let room = pad * (hi - lo);
    (from(lo - room), from(hi + room))
}
