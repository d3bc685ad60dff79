//! `cargo xtask COMMAND`: project automation. Commands land with their issues: `build-kernels`
//! (the CUDA backend) and `bench` (the speed tables).

use std::process::ExitCode;

fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    match command.as_deref() {
        None | Some("help" | "--help" | "-h") => {
            println!("usage: cargo xtask COMMAND\n\ncommands of this version: help\n(build-kernels and bench are not in this version yet)");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "error: `{other}` is not an xtask command of this version; run `cargo xtask help`"
            );
            ExitCode::FAILURE
        }
    }
}
