//! The one error type of the library. Every variant names the file, field or flag at fault,
//! what was found and what was expected, so the CLI can print it as it is.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in sparsecode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system level failure on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A file whose content is not what its format requires (npy header, safetensors, JSON, ...).
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An array or tensor whose shape does not match what the operation needs.
    #[error("{context}: expected {expected}, found {found}")]
    Shape {
        /// What was being checked (a file, a tensor, a flag).
        context: String,
        /// The shape that was needed.
        expected: String,
        /// The shape that was given.
        found: String,
    },
    /// A NaN or infinity in input data.
    #[error("{context}: non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// Where the data came from.
        context: String,
        /// Row of the first bad value.
        row: usize,
        /// Column of the first bad value.
        col: usize,
        /// The bad value itself.
        value: f32,
    },
    /// A hyper-parameter or option outside its valid range.
    #[error("invalid `{field}`: {reason}")]
    InvalidParam {
        /// The config field or flag.
        field: String,
        /// The allowed range, and what was given.
        reason: String,
    },
    /// An input with no rows, or an otherwise empty collection that an operation needs non-empty.
    #[error("{context}: empty input ({reason})")]
    Empty {
        /// What was empty.
        context: String,
        /// Its shape or why it counts as empty.
        reason: String,
    },
    /// An output location that already exists and was not allowed to be replaced.
    #[error("{path}: already exists (pass --force to replace it)")]
    OutputExists {
        /// The existing output.
        path: PathBuf,
    },
    /// An allocation sized by input or flags that does not fit in the memory there is.
    #[error("{what} needs {needed}, but {available} is available (free memory, the cgroup's limit or --memory-limit); ask for less")]
    Memory {
        /// What would have been allocated (names the flag or file it is sized by).
        what: String,
        /// Its size.
        needed: String,
        /// What there is.
        available: String,
    },
    /// Work stopped because a stop was requested ([`crate::interrupt::request`], e.g. Ctrl-C).
    #[error("{what}: interrupted")]
    Interrupted {
        /// What was stopped.
        what: String,
    },
    /// The ranks of a distributed run disagree (their weights differ, or one was given other
    /// inputs).
    #[error("ranks disagree: {reason}")]
    Ranks {
        /// What differs, and between which ranks.
        reason: String,
    },
    /// An output that another live process is writing (its lock is held).
    #[error("{path}: in use by {holder}; wait for it to finish, or write elsewhere")]
    Locked {
        /// The output.
        path: PathBuf,
        /// Who holds the lock, as its lock file says.
        holder: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidParam`].
    pub fn param(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidParam {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Shape`].
    pub fn shape(
        context: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Error::Shape {
            context: context.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// Fails with [`Error::InvalidParam`] unless `value` is a finite number `>= 0`.
pub fn require_non_negative(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::param(
            field,
            format!("{value} must be a non-negative number"),
        ))
    }
}

/// Fails with [`Error::InvalidParam`] unless `value >= 1`.
pub fn require_positive_count(field: &str, value: usize) -> Result<()> {
    if value >= 1 {
        Ok(())
    } else {
        Err(Error::param(field, "must be at least 1"))
    }
}
