//! `cargo xtask bench cpu`: the criterion rows of `benches/ops.rs` beside PyTorch on the same
//! shapes, threads and machine, in one run, as one table. `cargo xtask bench data`: the input
//! pipeline's rows of `benches/data.rs` (JPEG folders at 224) beside PyTorch's `DataLoader`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// What `bench` measures.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Target {
    /// The CPU backend's ops and training steps.
    Cpu,
    /// The input pipeline: JPEG images decoded, resized and batched at 224, as ImageNet is read.
    Data,
}

#[derive(clap::Args)]
pub struct Args {
    /// What to benchmark.
    #[arg(value_enum)]
    target: Target,
    /// The last line of stdout is a JSON array of the rows.
    #[arg(long)]
    json: bool,
    /// Threads for both sides (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    threads: Option<u64>,
    /// Only these rows (names separated by commas).
    #[arg(long, value_delimiter = ',')]
    rows: Option<Vec<String>>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs `command`, its stderr passed through; returns its stdout.
fn output(command: &mut Command, what: &str) -> Result<String> {
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Builds the bench binary `name` (`benches/NAME.rs`) and returns its path.
fn bench_binary(root: &Path, name: &str) -> Result<PathBuf> {
    let text = output(
        Command::new(env!("CARGO")).current_dir(root).args([
            "bench",
            "--bench",
            name,
            "--no-run",
            "--message-format=json",
        ]),
        "cargo bench --no-run",
    )?;
    json_lines(&text)
        .iter()
        .filter(|m| m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| anyhow!("cargo built no `{name}` bench executable"))
}

/// A Python that imports torch: what `scripts/python-env.sh` prints (`$EATNAS_PYTHON`, else the
/// virtual environment under `target/`, created with pip when missing).
fn python(root: &Path) -> Result<PathBuf> {
    let out = Command::new(root.join("scripts/python-env.sh"))
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/python-env.sh")?;
    if !out.status.success() {
        bail!("scripts/python-env.sh failed: no Python with PyTorch for the baselines");
    }
    let path = String::from_utf8(out.stdout).context("scripts/python-env.sh printed non-UTF-8")?;
    Ok(PathBuf::from(path.trim()))
}

/// Criterion's median of one row, in milliseconds.
fn criterion_median_ms(criterion_home: &Path, name: &str) -> Result<f64> {
    let path = criterion_home.join(name).join("new/estimates.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "criterion wrote no estimates for {name} ({})",
            path.display()
        )
    })?;
    let estimates: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    estimates["median"]["point_estimate"]
        .as_f64()
        .map(|ns| ns / 1e6)
        .ok_or_else(|| anyhow!("{}: no median.point_estimate", path.display()))
}

/// The PyTorch baseline's median ms of row `name` (one JSON line per row).
fn baseline_ms(rows: &[Value], name: &str) -> Result<f64> {
    let row = rows
        .iter()
        .find(|r| r["name"] == name)
        .ok_or_else(|| anyhow!("the PyTorch baseline has no row {name}"))?;
    number(row, "ms", name)
}

/// The bench binary, run from the workspace root on `threads` threads.
fn bench_command(binary: &Path, root: &Path, threads: &str) -> Command {
    let mut command = Command::new(binary);
    command.current_dir(root).env("RAYON_NUM_THREADS", threads);
    command
}

fn number(value: &Value, key: &str, what: &str) -> Result<f64> {
    value[key]
        .as_f64()
        .ok_or_else(|| anyhow!("{what}: no number {key:?} in {value}"))
}

impl Args {
    /// Threads for both sides: `--threads`, else one per core.
    fn threads(&self) -> String {
        self.threads
            .map_or_else(crate::cores, |n| n as usize)
            .to_string()
    }
}

pub fn run(options: &Args) -> Result<()> {
    match options.target {
        Target::Cpu => run_ops(options),
        Target::Data => run_data(options),
    }
}

fn run_ops(options: &Args) -> Result<()> {
    let threads = options.threads();
    let root = root();
    let shared = root.join("../shared");
    if !shared.join("fixtures/torch/counts.json").is_file() {
        bail!(
            "{} has no fixtures/torch/counts.json: the benchmarks read their networks from ../shared",
            shared.display()
        );
    }
    let python = python(&root)?;
    let binary = bench_binary(&root, "ops")?;
    let bench = || bench_command(&binary, &root, &threads);

    let mut rows = json_lines(&output(
        bench().env("EATNAS_BENCH_LIST", "1"),
        "the bench binary (listing rows)",
    )?);
    if let Some(wanted) = &options.rows {
        for name in wanted {
            if !rows.iter().any(|r| r["name"] == name.as_str()) {
                bail!("no benchmark row named {name:?}");
            }
        }
        rows.retain(|r| wanted.iter().any(|w| r["name"] == w.as_str()));
    }
    let names: Vec<String> = rows
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect();

    eprintln!("measuring this machine's ceilings on {threads} threads");
    let ceilings = json_lines(&output(
        bench().env("EATNAS_BENCH_CEILINGS", "1"),
        "the bench binary (ceilings)",
    )?);
    let ceilings = ceilings
        .first()
        .ok_or_else(|| anyhow!("no ceilings measured"))?;
    let (peak_gflops, peak_gbps) = (
        number(ceilings, "gflops", "ceilings")?,
        number(ceilings, "gbps", "ceilings")?,
    );

    eprintln!("eatnas: criterion on {threads} threads");
    let criterion_home = root.join("target/criterion");
    let filter = format!("^({})$", names.join("|"));
    let status = bench()
        .env("CRITERION_HOME", &criterion_home)
        .args(["--bench", "--noplot", &filter])
        .stdout(std::io::stderr())
        .status()
        .context("could not start the bench binary")?;
    if !status.success() {
        bail!("the criterion benches failed ({status})");
    }

    eprintln!("PyTorch: {} on {threads} threads", python.display());
    let script = root.join("benches/baselines/pytorch_ops.py");
    let baseline = || {
        let mut command = Command::new(&python);
        command
            .arg(&script)
            .args(["--threads", &threads])
            .env("EATNAS_SHARED", &shared);
        command
    };
    let torch = json_lines(&output(
        baseline().args(["--rows", &names.join(",")]),
        "the PyTorch baseline",
    )?);

    let mut table = Vec::new();
    for row in &rows {
        let name = row["name"].as_str().unwrap_or_default();
        let eatnas_ms = criterion_median_ms(&criterion_home, name)?;
        let pytorch_ms = baseline_ms(&torch, name)?;
        let (flops, bytes) = (number(row, "flops", name)?, number(row, "bytes", name)?);
        let floor_ms = (flops / (peak_gflops * 1e9)).max(bytes / (peak_gbps * 1e9)) * 1e3;
        let mut entry = json!({
            "name": name,
            "eatnas_ms": eatnas_ms,
            "pytorch_ms": pytorch_ms,
            "ratio": eatnas_ms / pytorch_ms,
            "gflops": flops / eatnas_ms / 1e6,
            "gbps": bytes / eatnas_ms / 1e6,
            "floor_ms": floor_ms,
            "floor_ratio": eatnas_ms / floor_ms,
        });
        if row["trains"] == true {
            eprintln!("peak memory of {name}: one process per side");
            let ours = json_lines(&output(
                bench().env("EATNAS_BENCH_MEMORY", name),
                "the bench binary (memory)",
            )?);
            let theirs = json_lines(&output(
                baseline().args(["--memory", name]),
                "PyTorch (memory)",
            )?);
            let (ours, theirs) = (
                ours.first()
                    .ok_or_else(|| anyhow!("no memory reading for {name}"))?,
                theirs
                    .first()
                    .ok_or_else(|| anyhow!("no PyTorch memory reading for {name}"))?,
            );
            let peak = |v: &Value| number(v, "peak_mb", name);
            let work = |v: &Value| Ok::<f64, anyhow::Error>(peak(v)? - number(v, "base_mb", name)?);
            entry["eatnas_peak_mb"] = json!(peak(ours)?);
            entry["pytorch_peak_mb"] = json!(peak(theirs)?);
            entry["eatnas_work_mb"] = json!(work(ours)?);
            entry["pytorch_work_mb"] = json!(work(theirs)?);
        }
        table.push(entry);
    }

    print_table(&table, peak_gflops, peak_gbps, &threads);
    if options.json {
        println!("{}", Value::Array(table));
    }
    Ok(())
}

/// The rows of `benches/data.rs` and the images each run reads.
const DATA_ROWS: [(&str, f64); 3] = [
    ("data_decode", 1.0),
    ("data_read_224", 1.0),
    ("data_batch64_224", 64.0),
];

/// `cargo xtask bench data`: each row's median ms on both sides and the images per second they
/// make, in all and per thread (the read row runs on one).
fn run_data(options: &Args) -> Result<()> {
    if options.rows.is_some() {
        bail!("--rows selects rows of `bench cpu`; `bench data` has three, always run");
    }
    let threads = options.threads();
    let root = root();
    let python = python(&root)?;
    let binary = bench_binary(&root, "data")?;
    let bench = || bench_command(&binary, &root, &threads);
    let folder = output(
        bench().env("EATNAS_BENCH_DATA_DIR", "1"),
        "the data bench binary (writing its images)",
    )?;
    let folder = folder.trim();
    eprintln!("eatnas: criterion on {threads} threads, images in {folder}");
    let criterion_home = root.join("target/criterion");
    let status = bench()
        .env("CRITERION_HOME", &criterion_home)
        .args(["--bench", "--noplot"])
        .stdout(std::io::stderr())
        .status()
        .context("could not start the data bench binary")?;
    if !status.success() {
        bail!("the data benches failed ({status})");
    }
    eprintln!(
        "PyTorch: {} on {threads} worker processes",
        python.display()
    );
    let torch = json_lines(&output(
        Command::new(&python)
            .arg(root.join("benches/baselines/pytorch_data.py"))
            .args(["--folder", folder, "--threads", &threads]),
        "the PyTorch data baseline",
    )?);
    let workers: f64 = threads.parse().unwrap_or(1.0);
    // The decode is the floor of a read: an image's thread-milliseconds over its decode's.
    let eatnas_decode = criterion_median_ms(&criterion_home, "data_decode")?;
    let pytorch_decode = baseline_ms(&torch, "data_decode")?;
    let mut table = Vec::new();
    for (name, images) in DATA_ROWS {
        let eatnas_ms = criterion_median_ms(&criterion_home, name)?;
        let pytorch_ms = baseline_ms(&torch, name)?;
        let threads_used = if images > 1.0 { workers } else { 1.0 };
        table.push(json!({
            "name": name,
            "eatnas_ms": eatnas_ms,
            "pytorch_ms": pytorch_ms,
            "ratio": eatnas_ms / pytorch_ms,
            "eatnas_images_per_s": images / eatnas_ms * 1e3,
            "pytorch_images_per_s": images / pytorch_ms * 1e3,
            "threads": threads_used,
            "eatnas_x_decode": eatnas_ms * threads_used / images / eatnas_decode,
            "pytorch_x_decode": pytorch_ms * threads_used / images / pytorch_decode,
        }));
    }
    println!("input pipeline on this machine, {threads} threads (PyTorch: as many DataLoader worker processes)");
    println!(
        "{:<20} {:>10} {:>10} {:>6} {:>13} {:>13} {:>17} {:>15}",
        "row",
        "eatnas ms",
        "torch ms",
        "ratio",
        "eatnas img/s",
        "torch img/s",
        "img/s/thread e/t",
        "x decode e/t"
    );
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    for r in &table {
        println!(
            "{:<20} {:>10.2} {:>10.2} {:>6.2} {:>13.0} {:>13.0} {:>8.0} / {:<8.0} {:>6.2} / {:<6.2}",
            r["name"].as_str().unwrap_or_default(),
            f(r, "eatnas_ms"),
            f(r, "pytorch_ms"),
            f(r, "ratio"),
            f(r, "eatnas_images_per_s"),
            f(r, "pytorch_images_per_s"),
            f(r, "eatnas_images_per_s") / f(r, "threads"),
            f(r, "pytorch_images_per_s") / f(r, "threads"),
            f(r, "eatnas_x_decode"),
            f(r, "pytorch_x_decode"),
        );
    }
    println!("x decode: an image's thread-milliseconds over its side's JPEG decode alone (data_decode), the floor of a read");
    if options.json {
        println!("{}", Value::Array(table));
    }
    Ok(())
}

fn print_table(table: &[Value], peak_gflops: f64, peak_gbps: f64, threads: &str) {
    println!(
        "ceilings on this machine, {threads} threads: {peak_gflops:.0} GFLOP/s float32 (gemm 2048^3), {peak_gbps:.1} GB/s (copy, read+write)"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>6} {:>8} {:>6} {:>9} {:>7} {:>17} {:>17}",
        "row",
        "eatnas ms",
        "torch ms",
        "ratio",
        "GFLOP/s",
        "GB/s",
        "floor ms",
        "x floor",
        "peak MB (e / t)",
        "work MB (e / t)"
    );
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    for r in table {
        let memory = |a: &str, b: &str| {
            if r.get(a).is_some() {
                format!("{:.0} / {:.0}", f(r, a), f(r, b))
            } else {
                "-".into()
            }
        };
        println!(
            "{:<34} {:>10.2} {:>10.2} {:>6.2} {:>8.1} {:>6.1} {:>9.2} {:>7.1} {:>17} {:>17}",
            r["name"].as_str().unwrap_or_default(),
            f(r, "eatnas_ms"),
            f(r, "pytorch_ms"),
            f(r, "ratio"),
            f(r, "gflops"),
            f(r, "gbps"),
            f(r, "floor_ms"),
            f(r, "floor_ratio"),
            memory("eatnas_peak_mb", "pytorch_peak_mb"),
            memory("eatnas_work_mb", "pytorch_work_mb"),
        );
    }
    println!("peak MB: the process's peak resident memory running that row alone; work MB: that peak less the resident memory just before the first run (inputs, parameters, runtime in place)");
}
