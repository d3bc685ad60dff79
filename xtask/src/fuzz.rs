//! `cargo xtask fuzz [--seconds N] [--jobs J] [--build-only] [TARGET...]`: the fuzz targets of `tests/fuzz` under
//! libFuzzer (cargo-fuzz, nightly toolchain), each for N seconds from its committed seeds
//! (`tests/fuzz/seeds/TARGET`) plus the corpus grown by earlier runs
//! (`target/fuzz/corpus/TARGET`), J processes (default: one per core) at a time, then a table of executions,
//! coverage and outcome. A crash, a leak, a time-out or an allocation over the limit fails the
//! command and names the input that caused it (`target/fuzz/artifacts/TARGET/`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Seconds per target unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 20;
/// Largest single allocation libFuzzer lets an input cause: the readers must refuse a header
/// that claims more than its file holds before allocating for it.
const MALLOC_LIMIT_MB: u64 = 256;
/// Longest one input may take.
const TIMEOUT_SECONDS: u64 = 10;

/// What one target's run showed.
struct Outcome {
    target: String,
    executions: u64,
    coverage: u64,
    features: u64,
    corpus: usize,
    failure: Option<String>,
}

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    seconds: u64,
    /// libFuzzer processes at a time (default: one per core; each is single-threaded).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    /// Build the targets and stop (CI builds them at low priority while its tests run).
    #[arg(long)]
    build_only: bool,
    /// The targets to run (default: every one).
    targets: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let seconds = args.seconds;
    let jobs = args.jobs.map_or_else(crate::cores, |n| n as usize);
    let mut targets = args.targets.clone();
    let root = crate::kernels::workspace_root();
    let fuzz_dir = root.join("tests/fuzz");
    let known = list_targets(&fuzz_dir)?;
    if targets.is_empty() {
        targets = known.clone();
    }
    if let Some(unknown) = targets.iter().find(|t| !known.contains(t)) {
        bail!(
            "fuzz: no target `{unknown}`; the targets are {}",
            known.join(", ")
        );
    }
    ensure_cargo_fuzz()?;
    let status = cargo_fuzz(&root)
        .args(["build", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed");
    }
    if args.build_only {
        println!("fuzz: built {} targets", known.len());
        return Ok(());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, targets.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(target) = targets.get(i) else { break };
                let outcome = fuzz_one(&root, &fuzz_dir, target, seconds);
                results.lock().unwrap().push((i, outcome));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let outcomes = results
        .into_iter()
        .map(|(_, o)| o)
        .collect::<Result<Vec<_>>>()?;
    println!(
        "\n{:<14} {:>8} {:>12} {:>10} {:>8} {:>8}  result",
        "target", "seconds", "executions", "exec/s", "cov", "corpus"
    );
    for o in &outcomes {
        println!(
            "{:<14} {:>8} {:>12} {:>10.0} {:>8} {:>8}  {}",
            o.target,
            seconds,
            o.executions,
            o.executions as f64 / seconds.max(1) as f64,
            format!("{}/{}", o.coverage, o.features),
            o.corpus,
            o.failure.as_deref().unwrap_or("ok")
        );
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} fuzz targets failed: {}",
            failed.len(),
            outcomes.len(),
            failed
                .iter()
                .map(|o| o.target.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("{} passed, 0 failed", outcomes.len());
    Ok(())
}

/// The `[[bin]]` names of the fuzz crate.
fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(fuzz_dir.join("Cargo.toml"))
        .with_context(|| format!("reading {}/Cargo.toml", fuzz_dir.display()))?;
    Ok(manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|name| *name != "eatnas-fuzz")
        .map(str::to_string)
        .collect())
}

/// `cargo +nightly fuzz`, run from the workspace root.
fn cargo_fuzz(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(root).args(["+nightly", "fuzz"]);
    // The outer `cargo xtask` sets these for its own toolchain; the nightly cargo needs its own.
    for var in ["RUSTC", "RUSTDOC", "CARGO", "RUSTUP_TOOLCHAIN"] {
        command.env_remove(var);
    }
    command
}

/// Installs cargo-fuzz from crates.io when `cargo +nightly fuzz` is missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let works = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let has_nightly = works(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]));
    if !has_nightly {
        bail!("fuzzing needs the nightly toolchain (rustup toolchain install nightly)");
    }
    if works(Command::new("cargo").args(["+nightly", "fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("cargo-fuzz is missing: cargo install --locked cargo-fuzz");
    let status = Command::new("cargo")
        .args(["install", "--locked", "cargo-fuzz"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed");
    }
    Ok(())
}

fn fuzz_one(root: &Path, fuzz_dir: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let corpus = root.join("target/fuzz/corpus").join(target);
    let artifacts = root.join("target/fuzz/artifacts").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if !seeds.is_dir() {
        bail!("fuzz: {target} has no seed corpus ({})", seeds.display());
    }
    eprintln!("fuzz: {target} for {seconds} s");
    let log_path = root.join("target/fuzz").join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)?;
    // The files a target lays out for each input (tests/fuzz/src/lib.rs), in memory where
    // /dev/shm exists; removed after the run.
    let shm = Path::new("/dev/shm");
    let scratch = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
    .join(format!("eatnas-fuzz-{target}-{}", std::process::id()));
    let status = cargo_fuzz(root)
        .env("EATNAS_FUZZ_SCRATCH", &scratch)
        .args(["run", "--fuzz-dir"])
        .arg(fuzz_dir)
        .arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
        .arg(format!("-timeout={TIMEOUT_SECONDS}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running cargo fuzz run")?;
    let _ = std::fs::remove_dir_all(&scratch);
    let text = std::fs::read_to_string(&log_path)?;
    let failure = if status.success() {
        None
    } else {
        let artifact = text
            .lines()
            .rev()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .map(PathBuf::from);
        let reason = text
            .lines()
            .find(|l| {
                l.contains("ERROR: libFuzzer")
                    || l.contains("panicked at")
                    || l.contains("ERROR: AddressSanitizer")
            })
            .unwrap_or("exited with an error")
            .trim()
            .to_string();
        Some(match artifact {
            Some(a) => format!(
                "{reason} (input: {}; log: {})",
                a.display(),
                log_path.display()
            ),
            None => format!("{reason} (log: {})", log_path.display()),
        })
    };
    let stat = |name: &str| {
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    // The last status line: "#N  DONE  cov: C ft: F corp: ..." (or REDUCE/NEW/pulse).
    let last_status = text
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("cov: "));
    let field = |name: &str| {
        last_status
            .and_then(|l| l.split_whitespace().skip_while(|w| *w != name).nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Outcome {
        target: target.to_string(),
        executions: stat("number_of_executed_units"),
        coverage: field("cov:"),
        features: field("ft:"),
        corpus: std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0),
        failure,
    })
}
