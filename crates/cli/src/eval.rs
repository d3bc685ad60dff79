//! `eatnas-cli eval --checkpoint C --data SPEC [--json]`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use eatnas_data::{DataSpec, Dataset, Loader, Normalize};
use eatnas_nn::{Arch, Mode};
use eatnas_train::checkpoint::{encode, model_path};
use eatnas_train::fs::write_atomic;
use eatnas_train::{evaluate, load_model, ModelInfo};

#[derive(clap::Args)]
pub struct Args {
    /// A model.safetensors, or the training folder that holds one.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset whose test set to evaluate on (see `train --help`).
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Architecture, for weights that carry no eatnas description (trained in PyTorch, say).
    #[arg(long)]
    arch: Option<PathBuf>,
    /// Resolution for such weights (default: the dataset's own).
    #[arg(long)]
    resolution: Option<usize>,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Compute device: cpu, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also write the first test batch's inputs and logits to this safetensors file.
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    /// Leave out the test images of an image folder that do not decode (a warning gives the
    /// count) instead of stopping at the first one.
    #[arg(long)]
    skip_bad_images: bool,
    /// Print a JSON summary (test_top1, test_top5, test_loss) as the last line.
    #[arg(long)]
    json: bool,
}

/// The description of weights that carry none (trained in PyTorch, say): the architecture in
/// `arch_path`, and the channels, classes, resolution (`resolution`, default the dataset's own)
/// and normalisation (estimated from the training split) of dataset `spec`.
pub fn foreign_model_info(
    arch_path: &Path,
    spec: &DataSpec,
    resolution: Option<usize>,
) -> Result<ModelInfo> {
    let arch = Arch::load(arch_path)?;
    let splits = spec
        .open(resolution)
        .with_context(|| format!("opening dataset {spec}"))?;
    let normalize = Normalize::estimate(splits.train.as_ref(), 10_000)?;
    let shape = splits.shape();
    Ok(ModelInfo {
        arch,
        in_channels: shape.channels,
        classes: splits.classes(),
        resolution: shape.size,
        normalize,
    })
}

pub fn run(args: &Args) -> Result<()> {
    let spec = DataSpec::from_str(&args.data)?;
    let device = eatnas_tensor::Device::parse(&args.device)?;
    let path = model_path(&args.checkpoint);
    let override_info = match &args.arch {
        Some(arch_path) => Some(foreign_model_info(arch_path, &spec, args.resolution)?),
        None => None,
    };
    let (mut net, info) = load_model(&path, override_info)?;
    net.to_device(device)?;
    let splits = spec
        .open_with(Some(info.resolution), args.skip_bad_images)
        .with_context(|| format!("opening dataset {}", args.data))?;
    let (shape, classes) = (splits.shape(), splits.classes());
    if shape.channels != info.in_channels || classes != info.classes {
        bail!(
            "{}: the model takes {} channel(s) and {} classes; dataset {} has {} and {}",
            path.display(),
            info.in_channels,
            info.classes,
            spec,
            shape.channels,
            classes
        );
    }
    if let Some(dump) = &args.dump_logits {
        let loader = Loader::new(
            splits.test.clone(),
            args.batch_size,
            false,
            false,
            None,
            info.normalize.clone(),
            0,
            args.workers,
        )?;
        let batch = loader
            .epoch(0, 0)
            .next()
            .context("the test set is empty")??;
        let logits = net.forward(&batch.images, Mode::Eval)?;
        let labels: Vec<f32> = batch.labels.iter().map(|&l| l as f32).collect();
        let tensors = BTreeMap::from([
            ("images".to_string(), batch.images.clone()),
            ("logits".to_string(), logits),
            (
                "labels".to_string(),
                eatnas_tensor::Tensor::from_vec(labels, &[batch.labels.len()])?,
            ),
        ]);
        write_atomic(dump, &encode(&tensors, HashMap::new())?)?;
    }
    let test: Arc<dyn Dataset> = splits.test;
    let result = evaluate(
        &mut net,
        test.clone(),
        &info.normalize,
        args.batch_size,
        args.workers,
    )?;
    println!(
        "{} on {} ({} images): top-1 {:.2}%, top-5 {:.2}%, loss {:.4}",
        info.arch.name,
        test.describe(),
        result.images,
        100.0 * result.top1,
        100.0 * result.top5,
        result.loss
    );
    if args.json {
        let summary = serde_json::json!({
            "checkpoint": path,
            "arch": info.arch.name,
            "images": result.images,
            "test_top1": result.top1,
            "test_top5": result.top5,
            "test_loss": result.loss,
        });
        println!("{summary}");
    }
    Ok(())
}
