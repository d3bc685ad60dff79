//! `eatnas-cli run | search | transfer | resume`: the EAT-NAS search.

use std::path::{Path, PathBuf};

use anyhow::Result;
use eatnas_nas::{pipeline::Event, Command, ExecutorKind, SearchConfig, Session, Summary};
use eatnas_nn::Arch;
use eatnas_tensor::Device;

#[derive(clap::Args)]
pub struct Common {
    /// Configuration (TOML); every field has a default (the embedded demo). See configs/.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder (default: runs/COMMAND-UNIXTIME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Overrides the configuration's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Overrides the configuration's worker count.
    #[arg(long)]
    workers: Option<usize>,
    /// Compute device: cpu, cuda:N (one GPU), cuda (every GPU, one worker each) or auto
    /// (every GPU if there is one, else the CPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    pub(crate) coordinator: CoordinatorArgs,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Where evaluations run, and what Ctrl-C does to them.
#[derive(clap::Args, Default)]
pub struct CoordinatorArgs {
    /// Where evaluations run: local (worker threads here) or slurm (one sbatch job each, set up
    /// by [executor.slurm] of the configuration). Default: the configuration's [executor] kind.
    #[arg(long)]
    executor: Option<ExecutorKind>,
    /// On Ctrl-C or SIGTERM leave the Slurm jobs in flight running (`resume` re-attaches to
    /// them) instead of cancelling them. Slurm only: the local executor's jobs stop with the
    /// coordinator.
    #[arg(long)]
    pub(crate) detach: bool,
}

impl Default for Common {
    /// What a bare `eatnas-cli` runs: the default configuration on the CPU.
    fn default() -> Self {
        Common {
            config: None,
            out: None,
            seed: None,
            workers: None,
            device: "cpu".into(),
            coordinator: CoordinatorArgs::default(),
            json: false,
        }
    }
}

#[derive(clap::Args)]
pub struct TransferArgs {
    /// The basic architecture to transfer (a stage-1 result: basic_arch.json).
    #[arg(long, required_unless_present = "from_scratch")]
    seed_arch: Option<PathBuf>,
    /// The basic architecture's trained weights (basic_weights.safetensors of a run), for a
    /// configuration with [transfer] inherit_weights = true.
    #[arg(long, requires = "seed_arch")]
    seed_weights: Option<PathBuf>,
    /// Start stage 2 from a random population instead (the baseline).
    #[arg(long)]
    from_scratch: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
pub struct ResumeArgs {
    /// The folder of a search that was interrupted.
    dir: PathBuf,
    /// Compute device, as for `search`.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    coordinator: CoordinatorArgs,
    #[arg(long)]
    json: bool,
}

/// The devices a search trains on: `cuda` and `auto` take every GPU there is.
pub fn search_devices(text: &str) -> Result<Vec<Device>> {
    let all_gpus = || {
        (0..Device::cuda_count())
            .map(Device::Cuda)
            .collect::<Vec<_>>()
    };
    Ok(match text {
        "cuda" => {
            let gpus = all_gpus();
            if gpus.is_empty() {
                // The error of the first GPU says why none can be used.
                Device::cuda(0)?;
            }
            gpus
        }
        "auto" => {
            let gpus = all_gpus();
            if gpus.is_empty() {
                vec![Device::Cpu]
            } else {
                gpus
            }
        }
        other => vec![Device::parse(other)?],
    })
}

pub fn load_config(common: &Common) -> Result<SearchConfig> {
    let devices = search_devices(&common.device)?;
    let mut config = match &common.config {
        Some(path) => SearchConfig::load(path)?,
        None => SearchConfig::default(),
    };
    // One worker per GPU unless the workers are set explicitly.
    if devices.len() > 1 && common.workers.is_none() {
        config.workers = devices.len();
    }
    config.devices = devices;
    if let Some(seed) = common.seed {
        config.seed = seed;
    }
    if let Some(workers) = common.workers {
        config.workers = workers;
    }
    if let Some(kind) = common.coordinator.executor {
        config.executor.kind = kind;
    }
    config.validate()?;
    Ok(config)
}

pub fn out_dir(common: &Common, command: &str) -> PathBuf {
    common.out.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("runs").join(format!("{command}-{now}"))
    })
}

/// " (cached)", " FAILED", the Slurm job and host, the retries.
fn where_it_ran(record: &eatnas_nas::Record) -> String {
    let mut text = String::new();
    if record.cached {
        text.push_str(" (cached)");
    }
    if record.failed {
        text.push_str(" FAILED");
    }
    if let Some(ran) = record.ran.as_ref().filter(|r| r.executor == "slurm") {
        text.push_str(&format!(" [job {} on {}]", ran.job, ran.host));
    }
    if record.retries > 0 {
        text.push_str(&format!(" ({} retries)", record.retries));
    }
    text
}

/// Progress lines on stderr.
fn report(event: Event) {
    match event {
        Event::StageStarted { stage, done, budget } => eprintln!("== {stage}: {done}/{budget} evaluations done"),
        Event::Evaluated { stage, budget, record } => eprintln!(
            "[{stage} {:>3}/{budget}] acc {:.4} fitness {:.4} {:>6.2}M MAdds {:>6.1}k params{} {:>5.1} s{}  | population top-k {:.4} best {:.4}",
            record.evaluation,
            record.accuracy,
            record.fitness,
            record.madds as f64 / 1e6,
            record.params as f64 / 1e3,
            record.latency_ms.map_or(String::new(), |ms| format!(" {ms:>7.2} ms")),
            record.seconds,
            where_it_ran(record),
            record.quality.top_k_mean,
            record.quality.best,
        ),
        Event::Retrying { stage, candidate, attempt, reason } => {
            eprintln!("[{stage}] candidate {candidate}: attempt {attempt} failed, retrying: {reason}")
        }
        Event::Waiting { stage, status } => eprintln!("[{stage}] {status}"),
        Event::FinalEpoch { epoch, epochs, val_top1 } => {
            eprintln!("[final training] epoch {epoch}/{epochs} val top-1 {}", val_top1.map_or("-".into(), |v| format!("{v:.4}")))
        }
    }
}

fn print_summary(dir: &Path, summary: &Summary, json: bool) -> Result<()> {
    eprintln!("search folder: {}", dir.display());
    for (name, stage) in [
        ("stage1", &summary.stage1),
        ("transfer", &summary.transfer),
        ("scratch", &summary.scratch),
    ] {
        if let Some(stage) = stage.as_ref().filter(|s| s.failed > 0) {
            eprintln!(
                "{name}: {} of {} evaluations failed (see {name}/history.jsonl)",
                stage.failed, stage.evaluations
            );
        }
    }
    if let Some(t) = &summary.transfer_vs_scratch {
        let at: Vec<String> =
            t.at.iter()
                .map(|p| {
                    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
                    format!("{}: {} vs {}", p.evaluations, f(p.transfer), f(p.scratch))
                })
                .collect();
        eprintln!("transfer vs scratch ({}): {}", t.metric, at.join(", "));
    }
    if let Some(f) = &summary.final_training {
        eprintln!(
            "final network: test top-1 {:.4} ({} MAdds, {} params)",
            f.test_top1, f.madds, f.params
        );
        if f.learned_nothing {
            eprintln!(
                "warning: the final training learned nothing: its test top-1 is no better than always answering the most common class, though its loss stayed finite. Train the winner again (`eatnas-cli train --arch final_arch.json`) with a warm-up (--warmup-epochs) or another learning rate (--lr), or set [final] warmup_epochs and lr and resume"
            );
        }
    }
    if json {
        println!("{}", serde_json::to_string(summary)?);
    }
    Ok(())
}

/// The session of a coordinator: Ctrl-C and SIGTERM ask the search to stop and save.
pub fn session(devices: Option<Vec<Device>>, coordinator: &CoordinatorArgs) -> Result<Session> {
    Ok(Session {
        devices,
        executor: coordinator.executor,
        detach: coordinator.detach,
        stop: crate::signals::stop_flag()?,
    })
}

pub fn run(common: &Common) -> Result<()> {
    let config = load_config(common)?;
    let dir = out_dir(common, "run");
    eprintln!(
        "eatnas run: stage 1 on {}, transfer, stage 2 on {}, into {}",
        config.small.data,
        config.large.data,
        dir.display()
    );
    let session = session(None, &common.coordinator)?;
    let summary = eatnas_nas::start(config, Command::Run, &dir, &session, &mut report)?;
    print_summary(&dir, &summary, common.json)
}

pub fn search(common: &Common) -> Result<()> {
    let config = load_config(common)?;
    let dir = out_dir(common, "search");
    let session = session(None, &common.coordinator)?;
    let summary = eatnas_nas::start(config, Command::Search, &dir, &session, &mut report)?;
    print_summary(&dir, &summary, common.json)
}

pub fn transfer(args: &TransferArgs) -> Result<()> {
    let config = load_config(&args.common)?;
    let dir = out_dir(&args.common, "transfer");
    let seed_arch = args.seed_arch.as_deref().map(Arch::load).transpose()?;
    let command = Command::Transfer {
        seed_arch,
        seed_weights: args.seed_weights.clone(),
        from_scratch: args.from_scratch,
    };
    let session = session(None, &args.common.coordinator)?;
    let summary = eatnas_nas::start(config, command, &dir, &session, &mut report)?;
    print_summary(&dir, &summary, args.common.json)
}

pub fn resume(args: &ResumeArgs) -> Result<()> {
    let devices = search_devices(&args.device)?;
    let session = session(Some(devices), &args.coordinator)?;
    let summary = eatnas_nas::resume(&args.dir, &session, &mut report)?;
    print_summary(&args.dir, &summary, args.json)
}

pub fn print_config(common: &Common) -> Result<()> {
    print!("{}", load_config(common)?.to_toml());
    Ok(())
}
