//! How training reports progress: the library calls an [`Observer`]; the CLI renders it.

use serde::{Deserialize, Serialize};

/// One logged training step (also one line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps completed.
    pub step: u64,
    /// Total loss on the batch.
    pub loss: f64,
    /// `1/B sum ||x_hat - x||^2` on the batch.
    pub recon: f64,
    /// L1 penalty or AuxK term.
    pub sparsity: f64,
    /// Mean over samples and dims of the squared error on the batch.
    pub mse: f64,
    /// Fraction of variance unexplained on the batch.
    pub fvu: f64,
    /// Mean active latents per sample on the batch.
    pub l0: f64,
    /// Fraction of latents that have not fired within the dead window.
    pub dead_fraction: f64,
    /// Learning rate of this step.
    pub lr: f32,
    /// Current L1 coefficient (ReLU) or 0.
    pub l1: f32,
    /// Training samples seen.
    pub samples: u64,
    /// Wall-clock seconds since this process started training.
    pub elapsed_s: f64,
}

/// What the observer wants the trainer to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Keep training.
    Continue,
    /// Stop after this step (the state is checkpointed first when checkpoints are on).
    Stop,
}

/// Receives progress from the trainer.
pub trait Observer: Send {
    /// Training starts at `start_step` (non-zero on resume) of `total_steps`.
    fn on_start(&mut self, _start_step: u64, _total_steps: u64) {}
    /// After every step (cheap: no metrics).
    fn on_step(&mut self, _step: u64) -> Control {
        Control::Continue
    }
    /// Every `log_every` steps and at the last one.
    fn on_log(&mut self, _record: &StepRecord) -> crate::Result<()> {
        Ok(())
    }
    /// Every `checkpoint_every` steps, with the full state to save.
    fn on_checkpoint(&mut self, _state: &super::TrainState) -> crate::Result<()> {
        Ok(())
    }
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {}
