//! Runs one evolution stage with N workers, steady-state and asynchronous: whenever a worker is
//! free it gets a new child of the current population; nobody waits for a generation. After
//! every evaluation the history line is appended and the whole state saved atomically, so a
//! stage killed with kill -9 resumes losing at most the evaluations in flight.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};

use eatnas_train::fs::write_atomic;
use serde::{Deserialize, Serialize};

use crate::evaluator::Evaluator;
use crate::evolution::{Candidate, EvolutionState, Record};
use crate::{Error, Result};

pub const STATE_FILE: &str = "state.json";
pub const HISTORY_FILE: &str = "history.jsonl";

/// What `state.json` holds: the evolution and who wrote it.
#[derive(Serialize, Deserialize)]
pub struct SavedStage {
    /// The eatnas version that wrote it; another version's state is refused.
    pub version: String,
    /// A fingerprint of the configuration; another configuration's state is refused.
    pub config_fingerprint: String,
    pub state: EvolutionState,
}

pub fn save_stage(dir: &Path, state: &EvolutionState, fingerprint: &str) -> Result<()> {
    let saved = SavedStage {
        version: crate::VERSION.into(),
        config_fingerprint: fingerprint.into(),
        state: state.clone(),
    };
    write_atomic(
        &dir.join(STATE_FILE),
        serde_json::to_string(&saved)
            .expect("state serialises")
            .as_bytes(),
    )?;
    Ok(())
}

/// Loads a stage's saved state, refusing one from another version or configuration.
pub fn load_stage(dir: &Path, fingerprint: &str) -> Result<Option<EvolutionState>> {
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
    let saved: SavedStage = serde_json::from_str(&text)
        .map_err(|e| Error::file(&path, format!("unreadable search state: {e}")))?;
    if saved.version != crate::VERSION {
        return Err(Error::file(
            &path,
            format!(
                "written by eatnas {}; this is {}: start a new search",
                saved.version,
                crate::VERSION
            ),
        ));
    }
    if saved.config_fingerprint != fingerprint {
        return Err(Error::file(
            &path,
            "written with another configuration than this folder's config.toml; start a new search",
        ));
    }
    Ok(Some(saved.state))
}

/// Keeps the first `keep` lines of the history (a kill between the history append and the state
/// save leaves one line too many).
fn truncate_history(path: &Path, keep: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > keep {
        let kept: String = lines[..keep].iter().map(|l| format!("{l}\n")).collect();
        write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

/// Runs `state` to its budget in `dir`, evaluating on `workers` threads, calling `on_record`
/// after each evaluation.
pub fn run_stage(
    state: &mut EvolutionState,
    evaluator: &dyn Evaluator,
    workers: usize,
    dir: &Path,
    fingerprint: &str,
    on_record: &mut dyn FnMut(&Record),
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let history_path = dir.join(HISTORY_FILE);
    truncate_history(&history_path, state.evaluated.len())?;
    let mut history = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&history_path)
        .map_err(|e| Error::file(&history_path, e))?;
    save_stage(dir, state, fingerprint)?;
    if state.done() {
        return Ok(());
    }
    let workers = workers.max(1);
    let (job_sender, job_receiver) = channel::<Candidate>();
    let job_receiver = Arc::new(Mutex::new(job_receiver));
    let (result_sender, result_receiver) =
        channel::<(usize, Candidate, Result<crate::evolution::Outcome>)>();

    std::thread::scope(|scope| -> Result<()> {
        for worker in 0..workers {
            let (jobs, results): (Arc<Mutex<Receiver<Candidate>>>, _) =
                (job_receiver.clone(), result_sender.clone());
            scope.spawn(move || loop {
                let job = jobs.lock().expect("job queue").recv();
                let Ok(candidate) = job else { return };
                let outcome = evaluator.evaluate(&candidate, worker);
                if results.send((worker, candidate, outcome)).is_err() {
                    return;
                }
            });
        }
        drop(result_sender);
        // Candidates in flight when the state was saved go first, then fresh proposals.
        let mut queue: Vec<Candidate> = state.pending.clone();
        queue.reverse();
        let mut in_flight = 0usize;
        let outcome = (|| -> Result<()> {
            loop {
                while in_flight < workers {
                    let candidate = match queue.pop() {
                        Some(c) => c,
                        None if state.can_propose() => state.propose(),
                        None => break,
                    };
                    if let Some(outcome) = state.cached(&candidate) {
                        // Seen before: no second training.
                        let record = state.complete(&candidate, outcome, 0, true);
                        persist(state, &record, &mut history, dir, fingerprint)?;
                        on_record(&record);
                        continue;
                    }
                    job_sender
                        .send(candidate)
                        .expect("workers are alive while jobs remain");
                    in_flight += 1;
                }
                if in_flight == 0 {
                    return Ok(());
                }
                let (worker, candidate, outcome) =
                    result_receiver.recv().expect("a worker answers every job");
                in_flight -= 1;
                let record = state.complete(&candidate, outcome?, worker, false);
                persist(state, &record, &mut history, dir, fingerprint)?;
                on_record(&record);
            }
        })();
        drop(job_sender); // lets the workers finish
        outcome
    })
}

fn persist(
    state: &EvolutionState,
    record: &Record,
    history: &mut std::fs::File,
    dir: &Path,
    fingerprint: &str,
) -> Result<()> {
    let line = serde_json::to_string(record).expect("a record serialises") + "\n";
    history
        .write_all(line.as_bytes())
        .and_then(|_| history.flush())
        .map_err(|e| Error::file(&dir.join(HISTORY_FILE), e))?;
    save_stage(dir, state, fingerprint)
}
