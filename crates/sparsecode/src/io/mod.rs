//! Files in and out: `.npy` arrays, safetensors tensors, atomic writes and run
//! records.

pub mod atomic;
pub mod fields;
pub mod le;
pub mod lock;
pub mod map;
pub mod npy;
pub mod record;
pub mod tensors;

pub use atomic::{
    read_json, replace_dir, write_atomic, write_atomic_with, write_json_atomic, OutputDir,
};
pub use fields::Fields;
pub use lock::OutputLock;
pub use map::map_file;
pub use npy::{read_data, read_matrix, read_npy, write_matrix};

/// Parses the name of a unit variant of a serde enum (`snake_case` names; `-` taken as `_`), with
/// the valid names in the error: the one way command lines and bindings name library enums.
pub fn parse_name<T: serde::de::DeserializeOwned>(s: &str) -> std::result::Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.replace('-', "_")))
        .map_err(|e| format!("'{s}': {e}"))
}
