//! `cargo xtask chaos [--kills N] [--seed S] [--config C] [--out DIR] [--checkpoint-every-step]`:
//! the tiny pipeline (stage 1,
//! transfer, stage 2, scratch, final training) once uninterrupted, then N times killed with
//! SIGKILL and resumed, and each resumed run compared with the uninterrupted one: the same
//! `final_arch.json`, the same architectures and fitness in every history, byte-identical final
//! weights.
//!
//! Kills alternate between two kinds of moment, drawn from a seeded generator: a time in the
//! run's duration (any phase, as a user's kill lands), and the N-th write of state, where
//! `EATNAS_CHAOS=kill-at-write:N` makes the process kill itself with the new contents written
//! but not renamed into place, or half a history line appended (`eatnas_train::fs::chaos_point`).
//! Every second resume is itself killed once at a random time before it is resumed again.
//!
//! With `--checkpoint-every-step` every job's training checkpoints at every step (`[executor]
//! checkpoint_minutes = 0`), so that kills land inside the jobs' trainings and the resumed run's
//! jobs continue from their checkpoints, which must also end as the uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

const STAGES: [&str; 3] = ["stage1", "transfer", "scratch"];

/// How a run was stopped.
enum Kill {
    /// SIGKILL from outside after this long.
    After(Duration),
    /// The process's own SIGKILL at its N-th write.
    AtWrite(usize),
}

/// What one killed-and-resumed run showed.
struct Trial {
    moment: String,
    resumes: usize,
    /// Jobs the resumes continued from a checkpoint of their training.
    continued: usize,
    differences: Vec<String>,
}

#[derive(clap::Args)]
pub struct Args {
    /// How many killed-and-resumed runs.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Seeds the kill moments.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The configuration to run (default: configs/tiny.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the runs go (default: target/chaos).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Jobs checkpoint their training at every step, so that kills land inside job trainings
    /// and each resumed job continues from its checkpoint.
    #[arg(long)]
    checkpoint_every_step: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let root = crate::kernels::workspace_root();
    let (kills, seed) = (args.kills, args.seed);
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| root.join("configs/tiny.toml"));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("target/chaos"));
    let cli = build_cli(&root)?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let config = if args.checkpoint_every_step {
        checkpointing_every_step(&config, &out)?
    } else {
        config
    };

    let reference = out.join("reference");
    let (duration, writes) = reference_run(&cli, &config, &reference)?;
    let mut rng = SplitMix(seed);
    let mut trials = Vec::new();
    for k in 0..kills {
        let dir = out.join(format!("kill-{k:02}"));
        let mut kill = if k % 2 == 0 {
            Kill::After(duration.mul_f64(0.05 + 0.8 * rng.unit()))
        } else {
            Kill::AtWrite(1 + rng.below(writes.max(1)))
        };
        // A run faster than the uninterrupted one may end before a late kill: try earlier.
        let trial = loop {
            let next = match kill {
                Kill::After(t) => Some(Kill::After(t / 2)),
                Kill::AtWrite(_) => None,
            };
            let trial = trial(
                &cli,
                &config,
                &dir,
                &reference,
                kill,
                k % 2 == 1,
                duration,
                &mut rng,
            )?;
            match next {
                Some(earlier) if trial.resumes == 0 => {
                    std::fs::remove_dir_all(&dir)?;
                    kill = earlier;
                }
                _ => break trial,
            }
        };
        let continued = match trial.continued {
            0 => String::new(),
            n => format!(", {n} job(s) continued from their checkpoint"),
        };
        println!(
            "chaos: kill {k}: {}; {} resume(s){continued}; {}",
            trial.moment,
            trial.resumes,
            if trial.differences.is_empty() {
                "the same as uninterrupted".to_string()
            } else {
                format!("DIFFERENT: {}", trial.differences.join("; "))
            }
        );
        trials.push(trial);
    }
    let failed = trials.iter().filter(|t| !t.differences.is_empty()).count();
    let unkilled = trials.iter().filter(|t| t.resumes == 0).count();
    if unkilled > 0 {
        println!("chaos: {unkilled} run(s) ended before their kill came (compared all the same)");
    }
    println!("{} passed, {failed} failed", trials.len() - failed);
    if failed > 0 {
        bail!("{failed} of {kills} killed runs did not end as the uninterrupted run");
    }
    Ok(())
}

/// Builds eatnas-cli in release mode; returns its path.
pub(crate) fn build_cli(root: &Path) -> Result<PathBuf> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["build", "--release", "-q", "-p", "eatnas-cli"])
        .status()?;
    if !status.success() {
        bail!("cargo build -p eatnas-cli failed");
    }
    Ok(root.join("target/release/eatnas-cli"))
}

/// A copy of `config` (written into `out`) whose jobs checkpoint at every step.
fn checkpointing_every_step(config: &Path, out: &Path) -> Result<PathBuf> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    if text.contains("checkpoint_minutes") {
        bail!(
            "{} sets checkpoint_minutes already; --checkpoint-every-step sets it to 0",
            config.display()
        );
    }
    let setting = "checkpoint_minutes = 0\n";
    let text = match text.find("[executor]\n") {
        Some(at) => {
            let after = at + "[executor]\n".len();
            format!("{}{setting}{}", &text[..after], &text[after..])
        }
        None => format!("{text}\n[executor]\n{setting}"),
    };
    let path = out.join("config-checkpoint-every-step.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs the pipeline of `config` into `dir` uninterrupted; returns its duration and how many
/// writes of state it made.
pub(crate) fn reference_run(cli: &Path, config: &Path, dir: &Path) -> Result<(Duration, usize)> {
    let started = Instant::now();
    let output = pipeline(cli, config, dir)
        .env("EATNAS_CHAOS", "log")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running the uninterrupted pipeline")?;
    let duration = started.elapsed();
    if !output.status.success() {
        bail!(
            "the uninterrupted run failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let writes = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.starts_with("chaos: write "))
        .count();
    println!(
        "chaos: the uninterrupted run took {:.1} s and wrote state {writes} times",
        duration.as_secs_f64()
    );
    Ok((duration, writes))
}

/// One run killed as `kill` says, then resumed until it finishes (the first resume killed
/// again when `kill_resume`), then compared with `reference`.
#[allow(clippy::too_many_arguments)]
fn trial(
    cli: &Path,
    config: &Path,
    dir: &Path,
    reference: &Path,
    kill: Kill,
    kill_resume: bool,
    duration: Duration,
    rng: &mut SplitMix,
) -> Result<Trial> {
    let mut command = pipeline(cli, config, dir);
    if let Kill::AtWrite(n) = kill {
        command.env("EATNAS_CHAOS", format!("kill-at-write:{n}"));
    }
    let (killed, stderr) = run_killed(command, &kill)?;
    let phase = phase(dir);
    let mut moment = match (&kill, killed) {
        (Kill::After(t), true) => format!("SIGKILL at {:.2} s, {phase}", t.as_secs_f64()),
        (Kill::AtWrite(_), true) => {
            let line = stderr
                .lines()
                .find_map(|l| l.strip_prefix("chaos: killed at "))
                .unwrap_or("a write");
            let shown = line.replace(&format!("{}/", dir.display()), "");
            format!("SIGKILL at {shown}, {phase}")
        }
        (_, false) => "the run finished before the kill came".to_string(),
    };
    let mut resumes = 0;
    let mut continued = 0;
    let count_continued = |stderr: &str| {
        stderr
            .matches("continuing the training from its checkpoint")
            .count()
    };
    if killed {
        let mut kill_next = kill_resume;
        loop {
            resumes += 1;
            if resumes > 10 {
                bail!("{}: still not finished after 10 resumes", dir.display());
            }
            let mut command = resume_command(cli, config, dir);
            if kill_next {
                kill_next = false;
                let t = duration.mul_f64(0.5 * rng.unit());
                let (killed_again, stderr) = run_killed(command, &Kill::After(t))?;
                continued += count_continued(&stderr);
                if killed_again {
                    moment += &format!("; its resume killed at {:.2} s", t.as_secs_f64());
                    continue;
                }
                break;
            }
            let output = command
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()?;
            if !output.status.success() {
                bail!(
                    "{}: resume failed:\n{}",
                    dir.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            continued += count_continued(&String::from_utf8_lossy(&output.stderr));
            break;
        }
    }
    Ok(Trial {
        moment,
        resumes,
        continued,
        differences: differences(reference, dir)?,
    })
}

/// `resume DIR`, or `run` again where the kill came before the search began (what a user does
/// when resume says so).
fn resume_command(cli: &Path, config: &Path, dir: &Path) -> Command {
    if dir.join("config.toml").exists() {
        let mut command = Command::new(cli);
        command.arg("resume").arg(dir);
        command
    } else {
        pipeline(cli, config, dir)
    }
}

/// `eatnas-cli run --config CONFIG --out DIR`: the whole pipeline.
pub(crate) fn pipeline(cli: &Path, config: &Path, dir: &Path) -> Command {
    let mut command = Command::new(cli);
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(dir);
    command
}

/// Runs `command` until it ends or `kill` stops it; returns whether it was killed, and its stderr.
fn run_killed(mut command: Command, kill: &Kill) -> Result<(bool, String)> {
    use std::os::unix::process::ExitStatusExt;
    let stderr_path = std::env::temp_dir().join(format!("eatnas-chaos-{}.log", std::process::id()));
    let stderr = std::fs::File::create(&stderr_path)?;
    let mut child: Child = command.stdout(Stdio::null()).stderr(stderr).spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Kill::After(t) = kill {
            if started.elapsed() >= *t {
                child.kill()?; // SIGKILL
                break child.wait()?;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    let killed = status.signal() == Some(9);
    if !killed && !status.success() {
        bail!("{command:?} failed: {text}");
    }
    Ok((killed, text))
}

/// Where a run folder is: the evaluations in each stage's history, and the final training.
fn phase(dir: &Path) -> String {
    let mut parts: Vec<String> = STAGES
        .iter()
        .filter_map(|stage| {
            let text = std::fs::read_to_string(dir.join(stage).join("history.jsonl")).ok()?;
            Some(format!("{stage} {} evaluated", text.lines().count()))
        })
        .collect();
    if dir.join("final").exists() {
        parts.push("in the final training".into());
    }
    if parts.is_empty() {
        "before stage 1's first evaluation".into()
    } else {
        parts.join(", ")
    }
}

/// What differs between the uninterrupted run and `dir`.
pub(crate) fn differences(reference: &Path, dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for file in ["final_arch.json", "final/model.safetensors"] {
        let (a, b) = (
            std::fs::read(reference.join(file)),
            std::fs::read(dir.join(file)),
        );
        match (a, b) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(_), Ok(_)) => found.push(format!("{file} differs")),
            (_, Err(e)) => found.push(format!("{file}: {e}")),
            (Err(e), _) => bail!("the uninterrupted run has no {file}: {e}"),
        }
    }
    for stage in STAGES {
        let read = |d: &Path| -> Result<Vec<(Value, Value)>> {
            let path = d.join(stage).join("history.jsonl");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            text.lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l)
                        .with_context(|| format!("{}: a line is not JSON", path.display()))?;
                    Ok((v["genome"].clone(), v["fitness"].clone()))
                })
                .collect()
        };
        let (want, got) = (read(reference)?, read(dir));
        match got {
            Ok(got) if got == want => {}
            Ok(got) => {
                let first = want.iter().zip(&got).position(|(a, b)| a != b);
                found.push(match first {
                    Some(i) => format!("{stage} history differs at evaluation {}", i + 1),
                    None => format!(
                        "{stage} history has {} lines, not {}",
                        got.len(),
                        want.len()
                    ),
                });
            }
            Err(e) => found.push(format!("{e:#}")),
        }
    }
    Ok(found)
}

/// SplitMix64: the moments are drawn from `--seed` alone.
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
