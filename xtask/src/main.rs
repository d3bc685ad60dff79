//! `cargo xtask COMMAND`: project automation (`cargo xtask help` lists the commands, `cargo
//! xtask help COMMAND` their options).

mod bench;
mod chaos;
mod emulator;
mod full_disk;
mod fuzz;
mod kernels;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "eatnas's project automation"
)]
struct Xtask {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The speed table: criterion benches beside PyTorch on the same shapes, in one run.
    ///
    /// `cpu`: benches/ops.rs beside benches/baselines/pytorch_ops.py: median ms of each side, the ratio, GFLOP/s, GB/s, the ratio to
    /// the flop-or-byte floor and, for the rows that train, peak memory. `data`: benches/data.rs (JPEG images read and
    /// batched at 224) beside benches/baselines/pytorch_data.py (PIL in a DataLoader): ms and images per second. PyTorch comes from
    /// $EATNAS_PYTHON, else from a virtual environment under target/ that this command creates.
    Bench(bench::Args),
    /// Compiles kernels/*.cu to the committed PTX in kernels/ptx/ (compute_80).
    ///
    /// Records the sources' hash and the ptxas resource usage for sm_90 (fails on a spill). nvcc comes from
    /// PATH, else CUDA_HOME, else a toolkit installed from PyPI into target/cuda-toolkit.
    BuildKernels,
    /// Every test, the CUDA backend's on the emulator included (what .ci/run runs).
    ///
    /// `cargo test --workspace --release` (the CPU workspace NaN-poisoned), then the CUDA backend's op tests and the PyTorch fixtures on the host CUDA emulator (what .ci/run
    /// runs).
    Test,
    /// The kernels on the host behind a stand-in libcuda, for tests.
    ///
    /// Builds target/cuda-emu/libcuda.so, a stand-in CUDA driver that runs kernels/*.cu on the
    /// host (kernels/emu/), so the CUDA backend is tested without a GPU.
    CudaEmulator(emulator::Args),
    /// A pipeline killed with SIGKILL and resumed, N times: each must end as the uninterrupted run.
    ///
    /// The pipeline of a configuration run once uninterrupted, then killed with SIGKILL at seeded
    /// moments (a time in the run, or the K-th write of state) and resumed (every second resume
    /// killed once more); each must end with the uninterrupted run's final_arch.json, histories
    /// and final weights, byte for byte.
    Chaos(chaos::Args),
    /// A search and a training on a disk that fills up, then resumed once there is room.
    ///
    /// The tiny search and a short training on a disk that fills up mid-run: a small tmpfs (as
    /// root, where mounting works) and an injected ENOSPC from the K-th write on; each must fail
    /// naming the file, leave every file before it readable, and resume once there is room to
    /// the uninterrupted result, byte for byte.
    FullDisk(full_disk::Args),
    /// The fuzz targets of tests/fuzz under libFuzzer, N seconds each.
    ///
    /// cargo-fuzz (installed from crates.io when missing) and the nightly toolchain; each target
    /// from its seeds in tests/fuzz/seeds/TARGET and the
    /// corpus kept in target/fuzz/corpus/TARGET. Fails on a crash, a time-out or an allocation
    /// over 256 MB, naming the input.
    Fuzz(fuzz::Args),
}

/// The default parallelism of `bench` and `fuzz`: one thread (or libFuzzer process) per core.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Set for every test run: the CPU workspace hands out NaN-filled buffers, so that a kernel that
/// reads what it did not write fails its test instead of reading the previous user's values.
pub const POISON_WORKSPACE: (&str, &str) = ("EATNAS_POISON_WORKSPACE", "1");

/// `cargo xtask test`: the workspace's tests, then the CUDA backend's on the emulator.
fn test() -> anyhow::Result<()> {
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
    let result = match Xtask::parse().command {
        Command::Bench(args) => bench::run(&args),
        Command::BuildKernels => kernels::run(),
        Command::Test => test(),
        Command::CudaEmulator(args) => emulator::run(&args),
        Command::Chaos(args) => chaos::run(&args),
        Command::FullDisk(args) => full_disk::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
