//! Picks a model by name (`smollm2`, `gemma3`, `minilm`) or path (a `.gguf` file of either
//! architecture, a BERT folder).

use crate::assets::{self, Asset};
use crate::bert::Bert;
use crate::decoder::GgufFile;
use crate::gemma::Gemma;
use crate::llama::Llama;
use crate::tokenizer::TextTokenizer;
use crate::{CausalLm, Error, ResidualModel, Result};
use std::path::{Path, PathBuf};

/// A loaded model of either family.
pub enum Loaded {
    /// A GGUF Llama.
    Llama(Box<Llama>),
    /// A GGUF Gemma 3.
    Gemma(Box<Gemma>),
    /// A BERT encoder.
    Bert(Box<Bert>),
}

impl Loaded {
    /// Loads `spec`: `smollm2`, `gemma3`, `minilm`, a `.gguf` file or a folder with
    /// `model.safetensors`.
    pub fn load(spec: &str) -> Result<(Self, PathBuf)> {
        match spec {
            "smollm2" => {
                let p = assets::require(Asset::SmolLm2)?;
                Ok((Loaded::Llama(Box::new(Llama::load(&p)?)), p))
            }
            "gemma3" => {
                let p = assets::require(Asset::Gemma3)?;
                Ok((Loaded::Gemma(Box::new(Gemma::load(&p)?)), p))
            }
            "minilm" => {
                let dir = assets::require(Asset::MiniLm)?;
                let file = dir.join("model.safetensors");
                Ok((Loaded::Bert(Box::new(Bert::load(&dir)?)), file))
            }
            _ => {
                let p = Path::new(spec);
                if p.is_dir() {
                    Ok((
                        Loaded::Bert(Box::new(Bert::load(p)?)),
                        p.join("model.safetensors"),
                    ))
                } else if p.extension().is_some_and(|e| e == "gguf") || p.is_file() {
                    // Opened and read once; the architecture picks the forward.
                    let file = GgufFile::open(p)?;
                    let loaded = match file.architecture() {
                        "gemma3" => Loaded::Gemma(Box::new(Gemma::from_gguf(&file)?)),
                        _ => Loaded::Llama(Box::new(Llama::from_gguf(&file)?)),
                    };
                    Ok((loaded, p.to_path_buf()))
                } else {
                    Err(Error::Param {
                        field: "model",
                        reason: format!(
                            "'{spec}' is neither `smollm2`, `gemma3`, `minilm`, a .gguf file nor a BERT folder"
                        ),
                    })
                }
            }
        }
    }

    /// The network as a residual-stream source.
    pub fn residual_model(&self) -> &dyn ResidualModel {
        match self {
            Loaded::Llama(m) => m.as_ref(),
            Loaded::Gemma(m) => m.as_ref(),
            Loaded::Bert(m) => m.as_ref(),
        }
    }

    /// The model as a causal language model (None for a BERT encoder).
    pub fn causal(self) -> Option<Box<dyn CausalLm>> {
        match self {
            Loaded::Llama(m) => Some(m),
            Loaded::Gemma(m) => Some(m),
            Loaded::Bert(_) => None,
        }
    }

    /// Its tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        match self {
            Loaded::Llama(m) => m.tokenizer(),
            Loaded::Gemma(m) => m.tokenizer(),
            Loaded::Bert(m) => m.tokenizer(),
        }
    }
}
