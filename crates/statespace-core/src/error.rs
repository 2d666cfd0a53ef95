//! The engine's errors. Every message names what is wrong: the config field (`model.d_state: …`),
//! the file (`runs/x/best.safetensors: …`), or the operation a layer cannot do.

use std::path::{Path, PathBuf};

/// An error of statespace-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value out of range or inconsistent with another.
    #[error("{field}: {reason}")]
    Config {
        /// The field, as written in a config (`model.d_state`).
        field: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// A layer or model asked for something it cannot do (a bidirectional layer's step mode).
    #[error("{0}")]
    Unsupported(String),
    /// A file that cannot be read, written or understood.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// An argument out of range (a layer index, a shape that does not fit).
    #[error("{0}")]
    Invalid(String),
    /// A numerical failure of the initialization or conversion math.
    #[error("{context}: {source}")]
    Math {
        /// What was being computed.
        context: String,
        /// The math core's error.
        source: statespace_math::MathError,
    },
}

impl Error {
    /// A [`Error::Config`] error for `field`.
    pub fn config(field: &str, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A [`Error::File`] error for `path`.
    pub fn file(path: &Path, reason: impl Into<String>) -> Self {
        Error::File {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// A [`Error::Math`] error: `context` says what was being computed.
    pub fn math(context: impl Into<String>) -> impl FnOnce(statespace_math::MathError) -> Self {
        let context = context.into();
        move |source| Error::Math { context, source }
    }
}

/// The result type of statespace-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}
