//! eatnas-nas: the EAT-NAS search. The search space and its mutation, regularized evolution
//! (steady-state, asynchronous, N workers), elastic architecture transfer, fitness and the
//! population-quality curve, search state and history on disk, and the pipeline that ties the
//! stages together. Each candidate evaluation is a self-contained job folder ([`job`]) that an
//! [`executor`] runs: worker threads here, or Slurm jobs on a cluster.

pub mod batch;
pub mod config;
mod error;
pub mod evolution;
pub mod executor;
pub mod fidelity;
pub mod fitness;
pub mod job;
pub mod latency;
pub mod lock;
pub mod pareto;
pub mod pipeline;
pub mod plots;
pub mod report;
pub mod runner;
pub mod space;
pub mod stats;
pub mod summary;
pub mod task;

pub use config::{FinalConfig, SearchConfig, TransferConfig};
pub use error::{Error, Result};
pub use evolution::{
    Candidate, EvolutionConfig, EvolutionState, Initializer, Member, MultiFidelity, Origin,
    Outcome, Ran, Record, RungResult, Selection, Unpromoted,
};
pub use executor::{ExecutorConfig, ExecutorKind, SlurmConfig};
pub use fitness::{FitnessConfig, LatencyObjective, LatencyPass, Quality};
pub use job::{Job, JobResult, JobRunner, ProxyTraining, Weights};
pub use pipeline::{resume, start, Command, Event, Session};
pub use space::{Gene, Genome, MacroConfig, SpaceConfig};
pub use summary::Summary;
pub use task::TaskConfig;

/// Written into every saved state; a state from another version is refused.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
