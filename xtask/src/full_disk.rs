//! `cargo xtask full-disk [--points N] [--seed S]`: a search and a training run on a disk that
//! fills up mid-run. Each must stop with an error naming the file it could not write, leave
//! every file written before readable (states, histories, checkpoints), and, resumed once there
//! is space again, end exactly as an uninterrupted run.
//!
//! Two ways to fill the disk, both run where they can be:
//! - a real one: a small tmpfs mounted for the run (as root), grown with `mount -o remount` before
//!   the resume;
//! - an injected one, wherever mounting is refused too: `EATNAS_CHAOS=full-at-write:K` makes the
//!   K-th write of state and every later one fail with ENOSPC at the calls a full disk fails
//!   (`eatnas_train::fs::chaos_point`), K at N seeded points of the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::chaos::{build_cli, differences, pipeline, reference_run, SplitMix};

const MICRO: &str = r#"{"format":"eatnas-arch/1","name":"micro","stem":{"channels":8,"kernel":3,"stride":2},
 "blocks":[{"op":"mb3","kernel":3,"skip":true,"layers":2,"width":1.0,"base_channels":8,"stride":1},
           {"op":"sep","kernel":5,"skip":true,"layers":1,"width":1.0,"base_channels":16,"stride":2}],
 "head":{"channels":32}}"#;

#[derive(clap::Args)]
pub struct Args {
    /// How many points the disk fills up at.
    #[arg(long, default_value_t = 3)]
    points: usize,
    /// Seeds the points.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: &Args) -> Result<()> {
    let root = crate::kernels::workspace_root();
    let (points, seed) = (args.points, args.seed);
    let cli = build_cli(&root)?;
    let config = root.join("configs/tiny.toml");
    let out = root.join("target/full-disk");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let reference = out.join("reference");
    let (_, writes) = reference_run(&cli, &config, &reference)?;
    let arch = out.join("micro.json");
    std::fs::write(&arch, MICRO)?;
    let train_reference = out.join("train-reference");
    succeed(train(&cli, &arch, &train_reference))?;

    let mut cases = 0;
    let mut rng = SplitMix(seed);
    for p in 0..points {
        let at = 1 + rng.below(writes);
        let dir = out.join(format!("injected-{p}"));
        let mut command = pipeline(&cli, &config, &dir);
        command.env("EATNAS_CHAOS", format!("full-at-write:{at}"));
        let error = fail(command)?;
        check_intact(&dir)?;
        succeed(resume(&cli, &dir))?;
        expect_same(&reference, &dir)?;
        println!("full-disk: search, write {at} of {writes} onwards refused: `{error}`; every file before it readable; resumed to the uninterrupted result");
        cases += 1;
    }
    match Tmpfs::mount(&out.join("tmpfs")) {
        Ok(tmpfs) => {
            // The search: room for a part of what it writes.
            let reference_bytes = folder_bytes(&reference);
            tmpfs.resize(reference_bytes / 3)?;
            let dir = tmpfs.path.join("search");
            let error = fail(pipeline(&cli, &config, &dir))?;
            check_intact(&dir)?;
            tmpfs.resize(64 << 20)?;
            succeed(resume(&cli, &dir))?;
            expect_same(&reference, &dir)?;
            println!("full-disk: search on a {} KiB tmpfs: `{error}`; every file before it readable; resumed after growing it to the uninterrupted result", (reference_bytes / 3) >> 10);
            // The training: room for its first checkpoint, not for the next ones.
            // tmpfs counts whole pages. A checkpoint replaces each file through a temporary
            // copy, so the first fits in the files' pages plus a few for the small files, and
            // the next needs the smaller file's pages once more.
            let pages = |file: &str| -> Result<u64> {
                Ok(std::fs::metadata(train_reference.join(file))?
                    .len()
                    .div_ceil(4096)
                    * 4096)
            };
            let (model, state) = (
                pages("model.safetensors")?,
                pages("train_state.safetensors")?,
            );
            let room = model + state + 3 * 4096 + model.min(state) / 2;
            std::fs::remove_dir_all(&dir)?;
            tmpfs.resize(room)?;
            let dir = tmpfs.path.join("train");
            let error = fail(train(&cli, &arch, &dir))?;
            let evaluated = succeed(eval(&cli, &dir))?;
            tmpfs.resize(64 << 20)?;
            succeed(resume_training(&cli, &dir))?;
            // The weights; the training state also holds timings, which differ by nature.
            let file = "model.safetensors";
            if std::fs::read(dir.join(file))? != std::fs::read(train_reference.join(file))? {
                bail!("the resumed training's {file} differs from the uninterrupted one's");
            }
            println!(
                "full-disk: training on a {} KiB tmpfs: `{error}`; its last checkpoint evaluates ({}); resumed after growing it to the uninterrupted weights, byte for byte",
                room >> 10,
                evaluated.trim()
            );
            cases += 2;
        }
        Err(why) => println!("full-disk: no tmpfs ({why}); the injected full disk stands for it"),
    }
    println!("{cases} passed, 0 failed");
    Ok(())
}

fn resume(cli: &Path, dir: &Path) -> Command {
    let mut command = Command::new(cli);
    command.arg("resume").arg(dir);
    command
}

/// A short training with a checkpoint every few steps.
fn train(cli: &Path, arch: &Path, dir: &Path) -> Command {
    let mut command = Command::new(cli);
    command
        .arg("train")
        .arg("--arch")
        .arg(arch)
        .arg("--out")
        .arg(dir);
    command.args([
        "--resolution",
        "14",
        "--data-fraction",
        "0.1",
        "--epochs",
        "2",
    ]);
    command.args(["--batch-size", "64", "--checkpoint-every", "5"]);
    command
}

fn resume_training(cli: &Path, dir: &Path) -> Command {
    let mut command = Command::new(cli);
    command.arg("train").arg("--resume").arg(dir);
    command
}

fn eval(cli: &Path, dir: &Path) -> Command {
    let mut command = Command::new(cli);
    command.arg("eval").arg("--checkpoint").arg(dir);
    command
}

fn output(mut command: Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))
}

/// Runs `command`, which must succeed; returns its stdout.
fn succeed(command: Command) -> Result<String> {
    let shown = format!("{command:?}");
    let out = output(command)?;
    if !out.status.success() {
        bail!("{shown} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `command`, which must fail with a full-disk error naming a file; returns that error.
fn fail(command: Command) -> Result<String> {
    let shown = format!("{command:?}");
    let out = output(command)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        bail!("{shown} succeeded on a full disk");
    }
    if stderr.contains("panicked") {
        bail!("{shown} panicked on a full disk:\n{stderr}");
    }
    // The error it stopped with (warnings about the report may come before it).
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("No space left on device"))
        .with_context(|| format!("{shown}: no full-disk error in its output:\n{stderr}"))?;
    if !line.contains('/') {
        bail!("{shown}: the error does not name the file: {line}");
    }
    Ok(line.trim().to_string())
}

/// Every state, history and weights file in `dir` reads back: JSON files parse, history lines
/// parse but for a torn last one, safetensors files are whole.
fn check_intact(dir: &Path) -> Result<()> {
    for path in files(dir) {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with('.') {
            continue; // a temporary file: never renamed into place
        }
        let bytes = std::fs::read(&path)?;
        let bad = |why: &str| {
            anyhow::anyhow!(
                "{} is not intact after the full disk: {why}",
                path.display()
            )
        };
        if name.ends_with(".json") {
            serde_json::from_slice::<Value>(&bytes).map_err(|_| bad("not JSON"))?;
        } else if name.ends_with(".jsonl") {
            let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
            let lines: Vec<&str> = text.lines().collect();
            let whole = if text.ends_with('\n') {
                lines.len()
            } else {
                lines.len().saturating_sub(1)
            };
            for line in &lines[..whole] {
                serde_json::from_str::<Value>(line).map_err(|_| bad("a line is not JSON"))?;
            }
        } else if name.ends_with(".safetensors") {
            safetensors_whole(&bytes).map_err(|why| bad(&why))?;
        }
    }
    Ok(())
}

/// A safetensors file's header parses and its data is as long as the header says.
fn safetensors_whole(bytes: &[u8]) -> std::result::Result<(), String> {
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .ok_or("shorter than its header")?
            .try_into()
            .unwrap(),
    ) as usize;
    let header: Value = serde_json::from_slice(bytes.get(8..8 + n).ok_or("header cut")?)
        .map_err(|_| "header is not JSON")?;
    let end = header
        .as_object()
        .ok_or("header is not an object")?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v["data_offsets"][1].as_u64())
        .max()
        .unwrap_or(0) as usize;
    if bytes.len() != 8 + n + end {
        return Err(format!(
            "{} bytes; its header says {}",
            bytes.len(),
            8 + n + end
        ));
    }
    Ok(())
}

fn expect_same(reference: &Path, dir: &Path) -> Result<()> {
    let found = differences(reference, dir)?;
    if !found.is_empty() {
        bail!(
            "{} did not end as the uninterrupted run: {}",
            dir.display(),
            found.join("; ")
        );
    }
    Ok(())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn folder_bytes(dir: &Path) -> u64 {
    files(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// A tmpfs mounted at `path` while this value lives.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path) -> std::result::Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "eatnas-full-disk"])
            .arg(path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Sets its size (rounded up to pages by the kernel).
    fn resize(&self, bytes: u64) -> Result<()> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={}", bytes.max(4096))])
            .arg(&self.path)
            .output()?;
        if !out.status.success() {
            bail!(
                "remounting the tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}
