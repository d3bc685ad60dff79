//! eatnas-nas: the EAT-NAS search. The search space and its mutation, regularized evolution
//! (steady-state, asynchronous, N workers), elastic architecture transfer, fitness and the
//! population-quality curve, search state and history on disk, and the pipeline that ties the
//! stages together. Candidates are evaluated through the [`Evaluator`] trait.

pub mod config;
mod error;
pub mod evaluator;
pub mod evolution;
pub mod fitness;
pub mod pipeline;
pub mod plots;
pub mod runner;
pub mod space;

pub use config::{FinalConfig, SearchConfig, TransferConfig};
pub use error::{Error, Result};
pub use evaluator::{
    CandidateTrainer, Evaluator, ProxyEvaluator, StageEvaluator, TaskConfig, Weights,
};
pub use evolution::{
    Candidate, EvolutionConfig, EvolutionState, Initializer, Member, Origin, Outcome, Record,
};
pub use fitness::{FitnessConfig, Quality};
pub use pipeline::{resume, start, Command, Event};
pub use space::{Gene, Genome, MacroConfig, SpaceConfig};

/// Written into every saved state; a state from another version is refused.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
