//! The training loop: SGD on the training split, validation after every epoch, checkpoints
//! that a killed run resumes from, and the test set at the end.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eatnas_data::{
    split_validation, Augment, ChanceLevel, DataSpec, Dataset, Loader, Normalize, Subset,
};
use eatnas_nn::{Arch, Mode, Network};
use eatnas_tensor::{BatchNormConfig, CrossEntropy, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, ModelInfo, ARCH_FILE, MODEL_FILE, STATE_FILE};
use crate::evaluate::{evaluate, Evaluation};
use crate::fs::write_atomic;
use crate::{CosineSchedule, Error, Result, Sgd, TrainConfig};

/// The sets one training run reads, and the normalisation estimated on its training split.
#[derive(Clone)]
pub struct PreparedData {
    pub spec: DataSpec,
    pub train: Arc<dyn Dataset>,
    pub val: Option<Arc<dyn Dataset>>,
    pub test: Arc<dyn Dataset>,
    pub normalize: Normalize,
}

impl PreparedData {
    /// Opens `spec` at the configured resolution, keeps the configured fraction of the training
    /// set and holds out the validation split (both fixed by the data seed).
    pub fn open(spec: &DataSpec, config: &TrainConfig) -> Result<PreparedData> {
        let splits = spec.open_with(config.resolution, config.skip_bad_images)?;
        let mut train = splits.train;
        if config.data_fraction < 1.0 {
            train = Arc::new(Subset::fraction(
                train,
                config.data_fraction,
                config.data_seed(),
            )?);
        }
        let val = if config.val_fraction > 0.0 {
            let (rest, val) = split_validation(train, config.val_fraction, config.data_seed())?;
            train = Arc::new(rest);
            Some(Arc::new(val) as Arc<dyn Dataset>)
        } else {
            None
        };
        let normalize = Normalize::estimate(train.as_ref(), 10_000)?;
        Ok(PreparedData {
            spec: spec.clone(),
            train,
            val,
            test: splits.test,
            normalize,
        })
    }
}

/// One epoch's line of the training log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_top1: f64,
    pub val_loss: Option<f64>,
    pub val_top1: Option<f64>,
    pub val_top5: Option<f64>,
    pub lr: f32,
    pub images_per_second: f64,
    pub elapsed_seconds: f64,
}

/// The end of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub epochs: usize,
    pub final_train_loss: f64,
    pub val_top1: Option<f64>,
    pub val_top5: Option<f64>,
    pub test_loss: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    /// What a network that learned nothing scores on the test set.
    pub test_chance: ChanceLevel,
    /// Whether `test_top1` is no better than `test_chance` (see [`ChanceLevel::at_chance`]): a
    /// training that collapsed though its loss stayed finite (a too high learning rate without
    /// warm-up, say), or one that never moved.
    pub learned_nothing: bool,
    pub images_per_second: f64,
    pub elapsed_seconds: f64,
    pub params: usize,
    pub checkpoint: Option<PathBuf>,
}

/// Where a run stands, and the running sums of the epoch in progress: all a resume needs
/// beside the weights and momenta.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Position {
    epoch: usize,
    /// Batches of `epoch` already trained.
    batch: usize,
    global_step: usize,
    loss_sum: f64,
    correct: usize,
    seen: usize,
}

/// A training state read from its file and checked: what [`Trainer::resume`] continues from.
pub struct SavedTraining {
    state: StateRecord,
    net: Network,
    momenta: BTreeMap<String, eatnas_tensor::Tensor>,
}

/// The JSON stored in a training-state file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StateRecord {
    format: String,
    config: TrainConfig,
    data: String,
    model: ModelInfo,
    position: Position,
    history: Vec<EpochRecord>,
    elapsed_seconds: f64,
}

const STATE_FORMAT: &str = "eatnas-train-state/1";
const STATE_KEY: &str = "eatnas_state";

/// Why a training step did not update the weights.
#[derive(Debug)]
pub enum StepError {
    /// The loss was not finite (the weights are left as they were).
    Diverged(CrossEntropy),
    Failed(Error),
}

impl From<Error> for StepError {
    fn from(e: Error) -> StepError {
        StepError::Failed(e)
    }
}

/// One step of training: forward in training mode (batch statistics; the running statistics
/// move), mean softmax cross-entropy with `label_smoothing`, backward, then the SGD update at
/// `lr`. The trainer's loop is made of these; the trajectory conformance test drives it directly
/// with PyTorch's batches.
///
/// # Shapes
/// `images`: (N, C, H, W) on the host or the network's device; `labels`: N class indices
pub fn train_step(
    net: &mut Network,
    sgd: &mut Sgd,
    images: &Tensor,
    labels: &[usize],
    label_smoothing: f32,
    lr: f32,
) -> std::result::Result<CrossEntropy, StepError> {
    let ce = net
        .loss_and_backward(images, labels, label_smoothing)
        .map_err(Error::from)?;
    if !ce.loss.is_finite() {
        return Err(StepError::Diverged(ce));
    }
    sgd.step(net, lr)?;
    Ok(ce)
}

pub struct Trainer {
    config: TrainConfig,
    data: PreparedData,
    net: Network,
    sgd: Sgd,
    info: ModelInfo,
    position: Position,
    history: Vec<EpochRecord>,
    elapsed_before: f64,
    out: Option<PathBuf>,
    progress: bool,
    /// When this process took the run up (elapsed time adds to `elapsed_before`).
    started: Instant,
    /// The global step of the last checkpoint written (or resumed from).
    checkpointed_step: Option<usize>,
    /// With an interval, checkpoints are written when that much time has passed since the last
    /// one (or the start), and only then; see [`Trainer::checkpoint_by_time`].
    checkpoint_interval: Option<Duration>,
    last_checkpoint: Instant,
    /// When set (a signal), training stops after the current step; see [`Trainer::stop_on`].
    stop: Option<Arc<AtomicBool>>,
}

impl Trainer {
    /// A fresh run of `arch` on `data`; with `out`, checkpoints go to that folder (which must not
    /// hold a run already: resume it instead).
    pub fn new(
        config: TrainConfig,
        arch: &Arch,
        data: PreparedData,
        out: Option<PathBuf>,
    ) -> Result<Trainer> {
        config.validate()?;
        let shape = data.train.shape();
        let net = Network::with_init(
            arch,
            shape.channels,
            data.train.classes(),
            &config.init(),
            config.seed,
        )?;
        Self::with_network(config, net, data, out)
    }

    /// A fresh run that starts from the given network's weights.
    pub fn with_network(
        config: TrainConfig,
        net: Network,
        data: PreparedData,
        out: Option<PathBuf>,
    ) -> Result<Trainer> {
        config.validate()?;
        let shape = data.train.shape();
        if net.in_channels() != shape.channels || net.classes() != data.train.classes() {
            return Err(Error::Config(format!(
                "the network takes {} channel(s) and {} classes; the data has {} and {}",
                net.in_channels(),
                net.classes(),
                shape.channels,
                data.train.classes()
            )));
        }
        if let Some(dir) = &out {
            if dir.join(STATE_FILE).exists() {
                return Err(Error::Config(format!(
                    "{} already holds a training run; resume it (`eatnas-cli train --resume {}`) or choose another output folder",
                    dir.display(),
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir).map_err(|source| Error::Write {
                path: dir.clone(),
                source,
            })?;
        }
        let info = ModelInfo {
            arch: net.arch().clone(),
            in_channels: shape.channels,
            classes: data.train.classes(),
            resolution: shape.size,
            normalize: data.normalize.clone(),
        };
        let sgd = Sgd::for_config(&config);
        Ok(Trainer {
            config,
            data,
            net,
            sgd,
            info,
            position: Position::default(),
            history: Vec::new(),
            elapsed_before: 0.0,
            out,
            progress: false,
            started: Instant::now(),
            checkpointed_step: None,
            checkpoint_interval: None,
            last_checkpoint: Instant::now(),
            stop: None,
        })
    }

    /// Reads the training state in `dir` and checks it whole (its recipe, its model against its
    /// description, each momentum against its parameter) without opening its dataset.
    pub fn read_saved(dir: &Path) -> Result<SavedTraining> {
        let path = dir.join(STATE_FILE);
        if !path.exists() {
            return Err(Error::Config(format!(
                "{}: no {STATE_FILE} to resume from",
                dir.display()
            )));
        }
        let (tensors, metadata) = checkpoint::decode(&path)?;
        let bad = |message: String| Error::Checkpoint {
            path: path.clone(),
            message,
        };
        let text = metadata
            .get(STATE_KEY)
            .ok_or_else(|| bad("no training state in the metadata".into()))?;
        let state: StateRecord = serde_json::from_str(text)
            .map_err(|e| bad(format!("unreadable training state: {e}")))?;
        if state.format != STATE_FORMAT {
            return Err(bad(format!(
                "training state format `{}`; this version reads `{STATE_FORMAT}`",
                state.format
            )));
        }
        let strip = |prefix: &str| -> BTreeMap<String, eatnas_tensor::Tensor> {
            tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
                .collect()
        };
        // The file is checked whole before the dataset is opened.
        state
            .config
            .validate()
            .map_err(|e| bad(format!("its training configuration is invalid: {e}")))?;
        let model_tensors = strip("model.");
        checkpoint::check_description(&state.model, &model_tensors, &path)?;
        let mut net = Network::new(
            &state.model.arch,
            state.model.in_channels,
            state.model.classes,
            state.config.seed,
        )?;
        checkpoint::load_exact(&mut net, &model_tensors, &path)?;
        let momenta = strip("momentum.");
        let parameters = net.parameters();
        for (name, buffer) in &momenta {
            match parameters.get(name) {
                Some(p) if p.shape() == buffer.shape() => {}
                Some(p) => {
                    return Err(bad(format!(
                        "momentum of `{name}` has shape {:?}; the parameter has {:?}",
                        buffer.shape(),
                        p.shape()
                    )))
                }
                None => return Err(bad(format!("momentum of `{name}`, which is no parameter"))),
            }
        }
        Ok(SavedTraining {
            state,
            net,
            momenta,
        })
    }

    /// Continues the run whose checkpoints are in `dir`, from its last training state.
    pub fn resume(dir: &Path) -> Result<Trainer> {
        let saved = Self::read_saved(dir)?;
        let spec = DataSpec::from_str(&saved.state.data)?;
        let data = PreparedData::open(&spec, &saved.state.config)?;
        Self::resume_saved(dir, saved, data)
    }

    /// Continues the run whose checkpoints are in `dir` on `data`, already opened by the caller
    /// with the run's own recipe (a worker that shares one opened dataset among its jobs):
    /// refused when `data` is of another dataset than the run's.
    pub fn resume_with_data(dir: &Path, data: PreparedData) -> Result<Trainer> {
        let saved = Self::read_saved(dir)?;
        if saved.state.data != data.spec.to_string() {
            return Err(Error::Config(format!(
                "{}: the saved run trained on {}, not on {}",
                dir.display(),
                saved.state.data,
                data.spec
            )));
        }
        Self::resume_saved(dir, saved, data)
    }

    fn resume_saved(dir: &Path, saved: SavedTraining, mut data: PreparedData) -> Result<Trainer> {
        let SavedTraining {
            state,
            net,
            momenta,
        } = saved;
        data.normalize = state.model.normalize.clone();
        let resumed_step = state.position.global_step;
        let mut sgd = Sgd::for_config(&state.config);
        sgd.buffers = momenta;
        Ok(Trainer {
            config: state.config,
            data,
            net,
            sgd,
            info: state.model,
            position: state.position,
            history: state.history,
            elapsed_before: state.elapsed_seconds,
            out: Some(dir.to_path_buf()),
            progress: false,
            started: Instant::now(),
            checkpointed_step: Some(resumed_step),
            checkpoint_interval: None,
            last_checkpoint: Instant::now(),
            stop: None,
        })
    }

    /// Writes checkpoints (to the output folder, when there is one) only once `interval` has
    /// passed since the last one, mid-epoch and at an epoch's end alike, instead of at every
    /// epoch's end and every `checkpoint_every` steps: for trainings whose checkpoints only guard
    /// against losing much work to a kill (a search's jobs), so that a short one writes none.
    pub fn checkpoint_by_time(&mut self, interval: Duration) {
        self.checkpoint_interval = Some(interval);
    }

    /// The threads that read and augment images from now on ([`TrainConfig::workers`]; at least
    /// 1): a continued training takes the cores of the machine it continues on.
    pub fn set_workers(&mut self, workers: usize) {
        self.config.workers = workers.max(1);
    }

    /// Stops training once `flag` is set (a signal handler sets it): after the step in progress,
    /// the run checkpoints (when it has an output folder) and [`Trainer::train`] returns
    /// [`Error::Stopped`]; resuming from that checkpoint ends as the run would have.
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// Seconds trained before this process took the run up (0 for a fresh run).
    pub fn seconds_before_resume(&self) -> f64 {
        self.elapsed_before
    }

    /// Training steps taken so far, across resumes.
    pub fn steps_done(&self) -> usize {
        self.position.global_step
    }

    /// Refuses, before anything is allocated for it, a training step that the network's device
    /// cannot hold: the estimate of [`eatnas_nn::training_bytes`] against the memory free there
    /// (not checked where the free memory cannot be read).
    pub fn check_memory(&self) -> Result<()> {
        let device = self.net.device();
        let Some(available) = device.available_memory()? else {
            return Ok(());
        };
        let needed = eatnas_nn::training_bytes(
            self.net.arch(),
            self.info.in_channels,
            self.info.resolution,
            self.info.classes,
            self.config.batch_size,
        )?;
        if needed > available {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            return Err(Error::Config(format!(
                "training `{}` at batch {} and {r}x{r} needs about {:.1} GiB (its activations, estimated from its layer shapes, and its parameters with their gradients and momenta); {device} has {:.1} GiB free. Lower the batch size or the resolution",
                self.net.arch().name,
                self.config.batch_size,
                gib(needed),
                gib(available),
                r = self.info.resolution,
            )));
        }
        Ok(())
    }

    /// Shows a progress bar on the terminal while training.
    pub fn show_progress(&mut self, show: bool) {
        self.progress = show;
    }

    /// Moves the network and the optimizer's momentum buffers to `device`; training and
    /// evaluation then run there (batches are copied to it as they come).
    pub fn to_device(&mut self, device: eatnas_tensor::Device) -> Result<()> {
        self.net.to_device(device)?;
        for buffer in self.sgd.buffers.values_mut() {
            *buffer = buffer.to_device(device)?;
        }
        Ok(())
    }

    pub fn network(&mut self) -> &mut Network {
        &mut self.net
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn data(&self) -> &PreparedData {
        &self.data
    }

    pub fn history(&self) -> &[EpochRecord] {
        &self.history
    }

    fn train_loader(&self) -> Result<Loader> {
        let augment = Augment {
            crop_padding: self.config.crop_padding_for(self.info.resolution),
            horizontal_flip: self.config.horizontal_flip,
        };
        Ok(Loader::new(
            self.data.train.clone(),
            self.config.batch_size,
            true,
            true,
            Some(augment),
            self.data.normalize.clone(),
            self.config.seed,
            self.config.workers,
        )?)
    }

    /// Trains to the configured epoch count (from wherever a resumed run stood), calling
    /// `on_epoch` after each epoch, then evaluates on the test set.
    pub fn run(&mut self, on_epoch: &mut dyn FnMut(&EpochRecord)) -> Result<Summary> {
        self.train(on_epoch)?;
        let test = self.evaluate_test()?;
        let test_chance = ChanceLevel::of(self.data.test.as_ref());
        let last = self.history.last();
        // Mean over epochs of each epoch's training throughput (evaluation time excluded).
        let sum_of_epoch_rates: f64 = self
            .history
            .iter()
            .map(|r| r.images_per_second)
            .sum::<f64>();
        Ok(Summary {
            epochs: self.config.epochs,
            final_train_loss: last.map_or(f64::NAN, |r| r.train_loss),
            val_top1: last.and_then(|r| r.val_top1),
            val_top5: last.and_then(|r| r.val_top5),
            test_loss: test.loss,
            test_top1: test.top1,
            test_top5: test.top5,
            test_chance,
            learned_nothing: test_chance.at_chance(test.top1),
            images_per_second: sum_of_epoch_rates / self.history.len().max(1) as f64,
            elapsed_seconds: self.elapsed(),
            params: self.net.num_params(),
            checkpoint: self.out.as_ref().map(|d| d.join(MODEL_FILE)),
        })
    }

    /// Seconds trained so far, across resumes.
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// Trains to the configured epoch count (from wherever a resumed run stood), calling
    /// `on_epoch` after each epoch; no test-set evaluation.
    pub fn train(&mut self, on_epoch: &mut dyn FnMut(&EpochRecord)) -> Result<()> {
        self.check_memory()?;
        let loader = self.train_loader()?;
        let steps = loader.batches_per_epoch();
        let schedule = CosineSchedule::for_run(&self.config, steps);
        while self.position.epoch < self.config.epochs {
            let epoch = self.position.epoch;
            let epoch_started = Instant::now();
            let images_before = self.position.seen;
            let bar = self.progress_bar(epoch, steps);
            let mut lr = schedule.lr(self.position.global_step);
            for batch in loader.epoch(epoch, self.position.batch) {
                let batch = batch?;
                lr = schedule.lr(self.position.global_step);
                let ce = train_step(
                    &mut self.net,
                    &mut self.sgd,
                    &batch.images,
                    &batch.labels,
                    self.config.label_smoothing,
                    lr,
                )
                .map_err(|e| match e {
                    StepError::Diverged(ce) => self.diverged(ce.loss),
                    StepError::Failed(e) => e,
                })?;
                let p = &mut self.position;
                p.loss_sum += ce.loss as f64 * batch.labels.len() as f64;
                p.correct += ce.correct;
                p.seen += batch.labels.len();
                p.batch += 1;
                p.global_step += 1;
                bar.set_position(p.batch as u64);
                bar.set_message(format!(
                    "loss {:.4} acc {:.1}% {:.0} img/s",
                    p.loss_sum / p.seen as f64,
                    100.0 * p.correct as f64 / p.seen as f64,
                    (p.seen - images_before) as f64 / epoch_started.elapsed().as_secs_f64()
                ));
                let step_due = self.config.checkpoint_every > 0
                    && p.global_step % self.config.checkpoint_every == 0;
                // At an epoch's last batch, the epoch's end (below) checkpoints or stops.
                if p.batch < steps {
                    if self.stop_requested() {
                        return Err(self.stopped()?);
                    }
                    if self.checkpoint_due(step_due) {
                        self.checkpoint()?;
                    }
                }
            }
            bar.finish_and_clear();
            let seconds = epoch_started.elapsed().as_secs_f64();
            let val = self.evaluate_val()?;
            let p = &self.position;
            let record = EpochRecord {
                epoch: epoch + 1,
                train_loss: p.loss_sum / p.seen.max(1) as f64,
                train_top1: p.correct as f64 / p.seen.max(1) as f64,
                val_loss: val.map(|v| v.loss),
                val_top1: val.map(|v| v.top1),
                val_top5: val.map(|v| v.top5),
                lr,
                images_per_second: (p.seen - images_before) as f64 / seconds.max(1e-9),
                elapsed_seconds: self.elapsed(),
            };
            self.history.push(record.clone());
            self.position = Position {
                epoch: epoch + 1,
                batch: 0,
                global_step: self.position.global_step,
                ..Default::default()
            };
            if self.checkpoint_due(true) {
                self.checkpoint()?;
            }
            on_epoch(&record);
            if self.stop_requested() && self.position.epoch < self.config.epochs {
                return Err(self.stopped()?);
            }
        }
        Ok(())
    }

    /// Re-estimates every batch norm's running statistics on the first `batches` training
    /// batches, the weights untouched: the running statistics become the plain average of those
    /// batches' statistics. For weights fitted from another network (elastic inheritance) or
    /// trained on other data, whose saved statistics no longer describe this network's
    /// activations.
    pub fn recalibrate_batch_norm(&mut self, batches: usize) -> Result<()> {
        let loader = self.train_loader()?;
        let outcome = (|| -> Result<()> {
            for (i, batch) in loader.epoch(0, 0).take(batches).enumerate() {
                let batch = batch?;
                self.net.set_batch_norm_momentum(1.0 / (i + 1) as f32);
                self.net.forward(&batch.images, Mode::Train)?;
            }
            Ok(())
        })();
        self.net
            .set_batch_norm_momentum(BatchNormConfig::PYTORCH.momentum);
        outcome
    }

    /// Test-set loss and accuracy of the current weights.
    pub fn evaluate_test(&mut self) -> Result<Evaluation> {
        self.evaluate_on(self.data.test.clone())
    }

    /// Validation accuracy of the current weights (`None` without a validation split).
    pub fn evaluate_val(&mut self) -> Result<Option<Evaluation>> {
        match self.data.val.clone() {
            Some(val) => Ok(Some(self.evaluate_on(val)?)),
            None => Ok(None),
        }
    }

    fn evaluate_on(&mut self, dataset: Arc<dyn Dataset>) -> Result<Evaluation> {
        let batch = self.config.batch_size.max(256);
        evaluate(
            &mut self.net,
            dataset,
            &self.data.normalize,
            batch,
            self.config.workers,
        )
    }

    fn progress_bar(&self, epoch: usize, steps: usize) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps as u64);
        let style =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
                .expect("the template is valid")
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.config.epochs));
        bar.set_position(self.position.batch as u64);
        bar
    }

    fn diverged(&self, loss: f32) -> Error {
        let checkpoint = match (&self.out, self.checkpointed_step) {
            (Some(dir), Some(step)) => format!(
                "training stopped; the last good checkpoint (step {step}) is in {}",
                dir.display()
            ),
            _ => {
                "training stopped before any checkpoint was written; lower the learning rate".into()
            }
        };
        Error::Diverged {
            epoch: self.position.epoch + 1,
            step: self.position.batch + 1,
            loss,
            checkpoint,
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Checkpoints where the run has an output folder; the error a stopped run returns.
    fn stopped(&mut self) -> Result<Error> {
        let checkpoint = match self.out.clone() {
            Some(dir) => {
                if self.checkpointed_step != Some(self.position.global_step) {
                    self.checkpoint()?;
                }
                format!(
                    "resuming from the checkpoint in {} continues it as if it had not stopped",
                    dir.display()
                )
            }
            None => "it has no output folder, so nothing of it was kept".into(),
        };
        Ok(Error::Stopped {
            steps: self.position.global_step,
            checkpoint,
        })
    }

    /// Whether to write a checkpoint now: by time when an interval is set, else when the
    /// default policy says so (`by_default`: at an epoch's end, or on a `checkpoint_every` step).
    fn checkpoint_due(&self, by_default: bool) -> bool {
        match self.checkpoint_interval {
            Some(interval) => self.last_checkpoint.elapsed() >= interval,
            None => by_default,
        }
    }

    /// Writes the training state, then the model and its architecture, each atomically.
    fn checkpoint(&mut self) -> Result<()> {
        let Some(dir) = self.out.clone() else {
            return Ok(());
        };
        let state = StateRecord {
            format: STATE_FORMAT.into(),
            config: self.config.clone(),
            data: self.data.spec.to_string(),
            model: self.info.clone(),
            position: self.position.clone(),
            history: self.history.clone(),
            elapsed_seconds: self.elapsed(),
        };
        let mut tensors: BTreeMap<String, eatnas_tensor::Tensor> = self
            .net
            .state()
            .into_iter()
            .map(|(k, v)| (format!("model.{k}"), v))
            .collect();
        tensors.extend(
            self.sgd
                .buffers
                .iter()
                .map(|(k, v)| (format!("momentum.{k}"), v.clone())),
        );
        let metadata = HashMap::from([(
            STATE_KEY.to_string(),
            serde_json::to_string(&state).expect("state serialises"),
        )]);
        write_atomic(
            &dir.join(STATE_FILE),
            &checkpoint::encode(&tensors, metadata)?,
        )?;
        checkpoint::save_model(&dir.join(MODEL_FILE), &mut self.net, &self.info)?;
        write_atomic(
            &dir.join(ARCH_FILE),
            self.info.arch.to_json_pretty().as_bytes(),
        )?;
        let log: String = self
            .history
            .iter()
            .map(|r| serde_json::to_string(r).expect("record serialises") + "\n")
            .collect();
        write_atomic(&dir.join("metrics.jsonl"), log.as_bytes())?;
        self.checkpointed_step = Some(self.position.global_step);
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}
