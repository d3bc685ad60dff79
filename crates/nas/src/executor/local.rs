//! The local executor: `workers` threads of this process, worker slot i training on
//! `devices[i % len]`. Each thread runs a job folder exactly as `eatnas-cli evaluate` does
//! ([`crate::job::run_folder`]), so its results are on disk like a Slurm job's, and each runs
//! its jobs' operations on a thread pool of its own, its share of the process's cores: sharing
//! rayon's one global pool, the jobs' operations would queue behind each other (with
//! `RAYON_NUM_THREADS=1`, every worker's training on one core).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eatnas_tensor::Device;

use super::{Ended, Executor, JobRef};
use crate::job::{cores_per_job, run_folder, JobRunner};
use crate::Result;

type Message = (String, Ended);

/// How long cancelling waits for the trainings in progress to checkpoint and stop: a training
/// step and a checkpoint's write, with room for a large network on a slow CPU.
const CANCEL_WAIT: Duration = Duration::from_secs(120);

pub struct LocalExecutor {
    jobs: Option<Sender<(String, JobRef)>>,
    ended: Receiver<Message>,
    submitted: usize,
    /// Set by `cancel_all`: queued jobs are dropped, and the trainings in progress checkpoint
    /// and stop (their jobs' [`crate::job::StopFlag`]).
    cancelled: Arc<AtomicBool>,
    /// Jobs the threads are running now.
    running: Arc<AtomicUsize>,
}

impl LocalExecutor {
    /// Starts `workers` threads that run jobs with `runner`, each with its share of this
    /// process's cores ([`cores_per_job`]); slot i trains on `devices[i % len]` (the CPU when
    /// `devices` is empty).
    pub fn new(runner: Arc<dyn JobRunner>, workers: usize, devices: &[Device]) -> LocalExecutor {
        LocalExecutor::with_threads(runner, workers, cores_per_job(workers), devices)
    }

    /// [`LocalExecutor::new`] with `threads` threads for each worker's operations.
    pub fn with_threads(
        runner: Arc<dyn JobRunner>,
        workers: usize,
        threads: usize,
        devices: &[Device],
    ) -> LocalExecutor {
        let devices: Vec<Device> = if devices.is_empty() {
            vec![Device::Cpu]
        } else {
            devices.to_vec()
        };
        let (job_sender, job_receiver) = channel::<(String, JobRef)>();
        let job_receiver = Arc::new(Mutex::new(job_receiver));
        let (ended_sender, ended) = channel::<Message>();
        let cancelled = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicUsize::new(0));
        for worker in 0..workers.max(1) {
            let (jobs, ended, runner, devices, cancelled, running) = (
                job_receiver.clone(),
                ended_sender.clone(),
                runner.clone(),
                devices.clone(),
                cancelled.clone(),
                running.clone(),
            );
            // Detached: a coordinator that ends (an error, kill -9) does not wait for a training
            // in progress; one that cancels waits for its trainings to checkpoint and stop.
            std::thread::spawn(move || {
                let pool = worker_pool(worker, threads);
                loop {
                    let next = jobs.lock().map(|queue| queue.recv());
                    let Ok(Ok((ticket, job))) = next else { return };
                    // Counted before the check, so that `cancel_all` waits for a job it raced with.
                    running.fetch_add(1, Ordering::SeqCst);
                    if cancelled.load(Ordering::SeqCst) {
                        running.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                    let device = devices[job.slot % devices.len()];
                    let run = || run_folder(&job.dir, runner.as_ref(), device, &cancelled);
                    let ran = match &pool {
                        Some(pool) => pool.install(run),
                        None => run(),
                    };
                    let outcome = match ran {
                        Ok(result) => Ended::Completed(result),
                        Err(failure) if failure.disk_full => Ended::DiskFull(failure.reason),
                        Err(failure) => Ended::Failed(failure.reason),
                    };
                    running.fetch_sub(1, Ordering::SeqCst);
                    if ended.send((ticket, outcome)).is_err() {
                        return;
                    }
                }
            });
        }
        LocalExecutor {
            jobs: Some(job_sender),
            ended,
            submitted: 0,
            cancelled,
            running,
        }
    }
}

/// Worker `worker`'s pool of `threads` threads (named `eatnas-worker{worker}-{i}`), or none
/// where the system refuses the threads: its jobs then run on rayon's global pool, slower where
/// several workers share it but the same results (the CPU backend's do not depend on threads).
fn worker_pool(worker: usize, threads: usize) -> Option<rayon::ThreadPool> {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(move |i| format!("eatnas-worker{worker}-{i}"))
        .build()
    {
        Ok(pool) => Some(pool),
        Err(e) => {
            eprintln!(
                "warning: local worker {worker}: no pool of {threads} thread(s) ({e}); its jobs share rayon's global pool"
            );
            None
        }
    }
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn submit(&mut self, job: &JobRef) -> Result<String> {
        self.submitted += 1;
        let ticket = format!("local-{}-{}", std::process::id(), self.submitted);
        self.jobs
            .as_ref()
            .expect("jobs are only submitted before the executor is dropped")
            .send((ticket.clone(), job.clone()))
            .expect("the worker threads outlive the executor's sender");
        Ok(ticket)
    }

    fn reattach(&mut self, ticket: &str, _job: &JobRef) -> Result<bool> {
        // A thread of another process is gone with it; a ticket of this process is in flight.
        Ok(ticket.starts_with(&format!("local-{}-", std::process::id())))
    }

    fn find(&mut self, _job: &JobRef) -> Result<Option<String>> {
        Ok(None)
    }

    fn wait(&mut self, timeout: Duration) -> Result<Vec<(String, Ended)>> {
        let mut ended = Vec::new();
        match self.ended.recv_timeout(timeout) {
            Ok(message) => ended.push(message),
            Err(RecvTimeoutError::Timeout) => return Ok(ended),
            Err(RecvTimeoutError::Disconnected) => {
                unreachable!("the executor holds the workers' job queue open")
            }
        }
        ended.extend(self.ended.try_iter());
        Ok(ended)
    }

    /// Drops the queued jobs, and has each training in progress checkpoint after its current
    /// step and stop (waiting up to [`CANCEL_WAIT`] for them), so that the jobs, submitted again
    /// on resume, continue from there.
    fn cancel_all(&mut self) -> Result<()> {
        self.cancelled.store(true, Ordering::SeqCst);
        let started = Instant::now();
        while self.running.load(Ordering::SeqCst) > 0 && started.elapsed() < CANCEL_WAIT {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for LocalExecutor {
    fn drop(&mut self) {
        // Closing the queue lets idle threads end.
        self.jobs.take();
    }
}
