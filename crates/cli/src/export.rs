//! `eatnas-cli export --checkpoint C --format pytorch|onnx --out FILE`.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result};
use eatnas_data::DataSpec;
use eatnas_train::checkpoint::model_path;
use eatnas_train::export::{onnx_model, pytorch_module, INPUT, OPSET, OUTPUT};
use eatnas_train::fs::write_atomic;
use eatnas_train::load_model;

use crate::eval::foreign_model_info;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// A standalone PyTorch module (model.py) that loads the checkpoint's safetensors directly.
    Pytorch,
    /// An ONNX model for inference (opset 17, batch norm folded, dynamic batch axis), weights
    /// included.
    Onnx,
}

#[derive(clap::Args)]
pub struct Args {
    /// A model.safetensors written by eatnas, or the training folder that holds one.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, value_enum, default_value = "pytorch")]
    format: Format,
    /// The file to write (model.py, model.onnx).
    #[arg(long)]
    out: PathBuf,
    /// Architecture, for weights that carry no eatnas description (trained in PyTorch, say);
    /// `--data` then gives the channels, classes, resolution and normalisation.
    #[arg(long)]
    arch: Option<PathBuf>,
    /// Dataset of weights given with `--arch` (see `train --help`).
    #[arg(long, default_value = "fashion-mnist", requires = "arch")]
    data: String,
    /// Resolution of weights given with `--arch` (default: the dataset's own).
    #[arg(long, requires = "arch")]
    resolution: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let path = model_path(&args.checkpoint);
    let override_info = match &args.arch {
        Some(arch) => Some(foreign_model_info(
            arch,
            &DataSpec::from_str(&args.data)?,
            args.resolution,
        )?),
        None => None,
    };
    let (mut net, info) = load_model(&path, override_info)?;
    let what = match args.format {
        Format::Pytorch => {
            write_atomic(&args.out, pytorch_module(&info).as_bytes())?;
            format!(
                "PyTorch module; load it with model.load(\"{}\")",
                path.display()
            )
        }
        Format::Onnx => {
            let model = onnx_model(&info, &net.state())
                .with_context(|| format!("exporting {} to ONNX", path.display()))?;
            write_atomic(&args.out, &model)?;
            format!(
                "ONNX opset {OPSET}, input `{INPUT}` (batch, {}, {r}, {r}), output `{OUTPUT}` (batch, {})",
                info.in_channels,
                info.classes,
                r = info.resolution
            )
        }
    };
    println!(
        "wrote {} ({} of {})",
        args.out.display(),
        what,
        info.arch.name
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "out": args.out, "weights": path, "arch": info.arch.name })
        );
    }
    Ok(())
}
