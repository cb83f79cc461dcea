//! Training an SAE: validated config, Adam with serialisable state, schedules, dead-latent
//! tracking, the training loop, and the run folder with its checkpoints and records.

mod adam;
mod config;
mod job;
mod observer;
mod request;
mod run_dir;
mod schedule;
pub(crate) mod step;
mod trainer;

pub use adam::{Adam, AdamState, Update};
pub use config::{ArchConfig, BDecInit, CheckedConfig, TrainConfig};
pub use job::{finish_job, train_job, train_job_with, TrainingData};
pub use observer::{Control, NoObserver, Observer, StepRecord};
pub use request::{input_scale, topk_lr, ArchKind, Normalize, TrainRequest};
pub use run_dir::{BlockCheckpoints, RunDir, RunJob, RUN_PARTIAL_SUFFIX};
pub use schedule::Schedule;
pub use step::{gradients, update, StepInputs};
pub use trainer::{
    initial_block_state, initial_state_for, train, train_with, TrainOutcome, TrainState,
};

#[cfg(test)]
mod resume_test;
#[cfg(test)]
mod split_test;
