//! sparsecode-lab: what people run and look at, built on the [`sparsecode`] library.
//!
//! The core library computes (SAEs, sparse coding, metrics, stores); this crate turns those
//! computations into things to read: the paper's experiments ([`experiment`], each computing its
//! data first and rendering tables and SVG figures from it), photographs as data ([`images`]:
//! decoding, whitening, patches, atom grids; [`idx`]: the MNIST family's files), feature
//! dashboards and the feature scan behind them ([`report`]), word intrusion ([`interp`]), the embedded demo
//! ([`demo`]) and the timing harness ([`bench`], which reads the process's peak memory).
//! Nothing in the core library depends on this crate. Errors are the core library's
//! [`sparsecode::Error`]: this crate adds no failure kinds of its own.

#![warn(missing_docs)]
#![allow(
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::type_complexity
)]

pub mod bench;
pub mod demo;
pub mod experiment;
pub mod idx;
pub mod images;
pub mod interp;
pub mod report;
