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
pub mod train_sharded;
pub mod train_stream;

use anyhow::Result;
use sparsecode::Matrix;
use std::path::Path;

/// Opens a 2-D `.npy` file through a memory map (nothing is read until used).
pub fn open_npy(path: &Path) -> Result<sparsecode::io::npy::NpyMap> {
    if !path.exists() {
        anyhow::bail!("{}: no such file", path.display());
    }
    let m = sparsecode::io::npy::NpyMap::open(path)?;
    m.matrix_shape()?;
    Ok(m)
}

/// The samples a command reads: a `.npy` matrix (`--data`) or an activation store (`--store`,
/// its chunk hashes checked as rows are read when `verify`); None when neither is given.
pub fn open_samples(
    data: Option<&Path>,
    store: Option<&Path>,
    verify: bool,
) -> Result<Option<Box<dyn sparsecode::data::RowSource>>> {
    if let Some(path) = data {
        return Ok(Some(Box::new(open_npy(path)?)));
    }
    let Some(dir) = store else {
        return Ok(None);
    };
    let mut store = sparsecode::data::store::Store::open(dir)?;
    store.set_verify_reads(verify);
    Ok(Some(Box::new(store)))
}

/// Reads a `.npy` data matrix (the library's errors name the file and the problem).
pub fn read_data(path: &Path) -> Result<Matrix> {
    if !path.exists() {
        anyhow::bail!("{}: no such file", path.display());
    }
    Ok(sparsecode::io::read_data(path)?)
}

/// An SAE folder, the block it hooks (`layer`, else the one its metadata names) and the causal
/// language model `spec` (`smollm2`, `gemma3` or a .gguf file) it is used inside; `command` names the
/// command in the refusals.
pub fn sae_in_model(
    sae: &Path,
    layer: Option<usize>,
    spec: &str,
    command: &str,
) -> Result<(
    sparsecode::sae::Sae,
    usize,
    Box<dyn sparsecode_harvest::CausalLm>,
)> {
    let model_sae = sparsecode::sae::load(sae)?;
    let layer = match layer {
        Some(l) => l,
        None => sparsecode::sae::hook_layer(sae)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: the SAE names no hook layer in its metadata; give --layer",
                sae.display()
            )
        })?,
    };
    match sparsecode_harvest::models::Loaded::load(spec)?.0.causal() {
        Some(model) => Ok((model_sae, layer, model)),
        None => anyhow::bail!(
            "--model {spec}: {command} needs a causal language model (smollm2, gemma3 or a .gguf file), not a BERT encoder"
        ),
    }
}

/// The corpus a command reads: `given`, or the fetched State of the Union addresses.
pub fn corpus_or_default(given: &Option<std::path::PathBuf>) -> Result<std::path::PathBuf> {
    match given {
        Some(c) => Ok(c.clone()),
        None => Ok(sparsecode_harvest::assets::require(
            sparsecode_harvest::assets::Asset::Sotu,
        )?),
    }
}
