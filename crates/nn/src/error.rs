use std::path::PathBuf;

/// Errors of architecture files and networks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An architecture file that is not valid JSON of the format, or has a field outside it.
    #[error("architecture {source_name}: {message}")]
    Arch {
        source_name: String,
        message: String,
    },

    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A tensor operation refused its operands.
    #[error(transparent)]
    Tensor(#[from] eatnas_tensor::Error),

    /// A network was asked for something its architecture does not have, or given the wrong shape.
    #[error("{0}")]
    Network(String),
}

pub type Result<T> = std::result::Result<T, Error>;
