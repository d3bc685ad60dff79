//! `eatnas-cli export --checkpoint C --format pytorch --out model.py`.

use std::path::PathBuf;

use anyhow::Result;
use eatnas_train::checkpoint::model_path;
use eatnas_train::export::pytorch_module;
use eatnas_train::fs::write_atomic;
use eatnas_train::load_model;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// A standalone PyTorch module (model.py) that loads the checkpoint's safetensors directly.
    Pytorch,
}

#[derive(clap::Args)]
pub struct Args {
    /// A model.safetensors written by eatnas, or the training folder that holds one.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, value_enum, default_value = "pytorch")]
    format: Format,
    /// The Python file to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let path = model_path(&args.checkpoint);
    let (_, info) = load_model(&path, None)?;
    match args.format {
        Format::Pytorch => write_atomic(&args.out, pytorch_module(&info).as_bytes())?,
    }
    println!(
        "wrote {} (PyTorch module of {}; load it with model.load(\"{}\"))",
        args.out.display(),
        info.arch.name,
        path.display()
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "module": args.out, "weights": path, "arch": info.arch.name })
        );
    }
    Ok(())
}
