//! What a person looks at: per-feature summaries of a store scan and the HTML dashboard built
//! from them.

pub mod activations;
pub mod dashboard;
pub mod features;
pub mod image_features;
