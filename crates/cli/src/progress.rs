//! Renders training progress with indicatif (only on a terminal) and echoes log lines.

use indicatif::{ProgressBar, ProgressStyle};
use sparsecode::train::{Observer, StepRecord, TrainState};

/// Forwards to the run folder and draws a progress bar.
pub struct Progress<'a> {
    pub inner: &'a mut dyn Observer,
    pub bar: ProgressBar,
}

impl<'a> Progress<'a> {
    pub fn new(inner: &'a mut dyn Observer) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} steps ({per_sec}, eta {eta}) {msg}")
                .expect("the template is valid"),
        );
        Progress { inner, bar }
    }
}

impl Observer for Progress<'_> {
    fn on_start(&mut self, start: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(start);
        self.inner.on_start(start, total);
    }
    fn on_step(&mut self, step: u64) -> sparsecode::train::Control {
        self.bar.set_position(step);
        self.inner.on_step(step)
    }
    fn on_log(&mut self, r: &StepRecord) -> sparsecode::Result<()> {
        self.bar.set_message(format!(
            "loss {:.4} fvu {:.4} l0 {:.1} dead {:.1}%",
            r.loss,
            r.fvu,
            r.l0,
            100.0 * r.dead_fraction
        ));
        self.inner.on_log(r)
    }
    fn on_checkpoint(&mut self, s: &TrainState) -> sparsecode::Result<()> {
        self.inner.on_checkpoint(s)
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
