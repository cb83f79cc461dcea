//! sparsecode: recover sparse features from activations in superposition.
//!
//! Activations `y = z D` (rows are samples, `D` has one unit-norm atom per row) with `z` sparse are
//! decomposed again by sparse autoencoders ([`sae`]) or by classical sparse inference ([`coding`]),
//! and the result is measured against planted ground truth ([`eval`]). The library never prints and
//! never exits; every failure is an [`Error`] naming the file, field or flag at fault.
//!
//! Layout conventions: matrices are row-major `f32`; activations are `[samples, d_in]`; every latent
//! owns one row of the encoder and one row of the decoder (`[d_sae, d_in]` both), so that a latent
//! shard is a contiguous block of rows. The SAELens export transposes the encoder on the way out.
//!
//! ```
//! use sparsecode::coding::{fista, FistaParams};
//! use sparsecode::data::{generate, SynthConfig};
//! use sparsecode::eval::code_mcc;
//! use sparsecode::Parallelism;
//!
//! // Plant 16 features in 8 dimensions (3 active per sample), then recover the codes by sparse
//! // inference with the true dictionary.
//! let data = generate(&SynthConfig::e2(0), None)?;
//! let x = &data.train.activations;
//! let params = FistaParams { lambda: 0.001, nonneg: true, ..FistaParams::default() };
//! let codes = fista(x, &data.dictionary, None, &params, Parallelism::Serial)?.codes;
//! let (mcc, _) = code_mcc(&data.train.codes, &codes, 4096, Parallelism::Serial)?;
//! assert!(mcc > 0.95);
//! # Ok::<(), sparsecode::Error>(())
//! ```

#![warn(missing_docs)]
// Numerical kernels index several arrays by the same loop variable and take many slices.
#![allow(
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::type_complexity
)]

pub mod classify;
pub mod coding;
pub mod data;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod interrupt;
pub mod io;
pub mod linalg;
pub mod memory;
pub mod sae;
pub mod seed;
pub mod train;

pub use error::{Error, Result};

/// `FromStr` by the serde name of each unit variant (see [`io::parse_name`]): how the CLI and
/// the Python binding name the library's enums, without declaring them again.
macro_rules! from_str_by_name {
    ($($t:ty),* $(,)?) => {$(
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                crate::io::parse_name(s)
            }
        }
    )*};
}

from_str_by_name!(
    train::ArchKind,
    train::BDecInit,
    sae::EncoderInit,
    sae::SaeFormat,
);
pub use linalg::{Matrix, Parallelism};

/// The library version, recorded in every run record.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
