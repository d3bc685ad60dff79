//! Where candidate evaluations run. The stage runner hands an [`Executor`] job folders (see
//! [`crate::job`]) and collects what ended, asynchronously; it never knows whether a job is a
//! thread here ([`local::LocalExecutor`]) or a Slurm job ([`slurm::SlurmExecutor`]).
//!
//! A job is named by a ticket the executor gives at submission. The runner saves the ticket
//! before it goes on, so that a coordinator killed at any moment re-attaches to its jobs.

pub mod local;
pub mod slurm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eatnas_tensor::Device;
use serde::{Deserialize, Serialize};

use crate::job::{JobResult, JobRunner};
use crate::Result;

pub use slurm::SlurmConfig;

/// A job folder to run, as the runner submits it.
#[derive(Clone, Debug)]
pub struct JobRef {
    pub dir: PathBuf,
    /// Unique to this search, stage and candidate (Slurm's job name).
    pub name: String,
    pub candidate: usize,
    /// Which of the `workers` slots it takes (a local worker trains on its slot's device).
    pub slot: usize,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Ended {
    Completed(JobResult),
    /// No usable result: why, with what the executor knows (state, node, log file).
    Failed(String),
    /// The job could not write its files: the disk is full. Why.
    DiskFull(String),
}

pub trait Executor {
    /// `local` or `slurm`: saved with every ticket.
    fn name(&self) -> &'static str;
    /// Starts `job`; returns its ticket once the job is really submitted.
    fn submit(&mut self, job: &JobRef) -> Result<String>;
    /// Takes over a job that an earlier coordinator submitted under `ticket`. `false`: the job
    /// cannot be running any more (it died with that coordinator) and must be submitted again.
    fn reattach(&mut self, ticket: &str, job: &JobRef) -> Result<bool>;
    /// The ticket of a job an earlier coordinator submitted but was killed before it saved the
    /// ticket, if one is still queued or running.
    fn find(&mut self, job: &JobRef) -> Result<Option<String>>;
    /// Waits up to `timeout` for jobs to end; returns those that did, by ticket.
    fn wait(&mut self, timeout: Duration) -> Result<Vec<(String, Ended)>>;
    /// Cancels every job in flight (Ctrl-C without `--detach`).
    fn cancel_all(&mut self) -> Result<()>;
    /// A line on what the jobs in flight are doing (for the progress display), if anything.
    fn status_line(&self) -> Option<String> {
        None
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Worker threads of the coordinator's process, one device each.
    #[default]
    Local,
    /// One Slurm job per evaluation.
    Slurm,
}

impl std::str::FromStr for ExecutorKind {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "local" => Ok(ExecutorKind::Local),
            "slurm" => Ok(ExecutorKind::Slurm),
            other => Err(format!(
                "unknown executor `{other}`; expected local or slurm"
            )),
        }
    }
}

impl ExecutorKind {
    /// Refuses `--detach` where it cannot hold: it leaves the jobs in flight running when the
    /// coordinator stops, and only jobs outside the coordinator's process (Slurm's) outlive it.
    pub fn check_detach(self, detach: bool) -> Result<()> {
        if detach && self == ExecutorKind::Local {
            return Err(crate::Error::invalid(
                "--detach",
                "leaves Slurm jobs running when the coordinator stops, but the local executor's jobs are threads of the coordinator and stop with it (a stopped training checkpoints, and continues when the search is resumed or the measurement run again). Leave out --detach, or run on Slurm (--executor slurm)",
            ));
        }
        Ok(())
    }
}

/// `[executor]` of the configuration: where evaluations run. Not part of the search's identity:
/// a search started on one executor may be resumed on another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    pub kind: ExecutorKind,
    /// Attempts after the first for a job that ended without a result (a failed, cancelled,
    /// timed-out or lost job, a training error); then the candidate is recorded as failed.
    pub max_retries: usize,
    /// Minutes of training between two checkpoints of a job into its folder, which a job killed
    /// mid-training continues from when it runs again (a search's short jobs write none).
    pub checkpoint_minutes: f64,
    pub slurm: SlurmConfig,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            kind: ExecutorKind::Local,
            max_retries: 2,
            checkpoint_minutes: crate::job::DEFAULT_CHECKPOINT_MINUTES,
            slurm: SlurmConfig::default(),
        }
    }
}

impl ExecutorConfig {
    pub fn validate(&self) -> Result<()> {
        crate::job::checkpoint_interval(self.checkpoint_minutes)
            .map_err(|message| crate::Error::invalid("executor.checkpoint_minutes", message))?;
        self.slurm.validate()
    }

    /// How often a job's training checkpoints ([`Self::checkpoint_minutes`]; validated).
    pub fn checkpoint_interval(&self) -> std::time::Duration {
        crate::job::checkpoint_interval(self.checkpoint_minutes)
            .expect("a validated configuration's checkpoint_minutes")
    }
}

/// The executor `config` names: `workers` local threads that run jobs with `runner` on
/// `devices`, or Slurm jobs whose logs and scripts go under `dir`.
pub fn make(
    config: &ExecutorConfig,
    workers: usize,
    devices: &[Device],
    runner: Arc<dyn JobRunner>,
    dir: &Path,
) -> Result<Box<dyn Executor>> {
    Ok(match config.kind {
        ExecutorKind::Local => Box::new(local::LocalExecutor::new(runner, workers, devices)),
        ExecutorKind::Slurm => Box::new(slurm::SlurmExecutor::new(
            &config.slurm,
            config.checkpoint_minutes,
            dir,
        )?),
    })
}
