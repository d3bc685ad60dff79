//! One candidate evaluation as a self-contained job folder, the unit every executor runs.
//!
//! The coordinator writes `job.json` (a [`Job`]: the architecture, the task and its data, the
//! proxy training, the seed, the parent's weights file). Whoever runs it (a local worker thread,
//! or `eatnas-cli evaluate DIR` in a Slurm job) calls [`run_folder`], which trains and writes, each
//! atomically, the trained weights when asked, then `result.json` (a [`JobResult`]); a failure
//! writes `error.json` (a [`JobFailure`]) instead. A folder whose `result.json` reads back is
//! done: it is collected, never run again.
//!
//! A long training checkpoints into the folder's `training/` (every
//! [`DEFAULT_CHECKPOINT_MINUTES`] of training by default, so that a search's short jobs write none): a job
//! killed mid-training (a stopped coordinator, a preempted or requeued Slurm job, a worker past
//! its time limit) continues from its last checkpoint when it runs again, to the weights it
//! would have reached uninterrupted. `training/` is removed once the job has trained.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eatnas_data::DataSpec;
use eatnas_nn::{inherit, Arch, Counts, Inheritance, Network};
use eatnas_tensor::{Device, Tensor};
use eatnas_train::checkpoint::STATE_FILE;
use eatnas_train::fs::write_atomic;
use eatnas_train::{PreparedData, TrainConfig, Trainer};
use serde::{Deserialize, Serialize};

use crate::evolution::{Candidate, Outcome};
use crate::task::TaskConfig;
use crate::{Error, Result};

pub const JOB_FILE: &str = "job.json";
pub const RESULT_FILE: &str = "result.json";
pub const ERROR_FILE: &str = "error.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// Where a job's training checkpoints while it trains (see the module's documentation).
pub const TRAINING_DIR: &str = "training";
/// What the network took from its parent, kept beside the checkpoints: a continued training
/// reports it without reading the parent's weights again (they may be pruned by then).
const INHERITED_FILE: &str = "inherited.json";
/// How much training a killed job can lose, at most, by default (`[executor]
/// checkpoint_minutes`, `eatnas-cli evaluate --checkpoint-minutes`).
pub const DEFAULT_CHECKPOINT_MINUTES: f64 = 10.0;

/// The interval between a job's checkpoints, from minutes of training (0: every step); a
/// negative or non-finite count is refused with what was expected.
pub fn checkpoint_interval(minutes: f64) -> std::result::Result<Duration, String> {
    if !(minutes.is_finite() && minutes >= 0.0) {
        return Err(format!("expected minutes >= 0, got {minutes}"));
    }
    Ok(Duration::from_secs_f64(60.0 * minutes))
}

/// Trained weights by parameter name.
pub type Weights = BTreeMap<String, Tensor>;

/// Set by whoever runs a job to have its training stop (a signal to the worker, a coordinator
/// cancelling its local jobs): the training checkpoints after its current step and the job fails
/// with [`eatnas_train::Error::Stopped`]; run again, it continues from that checkpoint.
pub type StopFlag = Arc<AtomicBool>;

/// Everything a worker needs to evaluate one candidate, with no access to the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The eatnas version of the coordinator; a worker of another version refuses the job.
    pub version: String,
    /// The search folder's name, and the stage, for the worker's messages and Slurm's job name.
    pub search: String,
    pub stage: String,
    pub candidate: Candidate,
    pub task: TaskConfig,
    /// Seeds the network's weights and the data order; and the images (the data fraction and
    /// the validation split) unless `data_seed` is set.
    pub seed: u64,
    /// Seeds the images when they must not move with `seed` (the repeats of one fidelity
    /// reference); `None`: `seed`. Set through [`Job::with_data_seed`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_seed: Option<u64>,
    /// Trained weights the network starts from (elastic inheritance, [`eatnas_nn::elastic`]);
    /// it then trains `task.inherited_epochs`.
    pub parent: Option<ParentWeights>,
    /// Write the trained weights to `weights.safetensors` (children may inherit them).
    pub save_weights: bool,
}

/// Trained weights a job's network starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentWeights {
    /// A `weights.safetensors` written by the parent's job.
    pub file: PathBuf,
    /// The architecture those weights belong to (checked against the file's own record).
    pub arch: Arch,
    /// The parent trained on another task (the transfer from the small task): its batch-norm
    /// statistics are re-estimated even when every tensor fits.
    pub other_task: bool,
}

impl ParentWeights {
    /// The basic architecture's weights, trained on the small task, as the transferred
    /// population inherits them.
    pub fn transferred(file: PathBuf, arch: &Arch) -> ParentWeights {
        ParentWeights {
            file,
            arch: arch.clone(),
            other_task: true,
        }
    }
}

/// What a job's network took from its parent's weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inherited {
    pub from: PathBuf,
    /// How the tensors were filled; `None`: the weights could not be used (`note` says why) and
    /// the network trained from its own initialisation.
    pub mapping: Option<Inheritance>,
    /// Training batches the batch-norm statistics were re-estimated on (0: kept as inherited).
    pub recalibrated_batches: usize,
    pub note: Option<String>,
}

/// The metadata key of a weights file that holds its architecture (JSON).
const ARCH_KEY: &str = "eatnas_arch";

/// Where and when a job ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub host: String,
    pub device: String,
    /// `SLURM_JOB_ID` when it ran in a Slurm job.
    pub slurm_job_id: Option<String>,
    /// Unix seconds.
    pub started_at: f64,
    pub finished_at: f64,
}

/// `result.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub candidate: usize,
    pub genome: String,
    pub outcome: Outcome,
    pub ran: Placement,
}

/// `error.json`: why a job produced no result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobFailure {
    pub reason: String,
    pub ran: Placement,
    /// The job could not write its files because the disk (or quota) is full: not the
    /// candidate's fault, so the search stops instead of retrying or recording it as failed.
    #[serde(default)]
    pub disk_full: bool,
}

/// Whether `error`, or an error it was caused by, is a full disk or an exhausted quota.
pub fn is_disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// Trains what a job asks for, in this process.
pub trait JobRunner: Send + Sync {
    /// Trains `job`'s candidate on `device`; returns its outcome, and its trained weights when
    /// `job.save_weights`. A diverging loss is an outcome (with its error), not an `Err`. `dir`
    /// is the job's folder, where the training may keep what it needs to continue after a kill;
    /// once `stop` is set the training checkpoints and stops.
    fn run(
        &self,
        job: &Job,
        dir: &Path,
        device: Device,
        stop: &StopFlag,
    ) -> Result<(Outcome, Option<Weights>)>;
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

impl Job {
    /// Writes `dir/job.json` atomically, creating `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let text = serde_json::to_string_pretty(self).expect("a job serialises");
        Ok(write_atomic(&dir.join(JOB_FILE), text.as_bytes())?)
    }

    /// The candidate's architecture on the job's task.
    pub fn arch(&self) -> Result<Arch> {
        self.candidate
            .genome
            .to_arch(&self.task.macro_config, "candidate")
    }

    /// The job with its images drawn by `data_seed`, whatever its `seed` (stored only where they
    /// differ, so a job whose two seeds agree reads and compares as it always did).
    pub fn with_data_seed(mut self, data_seed: u64) -> Job {
        self.data_seed = (data_seed != self.seed).then_some(data_seed);
        self
    }

    /// The seed that draws the job's images.
    pub fn data_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }

    /// Whether `other` trains the same (everything but the names for messages).
    pub fn same_training(&self, other: &Job) -> bool {
        Job {
            search: other.search.clone(),
            ..self.clone()
        } == *other
    }

    pub fn read(dir: &Path) -> Result<Job> {
        let path = dir.join(JOB_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let job: Job = serde_json::from_str(&text)
            .map_err(|e| Error::corrupt(&path, format!("not an eatnas job ({e})")))?;
        if job.version != crate::VERSION {
            return Err(Error::refused(
                &path,
                format!(
                    "written by eatnas {}; this worker is {}: run the coordinator and the workers from one build",
                    job.version,
                    crate::VERSION
                ),
            ));
        }
        Ok(job)
    }
}

/// The result in `dir`, `None` when there is none yet; a `result.json` that does not parse (or
/// belongs to another candidate) is an error that names it.
pub fn read_result(dir: &Path, candidate: usize) -> Result<Option<JobResult>> {
    let path = dir.join(RESULT_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let result: JobResult = serde_json::from_str(&text)
        .map_err(|e| Error::corrupt(&path, format!("malformed result ({e})")))?;
    if result.candidate != candidate {
        return Err(Error::corrupt(
            &path,
            format!(
                "the result of candidate {}; expected candidate {candidate}",
                result.candidate
            ),
        ));
    }
    Ok(Some(result))
}

/// The failure in `dir`, if its worker wrote one.
pub fn read_failure(dir: &Path) -> Option<JobFailure> {
    let text = std::fs::read_to_string(dir.join(ERROR_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Clears what an earlier attempt left (its failure, a malformed result) before a retry.
pub fn clear_attempt(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(ERROR_FILE));
    let result = dir.join(RESULT_FILE);
    if result.exists() {
        let _ = std::fs::rename(&result, dir.join(format!("{RESULT_FILE}.rejected")));
    }
}

fn placement(device: &str, started_at: f64) -> Placement {
    Placement {
        host: host_name(),
        device: device.into(),
        slurm_job_id: std::env::var("SLURM_JOB_ID").ok(),
        started_at,
        finished_at: unix_now(),
    }
}

/// Writes `error.json` in `dir` (best effort: a folder that cannot be written to is reported by
/// the worker's exit status) and returns what it wrote.
pub fn record_failure(dir: &Path, reason: String, device: &str, started_at: f64) -> JobFailure {
    let failure = JobFailure {
        reason,
        ran: placement(device, started_at),
        disk_full: false,
    };
    let text = serde_json::to_string_pretty(&failure).expect("a failure serialises");
    let _ = write_atomic(&dir.join(ERROR_FILE), text.as_bytes());
    failure
}

/// Runs the job in `dir` with `runner` on `device` and writes its weights (when asked), then
/// `result.json`; on failure writes `error.json`. Returns what it wrote.
pub fn run_folder(
    dir: &Path,
    runner: &dyn JobRunner,
    device: Device,
    stop: &StopFlag,
) -> std::result::Result<JobResult, JobFailure> {
    let started_at = unix_now();
    let device_name = device.to_string();
    let _ = std::fs::remove_file(dir.join(ERROR_FILE));
    let attempt = (|| -> Result<JobResult> {
        let job = Job::read(dir)?;
        let (outcome, weights) = runner.run(&job, dir, device, stop)?;
        if let (true, Some(weights)) = (job.save_weights, weights) {
            let arch = job.arch()?;
            let metadata =
                std::collections::HashMap::from([(ARCH_KEY.into(), arch.to_json_pretty())]);
            let bytes = eatnas_train::checkpoint::encode(&weights, metadata)?;
            write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
        }
        let result = JobResult {
            candidate: job.candidate.id,
            genome: job.candidate.genome.key(),
            outcome,
            ran: placement(&device_name, started_at),
        };
        let text = serde_json::to_string_pretty(&result).expect("a result serialises");
        write_atomic(&dir.join(RESULT_FILE), text.as_bytes())?;
        Ok(result)
    })();
    attempt.map_err(|e| {
        let failure = JobFailure {
            reason: e.to_string(),
            ran: placement(&device_name, started_at),
            disk_full: is_disk_full(&e),
        };
        let text = serde_json::to_string_pretty(&failure).expect("a failure serialises");
        // Best effort: a folder that cannot be written to is reported by the exit status.
        let _ = write_atomic(&dir.join(ERROR_FILE), text.as_bytes());
        failure
    })
}

/// The real runner: trains the candidate on its task's proxy and reports validation top-1. Each
/// task's data is opened (read, resized, split) once per process and shared by every job.
pub struct ProxyTraining {
    /// By task data key: opened once, by the first job that needs it (the others wait).
    opened: Mutex<BTreeMap<String, Arc<OpenedData>>>,
    /// How often a job's training checkpoints into its folder's `training/`.
    checkpoint_interval: Duration,
    /// Jobs this process trains at once: each job's loader reads and augments images on its
    /// share of the cores.
    jobs_at_once: usize,
}

impl Default for ProxyTraining {
    fn default() -> Self {
        ProxyTraining {
            opened: Mutex::default(),
            checkpoint_interval: checkpoint_interval(DEFAULT_CHECKPOINT_MINUTES)
                .expect("the default is valid"),
            jobs_at_once: 1,
        }
    }
}

/// The cores each of `jobs` trainings that run at once in this process may use, at least one:
/// the process's cores ([`process_cores`]) shared evenly. A local worker's threads and a job's
/// loader threads are each this many.
pub fn cores_per_job(jobs: usize) -> usize {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let env = |name| std::env::var(name).ok();
    let cores = process_cores(
        available,
        env("RAYON_NUM_THREADS").as_deref(),
        env("SLURM_CPUS_PER_TASK").as_deref(),
    );
    (cores / jobs.max(1)).max(1)
}

/// The cores this process may use: `RAYON_NUM_THREADS` where it is set (the user's word, as for
/// any rayon program; a Slurm job script sets it to the allocation), else those it may run on
/// (`available`: its affinity, which Slurm sets to the job's CPUs under its affinity or cgroup
/// plugins), no more than a Slurm job's `SLURM_CPUS_PER_TASK` where that is set, for clusters
/// that bind nothing (a job would otherwise take the whole node it shares).
fn process_cores(
    available: usize,
    rayon_num_threads: Option<&str>,
    slurm_cpus_per_task: Option<&str>,
) -> usize {
    let positive = |value: Option<&str>| {
        value
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
    };
    if let Some(threads) = positive(rayon_num_threads) {
        return threads;
    }
    match positive(slurm_cpus_per_task) {
        Some(cpus) => cpus.min(available),
        None => available,
    }
    .max(1)
}

/// A task's data, or why it could not be opened.
type OpenedData = OnceLock<std::result::Result<PreparedData, String>>;

impl ProxyTraining {
    pub fn new() -> ProxyTraining {
        ProxyTraining::default()
    }

    /// Checkpoints each job's training every `interval` of training instead of every
    /// [`DEFAULT_CHECKPOINT_MINUTES`].
    pub fn checkpoint_by_time(mut self, interval: Duration) -> ProxyTraining {
        self.checkpoint_interval = interval;
        self
    }

    /// `jobs` train at once in this process (the local executor's workers; 1, the default, for
    /// a Slurm job's worker, which has its allocation to itself).
    pub fn jobs_at_once(mut self, jobs: usize) -> ProxyTraining {
        self.jobs_at_once = jobs.max(1);
        self
    }

    /// The loader threads of each job: its share of this process's cores ([`cores_per_job`]). A
    /// job's recipe keeps 1, which is not part of what it trains (`TrainConfig::same_training`);
    /// from JPEG folders each thread reads some 400 images a second at 224
    /// (`docs/results/speed-cpu.md`), so a GPU's job would starve on one.
    fn loader_workers(&self) -> usize {
        cores_per_job(self.jobs_at_once)
    }

    /// The task's prepared data, its images drawn by `data_seed` (opened on first use).
    pub fn data(&self, task: &TaskConfig, data_seed: u64) -> Result<PreparedData> {
        let config = task.train_config(data_seed, 1);
        let key = serde_json::to_string(&(
            &task.data,
            config.resolution,
            config.data_fraction,
            config.val_fraction,
            data_seed,
        ))
        .expect("a key serialises");
        let cell = self
            .opened
            .lock()
            .expect("data cache")
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_init(|| {
            let spec: DataSpec = task
                .data
                .parse()
                .map_err(|e: eatnas_data::Error| e.to_string())?;
            PreparedData::open(&spec, &config).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|message| Error::Invalid {
            key: "task data".into(),
            message: format!("opening {}: {message}", task.data),
        })
    }
}

/// MAdds and parameters of a job's candidate on its data, at the task's resolution (not a
/// lower proxy resolution it trains at).
fn count(job: &Job, data: &PreparedData) -> Result<Counts> {
    let shape = data.train.shape();
    Ok(Counts::new(
        &job.arch()?,
        shape.channels,
        job.task.resolution.unwrap_or(shape.size),
        data.train.classes(),
    )?)
}

/// The recipe a job's network trains with: the task's proxy from the job's seeds, for the
/// task's `inherited_epochs` when it starts from its parent's weights (`inherits`).
fn job_train_config(job: &Job, inherits: bool) -> TrainConfig {
    let mut config = job.task.train_config(job.seed, 1);
    config.data_seed = job.data_seed;
    if inherits {
        config.epochs = job.task.inherited_epochs;
    }
    config
}

/// The network a job trains, ready on `device`: its own initialisation, or its parent's weights
/// where they correspond (batch-norm statistics re-estimated when reshaped or from another task),
/// with what it inherited. With `checkpoints`, the training checkpoints into that folder (which
/// must hold no training state).
pub fn starting_trainer(
    job: &Job,
    data: PreparedData,
    device: Device,
    checkpoints: Option<&Path>,
) -> Result<(Trainer, Option<Inherited>)> {
    let arch = job.arch()?;
    let mut config = job_train_config(job, false);
    let shape = data.train.shape();
    let mut net = Network::with_init(
        &arch,
        shape.channels,
        data.train.classes(),
        &config.init(),
        config.seed,
    )?;
    let mut inherited = None;
    let mut recalibrate = false;
    if let Some(parent) = &job.parent {
        inherited = Some(match read_parent(parent) {
            Ok(weights) => {
                let (values, mapping) = inherit(&parent.arch, &weights, &net.state())?;
                net.load(&values)?;
                config = job_train_config(job, true);
                recalibrate = !mapping.exact() || parent.other_task;
                Inherited {
                    from: parent.file.clone(),
                    mapping: Some(mapping),
                    recalibrated_batches: 0,
                    note: None,
                }
            }
            // Never a crash: the child trains from its own initialisation, and says so.
            Err(reason) => Inherited {
                from: parent.file.clone(),
                mapping: None,
                recalibrated_batches: 0,
                note: Some(format!("trained from scratch: {reason}")),
            },
        });
    }
    let mut trainer = Trainer::with_network(config, net, data, checkpoints.map(Path::to_path_buf))?;
    trainer.to_device(device)?;
    if let (true, Some(inherited)) = (recalibrate, inherited.as_mut()) {
        let batches = job.task.bn_recalibration_batches;
        trainer.recalibrate_batch_norm(batches)?;
        inherited.recalibrated_batches = batches;
    }
    if let (Some(dir), Some(inherited)) = (checkpoints, &inherited) {
        let text = serde_json::to_string_pretty(inherited).expect("an inheritance serialises");
        write_atomic(&dir.join(INHERITED_FILE), text.as_bytes())?;
    }
    Ok((trainer, inherited))
}

/// The training a killed run of `job` left in `checkpoints`, continued on `device` from its last
/// checkpoint, with what its network inherited; `None` when there is none. A state that cannot
/// be read or is of another training is named on stderr and removed (the job trains afresh).
fn continued_trainer(
    job: &Job,
    data: &PreparedData,
    device: Device,
    checkpoints: &Path,
) -> Option<(Trainer, Option<Inherited>)> {
    if !checkpoints.join(STATE_FILE).is_file() {
        return None;
    }
    let attempt = || -> Result<(Trainer, Option<Inherited>)> {
        let inherited: Option<Inherited> = match std::fs::read(checkpoints.join(INHERITED_FILE)) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::invalid(INHERITED_FILE, format!("unreadable ({e})")))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::invalid(INHERITED_FILE, format!("unreadable ({e})"))),
        };
        let inherits = inherited.as_ref().is_some_and(|i| i.mapping.is_some());
        let mut trainer = Trainer::resume_with_data(checkpoints, data.clone())?;
        let arch = job.arch()?;
        let saved_arch = Arch {
            name: arch.name.clone(),
            ..trainer.network().arch().clone()
        };
        if !trainer
            .config()
            .same_training(&job_train_config(job, inherits))
            || saved_arch != arch
        {
            return Err(Error::invalid(
                "training state",
                "it is of another training than this job's",
            ));
        }
        trainer.to_device(device)?;
        Ok((trainer, inherited))
    };
    match attempt() {
        Ok(continued) => {
            eprintln!(
                "{}: continuing the training from its checkpoint after {} steps ({:.1} s trained before)",
                checkpoints.display(),
                continued.0.steps_done(),
                continued.0.seconds_before_resume()
            );
            Some(continued)
        }
        Err(e) => {
            eprintln!(
                "warning: {}: the saved training cannot be continued ({e}); training the job from the start",
                checkpoints.display()
            );
            let _ = std::fs::remove_dir_all(checkpoints);
            None
        }
    }
}

impl JobRunner for ProxyTraining {
    fn run(
        &self,
        job: &Job,
        dir: &Path,
        device: Device,
        stop: &StopFlag,
    ) -> Result<(Outcome, Option<Weights>)> {
        let started = Instant::now();
        let data = self.data(&job.task, job.data_seed())?;
        let counts = count(job, &data)?;
        let validation_chance = data.val.as_deref().map(eatnas_data::ChanceLevel::of);
        let checkpoints = dir.join(TRAINING_DIR);
        let (mut trainer, inherited) = match continued_trainer(job, &data, device, &checkpoints) {
            Some(continued) => continued,
            None => {
                // A folder a training was killed in before its first checkpoint.
                let _ = std::fs::remove_dir_all(&checkpoints);
                starting_trainer(job, data, device, Some(&checkpoints))?
            }
        };
        trainer.checkpoint_by_time(self.checkpoint_interval);
        trainer.set_workers(self.loader_workers());
        trainer.stop_on(stop.clone());
        let seconds_before = trainer.seconds_before_resume();
        let outcome = |accuracy, error: Option<String>| Outcome {
            accuracy,
            madds: counts.madds,
            params: counts.params,
            // Across the runs of a job that was killed and continued.
            seconds: seconds_before + started.elapsed().as_secs_f64(),
            // Before `error` moves in: a failed training was measured on nothing.
            validation_chance: validation_chance.filter(|_| error.is_none()),
            error,
            inherited: inherited.clone(),
            // Predicted by the coordinator, which holds the stage's latency table.
            latency_ms: None,
        };
        let result = match trainer.train(&mut |_| {}) {
            Ok(()) => trainer.evaluate_val().map_err(Into::into).and_then(|val| {
                let val = val.expect("tasks always hold out a validation split");
                let weights = job
                    .save_weights
                    .then(|| host_copy(trainer.network().state()))
                    .transpose()?;
                // Trained: nothing left to continue. (A diverged training keeps a checkpoint
                // it wrote, which its error names as the last good one.)
                let _ = std::fs::remove_dir_all(&checkpoints);
                Ok((outcome(val.top1, None), weights))
            }),
            // A network whose loss diverges is a bad candidate, not a broken search.
            Err(e @ eatnas_train::Error::Diverged { .. }) => {
                if !checkpoints.join(STATE_FILE).is_file() {
                    let _ = std::fs::remove_dir_all(&checkpoints);
                }
                Ok((outcome(0.0, Some(e.to_string())), None))
            }
            Err(e) => Err(e.into()),
        };
        // The next candidate has other activation sizes: hand this one's pooled buffers back
        // (workers training at the same time pay one step of fresh allocations for it), on
        // every path out.
        eatnas_tensor::release_workspace();
        result
    }
}

/// The weights of `parent`, or why they cannot be used: an unreadable file, or one that holds
/// another architecture's weights.
pub(crate) fn read_parent(parent: &ParentWeights) -> std::result::Result<Weights, String> {
    let (weights, metadata) = eatnas_train::checkpoint::decode(&parent.file)
        .map_err(|e| format!("the parent's weights cannot be read ({e})"))?;
    let recorded = metadata
        .get(ARCH_KEY)
        .ok_or("the parent's weights file does not record its architecture")?;
    let recorded = Arch::from_json(recorded, "parent weights")
        .map_err(|e| format!("the parent's weights file records a malformed architecture ({e})"))?;
    let same = Arch {
        name: parent.arch.name.clone(),
        ..recorded
    } == parent.arch;
    if !same {
        return Err(format!(
            "{} holds the weights of another architecture than the parent's",
            parent.file.display()
        ));
    }
    Ok(weights)
}

fn host_copy(weights: Weights) -> Result<Weights> {
    weights
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_device(Device::Cpu)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::process_cores;

    #[test]
    fn a_slurm_jobs_cpus_bound_the_cores_it_takes() {
        assert_eq!(
            process_cores(64, None, Some("8")),
            8,
            "an unbound job on a 64-core node"
        );
        assert_eq!(process_cores(8, None, Some("8")), 8, "a bound job");
        assert_eq!(
            process_cores(4, None, Some("8")),
            4,
            "the affinity is narrower"
        );
        assert_eq!(process_cores(16, None, None), 16, "outside Slurm");
        assert_eq!(
            process_cores(16, None, Some("x")),
            16,
            "an unreadable value is ignored"
        );
        assert_eq!(process_cores(16, None, Some("0")), 16);
        assert_eq!(process_cores(0, None, None), 1);
    }

    #[test]
    fn rayon_num_threads_is_the_processs_cores_where_set() {
        assert_eq!(
            process_cores(16, Some("3"), None),
            3,
            "fewer than the cores"
        );
        assert_eq!(
            process_cores(2, Some("4"), None),
            4,
            "more than the cores, as rayon itself would take"
        );
        assert_eq!(
            process_cores(64, Some("6"), Some("8")),
            6,
            "the job script's value over the allocation"
        );
        assert_eq!(process_cores(16, Some("0"), None), 16, "0: rayon's default");
        assert_eq!(process_cores(16, Some("many"), Some("4")), 4);
    }
}
