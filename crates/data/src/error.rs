use std::path::PathBuf;

/// Errors of datasets: each names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A file whose contents are not what its format says.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },

    /// A dataset specification or option that cannot be used.
    #[error("{0}")]
    Spec(String),

    #[error(transparent)]
    Tensor(#[from] eatnas_tensor::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
