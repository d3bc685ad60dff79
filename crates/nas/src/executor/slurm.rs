//! The Slurm executor: each evaluation is one `sbatch --parsable` job running
//! `eatnas-cli evaluate JOB_DIR` on a node, polled with `squeue` (no `sacct`: many clusters,
//! and a one-machine test cluster, have no accounting database).
//!
//! A job's result is its folder's `result.json`, whatever Slurm says of the job: a job that wrote
//! one is done. Without one, Slurm's state decides: PENDING, RUNNING, REQUEUED, PREEMPTED and the
//! like wait; COMPLETED without a result, FAILED, NODE_FAIL, OUT_OF_MEMORY, TIMEOUT, BOOT_FAIL,
//! CANCELLED (by anyone but this coordinator), DEADLINE, or a job Slurm no longer knows, held for
//! `result_grace_seconds`, end it as failed (the runner retries it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Ended, Executor, JobRef};
use crate::job::{read_failure, read_result};
use crate::Result;

/// `[executor.slurm]`: how each evaluation's job is submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// `--time` of each job, in Slurm's forms (`30`, `1:00:00`, `1-00:00:00`).
    pub time_limit: Option<String>,
    pub cpus_per_task: usize,
    /// `--mem`, e.g. `16G`.
    pub mem: Option<String>,
    /// `--gres`, e.g. `gpu:1`.
    pub gres: Option<String>,
    pub constraint: Option<String>,
    /// More sbatch arguments, passed as they are (`["--exclusive"]`, `["--nice=10"]`).
    pub extra_args: Vec<String>,
    /// The worker's `--device` (`cuda` takes the GPU Slurm gives the job).
    pub device: String,
    /// The eatnas-cli the nodes run (default: the coordinator's own executable, which must then
    /// be on the shared filesystem).
    pub worker: Option<PathBuf>,
    /// Shell lines each job runs before the worker (`module load cuda`, `source venv/bin/activate`);
    /// `$EATNAS_JOB_DIR` is the job's folder.
    pub setup: Vec<String>,
    /// Seconds between two `squeue` polls.
    pub poll_seconds: f64,
    /// Seconds a job that Slurm says has ended may take to show its result (a shared
    /// filesystem's attribute cache) or to be back in the queue (a requeue) before it counts
    /// as failed.
    pub result_grace_seconds: f64,
    /// Check with a probe job, before the first evaluation, that the nodes see the run folder and
    /// can run the worker.
    pub probe: bool,
    /// How long the probe job may wait in the queue and run.
    pub probe_timeout_seconds: f64,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            partition: None,
            account: None,
            qos: None,
            time_limit: None,
            cpus_per_task: 1,
            mem: None,
            gres: None,
            constraint: None,
            extra_args: Vec::new(),
            device: "cpu".into(),
            worker: None,
            setup: Vec::new(),
            poll_seconds: 5.0,
            result_grace_seconds: 30.0,
            probe: true,
            probe_timeout_seconds: 1800.0,
        }
    }
}

impl SlurmConfig {
    pub fn validate(&self) -> Result<()> {
        let invalid = |key: &str, message: String| {
            Err(crate::Error::invalid(
                format!("executor.slurm.{key}"),
                message,
            ))
        };
        if self.cpus_per_task == 0 {
            return invalid("cpus_per_task", "expected at least 1".into());
        }
        for (key, value) in [
            ("poll_seconds", self.poll_seconds),
            ("result_grace_seconds", self.result_grace_seconds),
            ("probe_timeout_seconds", self.probe_timeout_seconds),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return invalid(key, format!("expected seconds >= 0, got {value}"));
            }
        }
        // Checked by name only: the coordinator may have no GPU of its own.
        let device = self.device.as_str();
        let cuda_ordinal = device.strip_prefix("cuda:").map(str::parse::<usize>);
        if !matches!(device, "cpu" | "cuda" | "auto") && !matches!(cuda_ordinal, Some(Ok(_))) {
            return invalid(
                "device",
                format!("unknown device `{device}`; expected one of cpu, cuda, cuda:N, auto"),
            );
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("`{program}` is not on PATH: the Slurm executor runs Slurm's commands (sbatch, squeue, scancel) on the coordinator's machine; run the coordinator on a login node, or use --executor local")]
    NotFound {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` printed `{output}`; expected {expected}")]
    Unparsable {
        command: String,
        output: String,
        expected: String,
    },
    #[error("the nodes do not see the run folder {}: probe job {job} {detail}. The run folder (--out) must be on a filesystem shared by this machine and the nodes (a home or project directory, not /tmp)", dir.display())]
    NotShared {
        dir: PathBuf,
        job: String,
        detail: String,
    },
    #[error("probe job {job} did not finish within {seconds} s (last state: {state}); the cluster may be busy: raise executor.slurm.probe_timeout_seconds, or set executor.slurm.probe = false")]
    ProbeTimeout {
        job: String,
        seconds: f64,
        state: String,
    },
}

/// Runs a Slurm command, returning its stdout.
fn slurm(program: &str, args: &[String]) -> std::result::Result<String, SlurmError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| SlurmError::NotFound {
            program: program.into(),
            source,
        })?;
    if !output.status.success() {
        return Err(SlurmError::Command {
            command: format!("{program} {}", args.join(" ")),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Single-quotes `text` for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A job's Slurm state as squeue prints it.
#[derive(Clone, Debug)]
struct Seen {
    state: String,
    node: String,
    reason: String,
}

/// States in which a job may still produce its result.
fn waiting(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "CONFIGURING"
            | "RUNNING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "REQUEUE_FED"
            | "REQUEUE_HOLD"
            | "RESIZING"
            | "PREEMPTED"
            | "SIGNALING"
            | "STAGE_OUT"
            | "STOPPED"
            | "RESV_DEL_HOLD"
    )
}

/// How often the folders of the jobs in flight are looked at for a result.
const RESULT_CHECK: Duration = Duration::from_millis(100);

struct Tracked {
    job: JobRef,
    seen: Option<Seen>,
    /// When the job was first seen ended (or unknown) without a result.
    ended_without_result: Option<Instant>,
}

pub struct SlurmExecutor {
    config: SlurmConfig,
    worker: PathBuf,
    /// The workers' `--checkpoint-minutes` (`[executor] checkpoint_minutes`).
    checkpoint_minutes: f64,
    in_flight: BTreeMap<String, Tracked>,
    last_poll: Option<Instant>,
    last_poll_error: Option<String>,
}

impl SlurmExecutor {
    /// Checks that Slurm's commands are here and, when configured, runs the probe job in
    /// `run_dir`. Its workers checkpoint a job's training every `checkpoint_minutes`.
    pub fn new(
        config: &SlurmConfig,
        checkpoint_minutes: f64,
        run_dir: &Path,
    ) -> Result<SlurmExecutor> {
        config.validate()?;
        let worker = match &config.worker {
            Some(path) => path.clone(),
            None => {
                std::env::current_exe().map_err(|e| crate::Error::io(Path::new("eatnas-cli"), e))?
            }
        };
        slurm("sbatch", &["--version".into()])?;
        let mut executor = SlurmExecutor {
            config: config.clone(),
            worker,
            checkpoint_minutes,
            in_flight: BTreeMap::new(),
            last_poll: None,
            last_poll_error: None,
        };
        if config.probe {
            executor.probe(run_dir)?;
        }
        Ok(executor)
    }

    /// The sbatch options every job gets from the configuration.
    fn options(&self) -> Vec<String> {
        let c = &self.config;
        let mut args = vec![format!("--cpus-per-task={}", c.cpus_per_task)];
        for (flag, value) in [
            ("partition", &c.partition),
            ("account", &c.account),
            ("qos", &c.qos),
            ("time", &c.time_limit),
            ("mem", &c.mem),
            ("gres", &c.gres),
            ("constraint", &c.constraint),
        ] {
            if let Some(value) = value {
                args.push(format!("--{flag}={value}"));
            }
        }
        args.extend(c.extra_args.iter().cloned());
        args
    }

    /// The batch script: the setup lines, then `body`. `EATNAS_JOB_DIR` names the job folder
    /// for the setup lines.
    fn script(&self, job_dir: &Path, body: &str) -> String {
        let mut script = String::from("#!/bin/bash\n");
        script.push_str(&format!(
            "export EATNAS_JOB_DIR={}\n",
            quote(&job_dir.display().to_string())
        ));
        // The worker's threads follow the CPUs Slurm gave the job.
        script.push_str("export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n");
        for line in &self.config.setup {
            script.push_str(line);
            script.push('\n');
        }
        script.push_str(body);
        script.push('\n');
        script
    }

    fn sbatch(&self, name: &str, log: &Path, script: &Path) -> Result<String> {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={name}"),
            format!("--output={}", log.display()),
            "--open-mode=append".into(),
        ];
        args.extend(self.options());
        args.push(script.display().to_string());
        let out = slurm("sbatch", &args)?;
        // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(SlurmError::Unparsable {
                command: "sbatch --parsable".into(),
                output: out.trim().into(),
                expected: "a job id".into(),
            }
            .into());
        }
        Ok(id)
    }

    /// Slurm's view of `ids` (jobs it no longer knows are absent).
    fn squeue(&self, ids: &[String]) -> std::result::Result<BTreeMap<String, Seen>, SlurmError> {
        let mut seen = BTreeMap::new();
        if ids.is_empty() {
            return Ok(seen);
        }
        let args = vec![
            "--noheader".to_string(),
            "--states=all".into(),
            "--format=%i|%T|%N|%r".into(),
            format!("--jobs={}", ids.join(",")),
        ];
        let out = match slurm("squeue", &args) {
            Ok(out) => out,
            // Every id has left Slurm's memory (MinJobAge).
            Err(SlurmError::Command { stderr, .. }) if stderr.contains("Invalid job id") => {
                return Ok(seen)
            }
            Err(e) => return Err(e),
        };
        for line in out.lines() {
            let fields: Vec<&str> = line.trim().split('|').collect();
            if let [id, state, node, reason] = fields[..] {
                seen.insert(
                    id.to_string(),
                    Seen {
                        state: state.to_string(),
                        node: node.to_string(),
                        reason: reason.to_string(),
                    },
                );
            }
        }
        Ok(seen)
    }

    /// One look at every job in flight: their folders for a result, then, with `ask_slurm`,
    /// Slurm for the state of the others.
    fn poll(&mut self, ask_slurm: bool) -> Result<Vec<(String, Ended)>> {
        let mut ended = Vec::new();
        let mut unresolved = Vec::new();
        // A result on disk decides, whatever Slurm says.
        for (ticket, tracked) in &self.in_flight {
            match read_result(&tracked.job.dir, tracked.job.candidate) {
                Ok(Some(result)) => ended.push((ticket.clone(), Ended::Completed(result))),
                Ok(None) => unresolved.push(ticket.clone()),
                Err(e) => ended.push((
                    ticket.clone(),
                    Ended::Failed(format!("Slurm job {ticket}: {e}")),
                )),
            }
        }
        if !ask_slurm {
            for (ticket, _) in &ended {
                self.in_flight.remove(ticket);
            }
            return Ok(ended);
        }
        self.last_poll = Some(Instant::now());
        let seen = match self.squeue(&unresolved) {
            Ok(seen) => {
                self.last_poll_error = None;
                seen
            }
            Err(e @ SlurmError::NotFound { .. }) => return Err(e.into()),
            // The controller unreachable for a moment: look again at the next poll.
            Err(e) => {
                self.last_poll_error = Some(e.to_string());
                for (ticket, _) in &ended {
                    self.in_flight.remove(ticket);
                }
                return Ok(ended);
            }
        };
        let grace = Duration::from_secs_f64(self.config.result_grace_seconds);
        for ticket in unresolved {
            let tracked = self.in_flight.get_mut(&ticket).expect("tracked");
            let now = seen.get(&ticket).cloned();
            if let Some(s) = &now {
                if waiting(&s.state) {
                    tracked.seen = now;
                    // Back in the queue (requeued): a later end starts its grace afresh.
                    tracked.ended_without_result = None;
                    continue;
                }
            }
            let log = tracked.job.dir.join(format!("slurm-{ticket}.out"));
            let failure = read_failure(&tracked.job.dir);
            if let Some(f) = failure.as_ref().filter(|f| f.disk_full) {
                ended.push((ticket.clone(), Ended::DiskFull(f.reason.clone())));
                continue;
            }
            let detail = match failure.map(|f| f.reason) {
                Some(reason) => reason,
                None => {
                    // An end without a result counts once it has lasted the grace: a shared
                    // filesystem may not show the result yet, and a job being requeued shows its
                    // killed run as FAILED for a moment before it is PENDING again (failing it
                    // then would run its candidate twice).
                    let since = *tracked
                        .ended_without_result
                        .get_or_insert_with(Instant::now);
                    if since.elapsed() < grace {
                        if now.is_some() {
                            tracked.seen = now;
                        }
                        continue;
                    }
                    match &now {
                        Some(s) if s.state == "COMPLETED" => {
                            "completed without writing result.json".to_string()
                        }
                        Some(s) => format!("ended {} ({})", s.state, s.reason),
                        None => "left Slurm's queue without a result".to_string(),
                    }
                }
            };
            let node = now
                .as_ref()
                .or(tracked.seen.as_ref())
                .map(|s| s.node.clone())
                .filter(|n| !n.is_empty())
                .map_or(String::new(), |n| format!(" on {n}"));
            let state = now.as_ref().map_or("gone".into(), |s| s.state.clone());
            ended.push((
                ticket.clone(),
                Ended::Failed(format!(
                    "Slurm job {ticket} {state}{node}: {detail} (log: {})",
                    log.display()
                )),
            ));
        }
        for (ticket, _) in &ended {
            self.in_flight.remove(ticket);
        }
        Ok(ended)
    }

    /// Submits a job that writes the worker's version into `run_dir/.probe`, waits for it, and
    /// checks what it wrote.
    fn probe(&mut self, run_dir: &Path) -> Result<()> {
        let dir = run_dir.join(".probe");
        std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
        let token = format!("{}-{}", std::process::id(), crate::job::unix_now());
        let mark = dir.join(&token);
        let body = format!(
            "{worker} --version > {tmp} && hostname >> {tmp} && mv {tmp} {mark}",
            worker = quote(&self.worker.display().to_string()),
            tmp = quote(&format!("{}.tmp", mark.display())),
            mark = quote(&mark.display().to_string()),
        );
        let script = dir.join("probe.sh");
        std::fs::write(&script, self.script(&dir, &body))
            .map_err(|e| crate::Error::io(&script, e))?;
        let log = dir.join("slurm-%j.out");
        let id = self.sbatch(&format!("eatnas-probe-{token}"), &log, &script)?;
        let started = Instant::now();
        loop {
            let seen = self.squeue(std::slice::from_ref(&id))?;
            match seen.get(&id) {
                Some(s) if waiting(&s.state) => {
                    if started.elapsed().as_secs_f64() > self.config.probe_timeout_seconds {
                        let _ = slurm("scancel", std::slice::from_ref(&id));
                        return Err(SlurmError::ProbeTimeout {
                            job: id,
                            seconds: self.config.probe_timeout_seconds,
                            state: format!("{} ({})", s.state, s.reason),
                        }
                        .into());
                    }
                }
                other => {
                    let ended = other.map_or("gone".into(), |s| s.state.clone());
                    // The mark may take a moment to show on a shared filesystem.
                    let deadline =
                        Instant::now() + Duration::from_secs_f64(self.config.result_grace_seconds);
                    while !mark.exists() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    if mark.exists() {
                        let _ = std::fs::remove_dir_all(&dir);
                        return Ok(());
                    }
                    let log = dir.join(format!("slurm-{id}.out"));
                    let printed = std::fs::read_to_string(&log)
                        .map(|t| format!("; its log says: {}", t.trim()))
                        .unwrap_or_else(|_| {
                            format!("; its log {} is not here either", log.display())
                        });
                    return Err(SlurmError::NotShared {
                        dir: run_dir.to_path_buf(),
                        job: id,
                        detail: format!(
                            "ended {ended} without leaving {} (it runs {} there){printed}",
                            mark.display(),
                            self.worker.display()
                        ),
                    }
                    .into());
                }
            }
            std::thread::sleep(Duration::from_secs_f64(
                self.config.poll_seconds.clamp(0.2, 5.0),
            ));
        }
    }
}

impl Executor for SlurmExecutor {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn submit(&mut self, job: &JobRef) -> Result<String> {
        let body = format!(
            "exec {} evaluate {} --device {} --checkpoint-minutes {}",
            quote(&self.worker.display().to_string()),
            quote(&job.dir.display().to_string()),
            quote(&self.config.device),
            self.checkpoint_minutes
        );
        let script = job.dir.join("job.sh");
        eatnas_train::fs::write_atomic(&script, self.script(&job.dir, &body).as_bytes())?;
        let id = self.sbatch(&job.name, &job.dir.join("slurm-%j.out"), &script)?;
        self.reattach(&id, job)?;
        Ok(id)
    }

    fn reattach(&mut self, ticket: &str, job: &JobRef) -> Result<bool> {
        if !ticket.chars().all(|c| c.is_ascii_digit()) {
            return Ok(false); // another executor's ticket
        }
        self.in_flight.insert(
            ticket.to_string(),
            Tracked {
                job: job.clone(),
                seen: None,
                ended_without_result: None,
            },
        );
        Ok(true)
    }

    fn find(&mut self, job: &JobRef) -> Result<Option<String>> {
        let out = slurm(
            "squeue",
            &[
                "--noheader".into(),
                "--format=%i".into(),
                format!("--name={}", job.name),
            ],
        )?;
        Ok(out
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(String::from))
    }

    fn wait(&mut self, timeout: Duration) -> Result<Vec<(String, Ended)>> {
        let deadline = Instant::now() + timeout;
        let interval = Duration::from_secs_f64(self.config.poll_seconds);
        loop {
            // Results are looked for often (a stat per job in flight), Slurm every poll_seconds.
            let ask_slurm = self.last_poll.is_none_or(|t| t.elapsed() >= interval);
            let ended = self.poll(ask_slurm)?;
            let now = Instant::now();
            if !ended.is_empty() || now >= deadline {
                return Ok(ended);
            }
            std::thread::sleep(RESULT_CHECK.min(deadline - now));
        }
    }

    fn cancel_all(&mut self) -> Result<()> {
        let ids: Vec<String> = self.in_flight.keys().cloned().collect();
        if !ids.is_empty() {
            slurm("scancel", &ids)?;
        }
        self.in_flight.clear();
        Ok(())
    }

    fn status_line(&self) -> Option<String> {
        if let Some(error) = &self.last_poll_error {
            return Some(format!("squeue failed, retrying: {error}"));
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for tracked in self.in_flight.values() {
            let state = tracked.seen.as_ref().map_or("SUBMITTED".into(), |s| {
                if s.state == "PENDING" {
                    format!("PENDING ({})", s.reason)
                } else {
                    s.state.clone()
                }
            });
            *counts.entry(state).or_default() += 1;
        }
        (!counts.is_empty()).then(|| {
            let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            format!("slurm jobs: {}", parts.join(", "))
        })
    }
}
