//! One module per subcommand.

pub mod bench;
pub mod dashboard;
pub mod demo;
pub mod encode;
pub mod eval;
pub mod eval_spliced;
pub mod experiment;
pub mod harvest;
pub mod inspect;
pub mod interp;
pub mod learn;
pub mod store;
pub mod synth;
pub mod train;
pub mod train_stream;

use anyhow::Result;
use sparsecode::Matrix;
use std::path::Path;

/// Reads a `.npy` data matrix (the library's errors name the file and the problem).
pub fn read_data(path: &Path) -> Result<Matrix> {
    if !path.exists() {
        anyhow::bail!("{}: no such file", path.display());
    }
    Ok(sparsecode::io::read_data(path)?)
}
