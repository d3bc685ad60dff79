//! A task: a dataset at a resolution, its macro, and the proxy training that ranks candidates.

use eatnas_nn::InitScheme;
use eatnas_train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::space::MacroConfig;
use crate::{Error, Result};

/// A task: a dataset at a resolution, its macro, and the proxy training that ranks candidates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskConfig {
    /// Dataset (see `eatnas-cli train --help`): fashion-mnist, idx:DIR, cifar10:DIR, folder:DIR...
    pub data: String,
    /// Input resolution (default: the dataset's own); a small task can be a low-resolution proxy.
    /// The final training, MAdds, latency and the fidelity reference are at this resolution.
    pub resolution: Option<usize>,
    /// The resolution the proxy trains and ranks candidates at, when lower than `resolution` is
    /// a cheaper proxy that ranks as well (`docs/search-quality.md`); default: `resolution`.
    pub proxy_resolution: Option<usize>,
    /// Fraction of the training set the proxy trains on.
    pub data_fraction: f64,
    /// Fraction of that held out for validation: the ranking set, never the test set.
    pub val_fraction: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_epochs: f64,
    /// A mutated child starts from its parent's trained weights wherever they correspond
    /// (elastic inheritance, `docs/search-quality.md`), and trains `inherited_epochs` instead of
    /// `epochs`. A parent's weights are kept in its job folder while it is in the population or a
    /// child of it is in flight.
    pub inherit_weights: bool,
    pub inherited_epochs: usize,
    /// Training batches on which an inheriting network's batch-norm statistics are re-estimated
    /// before it trains, when its weights were reshaped or come from another task.
    pub bn_recalibration_batches: usize,
    /// How each candidate's weights are drawn (see `docs/initialisation.md`).
    pub init: InitScheme,
    /// The last batch norm of each residual MBConv layer starts at weight 0.
    pub zero_residual_bn: bool,
    /// Leave out the images of an image folder that do not decode (checked once when the data
    /// opens; a warning gives the count) instead of stopping at the first one.
    pub skip_bad_images: bool,
    #[serde(rename = "macro")]
    pub macro_config: MacroConfig,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            data: "fashion-mnist".into(),
            resolution: None,
            proxy_resolution: None,
            data_fraction: 1.0,
            val_fraction: 0.1,
            epochs: 1,
            batch_size: 64,
            lr: 0.1,
            warmup_epochs: 0.0,
            inherit_weights: false,
            inherited_epochs: 1,
            bn_recalibration_batches: 8,
            init: InitScheme::default(),
            zero_residual_bn: false,
            skip_bad_images: false,
            macro_config: MacroConfig::default(),
        }
    }
}

impl TaskConfig {
    /// The proxy training recipe (everything else at the trainer's defaults).
    pub fn train_config(&self, seed: u64, workers: usize) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr as f32,
            warmup_epochs: self.warmup_epochs as f32,
            val_fraction: self.val_fraction,
            data_fraction: self.data_fraction,
            resolution: self.trained_resolution(),
            seed,
            workers,
            init: self.init,
            zero_residual_bn: self.zero_residual_bn,
            skip_bad_images: self.skip_bad_images,
            ..TrainConfig::default()
        }
    }

    /// The resolution the proxy trains at: `proxy_resolution`, else `resolution` (`None`: the
    /// dataset's own).
    pub fn trained_resolution(&self) -> Option<usize> {
        self.proxy_resolution.or(self.resolution)
    }

    pub fn validate(&self, name: &str) -> Result<()> {
        self.macro_config.validate(name)?;
        if let Some(proxy) = self.proxy_resolution {
            let Some(resolution) = self.resolution else {
                return Err(Error::invalid(
                    format!("{name}.proxy_resolution"),
                    "a proxy resolution needs the task's own `resolution` set too (the final training and the MAdds are at that one)",
                ));
            };
            if proxy == 0 || proxy > resolution {
                return Err(Error::invalid(
                    format!("{name}.proxy_resolution"),
                    format!("expected 1 to the task's resolution ({resolution}), got {proxy}"),
                ));
            }
        }
        if self.val_fraction <= 0.0 {
            return Err(Error::invalid(
                format!("{name}.val_fraction"),
                "the search ranks on a validation split; expected a value in (0, 1)",
            ));
        }
        self.train_config(0, 1)
            .validate()
            .map_err(|e| Error::invalid(name, e.to_string()))?;
        Ok(())
    }
}
