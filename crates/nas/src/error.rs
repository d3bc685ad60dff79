use std::path::PathBuf;

use crate::executor::slurm::SlurmError;

/// Everything that can stop a search. Each variant names what was wrong and where; io errors keep
/// their source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value out of range or inconsistent with another.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// A configuration error found in a file.
    #[error("{file}: {source}")]
    InFile {
        file: String,
        #[source]
        source: Box<Error>,
    },
    #[error("{file}: {source}")]
    Toml {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    /// A seed architecture that does not fit the search space.
    #[error("seed architecture `{name}`: {message}")]
    SeedArchitecture { name: String, message: String },
    /// A genome that does not make a valid architecture under a macro.
    #[error("genome {genome}: {message}")]
    Genome { genome: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file eatnas wrote that it cannot read back (truncated, edited by hand, another format).
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// A folder or state that this command must not touch (another version's, another
    /// configuration's, a search already there, none there).
    #[error("{path}: {message}")]
    Refused { path: PathBuf, message: String },
    /// Another coordinator holds the search folder.
    #[error("{path} is held by {holder}; two coordinators on one folder would submit every job twice. If that coordinator is gone, delete {path}")]
    Locked { path: PathBuf, holder: String },
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    /// An evaluation could not write its files: nothing of it was recorded.
    #[error("the disk is full: {reason}. Nothing of that evaluation was recorded; free space, then {next}")]
    DiskFull { reason: String, next: String },
    /// Ctrl-C or SIGTERM: the state is saved. `next` says how to continue.
    #[error("interrupted; {what}. {next}")]
    Interrupted { what: String, next: String },
    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[error(transparent)]
    Nn(#[from] eatnas_nn::Error),
    #[error(transparent)]
    Data(#[from] eatnas_data::Error),
    #[error(transparent)]
    Train(#[from] eatnas_train::Error),
    #[error(transparent)]
    Tensor(#[from] eatnas_tensor::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &std::path::Path, message: impl ToString) -> Error {
        Error::Corrupt {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    /// The search in `dir` was interrupted: `eatnas-cli resume DIR` continues it.
    pub(crate) fn search_interrupted(dir: &std::path::Path, what: String) -> Error {
        Error::Interrupted {
            what,
            next: format!("Continue with `eatnas-cli resume {}`", dir.display()),
        }
    }

    pub(crate) fn refused(path: &std::path::Path, message: impl ToString) -> Error {
        Error::Refused {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}
