//! `cargo xtask COMMAND`: project automation.
//!
//! - `bench cpu [--json] [--threads N] [--rows A,B]`: the CPU speed table, eatnas beside PyTorch.
//! - `build-kernels`: `kernels/*.cu` to the committed PTX in `kernels/ptx/`.

mod bench;
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
      compiles kernels/*.cu to PTX for compute_80 and compute_90 into kernels/ptx/ (committed),
      records the sources' hash and the ptxas resource usage for sm_90 (fails on a spill).
      nvcc comes from PATH, else CUDA_HOME, else a toolkit this command installs from PyPI
      into target/cuda-toolkit.
  help";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("bench") => bench::run(&args[1..]),
        Some("build-kernels") => kernels::run(&args[1..]),
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
