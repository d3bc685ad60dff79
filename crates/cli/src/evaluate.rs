//! `eatnas-cli evaluate JOB_DIR`: the worker. Runs one candidate evaluation that a coordinator
//! wrote (`job.json`), writing `result.json` (or `error.json`) beside it; what each Slurm job of
//! a search runs.

use std::path::PathBuf;

use anyhow::Result;
use eatnas_nas::job::{record_failure, run_folder, unix_now};
use eatnas_nas::ProxyTraining;
use eatnas_tensor::Device;

#[derive(clap::Args)]
pub struct Args {
    /// A job folder written by a search coordinator (it holds job.json).
    job_dir: PathBuf,
    /// Compute device: cpu, cuda (the first GPU this process sees: the one Slurm gave the job),
    /// cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Minutes of training between two checkpoints into the job folder's `training/`, which
    /// this job continues from when it runs again after a kill.
    #[arg(long, default_value_t = eatnas_nas::job::DEFAULT_CHECKPOINT_MINUTES)]
    checkpoint_minutes: f64,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let started_at = unix_now();
    if !args.job_dir.join(eatnas_nas::job::JOB_FILE).is_file() {
        anyhow::bail!(
            "{}: no job.json here; expected a job folder written by an eatnas search",
            args.job_dir.display()
        );
    }
    let device = match Device::parse(&args.device) {
        Ok(device) => device,
        Err(e) => {
            let failure = record_failure(&args.job_dir, e.to_string(), &args.device, started_at);
            anyhow::bail!("{}", failure.reason);
        }
    };
    let interval = eatnas_nas::job::checkpoint_interval(args.checkpoint_minutes)
        .map_err(|message| anyhow::anyhow!("--checkpoint-minutes: {message}"))?;
    // SIGTERM (Slurm's, at a job's time limit or a preemption) or Ctrl-C: the training
    // checkpoints after its current step and the job ends failed, to continue when run again.
    let stop = crate::signals::stop_flag()?;
    let runner = ProxyTraining::new().checkpoint_by_time(interval);
    match run_folder(&args.job_dir, &runner, device, &stop) {
        Ok(result) => {
            let o = &result.outcome;
            eprintln!(
                "candidate {} ({}): val top-1 {:.4}, {} MAdds, {} params, {:.1} s on {} {}{}",
                result.candidate,
                result.genome,
                o.accuracy,
                o.madds,
                o.params,
                o.seconds,
                result.ran.host,
                result.ran.device,
                o.error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" ({e})")),
            );
            if args.json {
                println!("{}", serde_json::to_string(&result)?);
            }
            Ok(())
        }
        Err(failure) => anyhow::bail!(
            "{} (written to {})",
            failure.reason,
            args.job_dir.join(eatnas_nas::job::ERROR_FILE).display()
        ),
    }
}
