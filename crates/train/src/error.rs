use std::path::PathBuf;

/// Errors of training, evaluation and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nn(#[from] eatnas_nn::Error),
    #[error(transparent)]
    Data(#[from] eatnas_data::Error),
    #[error(transparent)]
    Tensor(#[from] eatnas_tensor::Error),

    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    #[error("cannot write {path}: {source} (the previous file, if any, is unchanged)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The loss stopped being a number.
    #[error("training diverged at epoch {epoch}, step {step}: the loss is {loss}; {checkpoint}")]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f32,
        checkpoint: String,
    },

    /// Asked to stop (a signal), after writing a checkpoint where the run has an output folder.
    #[error("training stopped by a signal after {steps} steps; {checkpoint}")]
    Stopped { steps: usize, checkpoint: String },

    #[error("{0}")]
    Config(String),

    /// A latency table that cannot be built, read or used here.
    #[error("latency: {0}")]
    Latency(String),

    /// A network that cannot be written in an export format.
    #[error("export: {0}")]
    Export(String),
}

pub type Result<T> = std::result::Result<T, Error>;
