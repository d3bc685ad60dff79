//! Runs one evolution stage on an executor, steady-state and asynchronous: whenever a worker slot
//! is free it gets a new child of the current population; nobody waits for a generation.
//!
//! Write-ahead: a proposed candidate, its job folder and its slot are saved before the job is
//! submitted, and its ticket is saved before the runner goes on. After every evaluation the
//! history line is appended and the whole state saved atomically. So a coordinator killed with
//! kill -9 at any moment resumes: it collects the results written while it was down, re-attaches
//! to its jobs still queued or running (or finds, by name, the one it submitted just before it
//! died), and submits nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eatnas_train::fs::{chaos_point, write_atomic};
use serde::{Deserialize, Serialize};

use crate::evolution::{Candidate, EvolutionState, Origin, Ran, Record, RungResult};
use crate::executor::{Ended, Executor, JobRef};
use crate::job::{
    clear_attempt, read_failure, read_result, unix_now, Job, JobResult, ParentWeights, WEIGHTS_FILE,
};
use crate::task::TaskConfig;
use crate::{Error, Result};

pub const STATE_FILE: &str = "state.json";
pub const HISTORY_FILE: &str = "history.jsonl";
pub const JOBS_DIR: &str = "jobs";

/// A job status unchanged this long is shown, and shown again this often.
const STATUS_AFTER: Duration = Duration::from_secs(20);
const STATUS_EVERY: Duration = Duration::from_secs(120);

/// A job in flight, as saved with the state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEntry {
    /// The executor that holds the ticket.
    pub executor: String,
    /// `None` until the executor has accepted the job (or after this coordinator cancelled it).
    pub ticket: Option<String>,
    pub slot: usize,
    /// Failed attempts so far, and why.
    pub failures: Vec<String>,
    pub submitted_at: f64,
}

impl JobEntry {
    /// A job about to be submitted by `executor` into `slot`.
    fn new(executor: &str, slot: usize) -> JobEntry {
        JobEntry {
            executor: executor.into(),
            ticket: None,
            slot,
            failures: Vec::new(),
            submitted_at: unix_now(),
        }
    }
}

/// What `state.json` holds: the evolution, its jobs in flight, and who wrote it.
#[derive(Clone, Serialize, Deserialize)]
pub struct SavedStage {
    /// The eatnas version that wrote it; another version's state is refused.
    pub version: String,
    /// A fingerprint of the configuration; another configuration's state is refused.
    pub config_fingerprint: String,
    pub state: EvolutionState,
    /// By candidate id.
    #[serde(default)]
    pub jobs: BTreeMap<usize, JobEntry>,
}

impl SavedStage {
    pub fn new(state: EvolutionState, fingerprint: &str) -> SavedStage {
        SavedStage {
            version: crate::VERSION.into(),
            config_fingerprint: fingerprint.into(),
            state,
            jobs: BTreeMap::new(),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string(self).expect("state serialises");
        Ok(write_atomic(&dir.join(STATE_FILE), text.as_bytes())?)
    }

    /// The stage saved in `dir`, refusing one from another version or configuration.
    pub fn load(dir: &Path, fingerprint: &str) -> Result<Option<SavedStage>> {
        let path = dir.join(STATE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let saved: SavedStage = serde_json::from_str(&text)
            .map_err(|e| Error::corrupt(&path, format!("unreadable search state: {e}")))?;
        if saved.version != crate::VERSION {
            return Err(Error::refused(
                &path,
                format!(
                    "written by eatnas {}; this is {}: start a new search",
                    saved.version,
                    crate::VERSION
                ),
            ));
        }
        if saved.config_fingerprint != fingerprint {
            return Err(Error::refused(
                &path,
                "written with another configuration than this folder's config.toml; start a new search",
            ));
        }
        Ok(Some(saved))
    }
}

/// What one stage evaluates, and where its files go.
pub struct StageRun<'a> {
    /// The stage's folder (`state.json`, `history.jsonl`, `jobs/`).
    pub dir: &'a Path,
    /// Names the jobs: unique to this search folder.
    pub search: &'a str,
    pub stage: &'a str,
    pub task: &'a TaskConfig,
    pub seed: u64,
    /// Jobs in flight at once.
    pub workers: usize,
    /// Attempts after the first for a job that ended without a result.
    pub max_retries: usize,
    /// Where the initial population's networks (basic and transferred) start from.
    pub transfer_weights: Option<ParentWeights>,
    /// Keep the trained weights of the stage's best member (the basic architecture's, for a
    /// transfer of weights), beside those of possible parents.
    pub keep_best_weights: bool,
    /// Predicts each candidate's latency on the target device, when the stage's fitness has a
    /// latency objective.
    pub latency: Option<&'a crate::latency::StageLatency>,
}

/// Asks the runner to stop (Ctrl-C, SIGTERM): with `detach`, jobs in flight are left running
/// and re-attached by `resume`; without, they are cancelled.
pub struct Control<'a> {
    pub stop: &'a AtomicBool,
    pub detach: bool,
}

/// What a stage reports as it goes.
pub enum Progress<'a> {
    Evaluated(&'a Record),
    Retrying {
        candidate: usize,
        attempt: usize,
        reason: &'a str,
    },
    /// What the jobs in flight are doing, when it changes.
    Waiting(String),
}

/// The lines of a history that parse, and the (1-based) number and error of each that does not.
pub fn parse_history(text: &str) -> (Vec<Record>, Vec<(usize, serde_json::Error)>) {
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<Record>(line) {
            Ok(record) => records.push(record),
            Err(e) => unreadable.push((i + 1, e)),
        }
    }
    (records, unreadable)
}

/// Keeps the first `keep` lines of the history (a kill between the history append and the state
/// save leaves one line too many).
fn truncate_history(path: &Path, keep: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > keep {
        let kept: String = lines[..keep].iter().map(|l| format!("{l}\n")).collect();
        write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

/// The job folder of candidate `id` in the stage folder `stage_dir`.
pub fn job_dir(stage_dir: &Path, id: usize) -> PathBuf {
    stage_dir.join(JOBS_DIR).join(format!("{id:05}"))
}

/// The folder of rung `rung` of candidate `id` (multi-fidelity): its job folder for the first
/// rung, `rung-N` inside it for the next ones.
pub fn rung_dir(stage_dir: &Path, id: usize, rung: usize) -> PathBuf {
    match rung {
        0 => job_dir(stage_dir, id),
        n => job_dir(stage_dir, id).join(format!("rung-{n}")),
    }
}

/// Where the trained weights of candidate `id` are (those of the last rung it trained).
pub fn weights_file(stage_dir: &Path, state: &EvolutionState, id: usize) -> PathBuf {
    let rung = state.rung_of(id).saturating_sub(1);
    rung_dir(stage_dir, id, rung).join(WEIGHTS_FILE)
}

struct Stage<'r, 'a> {
    run: &'r StageRun<'a>,
    saved: &'r mut SavedStage,
    executor: &'r mut dyn Executor,
    history: std::fs::File,
    /// Ticket -> candidate id.
    in_flight: BTreeMap<String, usize>,
    /// Candidates whose trained weights may be on disk (pruning removes what is there).
    weights_kept: BTreeSet<usize>,
    on_progress: &'r mut dyn FnMut(Progress),
}

/// Runs the stage in `saved` to its budget on `executor`.
pub fn run_stage(
    saved: &mut SavedStage,
    executor: &mut dyn Executor,
    run: &StageRun,
    control: &Control,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let dir = run.dir;
    std::fs::create_dir_all(dir.join(JOBS_DIR)).map_err(|e| Error::io(dir, e))?;
    let history_path = dir.join(HISTORY_FILE);
    truncate_history(&history_path, saved.state.evaluated.len())?;
    let history = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&history_path)
        .map_err(|e| Error::io(&history_path, e))?;
    if let Some(mf) = &saved.state.config.multi_fidelity {
        mf.validate(run.stage, run.task.epochs)?;
    }
    saved.save(dir)?;
    if saved.state.done() {
        return Ok(());
    }
    let mut stage = Stage {
        run,
        saved,
        executor,
        history,
        in_flight: BTreeMap::new(),
        weights_kept: BTreeSet::new(),
        on_progress,
    };
    stage.find_kept_weights();
    stage.resume_in_flight()?;
    // What the jobs are doing is shown when it has not changed for a while (a queue that does
    // not move), not at every state change of every job.
    let mut shown: Option<(String, std::time::Instant)> = None;
    let mut status_since: Option<(String, std::time::Instant)> = None;
    loop {
        if control.stop.load(Ordering::SeqCst) {
            return stage.stop(control.detach);
        }
        while stage.in_flight.len() < run.workers.max(1) && stage.saved.state.can_propose() {
            let candidate = stage.saved.state.propose();
            if let Some(outcome) = stage.saved.state.cached(&candidate) {
                // Seen before: no second training.
                let record = stage.saved.state.complete(&candidate, outcome, 0, true);
                stage.persist(record)?;
                continue;
            }
            stage.start(&candidate)?;
        }
        if stage.in_flight.is_empty() {
            return Ok(());
        }
        for (ticket, ended) in stage.executor.wait(Duration::from_millis(500))? {
            if let Some(id) = stage.in_flight.remove(&ticket) {
                stage.ended(id, &ticket, ended)?;
            }
        }
        let now = std::time::Instant::now();
        match stage.executor.status_line() {
            Some(status) => {
                if status_since.as_ref().map(|(s, _)| s) != Some(&status) {
                    status_since = Some((status.clone(), now));
                }
                let steady = status_since
                    .as_ref()
                    .is_some_and(|(_, t)| now - *t >= STATUS_AFTER);
                let due = shown
                    .as_ref()
                    .is_none_or(|(s, t)| *s != status || now - *t >= STATUS_EVERY);
                if steady && due {
                    (stage.on_progress)(Progress::Waiting(status.clone()));
                    shown = Some((status, now));
                }
            }
            None => status_since = None,
        }
    }
}

impl Stage<'_, '_> {
    /// The folder of the rung candidate `id` trains now (its job folder without multi-fidelity).
    fn current_dir(&self, id: usize) -> PathBuf {
        rung_dir(self.run.dir, id, self.saved.state.rung_of(id))
    }

    fn job_ref(&self, id: usize, slot: usize) -> JobRef {
        let rung = match self.saved.state.rung_of(id) {
            0 => String::new(),
            n => format!("-r{n}"),
        };
        JobRef {
            dir: self.current_dir(id),
            name: format!("eatnas-{}-{}-{id}{rung}", self.run.search, self.run.stage),
            candidate: id,
            slot,
        }
    }

    fn free_slot(&self) -> usize {
        let used: BTreeSet<usize> = self.saved.jobs.values().map(|j| j.slot).collect();
        (0..).find(|s| !used.contains(s)).expect("a free slot")
    }

    /// The job spec of `candidate`: a mutation child inherits its parent's weights when the
    /// task says so, and the initial population the basic architecture's when the stage was
    /// given them.
    fn job(&self, candidate: &Candidate) -> Result<Job> {
        let state = &self.saved.state;
        let mut task = self.run.task.clone();
        let rung = state.rung_of(candidate.id);
        let mut more_rungs = false;
        if let Some(mf) = &state.config.multi_fidelity {
            // A rung trains to its epoch count: the first from scratch (or from a parent's
            // weights), the next ones on from the rung before.
            let before = rung.checked_sub(1).map_or(0, |r| mf.rungs[r]);
            task.epochs = mf.rungs[rung];
            task.inherited_epochs = mf.rungs[rung] - before;
            more_rungs = rung + 1 < mf.rungs.len();
        }
        let weights_of = |file: PathBuf, genome: &crate::space::Genome| {
            Ok::<_, Error>(ParentWeights {
                file,
                arch: genome.to_arch(&task.macro_config, "candidate")?,
                other_task: false,
            })
        };
        let parent = match candidate.origin {
            _ if rung > 0 => Some(weights_of(
                rung_dir(self.run.dir, candidate.id, rung - 1).join(WEIGHTS_FILE),
                &candidate.genome,
            )?),
            Origin::Mutation { parent } if task.inherit_weights => state
                .evaluated
                .iter()
                .find(|m| m.id == parent)
                .map(|m| weights_of(weights_file(self.run.dir, state, parent), &m.genome))
                .transpose()?,
            Origin::Basic | Origin::Transfer => self.run.transfer_weights.clone(),
            _ => None,
        };
        let save_weights = task.inherit_weights || self.run.keep_best_weights || more_rungs;
        Ok(Job {
            version: crate::VERSION.into(),
            search: self.run.search.into(),
            stage: self.run.stage.into(),
            candidate: candidate.clone(),
            task,
            seed: self.run.seed,
            data_seed: None,
            parent,
            save_weights,
        })
    }

    /// Writes the job, saves it as in flight, then submits it and saves its ticket.
    fn start(&mut self, candidate: &Candidate) -> Result<()> {
        let slot = self.free_slot();
        let job = self.job_ref(candidate.id, slot);
        self.job(candidate)?.write(&job.dir)?;
        self.saved
            .jobs
            .insert(candidate.id, JobEntry::new(self.executor.name(), slot));
        self.saved.save(self.run.dir)?;
        self.submit(candidate.id)
    }

    fn submit(&mut self, id: usize) -> Result<()> {
        let slot = self.saved.jobs[&id].slot;
        let job = self.job_ref(id, slot);
        let ticket = self.executor.submit(&job)?;
        let entry = self.saved.jobs.get_mut(&id).expect("an entry");
        entry.ticket = Some(ticket.clone());
        entry.executor = self.executor.name().into();
        entry.submitted_at = unix_now();
        self.in_flight.insert(ticket, id);
        self.saved.save(self.run.dir)
    }

    /// Candidates that were in flight when the state was saved: collected if their result is on
    /// disk, re-attached if their job still runs, submitted again otherwise.
    fn resume_in_flight(&mut self) -> Result<()> {
        for candidate in self.saved.state.pending.clone() {
            let id = candidate.id;
            if !self.saved.jobs.contains_key(&id) {
                let slot = self.free_slot();
                self.saved
                    .jobs
                    .insert(id, JobEntry::new(self.executor.name(), slot));
            }
            let entry = self.saved.jobs[&id].clone();
            let job = self.job_ref(id, entry.slot);
            if !job.dir.join(crate::job::JOB_FILE).is_file() {
                self.job(&candidate)?.write(&job.dir)?;
            }
            if let Ok(Some(result)) = read_result(&job.dir, id) {
                let ticket = entry.ticket.clone().unwrap_or_default();
                self.ended(id, &ticket, Ended::Completed(result))?;
                continue;
            }
            let ticket = match entry.ticket {
                Some(t)
                    if entry.executor == self.executor.name()
                        && self.executor.reattach(&t, &job)? =>
                {
                    Some(t)
                }
                _ => match self.executor.find(&job)? {
                    Some(t) => self.executor.reattach(&t, &job)?.then_some(t),
                    None => None,
                },
            };
            match ticket {
                Some(ticket) => {
                    let entry = self.saved.jobs.get_mut(&id).expect("an entry");
                    entry.ticket = Some(ticket.clone());
                    entry.executor = self.executor.name().into();
                    self.in_flight.insert(ticket, id);
                    self.saved.save(self.run.dir)?;
                }
                None => self.submit(id)?,
            }
        }
        Ok(())
    }

    /// The history line of candidate `id`, completed with `result` (its last rung's).
    fn completed(
        &mut self,
        id: usize,
        candidate: &Candidate,
        ticket: &str,
        result: JobResult,
    ) -> Result<Record> {
        let entry = self.saved.jobs.get(&id).cloned().expect("an entry");
        let JobResult {
            mut outcome, ran, ..
        } = result;
        if let Some(latency) = self.run.latency {
            outcome.latency_ms = Some(latency.predict_ms(&candidate.genome)?);
        }
        let mut record = self
            .saved
            .state
            .complete(candidate, outcome, entry.slot, false);
        record.retries = entry.failures.len();
        record.ran = Some(Ran {
            executor: entry.executor.clone(),
            job: ran
                .slurm_job_id
                .clone()
                .unwrap_or_else(|| ticket.to_string()),
            host: ran.host,
            device: ran.device,
            submitted_at: entry.submitted_at,
            started_at: ran.started_at,
            finished_at: ran.finished_at,
            collected_at: unix_now(),
        });
        self.weights_kept.insert(id);
        Ok(record)
    }

    /// With multi-fidelity: the epochs of the rung candidate `id` trains now.
    fn rung_epochs(&self, id: usize) -> Option<usize> {
        let state = &self.saved.state;
        let mf = state.config.multi_fidelity.as_ref()?;
        Some(mf.rungs[state.rung_of(id)])
    }

    fn ended(&mut self, id: usize, ticket: &str, ended: Ended) -> Result<()> {
        let candidate = self
            .saved
            .state
            .pending
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .expect("a job in flight is a pending candidate");
        let entry = self.saved.jobs.get(&id).cloned().expect("an entry");
        let record = match ended {
            Ended::Completed(result) => match self.rung_epochs(id) {
                None => self.completed(id, &candidate, ticket, result)?,
                Some(epochs) => {
                    let rung = RungResult {
                        epochs,
                        accuracy: result.outcome.accuracy,
                        seconds: result.outcome.seconds,
                        diverged: result.outcome.error.is_some(),
                    };
                    if self.saved.state.finish_rung(id, rung) {
                        // Promoted: saved first (a kill now resumes at the next rung), then
                        // the next rung's job is written and submitted.
                        let entry = self.saved.jobs.get_mut(&id).expect("an entry");
                        entry.ticket = None;
                        entry.failures.clear();
                        self.saved.save(self.run.dir)?;
                        self.job(&candidate)?.write(&self.current_dir(id))?;
                        return self.submit(id);
                    }
                    let mut result = result;
                    result.outcome.seconds = self.saved.state.rung_results[&id]
                        .iter()
                        .map(|r| r.seconds)
                        .sum();
                    self.completed(id, &candidate, ticket, result)?
                }
            },
            // Not the candidate's fault: retrying would fail the same way, and recording it as
            // failed would change the search. It stays in flight for resume to run again.
            Ended::DiskFull(reason) => {
                let search = self.run.dir.parent().unwrap_or(self.run.dir);
                return Err(Error::DiskFull {
                    reason,
                    next: format!("continue with `eatnas-cli resume {}`", search.display()),
                });
            }
            Ended::Failed(reason) => {
                let attempt = entry.failures.len() + 1;
                let entry = self.saved.jobs.get_mut(&id).expect("an entry");
                entry.failures.push(reason.clone());
                if attempt <= self.run.max_retries {
                    (self.on_progress)(Progress::Retrying {
                        candidate: id,
                        attempt,
                        reason: &reason,
                    });
                    clear_attempt(&self.current_dir(id));
                    return self.submit(id);
                }
                let reason = format!("no result after {attempt} attempts; last: {reason}",);
                let slot = entry.slot;
                let mut record = self.saved.state.fail(&candidate, reason, slot);
                record.retries = attempt - 1;
                let entry = &self.saved.jobs[&id];
                record.ran = read_failure(&self.current_dir(id)).map(|f| Ran {
                    executor: entry.executor.clone(),
                    job: f.ran.slurm_job_id.unwrap_or_else(|| ticket.to_string()),
                    host: f.ran.host,
                    device: f.ran.device,
                    submitted_at: entry.submitted_at,
                    started_at: f.ran.started_at,
                    finished_at: f.ran.finished_at,
                    collected_at: unix_now(),
                });
                record
            }
        };
        self.saved.jobs.remove(&id);
        self.persist(record)?;
        self.prune_weights();
        Ok(())
    }

    fn persist(&mut self, record: Record) -> Result<()> {
        let line = serde_json::to_string(&record).expect("a record serialises") + "\n";
        let path = self.run.dir.join(HISTORY_FILE);
        // In two parts, with the chaos point between: a kill there leaves a torn last line,
        // which resume must cut off.
        let (first, rest) = line.as_bytes().split_at(line.len() / 2);
        self.history
            .write_all(first)
            .and_then(|_| self.history.flush())
            .and_then(|_| chaos_point(&path))
            .and_then(|_| self.history.write_all(rest))
            .and_then(|_| self.history.flush())
            .map_err(|e| Error::io(&path, e))?;
        self.saved.save(self.run.dir)?;
        (self.on_progress)(Progress::Evaluated(&record));
        Ok(())
    }

    /// Every candidate with a job folder may have weights on disk.
    fn find_kept_weights(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.run.dir.join(JOBS_DIR)) else {
            return;
        };
        for entry in entries.flatten() {
            if let Ok(id) = entry.file_name().to_string_lossy().parse::<usize>() {
                self.weights_kept.insert(id);
            }
        }
    }

    /// Deletes the weights of members that can no longer be a parent (retired from the
    /// population and parent of no candidate in flight) and are not the best kept.
    fn prune_weights(&mut self) {
        let state = &self.saved.state;
        let best = state
            .best()
            .filter(|_| self.run.keep_best_weights)
            .map(|m| m.id);
        let parents = self.run.task.inherit_weights;
        let live: BTreeSet<usize> = state
            .population
            .iter()
            .map(|m| m.id)
            .chain(state.pending.iter().filter_map(|c| match c.origin {
                Origin::Mutation { parent } => Some(parent),
                _ => None,
            }))
            .filter(|_| parents)
            .chain(best)
            // A candidate between rungs goes on from its own weights.
            .chain(state.pending.iter().map(|c| c.id))
            .collect();
        let retired: Vec<usize> = self.weights_kept.difference(&live).copied().collect();
        for id in retired {
            for rung in 0..self.saved.state.rung_of(id).max(1) {
                let _ = std::fs::remove_file(rung_dir(self.run.dir, id, rung).join(WEIGHTS_FILE));
            }
            self.weights_kept.remove(&id);
        }
    }

    /// Ctrl-C or SIGTERM: cancels the jobs in flight (or leaves them running with `detach`),
    /// saves, and reports the interruption.
    fn stop(&mut self, detach: bool) -> Result<()> {
        let n = self.in_flight.len();
        let what = if detach {
            format!("{n} job(s) left running; resume re-attaches to them")
        } else {
            self.executor.cancel_all()?;
            // Cancelled by this coordinator: submitted afresh on resume, not counted as failures.
            for entry in self.saved.jobs.values_mut() {
                entry.ticket = None;
            }
            format!("{n} job(s) in flight cancelled")
        };
        self.saved.save(self.run.dir)?;
        Err(Error::search_interrupted(
            self.run.dir.parent().unwrap_or(self.run.dir),
            what,
        ))
    }
}
