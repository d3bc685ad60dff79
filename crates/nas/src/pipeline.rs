//! The whole of EAT-NAS: stage 1 on the small task, the basic architecture, elastic transfer,
//! stage 2 on the large task (and the baseline from scratch with the same budget and seed),
//! final training of the winner, and the output folder. Every part resumes where it stood.

use std::path::{Path, PathBuf};

use eatnas_data::DataSpec;
use eatnas_nn::{Arch, Counts};
use eatnas_train::fs::write_atomic;
use eatnas_train::{PreparedData, TrainConfig, Trainer};
use serde::{Deserialize, Serialize};

use crate::config::SearchConfig;
use crate::evaluator::{CandidateTrainer, ProxyEvaluator, StageEvaluator, TaskConfig, Weights};
use crate::evolution::{
    Candidate, EvolutionConfig, EvolutionState, Initializer, Member, Outcome, Record,
};
use crate::fitness::FitnessConfig;
use crate::plots::{pareto_chart, quality_chart};
use crate::runner::{load_stage, run_stage, HISTORY_FILE};
use crate::space::Genome;
use crate::{Error, Result, VERSION};

/// What a search folder was started to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Stage 1 only.
    Search,
    /// Stage 2 only: from a given basic architecture, and/or from scratch.
    Transfer {
        seed_arch: Option<Arch>,
        from_scratch: bool,
    },
    /// Stage 1, transfer, stage 2, the scratch baseline when configured, final training.
    Run,
}

#[derive(Serialize, Deserialize)]
struct CommandFile {
    version: String,
    command: Command,
}

const CONFIG_FILE: &str = "config.toml";
const COMMAND_FILE: &str = "command.json";

/// Events for a progress display.
pub enum Event<'a> {
    StageStarted {
        stage: &'a str,
        done: usize,
        budget: usize,
    },
    Evaluated {
        stage: &'a str,
        budget: usize,
        record: &'a Record,
    },
    FinalEpoch {
        epoch: usize,
        epochs: usize,
        val_top1: Option<f64>,
    },
}

/// Starts a new search in `dir` (which must not hold one).
pub fn start(
    config: SearchConfig,
    command: Command,
    dir: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<serde_json::Value> {
    config.validate()?;
    if dir.join(CONFIG_FILE).exists() {
        return Err(Error::Config(format!(
            "{} already holds a search; continue it with `eatnas-cli resume {}` or choose another --out",
            dir.display(),
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
    let command_file = CommandFile {
        version: VERSION.into(),
        command: command.clone(),
    };
    write_atomic(
        &dir.join(COMMAND_FILE),
        serde_json::to_string_pretty(&command_file)
            .expect("serialises")
            .as_bytes(),
    )?;
    execute(&config, &command, dir, on_event)
}

/// Continues the search in `dir` from its saved states.
/// Resumes the search in `dir`, training on `devices` (see [`SearchConfig::devices`]).
pub fn resume(
    dir: &Path,
    devices: &[eatnas_tensor::Device],
    on_event: &mut dyn FnMut(Event),
) -> Result<serde_json::Value> {
    let command_path = dir.join(COMMAND_FILE);
    if !command_path.exists() {
        return Err(Error::file(
            dir,
            "no search to resume here (no command.json)",
        ));
    }
    let text = std::fs::read_to_string(&command_path).map_err(|e| Error::file(&command_path, e))?;
    let command_file: CommandFile = serde_json::from_str(&text)
        .map_err(|e| Error::file(&command_path, format!("unreadable: {e}")))?;
    if command_file.version != VERSION {
        return Err(Error::file(
            &command_path,
            format!(
                "written by eatnas {}; this is {}: start a new search",
                command_file.version, VERSION
            ),
        ));
    }
    let mut config = SearchConfig::load(&dir.join(CONFIG_FILE))?;
    config.devices = devices.to_vec();
    execute(&config, &command_file.command, dir, on_event)
}

/// One evolution stage in `dir/name`, resumed if it has a state there.
fn stage(
    config: &SearchConfig,
    name: &str,
    dir: &Path,
    evolution: &EvolutionConfig,
    fitness: &FitnessConfig,
    blocks: usize,
    initializer: Initializer,
    trainer: &dyn CandidateTrainer,
    on_event: &mut dyn FnMut(Event),
) -> Result<EvolutionState> {
    // Each stage has its own inheritance store: ids restart with every stage.
    let evaluator = StageEvaluator::new(trainer);
    let stage_dir = dir.join(name);
    let fingerprint = config.fingerprint();
    let mut state = match load_stage(&stage_dir, &fingerprint)? {
        Some(state) => state,
        None => EvolutionState::new(
            evolution.clone(),
            config.space.clone(),
            fitness.clone(),
            blocks,
            initializer,
            config.seed,
        )?,
    };
    on_event(Event::StageStarted {
        stage: name,
        done: state.evaluated.len(),
        budget: evolution.budget,
    });
    run_stage(
        &mut state,
        &evaluator,
        config.workers,
        &stage_dir,
        &fingerprint,
        &mut |record| {
            on_event(Event::Evaluated {
                stage: name,
                budget: evolution.budget,
                record,
            })
        },
    )?;
    Ok(state)
}

/// An evaluator opened only when a stage needs one (opening reads and resizes the dataset).
struct LazyEvaluator<'a> {
    task: &'a TaskConfig,
    seed: u64,
    devices: &'a [eatnas_tensor::Device],
    opened: std::sync::OnceLock<std::result::Result<ProxyEvaluator, String>>,
}

impl<'a> LazyEvaluator<'a> {
    fn new(task: &'a TaskConfig, seed: u64, devices: &'a [eatnas_tensor::Device]) -> Self {
        LazyEvaluator {
            task,
            seed,
            devices,
            opened: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&ProxyEvaluator> {
        self.opened
            .get_or_init(|| {
                ProxyEvaluator::new(self.task, self.seed)
                    .map(|e| e.with_devices(self.devices))
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::Config(format!("opening task data {}: {e}", self.task.data)))
    }
}

impl CandidateTrainer for LazyEvaluator<'_> {
    fn inherits(&self) -> Result<bool> {
        Ok(self.task.inherit_weights)
    }

    fn train_candidate(
        &self,
        candidate: &Candidate,
        parent: Option<&Weights>,
        worker: usize,
    ) -> Result<(Outcome, Option<Weights>)> {
        self.get()?.train_candidate(candidate, parent, worker)
    }
}

fn write_arch(path: &Path, arch: &Arch) -> Result<()> {
    Ok(write_atomic(path, arch.to_json_pretty().as_bytes())?)
}

fn member_json(member: &Member, arch: &Arch) -> serde_json::Value {
    serde_json::json!({
        "id": member.id,
        "genome": member.genome.key(),
        "accuracy": member.accuracy,
        "fitness": member.fitness,
        "madds": member.madds,
        "params": member.params,
        "arch": arch,
    })
}

/// The per-evaluation quality curve (mean fitness of the population's top k) of a stage.
fn quality_curve(stage_dir: &Path) -> Result<Vec<f64>> {
    let path = stage_dir.join(HISTORY_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
    text.lines()
        .map(|l| {
            serde_json::from_str::<Record>(l)
                .map(|r| r.quality.top_k_mean)
                .map_err(|e| Error::file(&path, format!("bad line: {e}")))
        })
        .collect()
}

fn stage_json(
    state: &EvolutionState,
    curve: &[f64],
    task: &TaskConfig,
    name: &str,
) -> Result<serde_json::Value> {
    let best = state
        .best()
        .ok_or_else(|| Error::Config(format!("{name}: no evaluation")))?;
    let arch = best.genome.to_arch(&task.macro_config, name)?;
    Ok(serde_json::json!({
        "evaluations": state.evaluated.len(),
        "best": member_json(best, &arch),
        "final_population_top_k_mean": curve.last(),
        "quality_curve": curve,
    }))
}

fn execute(
    config: &SearchConfig,
    command: &Command,
    dir: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let blocks = config.small.macro_config.blocks();
    let small = LazyEvaluator::new(&config.small, config.seed, &config.devices);
    let large = LazyEvaluator::new(&config.large, config.seed, &config.devices);
    let mut summary =
        serde_json::json!({ "version": VERSION, "seed": config.seed, "command": command });
    let mut outputs: Vec<PathBuf> = Vec::new();

    // Stage 1 and the basic architecture.
    let basic: Option<Genome> = match command {
        Command::Transfer {
            seed_arch,
            from_scratch,
        } => match seed_arch {
            Some(arch) => Some(Genome::from_arch(arch, &config.space, blocks)?),
            None if *from_scratch => None,
            None => {
                return Err(Error::Config(
                    "transfer: give a seed architecture, or ask for the search from scratch".into(),
                ))
            }
        },
        Command::Search | Command::Run => {
            let state = stage(
                config,
                "stage1",
                dir,
                &config.stage1,
                &config.small_fitness,
                blocks,
                Initializer::Random,
                &small,
                on_event,
            )?;
            let best = state.best().expect("a finished stage has evaluations");
            let arch = best.genome.to_arch(&config.small.macro_config, "basic")?;
            write_arch(&dir.join("basic_arch.json"), &arch)?;
            outputs.push(dir.join("basic_arch.json"));
            summary["stage1"] = stage_json(
                &state,
                &quality_curve(&dir.join("stage1"))?,
                &config.small,
                "stage1",
            )?;
            Some(best.genome.clone())
        }
    };
    if *command == Command::Search {
        write_top(config, dir, "stage1", &config.small, &mut outputs)?;
        return finish(config, dir, summary, outputs, started);
    }

    // Stage 2: transfer, and the baseline from scratch.
    let from_scratch_only = matches!(
        command,
        Command::Transfer {
            from_scratch: true,
            seed_arch: None
        }
    );
    let mut curves: Vec<(String, Vec<f64>)> = Vec::new();
    let mut points: Vec<(String, Vec<(u64, f64)>)> = Vec::new();
    let mut winner_stage = "transfer";
    if !from_scratch_only {
        let basic = basic.expect("stage 1 or the seed gives a basic architecture");
        let init = Initializer::Transfer {
            basic,
            p: config.transfer.p,
            q: config.transfer.q,
        };
        let state = stage(
            config,
            "transfer",
            dir,
            &config.stage2,
            &config.large_fitness,
            blocks,
            init,
            &large,
            on_event,
        )?;
        let curve = quality_curve(&dir.join("transfer"))?;
        summary["transfer"] = stage_json(&state, &curve, &config.large, "transfer")?;
        curves.push(("transfer".into(), curve));
        points.push((
            "transfer".into(),
            state
                .evaluated
                .iter()
                .map(|m| (m.madds, m.accuracy))
                .collect(),
        ));
    }
    let scratch = matches!(
        command,
        Command::Transfer {
            from_scratch: true,
            ..
        }
    ) || (*command == Command::Run && config.scratch_baseline);
    if scratch {
        let state = stage(
            config,
            "scratch",
            dir,
            &config.stage2,
            &config.large_fitness,
            blocks,
            Initializer::Random,
            &large,
            on_event,
        )?;
        let curve = quality_curve(&dir.join("scratch"))?;
        summary["scratch"] = stage_json(&state, &curve, &config.large, "scratch")?;
        curves.push(("from scratch".into(), curve));
        points.push((
            "from scratch".into(),
            state
                .evaluated
                .iter()
                .map(|m| (m.madds, m.accuracy))
                .collect(),
        ));
        if from_scratch_only {
            winner_stage = "scratch";
        }
    }
    if curves.len() == 2 {
        let (t, s) = (&curves[0].1, &curves[1].1);
        let at = |v: &Vec<f64>, n: usize| v.get(n.saturating_sub(1)).copied();
        let checkpoints: Vec<serde_json::Value> = [
            config.stage2.population,
            (config.stage2.population + config.stage2.budget) / 2,
            config.stage2.budget,
        ]
        .iter()
        .map(
            |&n| serde_json::json!({ "evaluations": n, "transfer": at(t, n), "scratch": at(s, n) }),
        )
        .collect();
        summary["transfer_vs_scratch"] = serde_json::json!({
            "metric": format!("mean fitness of the population's top {}", config.stage2.top_k),
            "at": checkpoints,
            "area_transfer": t.iter().sum::<f64>() / t.len().max(1) as f64,
            "area_scratch": s.iter().sum::<f64>() / s.len().max(1) as f64,
        });
    }
    let quality_path = dir.join("quality.svg");
    quality_chart(
        &quality_path,
        "Population quality on the large task",
        &format!("mean fitness of top {}", config.stage2.top_k),
        &curves,
    )?;
    let pareto_path = dir.join("pareto.svg");
    pareto_chart(
        &pareto_path,
        "Every evaluated network on the large task",
        &points,
    )?;
    outputs.extend([quality_path, pareto_path]);
    write_top(config, dir, winner_stage, &config.large, &mut outputs)?;

    // The winner, trained in full.
    let state =
        load_stage(&dir.join(winner_stage), &config.fingerprint())?.expect("the stage just ran");
    let winner = state.best().expect("a finished stage has evaluations");
    let final_arch = winner.genome.to_arch(&config.large.macro_config, "final")?;
    write_arch(&dir.join("final_arch.json"), &final_arch)?;
    outputs.push(dir.join("final_arch.json"));
    if *command == Command::Run {
        summary["final"] = final_training(config, &final_arch, dir, on_event)?;
        outputs.push(dir.join("final").join("model.safetensors"));
    }
    finish(config, dir, summary, outputs, started)
}

/// Writes the best `top_k` distinct architectures of a stage as `top/NN.json`.
fn write_top(
    config: &SearchConfig,
    dir: &Path,
    stage_name: &str,
    task: &TaskConfig,
    outputs: &mut Vec<PathBuf>,
) -> Result<()> {
    let state = load_stage(&dir.join(stage_name), &config.fingerprint())?.expect("the stage ran");
    let top_dir = dir.join("top");
    std::fs::create_dir_all(&top_dir).map_err(|e| Error::file(&top_dir, e))?;
    for (rank, member) in state.top(config.top_k).into_iter().enumerate() {
        let arch = member
            .genome
            .to_arch(&task.macro_config, &format!("{stage_name}-top{}", rank + 1))?;
        let path = top_dir.join(format!("{:02}.json", rank + 1));
        write_arch(&path, &arch)?;
        outputs.push(path);
    }
    Ok(())
}

fn final_training(
    config: &SearchConfig,
    arch: &Arch,
    dir: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<serde_json::Value> {
    let out = dir.join("final");
    let mut trainer = if out.join(eatnas_train::checkpoint::STATE_FILE).exists() {
        Trainer::resume(&out)?
    } else {
        let f = &config.final_training;
        let train_config = TrainConfig {
            epochs: f.epochs,
            batch_size: f.batch_size,
            lr: f.lr as f32,
            warmup_epochs: f.warmup_epochs as f32,
            val_fraction: f.val_fraction,
            resolution: config.large.resolution,
            seed: config.seed,
            init: f.init,
            zero_residual_bn: f.zero_residual_bn,
            ..TrainConfig::default()
        };
        let spec: DataSpec = config.large.data.parse()?;
        let data = PreparedData::open(&spec, &train_config)?;
        Trainer::new(train_config, arch, data, Some(out.clone()))?
    };
    let device = config
        .devices
        .first()
        .copied()
        .unwrap_or(eatnas_tensor::Device::Cpu);
    trainer.to_device(device)?;
    let epochs = trainer.config().epochs;
    let result = trainer.run(&mut |r| {
        on_event(Event::FinalEpoch {
            epoch: r.epoch,
            epochs,
            val_top1: r.val_top1,
        })
    })?;
    let shape = trainer.data().train.shape();
    let counts = Counts::new(
        arch,
        shape.channels,
        shape.size,
        trainer.data().train.classes(),
    )?;
    Ok(serde_json::json!({
        "test_top1": result.test_top1,
        "test_top5": result.test_top5,
        "val_top1": result.val_top1,
        "madds": counts.madds,
        "params": counts.params,
        "epochs": result.epochs,
        "checkpoint": result.checkpoint,
    }))
}

fn finish(
    config: &SearchConfig,
    dir: &Path,
    mut summary: serde_json::Value,
    outputs: Vec<PathBuf>,
    started: std::time::Instant,
) -> Result<serde_json::Value> {
    summary["outputs"] = serde_json::json!(outputs);
    summary["seconds_this_session"] = serde_json::json!(started.elapsed().as_secs_f64());
    summary["fingerprint"] = serde_json::json!(config.fingerprint());
    write_atomic(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .expect("serialises")
            .as_bytes(),
    )?;
    Ok(summary)
}
