//! Data sources: synthetic superposition with planted ground truth.

pub mod synth;

pub use synth::{generate, Magnitude, Support, SynthConfig, SynthData, SynthSplit};
