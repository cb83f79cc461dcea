//! Where the fetched models and texts live (`scripts/fetch-assets` puts them there) and the
//! error that names the command to run when one is missing.

use crate::Error;
use std::path::{Path, PathBuf};

/// The offline assets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asset {
    /// all-MiniLM-L6-v2: folder with `model.safetensors`, `config.json`, `tokenizer.json`.
    MiniLm,
    /// all-MiniLM-L6-v2's `tokenizer.json`.
    MiniLmTokenizer,
    /// SmolLM2-135M-Instruct, one GGUF file.
    SmolLm2,
    /// Gemma 3 270M (Q4_K_M), one GGUF file joined from its PyPI parts.
    Gemma3,
    /// State of the Union addresses, a folder of `.txt` files.
    Sotu,
    /// Moby-Dick, a folder with one `.txt` file.
    MobyDick,
    /// Public-domain photographs, a folder of `.jpg` files.
    Images,
    /// Fashion-MNIST, a folder of four gzip-compressed IDX files.
    FashionMnist,
}

impl Asset {
    /// Relative path inside the assets folder.
    pub fn relative(self) -> &'static str {
        match self {
            Asset::MiniLm => "minilm",
            Asset::MiniLmTokenizer => "minilm/tokenizer.json",
            Asset::SmolLm2 => "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            Asset::Gemma3 => "gemma3/gemma-3-270m-q4_k_m.gguf",
            Asset::Sotu => "text/sotu",
            Asset::MobyDick => "text/moby-dick",
            Asset::Images => "images",
            Asset::FashionMnist => "fashion-mnist",
        }
    }

    /// The name `scripts/fetch-assets` takes.
    pub fn fetch_name(self) -> &'static str {
        match self {
            Asset::MiniLm | Asset::MiniLmTokenizer => "minilm",
            Asset::SmolLm2 => "smollm2",
            Asset::Gemma3 => "gemma3",
            Asset::Sotu => "sotu",
            Asset::MobyDick => "moby-dick",
            Asset::Images => "images",
            Asset::FashionMnist => "fashion-mnist",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Asset::MiniLm => "the all-MiniLM-L6-v2 model folder",
            Asset::MiniLmTokenizer => "all-MiniLM-L6-v2's tokenizer.json",
            Asset::SmolLm2 => "the SmolLM2-135M GGUF model",
            Asset::Gemma3 => "the Gemma 3 270M GGUF model",
            Asset::Sotu => "the State of the Union texts",
            Asset::MobyDick => "the Moby-Dick text",
            Asset::Images => "the public-domain photographs",
            Asset::FashionMnist => "the Fashion-MNIST IDX files",
        }
    }
}

/// The assets folder: `$SPARSECODE_ASSETS`, else `./assets` if it exists, else the source
/// checkout's `assets/` (where `scripts/fetch-assets` writes by default).
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SPARSECODE_ASSETS") {
        return PathBuf::from(d);
    }
    let local = PathBuf::from("assets");
    if local.is_dir() {
        return local;
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    if checkout.is_dir() {
        return checkout;
    }
    local
}

/// Full path of an asset (which may not exist).
pub fn path(asset: Asset) -> PathBuf {
    dir().join(asset.relative())
}

/// The error for a missing asset at `path`.
pub fn missing(path: &Path, asset: Asset) -> Error {
    Error::MissingAsset {
        path: path.to_path_buf(),
        what: asset.what().to_string(),
        fetch: format!("scripts/fetch-assets {}", asset.fetch_name()),
    }
}

/// `path(asset)` if it exists, else the missing-asset error (the named models and the default
/// corpus come through here, so their errors say what to run; a path the user gave does not).
pub fn require(asset: Asset) -> crate::Result<PathBuf> {
    let p = path(asset);
    if p.exists() {
        Ok(p)
    } else {
        Err(missing(&p, asset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_asset_names_the_command_that_fetches_it() {
        let e = missing(Path::new("/nowhere/x.gguf"), Asset::SmolLm2).to_string();
        assert!(
            e.contains("/nowhere/x.gguf") && e.contains("`scripts/fetch-assets smollm2`"),
            "{e}"
        );
        let e = missing(Path::new("t"), Asset::MiniLmTokenizer).to_string();
        assert!(e.contains("fetch-assets minilm"), "{e}");
    }
}
