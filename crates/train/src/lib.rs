//! eatnas-train: training and evaluation of eatnas networks. SGD with Nesterov momentum, a cosine
//! schedule with warm-up, label smoothing, validation and test accuracy, atomic checkpoints that
//! a killed run resumes from bit for bit, and export to a standalone PyTorch module.

pub mod checkpoint;
mod config;
mod error;
mod evaluate;
pub mod export;
pub mod fs;
pub mod latency;
mod optimizer;
mod schedule;
mod trainer;

pub use checkpoint::{load_model, save_model, ModelInfo};
pub use config::TrainConfig;
pub use error::{Error, Result};
pub use evaluate::{evaluate, top_k_hits, Evaluation};
pub use optimizer::{decays, Sgd};
pub use schedule::CosineSchedule;
pub use trainer::{
    train_step, EpochRecord, PreparedData, SavedTraining, StepError, Summary, Trainer,
};
