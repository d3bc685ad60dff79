use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Nn(#[from] eatnas_nn::Error),
    #[error(transparent)]
    Data(#[from] eatnas_data::Error),
    #[error(transparent)]
    Train(#[from] eatnas_train::Error),
    #[error(transparent)]
    Tensor(#[from] eatnas_tensor::Error),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn file(path: &std::path::Path, message: impl ToString) -> Error {
        Error::File {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}
