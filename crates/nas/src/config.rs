//! The search's configuration (TOML): every field has a default, and the defaults are the demo
//! that a bare `eatnas-cli` runs on the embedded data in minutes on two cores.

use eatnas_nn::InitScheme;
use serde::{Deserialize, Serialize};

use crate::evolution::{EvolutionConfig, Selection};
use crate::executor::ExecutorConfig;
use crate::fitness::FitnessConfig;
use crate::space::{MacroConfig, SpaceConfig};
use crate::task::TaskConfig;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// Probability that a block's width, and (separately) its depth, moves one step.
    pub p: f64,
    /// Probability that a block's operation, kernel and skip (each) change.
    pub q: f64,
    /// The transferred population's networks start from the basic architecture's weights
    /// trained on the small task, wherever they correspond (elastic inheritance), and train the
    /// large task's `inherited_epochs`.
    pub inherit_weights: bool,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            p: 0.3,
            q: 0.1,
            inherit_weights: false,
        }
    }
}

/// Training of the winner on the large task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinalConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_epochs: f64,
    /// Fraction of the large task's training set held out for validation.
    pub val_fraction: f64,
    /// How the winner's weights are drawn (see `docs/initialisation.md`).
    pub init: InitScheme,
    pub zero_residual_bn: bool,
}

impl Default for FinalConfig {
    fn default() -> Self {
        FinalConfig {
            epochs: 3,
            batch_size: 128,
            lr: 0.1,
            warmup_epochs: 0.0,
            val_fraction: 0.1,
            init: InitScheme::default(),
            zero_residual_bn: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Seeds every random draw: the searches, the transfer, the networks' weights, the data order.
    pub seed: u64,
    /// Candidates evaluated at once (local threads, one GPU each on a GPU machine; or Slurm jobs
    /// in flight).
    pub workers: usize,
    /// Where evaluations run: `local` threads or `slurm` jobs.
    pub executor: ExecutorConfig,
    pub space: SpaceConfig,
    /// The task searched first (a small dataset, or a low-resolution proxy).
    pub small: TaskConfig,
    pub small_fitness: FitnessConfig,
    pub stage1: EvolutionConfig,
    pub transfer: TransferConfig,
    /// The task the transferred population is searched on.
    pub large: TaskConfig,
    pub large_fitness: FitnessConfig,
    pub stage2: EvolutionConfig,
    /// Also run stage 2 from a random population with the same budget and seed.
    pub scratch_baseline: bool,
    #[serde(rename = "final")]
    pub final_training: FinalConfig,
    /// How many of the best architectures to write.
    pub top_k: usize,
    /// Where candidates train: worker i on devices[i % len]; the final training on the first.
    /// Empty: the CPU. A run-time choice (`--device`), not part of the search's identity, so it
    /// is neither read from nor written to the config file.
    #[serde(skip)]
    pub devices: Vec<eatnas_tensor::Device>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        let small_macro = MacroConfig {
            width_multiplier: 0.25,
            ..MacroConfig::default()
        };
        SearchConfig {
            seed: 0,
            workers: 1,
            executor: ExecutorConfig::default(),
            space: SpaceConfig::default(),
            small: TaskConfig {
                resolution: Some(14),
                proxy_resolution: Some(10),
                data_fraction: 0.5,
                val_fraction: 0.25,
                batch_size: 32,
                macro_config: small_macro.clone(),
                ..TaskConfig::default()
            },
            small_fitness: FitnessConfig::default(),
            stage1: EvolutionConfig {
                population: 8,
                sample: 3,
                budget: 16,
                top_k: 3,
                multi_fidelity: None,
                selection: Selection::Fitness,
            },
            transfer: TransferConfig::default(),
            large: TaskConfig {
                resolution: Some(28),
                proxy_resolution: Some(14),
                data_fraction: 0.5,
                val_fraction: 0.2,
                batch_size: 32,
                macro_config: small_macro,
                ..TaskConfig::default()
            },
            large_fitness: FitnessConfig::default(),
            stage2: EvolutionConfig {
                population: 8,
                sample: 3,
                budget: 16,
                top_k: 3,
                multi_fidelity: None,
                selection: Selection::Fitness,
            },
            scratch_baseline: true,
            final_training: FinalConfig::default(),
            top_k: 5,
            devices: Vec::new(),
        }
    }
}

impl SearchConfig {
    /// Parses TOML; an unknown key, a value of the wrong type or out of range is an error that
    /// names it.
    pub fn from_toml(text: &str, source: &str) -> Result<SearchConfig> {
        let config: SearchConfig = toml::from_str(text).map_err(|e| Error::Toml {
            file: source.into(),
            source: e,
        })?;
        config.validate().map_err(|e| Error::InFile {
            file: source.into(),
            source: Box::new(e),
        })?;
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> Result<SearchConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        SearchConfig::from_toml(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a configuration serialises")
    }

    pub fn validate(&self) -> Result<()> {
        self.space.validate()?;
        self.small.validate("small")?;
        self.large.validate("large")?;
        self.stage1.validate("stage1")?;
        self.stage2.validate("stage2")?;
        self.small_fitness.validate("small_fitness")?;
        self.large_fitness.validate("large_fitness")?;
        for (name, stage, task) in [
            ("stage1", &self.stage1, &self.small),
            ("stage2", &self.stage2, &self.large),
        ] {
            if let Some(mf) = &stage.multi_fidelity {
                mf.validate(name, task.epochs)?;
            }
        }
        if self.small.macro_config.blocks() != self.large.macro_config.blocks() {
            return Err(Error::invalid(
                "large.macro",
                format!(
                    "{} blocks, and small.macro {}; a transfer needs the same block count",
                    self.large.macro_config.blocks(),
                    self.small.macro_config.blocks()
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.transfer.p) || !(0.0..=1.0).contains(&self.transfer.q) {
            return Err(Error::invalid(
                "transfer",
                format!(
                    "p {} and q {} must lie in [0, 1]",
                    self.transfer.p, self.transfer.q
                ),
            ));
        }
        if self.workers == 0 {
            return Err(Error::invalid("workers", "expected at least 1"));
        }
        if self.final_training.epochs == 0 {
            return Err(Error::invalid("final.epochs", "expected at least 1"));
        }
        self.executor.validate()?;
        Ok(())
    }

    /// A stable fingerprint of the search's identity (FNV-1a of its TOML, the executor left
    /// out: where evaluations run does not change what they give), stored with every state.
    pub fn fingerprint(&self) -> String {
        let identity = SearchConfig {
            executor: ExecutorConfig::default(),
            ..self.clone()
        };
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in identity.to_toml().bytes() {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}
