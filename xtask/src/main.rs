//! `cargo xtask COMMAND`: project automation.
//!
//! - `bench cpu [--json] [--threads N] [--rows A,B]`: the CPU speed table, eatnas beside PyTorch.
//! - `build-kernels`: `kernels/*.cu` to the committed PTX in `kernels/ptx/`.
//! - `test`: every test, the CUDA backend's on the emulator included.
//! - `cuda-emulator [test]`: the kernels on the host behind a stand-in libcuda, for tests.
//! - `chaos [--kills N] [--seed S]`: the tiny pipeline killed with SIGKILL and resumed, N times.
//! - `full-disk [--points N]`: a search and a training on a disk that fills up, then resumed.
//! - `fuzz [--seconds N] [--jobs J] [TARGET...]`: the fuzz targets of `tests/fuzz` under libFuzzer.

mod bench;
mod chaos;
mod emulator;
mod full_disk;
mod fuzz;
mod kernels;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask COMMAND

commands:
  bench cpu [--json] [--threads N] [--rows NAME,NAME]
      criterion benches of benches/ops.rs and PyTorch (benches/baselines/pytorch_ops.py) on the
      same shapes in one run; prints median ms of each side, the ratio, GFLOP/s, GB/s, the ratio
      to the flop-or-byte floor and, for the rows that train, peak memory. PyTorch comes from
      $EATNAS_PYTHON, else from a virtual environment under target/ that this command creates
      with pip. --json: the last line of stdout is a JSON array of the rows.
  build-kernels
      compiles kernels/*.cu to PTX for compute_80 into kernels/ptx/ (committed),
      records the sources' hash and the ptxas resource usage for sm_90 (fails on a spill).
      nvcc comes from PATH, else CUDA_HOME, else a toolkit this command installs from PyPI
      into target/cuda-toolkit.
  test
      every test: `cargo test --workspace --release`, then the CUDA backend's op tests and the
      PyTorch fixtures on the host CUDA emulator (what .ci/run runs).
  cuda-emulator [test]
      builds target/cuda-emu/libcuda.so, a stand-in CUDA driver that runs kernels/*.cu on the
      host (kernels/emu/), so the CUDA backend is tested without a GPU; `test` runs the op and
      conformance tests on it (LD_LIBRARY_PATH=target/cuda-emu).
  chaos [--kills N] [--seed S] [--config C] [--out DIR]
      runs the pipeline of C (default configs/tiny.toml) once uninterrupted, then N times (default
      5) killed with SIGKILL at a seeded random moment (a time in the run, or the K-th write of
      state) and resumed (every second resume killed once more), into DIR (default
      target/chaos); each must end with the uninterrupted run's final_arch.json, histories
      (architectures and fitness) and final weights, byte for byte. Prints each kill's moment.
  full-disk [--points N] [--seed S]
      the tiny search and a short training on a disk that fills up mid-run: a small tmpfs (as
      root, where mounting works) and an injected ENOSPC from the K-th write on, at N (default
      3) seeded points; each must fail naming the file, leave every file before it readable,
      and resume once there is room to the uninterrupted result, byte for byte.
  fuzz [--seconds N] [--jobs J] [TARGET...]
      runs each fuzz target of tests/fuzz (every one by default) for N seconds (default 20), J at
      a time (default: one per core), under
      libFuzzer with cargo-fuzz and the nightly toolchain (cargo-fuzz is installed from crates.io
      when missing), from its seeds in tests/fuzz/seeds/TARGET and the corpus kept in
      target/fuzz/corpus/TARGET; prints executions, coverage and corpus size per target and fails
      on a crash, a time-out or an allocation over 256 MB, naming the input.
  help";

/// Set for every test run: the CPU workspace hands out NaN-filled buffers, so that a kernel that
/// reads what it did not write fails its test instead of reading the previous user's values.
pub const POISON_WORKSPACE: (&str, &str) = ("EATNAS_POISON_WORKSPACE", "1");

/// `cargo xtask test`: the workspace's tests, then the CUDA backend's on the emulator.
fn test(args: &[String]) -> anyhow::Result<()> {
    if let Some(arg) = args.first() {
        anyhow::bail!("test takes no arguments, got `{arg}`");
    }
    let root = kernels::workspace_root();
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["test", "--workspace", "--release"])
            .env(POISON_WORKSPACE.0, POISON_WORKSPACE.1)
            .status()?;
    if !status.success() {
        anyhow::bail!("cargo test --workspace --release failed");
    }
    let lib_dir = emulator::build(&root)?;
    emulator::test(&root, &lib_dir)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("bench") => bench::run(&args[1..]),
        Some("build-kernels") => kernels::run(&args[1..]),
        Some("cuda-emulator") => emulator::run(&args[1..]),
        Some("chaos") => chaos::run(&args[1..]),
        Some("full-disk") => full_disk::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("test") => test(&args[1..]),
        Some(other) => Err(anyhow::anyhow!(
            "`{other}` is not an xtask command; run `cargo xtask help`"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
