//! The numeric axis both figures draw on: linear or base-10 logarithmic, with ticks placed here
//! (round values, decades, or cell centres) and handed to plotters as its key points.
//!
//! plotters has linear and log axes of its own, but its log axis puts a single tick on a range
//! shorter than a decade, and an axis with given ticks (`WithKeyPoints`) cannot take a label
//! formatter; one small axis type does all three and keeps the chart code free of generics.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use std::ops::Range;

/// `[lo, hi]` in data units, drawn linearly or in log10, with ticks at `ticks`.
#[derive(Clone, Debug)]
pub(super) struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<f64>,
}

impl Axis {
    /// About six round ticks on a linear axis, or decades (and 2x, 5x between them when fewer
    /// than three decades show) on a log axis. `lo < hi`, both positive on a log axis.
    pub(super) fn new(lo: f64, hi: f64, log: bool) -> Self {
        let ticks = if log {
            decade_ticks(lo.log10(), hi.log10())
        } else {
            nice_ticks(lo, hi, 6)
        };
        Axis { lo, hi, log, ticks }
    }

    /// A linear axis with ticks exactly at `ticks`.
    pub(super) fn with_ticks(lo: f64, hi: f64, ticks: Vec<f64>) -> Self {
        Axis {
            lo,
            hi,
            log: false,
            ticks,
        }
    }

    fn scale(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (lo, hi) = (self.scale(self.lo), self.scale(self.hi));
        let t = (self.scale(*value) - lo) / (hi - lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// About `n` round tick values covering `[lo, hi]`.
fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
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

/// Decades within `[lo, hi]` (given as log10), with 2x and 5x between them when fewer than three
/// decades show.
fn decade_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return Vec::new();
    }
    let steps: &[f64] = if hi - lo < 3.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    (lo.floor() as i32..=hi.ceil() as i32)
        .flat_map(|e| steps.iter().map(move |f| f * 10f64.powi(e)))
        .filter(|v| v.log10() >= lo - 1e-9 && v.log10() <= hi + 1e-9)
        .collect()
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
        assert_eq!(Axis::new(1.0, 4.0, true).ticks, vec![1.0, 2.0]);
        assert_eq!(
            Axis::new(0.5, 2e4, true).ticks,
            vec![1.0, 10.0, 100.0, 1000.0, 10000.0]
        );
    }

    #[test]
    fn log_axes_map_decades_evenly() {
        let a = Axis::new(1.0, 1000.0, true);
        assert_eq!(a.map(&1.0, (0, 300)), 0);
        assert_eq!(a.map(&10.0, (0, 300)), 100);
        assert_eq!(a.map(&1000.0, (0, 300)), 300);
        // Pixel rows grow downwards: plotters hands the vertical limits reversed.
        assert_eq!(Axis::new(0.0, 2.0, false).map(&0.5, (200, 0)), 150);
    }
}
