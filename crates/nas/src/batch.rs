//! Runs a fixed set of independent job folders on an executor to the end (the trainings of a
//! fidelity measurement). A folder whose `result.json` reads back is collected and never run
//! again, and a job an earlier coordinator left queued or running is re-attached by its name, so a
//! killed run continues where it stood without training anything twice.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::executor::{Ended, Executor, JobRef};
use crate::job::{clear_attempt, read_result, Job, JobResult};
use crate::runner::Control;
use crate::{Error, Result};

/// One job of a batch: its spec, its folder, and a name unique among the batches of its folder.
#[derive(Clone, Debug)]
pub struct BatchJob {
    pub job: Job,
    pub dir: PathBuf,
    pub name: String,
}

/// How a job of the batch ended.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchEnd {
    Completed(Box<JobResult>),
    /// No result after every attempt: the last reason.
    Failed {
        reason: String,
        attempts: usize,
    },
}

/// Runs every job of `jobs` (`workers` in flight at once, `max_retries` attempts after the first
/// for one that ends without a result) and returns how each ended, in order. `on_end` hears of
/// each as it ends (`true`: it ran in this call; `false`: collected from an earlier run). A set
/// `control.stop` cancels the jobs in flight (or, with `detach`, leaves them running for the
/// next run to re-attach) and returns [`Error::Interrupted`] saying `next`: how to continue.
pub fn run_batch(
    executor: &mut dyn Executor,
    jobs: &[BatchJob],
    workers: usize,
    max_retries: usize,
    control: &Control,
    next: &str,
    on_end: &mut dyn FnMut(usize, &BatchEnd, bool),
) -> Result<Vec<BatchEnd>> {
    let mut ends: Vec<Option<BatchEnd>> = vec![None; jobs.len()];
    let mut queue = VecDeque::new();
    for (i, batch_job) in jobs.iter().enumerate() {
        // A folder holding this very training (whatever search named it: a copied folder) keeps
        // its result; one holding another (an edited plan) is rewritten, its result set aside.
        match Job::read(&batch_job.dir) {
            Ok(existing) if existing.same_training(&batch_job.job) => {}
            _ => {
                clear_attempt(&batch_job.dir);
                batch_job.job.write(&batch_job.dir)?;
            }
        }
        match read_result(&batch_job.dir, batch_job.job.candidate.id) {
            Ok(Some(result)) => {
                let end = BatchEnd::Completed(Box::new(result));
                on_end(i, &end, false);
                ends[i] = Some(end);
            }
            // A malformed result is set aside and the job run again.
            Ok(None) | Err(_) => queue.push_back(i),
        }
    }
    let job_ref = |i: usize, slot: usize| JobRef {
        dir: jobs[i].dir.clone(),
        name: jobs[i].name.clone(),
        candidate: jobs[i].job.candidate.id,
        slot,
    };
    // Ticket -> (job index, slot).
    let mut in_flight: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let free_slot = |in_flight: &BTreeMap<String, (usize, usize)>| {
        let used: BTreeSet<usize> = in_flight.values().map(|&(_, s)| s).collect();
        (0..).find(|s| !used.contains(s)).expect("a free slot")
    };
    // Jobs an earlier coordinator submitted and that still run.
    for i in queue.clone() {
        let slot = free_slot(&in_flight);
        let job = job_ref(i, slot);
        if let Some(ticket) = executor.find(&job)? {
            if executor.reattach(&ticket, &job)? {
                in_flight.insert(ticket, (i, slot));
                queue.retain(|&q| q != i);
            }
        }
    }
    let mut failures = vec![0usize; jobs.len()];
    loop {
        if control.stop.load(Ordering::SeqCst) {
            let n = in_flight.len();
            let what = if control.detach {
                format!("{n} job(s) left running; the same command re-attaches to them")
            } else {
                executor.cancel_all()?;
                format!("{n} job(s) in flight cancelled")
            };
            return Err(Error::Interrupted {
                what,
                next: next.to_string(),
            });
        }
        while in_flight.len() < workers.max(1) {
            let Some(i) = queue.pop_front() else { break };
            let slot = free_slot(&in_flight);
            clear_attempt(&jobs[i].dir);
            let ticket = executor.submit(&job_ref(i, slot))?;
            in_flight.insert(ticket, (i, slot));
        }
        if in_flight.is_empty() {
            break;
        }
        for (ticket, ended) in executor.wait(Duration::from_millis(500))? {
            let Some((i, _)) = in_flight.remove(&ticket) else {
                continue;
            };
            let end = match ended {
                Ended::Completed(result) => BatchEnd::Completed(Box::new(result)),
                // Retrying would fail the same way: stop, the job is run again on the next go.
                Ended::DiskFull(reason) => {
                    return Err(Error::DiskFull {
                        reason,
                        next: "run the same command again: what is measured already is kept".into(),
                    });
                }
                Ended::Failed(reason) => {
                    failures[i] += 1;
                    if failures[i] <= max_retries {
                        queue.push_front(i);
                        continue;
                    }
                    BatchEnd::Failed {
                        reason,
                        attempts: failures[i],
                    }
                }
            };
            on_end(i, &end, true);
            ends[i] = Some(end);
        }
    }
    Ok(ends
        .into_iter()
        .map(|e| e.expect("every job ended"))
        .collect())
}
