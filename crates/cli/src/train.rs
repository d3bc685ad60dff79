//! `eatnas-cli train --arch A.json --data SPEC --out DIR [...]` and `train --resume DIR`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result};
use eatnas_data::DataSpec;
use eatnas_nn::{Arch, InitScheme, Network};
use eatnas_tensor::Device;
use eatnas_train::{checkpoint, PreparedData, TrainConfig, Trainer};

#[derive(clap::Args)]
pub struct Args {
    /// Architecture file (format eatnas-arch/1).
    #[arg(long, required_unless_present = "resume")]
    arch: Option<PathBuf>,
    /// Dataset: fashion-mnist (embedded demo), idx:DIR, cifar10:DIR, cifar100:DIR, folder:DIR.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Output folder for checkpoints and the metrics log (default: runs/ARCH-NAME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run whose checkpoints are in this folder (with its own configuration).
    #[arg(long, conflicts_with_all = ["arch", "out"])]
    resume: Option<PathBuf>,
    /// Compute device: cpu, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    /// Peak learning rate (cosine schedule to zero after the warm-up).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f32,
    #[arg(long, default_value_t = TrainConfig::default().momentum)]
    momentum: f32,
    /// Plain momentum instead of Nesterov's.
    #[arg(long)]
    no_nesterov: bool,
    /// L2 penalty on convolution and classifier weights.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    weight_decay: f32,
    #[arg(long, default_value_t = TrainConfig::default().warmup_epochs)]
    warmup_epochs: f32,
    #[arg(long, default_value_t = TrainConfig::default().label_smoothing)]
    label_smoothing: f32,
    /// Padding of the random crop (default: 2 up to 32 pixels, else resolution / 16).
    #[arg(long)]
    crop_padding: Option<usize>,
    /// No random horizontal flips.
    #[arg(long)]
    no_flip: bool,
    /// Fraction of the training set held out for validation.
    #[arg(long, default_value_t = TrainConfig::default().val_fraction)]
    val_fraction: f64,
    /// Fraction of the training set to use.
    #[arg(long, default_value_t = TrainConfig::default().data_fraction)]
    data_fraction: f64,
    /// Input resolution (default: the dataset's own).
    #[arg(long)]
    resolution: Option<usize>,
    /// Seeds the initial weights, the batch order and the augmentation (and the images, unless
    /// --data-seed is given).
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Seeds which images train and validate (the data fraction and the validation split), so
    /// that runs of several --seed values are validated on the same images.
    #[arg(long)]
    data_seed: Option<u64>,
    /// Threads that read and augment images.
    #[arg(long, default_value_t = TrainConfig::default().workers)]
    workers: usize,
    /// Also checkpoint every N steps (0: at epoch ends only).
    #[arg(long, default_value_t = TrainConfig::default().checkpoint_every)]
    checkpoint_every: usize,
    /// Weight initialisation: pytorch, torchvision, depthwise-fan-in or fan-in
    /// (docs/initialisation.md says what each draws and how they compare).
    #[arg(long, default_value_t = TrainConfig::default().init)]
    init: InitScheme,
    /// Start the last batch norm of each residual MBConv layer at weight 0.
    #[arg(long, conflicts_with = "initial_weights")]
    zero_residual_bn: bool,
    /// Start from these weights instead of drawing them: a safetensors file with every parameter
    /// and BN buffer of the architecture under the names of ARCH.md (a checkpoint's
    /// model.safetensors, or a PyTorch state_dict saved with safetensors).
    #[arg(long, conflicts_with = "init")]
    initial_weights: Option<PathBuf>,
    /// Leave out the images of an image folder that do not decode (each file is decoded once
    /// when the data opens; a warning gives the count) instead of stopping at the first one.
    #[arg(long)]
    skip_bad_images: bool,
    /// Print a JSON summary (with test_top1) as the last line.
    #[arg(long)]
    json: bool,
}

impl Args {
    fn config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            nesterov: !self.no_nesterov,
            weight_decay: self.weight_decay,
            warmup_epochs: self.warmup_epochs,
            label_smoothing: self.label_smoothing,
            crop_padding: self.crop_padding,
            horizontal_flip: !self.no_flip,
            val_fraction: self.val_fraction,
            data_fraction: self.data_fraction,
            resolution: self.resolution,
            seed: self.seed,
            data_seed: self.data_seed,
            workers: self.workers,
            checkpoint_every: self.checkpoint_every,
            init: self.init,
            zero_residual_bn: self.zero_residual_bn,
            skip_bad_images: self.skip_bad_images,
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let (mut trainer, out) = match &args.resume {
        Some(dir) => {
            let trainer = Trainer::resume(dir)?;
            eprintln!(
                "resuming {} from epoch {}",
                dir.display(),
                trainer.history().len() + 1
            );
            (trainer, dir.clone())
        }
        None => {
            let arch_path = args
                .arch
                .as_ref()
                .expect("clap requires --arch without --resume");
            let arch = Arch::load(arch_path)?;
            let config = args.config();
            config.validate()?;
            let spec = DataSpec::from_str(&args.data)?;
            let data = PreparedData::open(&spec, &config)
                .with_context(|| format!("opening dataset {}", args.data))?;
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(&arch.name));
            eprintln!(
                "training {} on {} ({} training, {} validation, {} test images) into {}",
                arch.name,
                spec,
                data.train.len(),
                data.val.as_ref().map_or(0, |v| v.len()),
                data.test.len(),
                out.display()
            );
            let trainer = match &args.initial_weights {
                None => Trainer::new(config, &arch, data, Some(out.clone()))?,
                Some(path) => {
                    let shape = data.train.shape();
                    let mut net =
                        Network::new(&arch, shape.channels, data.train.classes(), config.seed)?;
                    let (tensors, _) = checkpoint::decode(path)?;
                    checkpoint::load_exact(&mut net, &tensors, path)?;
                    Trainer::with_network(config, net, data, Some(out.clone()))?
                }
            };
            (trainer, out)
        }
    };
    if device != Device::Cpu {
        eprintln!("training on {device} ({})", device.name());
    }
    trainer.to_device(device)?;
    trainer.show_progress(std::io::stderr().is_terminal());
    // Ctrl-C or SIGTERM: a checkpoint after the current step, not at the last epoch's end.
    trainer.stop_on(crate::signals::stop_flag()?);
    let summary = match trainer.run(&mut |record| {
        println!(
            "{}",
            serde_json::to_string(record).expect("record serialises")
        )
    }) {
        Err(eatnas_train::Error::Stopped { steps, .. }) => anyhow::bail!(
            "stopped after {steps} training steps, checkpointed in {}; continue with `eatnas-cli train --resume {}`",
            out.display(),
            out.display()
        ),
        other => other?,
    };
    eprintln!(
        "test top-1 {:.2}%, top-5 {:.2}% ({:.0} s, {:.0} images/s); checkpoint {}",
        100.0 * summary.test_top1,
        100.0 * summary.test_top5,
        summary.elapsed_seconds,
        summary.images_per_second,
        summary
            .checkpoint
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string())
    );
    if summary.learned_nothing {
        eprintln!(
            "warning: this training learned nothing: its test top-1 is no better than always answering the most common class ({:.2}% of {} test images), though its loss stayed finite. Check the learning rate (--lr: too high collapses a network, too low leaves it where it started) and try a warm-up (--warmup-epochs)",
            100.0 * summary.test_chance.majority_top1,
            summary.test_chance.images
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}
