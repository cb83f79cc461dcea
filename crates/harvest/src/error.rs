//! The harvest crate's error type: every variant names the file or field and what was expected.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when loading a model, tokenising text or harvesting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model or asset file is missing; `fetch` is the command that provides it.
    #[error("{path}: not found ({what}); fetch it with `{fetch}`")]
    MissingAsset {
        /// The path looked at.
        path: PathBuf,
        /// What it should hold.
        what: String,
        /// The command that fetches it.
        fetch: String,
    },
    /// A model file could not be parsed (corrupt, truncated, or not the expected format).
    #[error("{path}: {reason}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A layer index outside the model.
    #[error("layer {layer} does not exist in {model}: it has {n_layers} layers (0..{n_layers})")]
    Layer {
        /// The model's name.
        model: String,
        /// The layer asked for.
        layer: usize,
        /// How many it has.
        n_layers: usize,
    },
    /// A text input problem (empty corpus, non-UTF-8 file).
    #[error("{path}: {reason}")]
    Corpus {
        /// The file or folder.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A tokenizer problem.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor computation failed (a shape bug or an allocation failure).
    #[error("{context}: {source}")]
    Candle {
        /// What was being computed.
        context: String,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
    /// A harvest cannot resume: the store on disk was made with other settings.
    #[error("{path}: {reason}")]
    Resume {
        /// The store.
        path: PathBuf,
        /// Which setting differs.
        reason: String,
    },
    /// An invalid parameter.
    #[error("invalid `{field}`: {reason}")]
    Param {
        /// The parameter.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// An error from the core library (stores, files).
    #[error(transparent)]
    Core(#[from] sparsecode::Error),
    /// I/O on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Attaches a context string to candle errors.
pub(crate) trait CandleContext<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> CandleContext<T> for std::result::Result<T, candle_core::Error> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| Error::Candle {
            context: context.to_string(),
            source,
        })
    }
}
