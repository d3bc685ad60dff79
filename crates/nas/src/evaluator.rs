//! Evaluating a candidate: a short proxy training on a task, validation top-1 as its accuracy.
//! The search sees evaluators only through the [`Evaluator`] trait, so tests use a cheap
//! deterministic one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eatnas_data::DataSpec;
use eatnas_nn::{Counts, InitScheme, Network};
use eatnas_tensor::{Device, Tensor};
use eatnas_train::{PreparedData, TrainConfig, Trainer};
use serde::{Deserialize, Serialize};

use crate::evolution::{Candidate, Origin, Outcome};
use crate::space::{Genome, MacroConfig};
use crate::{Error, Result};

pub trait Evaluator: Sync {
    /// Trains and scores one candidate; `worker` names the thread (each worker trains on its own
    /// device when several are given).
    fn evaluate(&self, candidate: &Candidate, worker: usize) -> Result<Outcome>;
}

/// A task: a dataset at a resolution, its macro, and the proxy training that ranks candidates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskConfig {
    /// Dataset (see `eatnas-cli train --help`): fashion-mnist, idx:DIR, cifar10:DIR, folder:DIR...
    pub data: String,
    /// Input resolution (default: the dataset's own); a small task can be a low-resolution proxy.
    pub resolution: Option<usize>,
    /// Fraction of the training set the proxy trains on.
    pub data_fraction: f64,
    /// Fraction of that held out for validation: the ranking set, never the test set.
    pub val_fraction: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_epochs: f64,
    /// A mutated child starts from its parent's trained weights wherever a tensor's name and
    /// shape match, and trains `inherited_epochs` instead of `epochs`. Parents' weights are kept
    /// in memory only: a resumed search trains the children of earlier parents from scratch.
    pub inherit_weights: bool,
    pub inherited_epochs: usize,
    /// How each candidate's weights are drawn (see `docs/initialisation.md`).
    pub init: InitScheme,
    /// The last batch norm of each residual MBConv layer starts at weight 0.
    pub zero_residual_bn: bool,
    #[serde(rename = "macro")]
    pub macro_config: MacroConfig,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            data: "fashion-mnist".into(),
            resolution: None,
            data_fraction: 1.0,
            val_fraction: 0.1,
            epochs: 1,
            batch_size: 64,
            lr: 0.1,
            warmup_epochs: 0.0,
            inherit_weights: false,
            inherited_epochs: 1,
            init: InitScheme::default(),
            zero_residual_bn: false,
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
            resolution: self.resolution,
            seed,
            workers,
            init: self.init,
            zero_residual_bn: self.zero_residual_bn,
            ..TrainConfig::default()
        }
    }

    pub fn validate(&self, name: &str) -> Result<()> {
        self.macro_config.validate(name)?;
        if self.val_fraction <= 0.0 {
            return Err(Error::Config(format!("{name}.val_fraction: the search ranks on a validation split; expected a value in (0, 1)")));
        }
        self.train_config(0, 1)
            .validate()
            .map_err(|e| Error::Config(format!("{name}: {e}")))?;
        Ok(())
    }
}

/// The real evaluator: trains each candidate on the task's proxy and reports validation top-1.
pub struct ProxyEvaluator {
    task: TaskConfig,
    data: PreparedData,
    config: TrainConfig,
    resolution: usize,
    /// Worker i trains on devices[i % len].
    devices: Vec<Device>,
}

/// Trained weights by parameter name.
pub type Weights = BTreeMap<String, Tensor>;

/// How many candidates' trained weights a stage keeps for inheritance (the oldest are dropped).
const KEPT_WEIGHTS: usize = 256;

impl ProxyEvaluator {
    /// Opens the task's data once; every evaluation reuses it.
    pub fn new(task: &TaskConfig, seed: u64) -> Result<ProxyEvaluator> {
        let spec: DataSpec = task.data.parse()?;
        let config = task.train_config(seed, 1);
        let data = PreparedData::open(&spec, &config)?;
        let resolution = data.train.shape().size;
        Ok(ProxyEvaluator {
            task: task.clone(),
            data,
            config,
            resolution,
            devices: vec![Device::Cpu],
        })
    }

    /// Trains worker i's candidates on `devices[i % devices.len()]` (the CPU when empty).
    pub fn with_devices(mut self, devices: &[Device]) -> Self {
        self.devices = if devices.is_empty() {
            vec![Device::Cpu]
        } else {
            devices.to_vec()
        };
        self
    }

    pub fn data(&self) -> &PreparedData {
        &self.data
    }

    /// MAdds and parameters of a genome on this task.
    pub fn count(&self, genome: &Genome) -> Result<(eatnas_nn::Arch, Counts)> {
        let arch = genome.to_arch(&self.task.macro_config, "candidate")?;
        let shape = self.data.train.shape();
        let counts = Counts::new(
            &arch,
            shape.channels,
            self.resolution,
            self.data.train.classes(),
        )?;
        Ok((arch, counts))
    }
}

/// Something that trains a candidate, optionally from inherited weights, and hands back the
/// weights it trained when the task inherits.
pub trait CandidateTrainer: Sync {
    fn inherits(&self) -> Result<bool>;
    /// Trains on the device of `worker`.
    fn train_candidate(
        &self,
        candidate: &Candidate,
        parent: Option<&Weights>,
        worker: usize,
    ) -> Result<(Outcome, Option<Weights>)>;
}

impl Evaluator for ProxyEvaluator {
    fn evaluate(&self, candidate: &Candidate, worker: usize) -> Result<Outcome> {
        Ok(self.train_candidate(candidate, None, worker)?.0)
    }
}

/// One stage's evaluator: children inherit the trained weights of their parents *of this stage*
/// (ids restart with every stage, so the store must not be shared between stages).
pub struct StageEvaluator<'a> {
    trainer: &'a dyn CandidateTrainer,
    trained: Mutex<BTreeMap<usize, Arc<Weights>>>,
}

impl<'a> StageEvaluator<'a> {
    pub fn new(trainer: &'a dyn CandidateTrainer) -> Self {
        StageEvaluator {
            trainer,
            trained: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Evaluator for StageEvaluator<'_> {
    fn evaluate(&self, candidate: &Candidate, worker: usize) -> Result<Outcome> {
        let parent = match &candidate.origin {
            Origin::Mutation { parent } if self.trainer.inherits()? => self
                .trained
                .lock()
                .expect("weights store")
                .get(parent)
                .cloned(),
            _ => None,
        };
        let (outcome, weights) =
            self.trainer
                .train_candidate(candidate, parent.as_deref(), worker)?;
        if let Some(weights) = weights {
            let mut trained = self.trained.lock().expect("weights store");
            trained.insert(candidate.id, Arc::new(weights));
            while trained.len() > KEPT_WEIGHTS {
                trained.pop_first();
            }
        }
        Ok(outcome)
    }
}

fn host_copy(weights: Weights) -> Result<Weights> {
    weights
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_device(Device::Cpu)?)))
        .collect()
}

impl CandidateTrainer for ProxyEvaluator {
    fn inherits(&self) -> Result<bool> {
        Ok(self.task.inherit_weights)
    }

    fn train_candidate(
        &self,
        candidate: &Candidate,
        parent: Option<&Weights>,
        worker: usize,
    ) -> Result<(Outcome, Option<Weights>)> {
        let started = Instant::now();
        let (arch, counts) = self.count(&candidate.genome)?;
        let shape = self.data.train.shape();
        let classes = self.data.train.classes();
        let mut net = Network::with_init(
            &arch,
            shape.channels,
            classes,
            &self.config.init(),
            self.config.seed,
        )?;
        let mut config = self.config.clone();
        if let Some(parent) = parent {
            let current = net.state();
            let matching: BTreeMap<String, Tensor> = parent
                .iter()
                .filter(|(name, t)| current.get(*name).is_some_and(|c| c.shape() == t.shape()))
                .map(|(name, t)| (name.clone(), t.clone()))
                .collect();
            net.load(&matching)?;
            config.epochs = self.task.inherited_epochs;
        }
        let mut trainer = Trainer::with_network(config, net, self.data.clone(), None)?;
        trainer.to_device(self.devices[worker % self.devices.len()])?;
        let outcome = |accuracy, error| Outcome {
            accuracy,
            madds: counts.madds,
            params: counts.params,
            seconds: started.elapsed().as_secs_f64(),
            error,
        };
        let result = match trainer.train(&mut |_| {}) {
            Ok(()) => trainer.evaluate_val().map_err(Into::into).and_then(|val| {
                let val = val.expect("tasks always hold out a validation split");
                // Kept on the host: a stage keeps up to KEPT_WEIGHTS of them.
                let weights = self
                    .task
                    .inherit_weights
                    .then(|| host_copy(trainer.network().state()))
                    .transpose()?;
                Ok((outcome(val.top1, None), weights))
            }),
            // A network whose loss diverges is a bad candidate, not a broken search.
            Err(e @ eatnas_train::Error::Diverged { .. }) => {
                Ok((outcome(0.0, Some(e.to_string())), None))
            }
            Err(e) => Err(e.into()),
        };
        // The next candidate has other activation sizes: hand this one's pooled buffers back
        // (workers training at the same time pay one step of fresh allocations for it), on
        // every path out.
        eatnas_tensor::release_workspace();
        result
    }
}
