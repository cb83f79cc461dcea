//! [`HeatMap`] drawn with plotters: one rectangle per cell on a chart whose ticks sit at the cell
//! centres and carry the row and column labels, and a colour bar with its own two-tick axis.

use super::axis::Axis;
use super::{colour, fmt_tick, HeatMap};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

/// Room around the cells: row labels on the left, column labels and axis name below, the colour
/// bar on the right, the title on top.
const LEFT: f64 = 110.0;
const BELOW: f64 = 62.0;
const BAR: f64 = 100.0;
const TOP: f64 = 45.0;

impl HeatMap {
    /// Renders the map as an SVG document.
    pub fn to_svg(&self) -> String {
        let (rows, cols) = self.shape();
        let cell = self.cell();
        let w = (LEFT + cell * cols as f64 + BAR).max(300.0);
        let h = TOP + cell * rows as f64 + BELOW;
        let mut svg = String::new();
        let drawn = {
            let root = SVGBackend::with_string(&mut svg, (w as u32, h as u32)).into_drawing_area();
            self.draw(&root).and_then(|()| root.present())
        };
        match drawn {
            Ok(()) => svg,
            Err(e) => super::failed_svg(&self.title, &e.to_string()),
        }
    }

    /// Rows and columns (at least one of each, so that empty maps still have axes).
    fn shape(&self) -> (usize, usize) {
        let cols = self.values.iter().map(Vec::len).max().unwrap_or(0);
        (self.values.len().max(1), cols.max(1))
    }

    /// Side of a cell in pixels: the map fills about 480 pixels, within readable limits.
    fn cell(&self) -> f64 {
        let (rows, cols) = self.shape();
        (480.0 / cols.max(rows) as f64).clamp(14.0, 70.0)
    }

    fn norm(&self, v: f64) -> f64 {
        let (lo, hi) = self.range;
        if hi > lo {
            (v - lo) / (hi - lo)
        } else {
            0.5
        }
    }

    fn draw(&self, root: &Area) -> DrawResult {
        root.fill(&WHITE)?;
        let body = super::titled(root, &self.title, TOP as u32)?;
        let (_, cols) = self.shape();
        let (map, bar) = body.split_horizontally(LEFT + self.cell() * cols as f64);
        self.cells(&map)?;
        self.colour_bar(&bar)
    }

    fn cells(&self, area: &Area) -> DrawResult {
        let (rows, cols) = self.shape();
        // Narrow cells: label every other column so the labels do not run into each other.
        let every = if self.cell() < 36.0 { 2 } else { 1 };
        let mut chart = ChartBuilder::on(area)
            .y_label_area_size(LEFT as u32)
            .x_label_area_size(BELOW as u32)
            .build_cartesian_2d(centres(cols, every), centres(rows, 1))?;
        // Row 0 is drawn at the top.
        let label = |labels: &[String], i: f64| {
            let i = i.floor().max(0.0) as usize;
            labels.get(i).cloned().unwrap_or_default()
        };
        let col_label = |v: &f64| label(&self.col_labels, *v);
        let row_label = |v: &f64| label(&self.row_labels, rows as f64 - v);
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&col_label)
            .y_label_formatter(&row_label)
            .label_style(super::label_font())
            .draw()?;
        let filled = self.values.iter().enumerate().flat_map(|(r, row)| {
            row.iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(move |(c, &v)| (r, c, v))
        });
        let font = super::label_font();
        for (r, c, v) in filled {
            let (x, y) = (c as f64, (rows - 1 - r) as f64);
            let t = self.norm(v);
            let fill = colour(t, self.diverging).filled();
            chart.draw_series([Rectangle::new([(x, y), (x + 1.0, y + 1.0)], fill)])?;
            if self.annotate && self.cell() >= 28.0 {
                let ink = self.ink(t);
                let font = font
                    .clone()
                    .into_text_style(area)
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                let text = Text::new(format!("{v:.2}"), (x + 0.5, y + 0.5), font);
                chart.draw_series([text])?;
            }
        }
        Ok(())
    }

    /// Text colour that reads on a cell of this colour.
    fn ink(&self, t: f64) -> RGBColor {
        let dark = if self.diverging {
            (t - 0.5).abs() > 0.3
        } else {
            t < 0.6
        };
        if dark {
            WHITE
        } else {
            BLACK
        }
    }

    /// A vertical bar of 50 steps of the scale, labelled at both ends.
    fn colour_bar(&self, area: &Area) -> DrawResult {
        let (lo, hi) = self.range;
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, lo + 0.5)
        };
        let mut chart = ChartBuilder::on(area)
            .margin_left(20)
            .margin_right(BAR as u32 - 20 - 16 - 50)
            .right_y_label_area_size(50)
            .x_label_area_size(BELOW as u32)
            .build_cartesian_2d(0.0..1.0, Axis::with_ticks(lo, hi, vec![lo, hi]))?;
        let steps = 50;
        let band = |i: usize| lo + (hi - lo) * i as f64 / steps as f64;
        chart.draw_series((0..steps).map(|i| {
            let fill = colour((i as f64 + 0.5) / steps as f64, self.diverging).filled();
            Rectangle::new([(0.0, band(i)), (1.0, band(i + 1))], fill)
        }))?;
        let tick = |v: &f64| fmt_tick(*v);
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_label_formatter(&tick)
            .label_style(super::label_font())
            .set_all_tick_mark_size(3)
            .draw()?;
        Ok(())
    }
}

/// `[0, n]` with a tick at the centre of every `every`-th unit cell.
fn centres(n: usize, every: usize) -> Axis {
    let ticks = (0..n).step_by(every).map(|i| i as f64 + 0.5).collect();
    Axis::with_ticks(0.0, n as f64, ticks)
}
