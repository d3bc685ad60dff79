//! `eatnas-cli`: the command line of eatnas. Every command prints a human-readable report; with
//! `--json`, the last line of stdout is one JSON object that a script can read.

mod inspect;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "eatnas-cli", version, about = "Neural architecture search by elastic architecture transfer (EAT-NAS)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print each block's output shape, MAdds and parameters, and the totals.
    Inspect(inspect::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
