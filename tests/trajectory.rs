//! Training-trajectory conformance: eatnas's trainer step by step against PyTorch's, on every
//! available device. The fixtures (`tests/fixtures/trajectory/*.safetensors`, an open set) are
//! written by `scripts/make-trajectory-fixtures.py`: fixed initial weights, fixed batches, the
//! recipe, PyTorch's float64 loss and learning rate at every step, its final weights and BN
//! running statistics, and two steps taken alone from PyTorch's own state.
//!
//! Tolerances (derived, not picked): float32 arithmetic alone moves a training run. The script
//! trains each case in float64 (the reference) and three times in float32 (plain; initial weights
//! moved by one part in 10^7; images moved by one part in 10^7), and stores how far the worst of
//! those lands from the reference: per step for the loss, per tensor for the final state, and
//! per tensor for each step taken alone. eatnas, in float32, must land within `factor` (4, as in
//! `shared/fixtures`) times that drift:
//! - the loss of step s within 4 x (the largest loss drift of steps 0..=s) + 1e-5 x |loss|: the
//!   drift grows with the steps (one step's rounding is amplified by the next updates; over 24
//!   steps of fmnist-ref it reaches several percent of the loss), and it is not monotone, so the
//!   bound takes its running maximum;
//! - each final tensor within 4 x its drift + 1e-6 x sqrt(n) (L2);
//! - each step taken alone (the steps' state, momenta included, loaded from PyTorch's run): the
//!   loss within 4 x its drift + 1e-6 x |loss|, each tensor after it within
//!   4 x its drift + 1e-6 x sqrt(n). Alone, a step's error does not compound, so these bounds
//!   are tight and catch what the whole run's cannot (a missing Nesterov term, weight decay on
//!   the wrong tensors: see `a_recipe_off_by_one_thing_is_caught`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::Fixture;
use eatnas_nn::{Arch, Network};
use eatnas_tensor::{Device, Tensor};
use eatnas_train::{train_step, CosineSchedule, Sgd, TrainConfig};
use serde_json::Value;

fn fixture_paths() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trajectory");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "{} holds no trajectory fixture",
        dir.display()
    );
    paths
}

/// A fixture decoded: the case, the recipe and PyTorch's reference.
struct Case {
    fixture: Fixture,
    arch: Arch,
    recipe: TrainConfig,
    steps_per_epoch: usize,
    batches: Vec<Vec<usize>>,
    labels: Vec<usize>,
    factor: f64,
}

impl Case {
    fn load(path: &Path) -> Result<Case, String> {
        let fixture = Fixture::load(path)?;
        let meta = |key: &str| {
            fixture
                .meta
                .get(key)
                .cloned()
                .ok_or_else(|| format!("{}: no metadata `{key}`", fixture.name))
        };
        let arch = Arch::from_json(&meta("arch")?.to_string(), &fixture.name)
            .map_err(|e| format!("{}: arch: {e}", fixture.name))?;
        let recipe: TrainConfig = serde_json::from_value(meta("recipe")?)
            .map_err(|e| format!("{}: recipe: {e}", fixture.name))?;
        let bn_momentum = fixture.meta_f64("bn_momentum")?;
        if bn_momentum as f32 != eatnas_tensor::BatchNormConfig::PYTORCH.momentum {
            return Err(format!(
                "{}: BN momentum {bn_momentum}; eatnas's is {}",
                fixture.name,
                eatnas_tensor::BatchNormConfig::PYTORCH.momentum
            ));
        }
        let steps_per_epoch = fixture.meta_usize("steps_per_epoch")?;
        let order = fixture.labels("batches")?;
        let batch = recipe.batch_size;
        let batches: Vec<Vec<usize>> = order.chunks(batch).map(<[usize]>::to_vec).collect();
        if batches.len() != recipe.epochs * steps_per_epoch || order.len() % batch != 0 {
            return Err(format!(
                "{}: {} batch indices do not make {} steps of {batch}",
                fixture.name,
                order.len(),
                recipe.epochs * steps_per_epoch
            ));
        }
        Ok(Case {
            labels: fixture.labels("labels")?,
            factor: fixture.meta_f64("factor")?,
            fixture,
            arch,
            recipe,
            steps_per_epoch,
            batches,
        })
    }

    fn numbers(&self, key: &str) -> Result<Vec<f64>, String> {
        self.fixture
            .meta
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .ok_or_else(|| {
                format!(
                    "{}: metadata `{key}` is not a list of numbers",
                    self.fixture.name
                )
            })
    }

    fn tensors(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        self.fixture
            .floats
            .iter()
            .filter_map(|(k, (shape, values))| {
                let name = k.strip_prefix(prefix)?;
                Some((
                    name.to_string(),
                    Tensor::from_vec(values.clone(), shape).unwrap(),
                ))
            })
            .collect()
    }

    /// The network of the case with the state `prefix.*` loaded (every name, exactly), on `device`.
    fn network(&self, prefix: &str, device: Device) -> Result<Network, String> {
        let in_channels = self.fixture.meta_usize("in_channels")?;
        let classes = self.fixture.meta_usize("classes")?;
        let mut net =
            Network::new(&self.arch, in_channels, classes, 0).map_err(|e| e.to_string())?;
        eatnas_train::checkpoint::load_exact(
            &mut net,
            &self.tensors(prefix),
            Path::new(&self.fixture.name),
        )
        .map_err(|e| e.to_string())?;
        net.to_device(device).map_err(|e| e.to_string())?;
        Ok(net)
    }

    /// The trainer's step `step` on this case's batch for it; returns the loss.
    fn train_step(
        &self,
        net: &mut Network,
        sgd: &mut Sgd,
        recipe: &TrainConfig,
        schedule: &CosineSchedule,
        step: usize,
    ) -> Result<f64, String> {
        let (images, labels) = self.batch(step);
        let lr = schedule.lr(step);
        train_step(net, sgd, &images, &labels, recipe.label_smoothing, lr)
            .map(|ce| ce.loss as f64)
            .map_err(|e| format!("step {step}: {e:?}"))
    }

    /// Learnable parameters of the network (BN running statistics left out).
    fn parameter_count(&self) -> usize {
        self.fixture
            .floats
            .iter()
            .filter(|(name, _)| name.starts_with("init.") && !name.contains(".running_"))
            .map(|(_, (shape, _))| shape.iter().product::<usize>())
            .sum()
    }

    /// The images and labels of step `step`, in the fixture's order.
    fn batch(&self, step: usize) -> (Tensor, Vec<usize>) {
        let (shape, x) = &self.fixture.floats["x"];
        let per_image: usize = shape[1..].iter().product();
        let indices = &self.batches[step];
        let mut values = Vec::with_capacity(indices.len() * per_image);
        for &i in indices {
            values.extend_from_slice(&x[i * per_image..(i + 1) * per_image]);
        }
        let mut batch_shape = shape.clone();
        batch_shape[0] = indices.len();
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        (Tensor::from_vec(values, &batch_shape).unwrap(), labels)
    }
}

/// What one run of a case found: the worst error-to-bound ratio and every bound exceeded.
#[derive(Default)]
struct Report {
    worst: f64,
    failures: Vec<String>,
    /// |eatnas - PyTorch| of each step's loss in the whole run, then of each step alone.
    loss_differences: Vec<f64>,
    alone_differences: Vec<(usize, f64)>,
}

impl Report {
    fn check(&mut self, what: String, error: f64, bound: f64) {
        let ratio = if error.is_nan() {
            f64::INFINITY
        } else {
            error / bound
        };
        self.worst = self.worst.max(ratio);
        if ratio > 1.0 {
            self.failures.push(format!(
                "{what}: error {error:.3e} exceeds bound {bound:.3e} ({ratio:.1}x)"
            ));
        }
    }

    /// Each tensor of `got` against `want.NAME`, within factor x drift + 1e-6 sqrt(n).
    fn check_state(
        &mut self,
        what: &str,
        got: &BTreeMap<String, Tensor>,
        want: &BTreeMap<String, Tensor>,
        drift: &serde_json::Map<String, Value>,
        factor: f64,
    ) {
        for (name, want) in want {
            let Some(got) = got.get(name) else {
                self.failures
                    .push(format!("{what} {name}: eatnas has no such tensor"));
                continue;
            };
            let Some(drift) = drift.get(name).and_then(Value::as_f64) else {
                self.failures
                    .push(format!("{what} {name}: the fixture has no drift for it"));
                continue;
            };
            let (got, want) = (got.to_vec().unwrap(), want.to_vec().unwrap());
            let error = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (g as f64 - w as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let bound = factor * drift + 1e-6 * (want.len() as f64).sqrt();
            self.check(format!("{what} {name}"), error, bound);
        }
    }
}

/// What of a case runs on a device.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    /// The whole trajectory from the initial weights, then each step alone.
    WholeRun,
    /// Each step alone.
    StepsAlone,
}

/// The host CUDA emulator runs kernels on the host's cores, far slower than a GPU: there, a case
/// with more parameters than this runs its steps alone only (fmnist-ref's whole run would take
/// most of CI's time on it). A real GPU, like the CPU, runs every case whole.
const EMULATOR_WHOLE_RUN_PARAMS: usize = 100_000;

fn scope(case: &Case, device: Device) -> Scope {
    let emulated = device != Device::Cpu && device.name().contains("emulator");
    if emulated && case.parameter_count() > EMULATOR_WHOLE_RUN_PARAMS {
        Scope::StepsAlone
    } else {
        Scope::WholeRun
    }
}

/// Runs `case` with `recipe` on `device`: the whole trajectory from the initial weights (unless
/// `scope` says the steps alone only), then each step the fixture took alone.
fn run(case: &Case, recipe: &TrainConfig, device: Device, scope: Scope) -> Result<Report, String> {
    let mut report = Report::default();
    let schedule = CosineSchedule::for_run(recipe, case.steps_per_epoch);
    let (want_loss, want_lr) = (case.numbers("loss")?, case.numbers("lr")?);
    let drift = case.numbers("loss_drift")?;

    // The whole run.
    if scope == Scope::WholeRun {
        let mut net = case.network("init.", device)?;
        let mut sgd = Sgd::for_config(recipe);
        let mut running_drift: f64 = 0.0;
        for (step, (&want, &lr)) in want_loss.iter().zip(&want_lr).enumerate() {
            let got_lr = schedule.lr(step) as f64;
            report.check(
                format!("learning rate of step {step}"),
                (got_lr - lr).abs(),
                1e-6 * lr.max(1e-6),
            );
            let loss = case.train_step(&mut net, &mut sgd, recipe, &schedule, step)?;
            running_drift = running_drift.max(drift[step]);
            let bound = case.factor * running_drift + 1e-5 * want.abs();
            let difference = (loss - want).abs();
            report.loss_differences.push(difference);
            report.check(format!("loss of step {step}"), difference, bound);
        }
        let tensor_drift = case.fixture.meta["tensor_drift"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        report.check_state(
            "final",
            &net.state(),
            &case.tensors("final."),
            &tensor_drift,
            case.factor,
        );
    }

    // Each step alone, from PyTorch's state before it.
    let one_steps = case.fixture.meta["one_steps"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if one_steps.is_empty() {
        return Err(format!("{}: no steps to take alone", case.fixture.name));
    }
    for (step, reference) in &one_steps {
        let s: usize = step
            .parse()
            .map_err(|_| format!("one_steps: `{step}` is not a step"))?;
        let before = if s == 0 {
            "init.".to_string()
        } else {
            format!("step{s}.before.")
        };
        let mut net = case.network(&before, device)?;
        let mut sgd = Sgd::for_config(recipe);
        sgd.buffers = case.tensors(&format!("step{s}.momentum."));
        let loss = case.train_step(&mut net, &mut sgd, recipe, &schedule, s)?;
        let want = reference["loss"].as_f64().unwrap_or(f64::NAN);
        let drift = reference["loss_drift"].as_f64().unwrap_or(f64::NAN);
        let difference = (loss - want).abs();
        report.alone_differences.push((s, difference));
        report.check(
            format!("step {s} alone: loss"),
            difference,
            case.factor * drift + 1e-6 * want.abs(),
        );
        let state_drift = reference["state_drift"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        report.check_state(
            &format!("step {s} alone: after"),
            &net.state(),
            &case.tensors(&format!("step{s}.after.")),
            &state_drift,
            case.factor,
        );
    }
    Ok(report)
}

#[test]
fn training_follows_pytorch_step_by_step_on_every_device() {
    let devices = Device::available();
    if devices.len() == 1 {
        println!("trajectory: no CUDA device available, skipped the CUDA device");
    }
    let mut failures = Vec::new();
    for path in fixture_paths() {
        let case = Case::load(&path).unwrap_or_else(|e| panic!("{e}"));
        for &device in &devices {
            let scope = scope(&case, device);
            match run(&case, &case.recipe, device, scope) {
                Ok(report) if report.failures.is_empty() => {
                    let alone: Vec<String> = report
                        .alone_differences
                        .iter()
                        .map(|(s, d)| format!("step {s} alone {d:.1e}"))
                        .collect();
                    let whole = match (scope, report.loss_differences.as_slice()) {
                        (Scope::WholeRun, d @ [first, second, .., last]) => format!(
                            "{} steps, |loss - PyTorch's| step 0 {first:.1e}, step 1 {second:.1e}, \
                             last {last:.1e}, largest {:.1e}",
                            d.len(),
                            d.iter().copied().fold(0.0, f64::max)
                        ),
                        _ => {
                            "steps alone only (the emulator; the whole run waits for a GPU)".into()
                        }
                    };
                    println!(
                        "trajectory {} [{device}] ok: worst error {:.2} of its bound; {whole}; {}",
                        case.fixture.name,
                        report.worst,
                        alone.join(", ")
                    )
                }
                Ok(report) => failures.extend(
                    report
                        .failures
                        .into_iter()
                        .map(|f| format!("{} [{device}] {f}", case.fixture.name)),
                ),
                Err(e) => failures.push(format!("{} [{device}]: {e}", case.fixture.name)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} bound(s) exceeded:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The same comparison fails when the recipe eatnas runs is off by one thing: the bounds are
/// tight enough to tell.
#[test]
fn a_recipe_off_by_one_thing_is_caught() {
    let case = Case::load(&fixture_paths()[0]).unwrap_or_else(|e| panic!("{e}"));
    let right = &case.recipe;
    let variants = [
        (
            "momentum without Nesterov",
            TrainConfig {
                nesterov: false,
                ..right.clone()
            },
        ),
        (
            "no label smoothing",
            TrainConfig {
                label_smoothing: 0.0,
                ..right.clone()
            },
        ),
        (
            "weight decay 1e-4",
            TrainConfig {
                weight_decay: 1e-4,
                ..right.clone()
            },
        ),
        (
            "momentum 0.8",
            TrainConfig {
                momentum: 0.8,
                ..right.clone()
            },
        ),
        (
            "no warm-up",
            TrainConfig {
                warmup_epochs: 0.0,
                ..right.clone()
            },
        ),
    ];
    for (what, recipe) in variants {
        let report =
            run(&case, &recipe, Device::Cpu, Scope::WholeRun).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !report.failures.is_empty(),
            "{}: the recipe with {what} passed (worst error {:.2} of its bound)",
            case.fixture.name,
            report.worst
        );
        println!(
            "trajectory {} with {what}: caught, {} bound(s) exceeded, worst {:.1}x",
            case.fixture.name,
            report.failures.len(),
            report.worst
        );
    }
}
