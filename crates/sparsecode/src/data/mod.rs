//! Data sources: synthetic superposition with planted ground truth, and the sharded,
//! memory-mapped activation store.

pub mod clusters;
pub mod prototypes;
pub mod scenes;
pub mod store;
pub mod stream;
pub mod synth;
pub mod tokens;

pub use stream::{rows_of, Batcher, Plan, RowSource};
pub use synth::{
    generate, Correlation, Hierarchy, Magnitude, Support, SynthConfig, SynthData, SynthSplit,
};
