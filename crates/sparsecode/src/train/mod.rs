//! Training an SAE: validated config, Adam with serialisable state, schedules, dead-latent
//! tracking, the training loop, and the run folder with its checkpoints and records.

mod adam;
mod config;
mod observer;
mod run_dir;
mod schedule;
mod trainer;

pub use adam::{Adam, AdamState};
pub use config::{ArchConfig, BDecInit, TrainConfig};
pub use observer::{Control, NoObserver, Observer, StepRecord};
pub use run_dir::{RunDir, RunJob, RUN_PARTIAL_SUFFIX};
pub use schedule::Schedule;
pub use trainer::{train, TrainOutcome, TrainState};

#[cfg(test)]
mod resume_test;
