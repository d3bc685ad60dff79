//! `eatnas-cli`: the command line of eatnas. Every command prints a human-readable report; with
//! `--json`, the last line of stdout is one JSON object that a script can read.

mod eval;
mod export;
mod inspect;
mod train;

use clap::{Parser, Subcommand};

// Training allocates and frees the same large activations every step: mimalloc keeps those pages
// mapped instead of returning them to the kernel and faulting them in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "eatnas-cli",
    version,
    args_override_self = true,
    about = "Neural architecture search by elastic architecture transfer (EAT-NAS)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print each block's output shape, MAdds and parameters, and the totals.
    Inspect(inspect::Args),
    /// Train a network on a dataset, with checkpoints that a killed run resumes from.
    Train(train::Args),
    /// Evaluate a checkpoint on a dataset's test set.
    Eval(eval::Args),
    /// Write a checkpoint's network as a standalone PyTorch module.
    Export(export::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Export(args) => export::run(&args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
