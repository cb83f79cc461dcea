//! Files in and out: `.npy` arrays, safetensors tensors, atomic writes and run
//! records.

pub mod atomic;
pub mod npy;
pub mod record;
pub mod tensors;

pub use atomic::{read_json, replace_dir, write_atomic, write_json_atomic, OutputDir};
pub use npy::{read_matrix, read_npy, write_matrix};
