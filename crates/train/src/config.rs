//! Training configuration: every field has a default, the PyTorch reference recipe's.

use eatnas_nn::{Init, InitScheme};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    /// L2 penalty on convolution and classifier weights (not BN parameters or biases).
    pub weight_decay: f32,
    /// Linear warm-up length in epochs (fractions allowed); then cosine decay to zero.
    pub warmup_epochs: f32,
    pub label_smoothing: f32,
    /// Zero padding of the random crop; `None`: 2 up to 32 pixels, else resolution / 16.
    pub crop_padding: Option<usize>,
    pub horizontal_flip: bool,
    /// Fraction of the training set held out for validation (fixed by the data seed).
    pub val_fraction: f64,
    /// Fraction of the training set used at all (search proxies train on part of it).
    pub data_fraction: f64,
    /// Input resolution; `None`: the dataset's own.
    pub resolution: Option<usize>,
    /// Seeds the initial weights, the order of the batches and their augmentation; and which
    /// images train and validate too, unless `data_seed` is set.
    pub seed: u64,
    /// Seeds which images the run sees: the data fraction and the validation split. `None`: the
    /// same as `seed`. Runs that differ only in `seed` but share a `data_seed` are validated on
    /// the same images (repeats of one measurement).
    #[serde(default)]
    pub data_seed: Option<u64>,
    /// Threads that read and augment images.
    pub workers: usize,
    /// Checkpoint every this many steps as well as at every epoch's end (0: epoch ends only).
    pub checkpoint_every: usize,
    /// How a fresh network's weights are drawn (see `docs/initialisation.md`).
    pub init: InitScheme,
    /// The last batch norm of each residual MBConv layer starts at weight 0.
    pub zero_residual_bn: bool,
    /// Leave out the images of an image folder that do not decode (checked once when the data
    /// opens) instead of stopping at the first one.
    #[serde(default)]
    pub skip_bad_images: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 3,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            warmup_epochs: 0.0,
            label_smoothing: 0.1,
            crop_padding: None,
            horizontal_flip: true,
            val_fraction: 0.1,
            data_fraction: 1.0,
            resolution: None,
            seed: 0,
            data_seed: None,
            workers: 2,
            checkpoint_every: 0,
            init: InitScheme::default(),
            zero_residual_bn: false,
            skip_bad_images: false,
        }
    }
}

impl TrainConfig {
    /// Whether `other` is the same training: every field equal but `workers`, the loader's
    /// threads, which change how fast batches come and never what they hold (each random draw
    /// depends on the seed, the epoch and the position only). A training checkpointed on one
    /// machine continues on another with its own number of cores.
    pub fn same_training(&self, other: &TrainConfig) -> bool {
        TrainConfig {
            workers: other.workers,
            ..self.clone()
        } == *other
    }

    /// The seed that draws the data fraction and the validation split.
    pub fn data_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }

    /// Checks every value; the error names the field and what it allows.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return fail("epochs: expected at least 1".into());
        }
        if self.batch_size < 2 {
            return fail(format!(
                "batch_size: expected at least 2 (batch norm needs a batch), got {}",
                self.batch_size
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return fail(format!("lr: expected a positive number, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return fail(format!(
                "momentum: expected a value in [0, 1), got {}",
                self.momentum
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return fail(format!(
                "weight_decay: expected a non-negative number, got {}",
                self.weight_decay
            ));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs <= self.epochs as f32) {
            return fail(format!(
                "warmup_epochs: expected 0 to epochs ({}), got {}",
                self.epochs, self.warmup_epochs
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return fail(format!(
                "label_smoothing: expected a value in [0, 1), got {}",
                self.label_smoothing
            ));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return fail(format!(
                "val_fraction: expected a value in [0, 1), got {}",
                self.val_fraction
            ));
        }
        if !(self.data_fraction > 0.0 && self.data_fraction <= 1.0) {
            return fail(format!(
                "data_fraction: expected a value in (0, 1], got {}",
                self.data_fraction
            ));
        }
        if self.resolution == Some(0) {
            return fail("resolution: expected a positive size".into());
        }
        Ok(())
    }

    /// The initialisation a fresh run draws its weights with.
    pub fn init(&self) -> Init {
        Init {
            scheme: self.init,
            zero_residual_bn: self.zero_residual_bn,
        }
    }

    pub fn crop_padding_for(&self, resolution: usize) -> usize {
        self.crop_padding
            .unwrap_or(if resolution <= 32 { 2 } else { resolution / 16 })
    }
}
