//! Measurement, exactly as defined in REFERENCE section 3: reconstruction (MSE, FVU), sparsity
//! (L0, firing density, dead latents), and identifiability against planted ground truth (code
//! MCC and dictionary recovery, both through a maximum-weight matching).

mod identifiability;
mod matching;
mod metrics;

pub use identifiability::{abs_correlation, abs_cosine, code_mcc, dictionary_metrics, DictMetrics};
pub use matching::{max_weight_matching, Matching, MatchingMethod, HUNGARIAN_MAX};
pub use metrics::{
    density_histogram, evaluate, evaluate_sae, firing_frequency, fvu, l0, mse, Histogram,
    ReconMetrics,
};
