//! `cargo xtask COMMAND`: project automation.
//!
//! - `bench cpu [--json] [--threads N] [--rows A,B]`: the CPU speed table, eatnas beside PyTorch.

mod bench;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask COMMAND

commands:
  bench cpu [--json] [--threads N] [--rows NAME,NAME]
      criterion benches of benches/ops.rs and PyTorch (benches/baselines/pytorch_ops.py) on the
      same shapes in one run; prints median ms of each side, the ratio, GFLOP/s, GB/s, the ratio
      to the flop-or-byte floor and, for the rows that train, peak memory. PyTorch comes from
      $EATNAS_PYTHON, else from a virtual environment under target/ that this command creates
      with pip. --json: the last line of stdout is a JSON array of the rows.
  help";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("bench") => bench::run(&args[1..]),
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
