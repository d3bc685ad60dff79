//! `eatnas-cli`: the command line of eatnas. Every command prints a human-readable report; with
//! `--json`, the last line of stdout is one JSON object that a script can read.

mod eval;
mod evaluate;
mod export;
mod fidelity;
mod inspect;
mod latency;
mod report;
mod search;
mod signals;
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
    /// Without a command: `run` with the default configuration, the demo on the embedded data.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The whole pipeline: stage 1, transfer, stage 2 (and the scratch baseline), final training.
    Run(search::Common),
    /// Stage 1 only: evolution on the small task.
    Search(search::Common),
    /// Stage 2 only: evolution on the large task from a basic architecture (or from scratch).
    Transfer(search::TransferArgs),
    /// Print the effective search configuration (the defaults, or a --config file's with them).
    Config(search::Common),
    /// Continue a search killed mid-way, from its folder.
    Resume(search::ResumeArgs),
    /// Print each block's output shape, MAdds and parameters, and the totals.
    Inspect(inspect::Args),
    /// Train a network on a dataset, with checkpoints that a killed run resumes from.
    Train(train::Args),
    /// Evaluate a checkpoint on a dataset's test set.
    Eval(eval::Args),
    /// Measure how well a task's proxy training ranks architectures (Kendall's tau, Spearman's
    /// rho) against a longer reference training.
    Fidelity(fidelity::Args),
    /// Write DIR/report.html: one self-contained page of a search folder.
    Report(report::Args),
    /// Run one candidate evaluation of a search from its job folder (what each Slurm job runs).
    Evaluate(evaluate::Args),
    /// Write a checkpoint's network as a standalone PyTorch module.
    Export(export::Args),
    /// Measured latency on this machine's device: build a task's table, check its predictor.
    Latency(latency::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli
        .command
        .unwrap_or(Command::Run(search::Common::default()))
    {
        Command::Run(args) => search::run(&args),
        Command::Search(args) => search::search(&args),
        Command::Transfer(args) => search::transfer(&args),
        Command::Resume(args) => search::resume(&args),
        Command::Config(args) => search::print_config(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Fidelity(args) => fidelity::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Latency(args) => latency::run(&args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
