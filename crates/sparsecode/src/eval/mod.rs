//! Measurement, exactly as defined in REFERENCE section 3: reconstruction (MSE, FVU), sparsity
//! (L0, firing density, dead latents), and identifiability against planted ground truth (code
//! MCC and dictionary recovery, both through a maximum-weight matching), and feature absorption
//! against a planted hierarchy.

mod absorption;
mod correlation;
mod identifiability;
mod linear;
mod matching;
mod metrics;
mod probe;
mod streamed;

pub use absorption::{
    probe_alignment, word_absorption, Absorption, AbsorptionCounter, PairAbsorption,
    WordAbsorption, WordAbsorptionParams, DEFAULT_ABSORPTION_COS,
};
pub use correlation::{abs_correlation, CodeCorrelation};
pub use identifiability::{abs_cosine, code_mcc, dictionary_metrics, mcc_of, DictMetrics};
pub use linear::linear_r2;
pub use matching::{max_weight_matching, Matching, MatchingMethod, HUNGARIAN_MAX};
pub use metrics::{
    density_histogram, evaluate, evaluate_sae, firing_frequency, fvu, l0, mse, Histogram,
    ReconMetrics, ReconStats,
};
pub use probe::{
    balanced_accuracy, f1, top_mean_difference, BalancedLogistic, MultiProbe, MultiProbeParams,
};
pub use streamed::{evaluate_streamed, reconstruction_of_rows, reconstructs, CodeSource, Streamed};
