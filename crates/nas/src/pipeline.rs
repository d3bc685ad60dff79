//! The whole of EAT-NAS: stage 1 on the small task, the basic architecture, elastic transfer,
//! stage 2 on the large task (and the baseline from scratch with the same budget and seed),
//! final training of the winner, and the output folder. Every part resumes where it stood; one
//! coordinator at a time holds the folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use eatnas_data::DataSpec;
use eatnas_nn::{Arch, Counts};
use eatnas_tensor::Device;
use eatnas_train::fs::write_atomic;
use eatnas_train::{PreparedData, TrainConfig, Trainer};
use serde::{Deserialize, Serialize};

use crate::config::SearchConfig;
use crate::evolution::{EvolutionConfig, EvolutionState, Initializer, Record};
use crate::executor::{Executor, ExecutorKind};
use crate::fitness::FitnessConfig;
use crate::job::{ParentWeights, ProxyTraining};
use crate::lock::Lock;
use crate::plots::{pareto_chart, quality_chart};
use crate::runner::{
    parse_history, run_stage, Control, Progress, SavedStage, StageRun, HISTORY_FILE,
};
use crate::space::Genome;
use crate::summary::{
    process_cpu_seconds, BestMember, Comparison, ComparisonPoint, FinalSummary, FrontMember,
    StageSummary, Summary,
};
use crate::task::TaskConfig;
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
        /// The seed architecture's trained weights (with `[transfer] inherit_weights`), copied
        /// into the folder as `basic_weights.safetensors` at the start.
        #[serde(default)]
        seed_weights: Option<PathBuf>,
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
/// How often the live report is rewritten at most.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
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
    Retrying {
        stage: &'a str,
        candidate: usize,
        attempt: usize,
        reason: &'a str,
    },
    /// What the executor's jobs are doing, when it changes.
    Waiting { stage: &'a str, status: &'a str },
    FinalEpoch {
        epoch: usize,
        epochs: usize,
        val_top1: Option<f64>,
    },
}

/// The run-time choices of one coordinator session (not part of the search's identity).
#[derive(Clone, Default)]
pub struct Session {
    /// Where local workers train (see [`SearchConfig::devices`]); `None`: the configuration's.
    pub devices: Option<Vec<Device>>,
    /// Overrides the configuration's `[executor] kind`.
    pub executor: Option<ExecutorKind>,
    /// Set (by a signal handler) to stop: jobs are cancelled, or left running with `detach`.
    pub stop: Arc<AtomicBool>,
    pub detach: bool,
}

/// Starts a new search in `dir` (which must not hold one).
pub fn start(
    mut config: SearchConfig,
    command: Command,
    dir: &Path,
    session: &Session,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    config.validate()?;
    if dir.join(CONFIG_FILE).exists() {
        return Err(Error::refused(
            dir,
            format!(
                "already holds a search; continue it with `eatnas-cli resume {}` or choose another --out",
                dir.display()
            ),
        ));
    }
    if let Some(kind) = session.executor {
        config.executor.kind = kind;
    }
    config.executor.kind.check_detach(session.detach)?;
    let seed_weights = seed_weights(&config, &command)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let _lock = Lock::acquire(dir)?;
    if let Some(bytes) = seed_weights {
        write_atomic(&dir.join(BASIC_WEIGHTS_FILE), &bytes)?;
    }
    // The configuration last: its presence says a search exists here, so that a kill before it
    // leaves a folder that `run` starts again (and `resume` names as never begun).
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
    write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
    if let Some(devices) = &session.devices {
        config.devices = devices.clone();
    }
    let outcome = Pipeline::new(&config, dir, session).execute(&command, on_event);
    final_report(dir, outcome)
}

/// The seed architecture's weights file of a transfer of weights, read and checked before the
/// search starts; `None` when the command transfers no weights.
fn seed_weights(config: &SearchConfig, command: &Command) -> Result<Option<Vec<u8>>> {
    let Command::Transfer {
        seed_arch,
        seed_weights,
        ..
    } = command
    else {
        return Ok(None);
    };
    let key = "transfer.inherit_weights";
    match (config.transfer.inherit_weights, seed_arch, seed_weights) {
        (true, Some(arch), Some(file)) => {
            let parent = ParentWeights::transferred(file.clone(), arch);
            crate::job::read_parent(&parent).map_err(|reason| Error::invalid(key, reason))?;
            Ok(Some(std::fs::read(file).map_err(|e| Error::io(file, e))?))
        }
        (true, Some(_), None) => Err(Error::invalid(
            key,
            "the transferred population starts from the basic architecture's weights: give them with --seed-weights (basic_weights.safetensors of a run), or set inherit_weights = false",
        )),
        (false, _, Some(_)) => Err(Error::invalid(
            key,
            "--seed-weights given, but the configuration transfers no weights; set [transfer] inherit_weights = true",
        )),
        _ => Ok(None),
    }
}

/// Writes the report of a coordinator that stops (done, interrupted or failed): no longer live.
fn final_report(dir: &Path, outcome: Result<Summary>) -> Result<Summary> {
    if let Err(e) = crate::report::write_report(dir, false) {
        eprintln!(
            "warning: {}: {e}",
            dir.join(crate::report::REPORT_FILE).display()
        );
    }
    outcome
}

/// Resumes the search in `dir` from its saved states.
pub fn resume(dir: &Path, session: &Session, on_event: &mut dyn FnMut(Event)) -> Result<Summary> {
    let command_path = dir.join(COMMAND_FILE);
    if !command_path.exists() {
        return Err(Error::refused(
            dir,
            "no search to resume here (no command.json)",
        ));
    }
    if !dir.join(CONFIG_FILE).exists() {
        return Err(Error::refused(
            dir,
            "no search to resume here: it was stopped before it began (no config.toml); start it again with the same command",
        ));
    }
    let _lock = Lock::acquire(dir)?;
    let text = std::fs::read_to_string(&command_path).map_err(|e| Error::io(&command_path, e))?;
    let command_file: CommandFile = serde_json::from_str(&text)
        .map_err(|e| Error::corrupt(&command_path, format!("unreadable: {e}")))?;
    if command_file.version != VERSION {
        return Err(Error::refused(
            &command_path,
            format!(
                "written by eatnas {}; this is {}: start a new search",
                command_file.version, VERSION
            ),
        ));
    }
    let mut config = SearchConfig::load(&dir.join(CONFIG_FILE))?;
    if let Some(kind) = session.executor {
        config.executor.kind = kind;
    }
    config.executor.kind.check_detach(session.detach)?;
    config.devices = session.devices.clone().unwrap_or_default();
    let outcome = Pipeline::new(&config, dir, session).execute(&command_file.command, on_event);
    final_report(dir, outcome)
}

/// One stage of the pipeline.
struct StagePlan<'a> {
    name: &'static str,
    task: &'a TaskConfig,
    evolution: &'a EvolutionConfig,
    fitness: &'a FitnessConfig,
    initializer: Initializer,
    /// Where the initial population starts from (a transfer of weights).
    transfer_weights: Option<ParentWeights>,
    /// Keep the best member's trained weights (to transfer them).
    keep_best_weights: bool,
}

/// The basic architecture's trained weights, as the transferred population inherits them.
const BASIC_WEIGHTS_FILE: &str = "basic_weights.safetensors";

struct Pipeline<'a> {
    config: &'a SearchConfig,
    dir: &'a Path,
    session: &'a Session,
    /// Names this search's jobs: the folder's name and a hash of its full path.
    search: String,
    /// Opens each task's data once for the local executor's workers.
    training: Arc<ProxyTraining>,
    /// Made when the first stage with work left starts (the Slurm probe runs then).
    executor: Option<Box<dyn Executor>>,
}

/// A name for the jobs of the folder `dir`: its name and a hash of its full path.
pub(crate) fn search_name(dir: &Path) -> String {
    let full = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut hash: u32 = 0x811c_9dc5;
    for byte in full.to_string_lossy().bytes() {
        hash ^= byte as u32;
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let name: String = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{name}-{:06x}", hash & 0xff_ffff)
}

impl<'a> Pipeline<'a> {
    fn new(config: &'a SearchConfig, dir: &'a Path, session: &'a Session) -> Pipeline<'a> {
        Pipeline {
            config,
            dir,
            session,
            search: search_name(dir),
            training: Arc::new(
                ProxyTraining::new()
                    .checkpoint_by_time(config.executor.checkpoint_interval())
                    .jobs_at_once(config.workers),
            ),
            executor: None,
        }
    }

    fn executor(&mut self) -> Result<&mut dyn Executor> {
        if self.executor.is_none() {
            self.executor = Some(crate::executor::make(
                &self.config.executor,
                self.config.workers,
                &self.config.devices,
                self.training.clone(),
                self.dir,
            )?);
        }
        Ok(self.executor.as_deref_mut().expect("just made"))
    }

    /// Runs (or resumes) one stage to its budget in `dir/plan.name`.
    fn stage(
        &mut self,
        plan: StagePlan,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<EvolutionState> {
        let stage_dir = self.dir.join(plan.name);
        let fingerprint = self.config.fingerprint();
        let mut saved = match SavedStage::load(&stage_dir, &fingerprint)? {
            Some(saved) => saved,
            None => SavedStage::new(
                EvolutionState::new(
                    plan.evolution.clone(),
                    self.config.space.clone(),
                    plan.fitness.clone(),
                    self.config.small.macro_config.blocks(),
                    plan.initializer,
                    self.config.seed,
                )?,
                &fingerprint,
            ),
        };
        let (name, budget) = (plan.name, plan.evolution.budget);
        on_event(Event::StageStarted {
            stage: name,
            done: saved.state.evaluated.len(),
            budget,
        });
        if !saved.state.done() && self.config.executor.kind == ExecutorKind::Local {
            // A missing or unreadable dataset stops the search here, not in every candidate.
            self.training.data(plan.task, self.config.seed)?;
        }
        // A table of another device, resolution, batch or version, or one that lacks a piece of
        // the space, stops the search here too.
        let latency = match &plan.fitness.latency {
            Some(objective) if !saved.state.done() => Some(crate::latency::StageLatency::open(
                objective,
                &self.config.space,
                plan.task,
                &stage_dir,
            )?),
            _ => None,
        };
        let run = StageRun {
            dir: &stage_dir,
            search: &self.search.clone(),
            stage: name,
            task: plan.task,
            seed: self.config.seed,
            workers: self.config.workers,
            max_retries: self.config.executor.max_retries,
            transfer_weights: plan.transfer_weights.clone(),
            keep_best_weights: plan.keep_best_weights,
            latency: latency.as_ref(),
        };
        let session = self.session;
        let control = Control {
            stop: &session.stop,
            detach: session.detach,
        };
        // The live report, rewritten at most every REPORT_EVERY (it reads every history line).
        let dir = self.dir;
        let mut reported: Option<std::time::Instant> = None;
        let executor = if saved.state.done() {
            None
        } else {
            Some(self.executor()?)
        };
        if let Some(executor) = executor {
            run_stage(
                &mut saved,
                executor,
                &run,
                &control,
                &mut |progress| match progress {
                    Progress::Evaluated(record) => {
                        on_event(Event::Evaluated {
                            stage: name,
                            budget,
                            record,
                        });
                        if reported.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
                            // A report that cannot be written does not stop the search.
                            let _ = crate::report::write_report(dir, true);
                            reported = Some(std::time::Instant::now());
                        }
                    }
                    Progress::Retrying {
                        candidate,
                        attempt,
                        reason,
                    } => on_event(Event::Retrying {
                        stage: name,
                        candidate,
                        attempt,
                        reason,
                    }),
                    Progress::Waiting(status) => on_event(Event::Waiting {
                        stage: name,
                        status: &status,
                    }),
                },
            )?;
        }
        Ok(saved.state)
    }

    fn execute(mut self, command: &Command, on_event: &mut dyn FnMut(Event)) -> Result<Summary> {
        let started = std::time::Instant::now();
        let config = self.config;
        let blocks = config.small.macro_config.blocks();
        let mut summary = Summary {
            version: VERSION.into(),
            seed: config.seed,
            command: command.clone(),
            stage1: None,
            transfer: None,
            scratch: None,
            transfer_vs_scratch: None,
            final_training: None,
            outputs: Vec::new(),
            seconds_this_session: 0.0,
            coordinator_cpu_seconds: 0.0,
            fingerprint: config.fingerprint(),
        };

        // Stage 1 and the basic architecture (and its weights, for a transfer of weights).
        let mut basic_weights: Option<ParentWeights> = None;
        let basic: Option<Genome> = match command {
            Command::Transfer {
                seed_arch: Some(arch),
                ..
            } => {
                if config.transfer.inherit_weights {
                    basic_weights = Some(ParentWeights::transferred(
                        self.dir.join(BASIC_WEIGHTS_FILE),
                        arch,
                    ));
                }
                Some(Genome::from_arch(arch, &config.space, blocks)?)
            }
            Command::Transfer {
                seed_arch: None,
                from_scratch: true,
                ..
            } => None,
            Command::Transfer { .. } => {
                return Err(Error::invalid(
                    "transfer",
                    "give a seed architecture, or ask for the search from scratch",
                ))
            }
            Command::Search | Command::Run => {
                let plan = StagePlan {
                    name: "stage1",
                    task: &config.small,
                    evolution: &config.stage1,
                    fitness: &config.small_fitness,
                    initializer: Initializer::Random,
                    transfer_weights: None,
                    keep_best_weights: config.transfer.inherit_weights,
                };
                let state = self.stage(plan, on_event)?;
                let best = state.best().expect("a finished stage has evaluations");
                let arch = best.genome.to_arch(&config.small.macro_config, "basic")?;
                write_arch(&self.dir.join("basic_arch.json"), &arch)?;
                summary.outputs.push(self.dir.join("basic_arch.json"));
                if config.transfer.inherit_weights {
                    basic_weights = Some(self.keep_basic_weights(&state, best.id, &arch)?);
                    summary.outputs.push(self.dir.join(BASIC_WEIGHTS_FILE));
                }
                summary.stage1 = Some(self.stage_summary(&state, "stage1", &config.small)?);
                Some(best.genome.clone())
            }
        };
        if *command == Command::Search {
            self.write_top("stage1", &config.small, &mut summary.outputs)?;
            return self.finish(summary, started);
        }

        // Stage 2: transfer, and the baseline from scratch, with one budget and seed.
        let mut plans = Vec::new();
        if let Some(basic) = basic {
            plans.push(StagePlan {
                name: "transfer",
                task: &config.large,
                evolution: &config.stage2,
                fitness: &config.large_fitness,
                initializer: Initializer::Transfer {
                    basic,
                    p: config.transfer.p,
                    q: config.transfer.q,
                },
                transfer_weights: basic_weights,
                keep_best_weights: false,
            });
        }
        let scratch = match command {
            Command::Transfer { from_scratch, .. } => *from_scratch,
            _ => config.scratch_baseline,
        };
        if scratch {
            plans.push(StagePlan {
                name: "scratch",
                task: &config.large,
                evolution: &config.stage2,
                fitness: &config.large_fitness,
                initializer: Initializer::Random,
                transfer_weights: None,
                keep_best_weights: false,
            });
        }
        let winner_stage = plans[0].name;
        let mut curves: Vec<(String, Vec<f64>)> = Vec::new();
        let mut points: Vec<(String, Vec<crate::pareto::Point>)> = Vec::new();
        let cost = crate::pareto::CostAxis::of(&config.large_fitness);
        for plan in plans {
            let name = plan.name;
            let state = self.stage(plan, on_event)?;
            let stage_summary = self.stage_summary(&state, name, &config.large)?;
            let label = if name == "scratch" {
                "from scratch"
            } else {
                name
            };
            curves.push((label.into(), stage_summary.quality_curve.clone()));
            points.push((
                label.into(),
                state
                    .evaluated
                    .iter()
                    .filter_map(|m| Some((cost.cost(m.madds, m.latency_ms)?, m.accuracy)))
                    .collect(),
            ));
            match name {
                "transfer" => summary.transfer = Some(stage_summary),
                _ => summary.scratch = Some(stage_summary),
            }
        }
        if let (Some(t), Some(s)) = (&summary.transfer, &summary.scratch) {
            summary.transfer_vs_scratch =
                Some(compare(&t.quality_curve, &s.quality_curve, &config.stage2));
        }
        let quality_path = self.dir.join("quality.svg");
        quality_chart(
            &quality_path,
            "Population quality on the large task",
            &format!("mean fitness of top {}", config.stage2.top_k),
            &curves,
        )?;
        let pareto_path = self.dir.join("pareto.svg");
        pareto_chart(
            &pareto_path,
            "Every evaluated network on the large task",
            &cost,
            &points,
        )?;
        summary.outputs.extend([quality_path, pareto_path]);
        self.write_top(winner_stage, &config.large, &mut summary.outputs)?;

        // The winner, trained in full.
        let state = self.load(winner_stage)?;
        let winner = state.best().expect("a finished stage has evaluations");
        let final_arch = winner.genome.to_arch(&config.large.macro_config, "final")?;
        write_arch(&self.dir.join("final_arch.json"), &final_arch)?;
        summary.outputs.push(self.dir.join("final_arch.json"));
        if *command == Command::Run {
            summary.final_training = Some(final_training(
                config,
                &final_arch,
                self.dir,
                &self.session.stop,
                on_event,
            )?);
            summary
                .outputs
                .push(self.dir.join("final").join("model.safetensors"));
        }
        self.finish(summary, started)
    }

    /// Copies the trained weights of stage 1's best member (`id`, architecture `arch`) to
    /// `basic_weights.safetensors` once, and names them for the transferred population. Weights
    /// that are missing are named all the same: each transferred network then trains from
    /// scratch and its history line says why.
    fn keep_basic_weights(
        &self,
        state: &EvolutionState,
        id: usize,
        arch: &Arch,
    ) -> Result<ParentWeights> {
        let kept = self.dir.join(BASIC_WEIGHTS_FILE);
        let trained = crate::runner::weights_file(&self.dir.join("stage1"), state, id);
        if !kept.exists() && trained.is_file() {
            let bytes = std::fs::read(&trained).map_err(|e| Error::io(&trained, e))?;
            write_atomic(&kept, &bytes)?;
        }
        Ok(ParentWeights::transferred(kept, arch))
    }

    fn load(&self, stage: &str) -> Result<EvolutionState> {
        let dir = self.dir.join(stage);
        SavedStage::load(&dir, &self.config.fingerprint())?
            .map(|saved| saved.state)
            .ok_or_else(|| Error::corrupt(&dir, "the stage's state.json is missing"))
    }

    fn stage_summary(
        &self,
        state: &EvolutionState,
        name: &str,
        task: &TaskConfig,
    ) -> Result<StageSummary> {
        let records = read_history(&self.dir.join(name))?;
        let best = state
            .best()
            .ok_or_else(|| Error::corrupt(&self.dir.join(name), "the stage has no evaluation"))?;
        let arch = best.genome.to_arch(&task.macro_config, name)?;
        let curve: Vec<f64> = records.iter().map(|r| r.quality.top_k_mean).collect();
        Ok(StageSummary {
            evaluations: state.evaluated.len(),
            failed: records.iter().filter(|r| r.failed).count(),
            best: BestMember {
                id: best.id,
                genome: best.genome.key(),
                accuracy: best.accuracy,
                fitness: best.fitness,
                madds: best.madds,
                params: best.params,
                latency_ms: best.latency_ms,
                arch,
            },
            final_population_top_k_mean: curve.last().copied(),
            quality_curve: curve,
            pareto_front: pareto_front(state),
        })
    }

    /// Writes the best `top_k` distinct architectures of a stage as `top/NN.json`.
    fn write_top(&self, stage: &str, task: &TaskConfig, outputs: &mut Vec<PathBuf>) -> Result<()> {
        let state = self.load(stage)?;
        let top_dir = self.dir.join("top");
        std::fs::create_dir_all(&top_dir).map_err(|e| Error::io(&top_dir, e))?;
        for (rank, member) in state.top(self.config.top_k).into_iter().enumerate() {
            let arch = member
                .genome
                .to_arch(&task.macro_config, &format!("{stage}-top{}", rank + 1))?;
            let path = top_dir.join(format!("{:02}.json", rank + 1));
            write_arch(&path, &arch)?;
            outputs.push(path);
        }
        Ok(())
    }

    fn finish(&self, mut summary: Summary, started: std::time::Instant) -> Result<Summary> {
        summary
            .outputs
            .push(self.dir.join(crate::report::REPORT_FILE));
        summary.seconds_this_session = started.elapsed().as_secs_f64();
        summary.coordinator_cpu_seconds = process_cpu_seconds();
        write_atomic(
            &self.dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)
                .expect("serialises")
                .as_bytes(),
        )?;
        Ok(summary)
    }
}

/// Every line of a stage's `history.jsonl`; a line that does not parse is an error.
fn read_history(stage_dir: &Path) -> Result<Vec<Record>> {
    let path = stage_dir.join(HISTORY_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let (records, unreadable) = parse_history(&text);
    match unreadable.into_iter().next() {
        Some((line, e)) => Err(Error::corrupt(&path, format!("line {line}: {e}"))),
        None => Ok(records),
    }
}

/// The non-dominated members of everything `state` evaluated (failed ones left out), by
/// increasing cost.
fn pareto_front(state: &EvolutionState) -> Vec<FrontMember> {
    let members: Vec<&crate::evolution::Member> =
        state.evaluated.iter().filter(|m| m.fitness > 0.0).collect();
    let points: Vec<_> = members.iter().map(|m| m.pareto_point()).collect();
    crate::pareto::front(&points)
        .into_iter()
        .map(|i| {
            let m = members[i];
            FrontMember {
                id: m.id,
                genome: m.genome.key(),
                accuracy: m.accuracy,
                fitness: m.fitness,
                madds: m.madds,
                latency_ms: m.latency_ms,
            }
        })
        .collect()
}

/// The transfer's quality curve against the one from scratch at the population, half way and the
/// budget.
fn compare(transfer: &[f64], scratch: &[f64], stage2: &EvolutionConfig) -> Comparison {
    let at = |v: &[f64], n: usize| v.get(n.saturating_sub(1)).copied();
    let area = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Comparison {
        metric: format!("mean fitness of the population's top {}", stage2.top_k),
        at: [
            stage2.population,
            (stage2.population + stage2.budget) / 2,
            stage2.budget,
        ]
        .into_iter()
        .map(|n| ComparisonPoint {
            evaluations: n,
            transfer: at(transfer, n),
            scratch: at(scratch, n),
        })
        .collect(),
        area_transfer: area(transfer),
        area_scratch: area(scratch),
    }
}

fn write_arch(path: &Path, arch: &Arch) -> Result<()> {
    Ok(write_atomic(path, arch.to_json_pretty().as_bytes())?)
}

/// Trains the winner in full into `dir/final`, continuing a training stopped there; `stop` (Ctrl-C,
/// SIGTERM) checkpoints it after the current step and ends with [`Error::Interrupted`].
fn final_training(
    config: &SearchConfig,
    arch: &Arch,
    dir: &Path,
    stop: &Arc<AtomicBool>,
    on_event: &mut dyn FnMut(Event),
) -> Result<FinalSummary> {
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
            skip_bad_images: config.large.skip_bad_images,
            ..TrainConfig::default()
        };
        let spec: DataSpec = config.large.data.parse()?;
        let data = PreparedData::open(&spec, &train_config)?;
        Trainer::new(train_config, arch, data, Some(out.clone()))?
    };
    let device = config.devices.first().copied().unwrap_or(Device::Cpu);
    trainer.to_device(device)?;
    trainer.stop_on(stop.clone());
    let epochs = trainer.config().epochs;
    let result = match trainer.run(&mut |r| {
        on_event(Event::FinalEpoch {
            epoch: r.epoch,
            epochs,
            val_top1: r.val_top1,
        })
    }) {
        Err(eatnas_train::Error::Stopped { steps, .. }) => {
            return Err(Error::search_interrupted(
                dir,
                format!(
                    "the final training stopped after {steps} steps, checkpointed in {}",
                    out.display()
                ),
            ))
        }
        other => other?,
    };
    let shape = trainer.data().train.shape();
    let counts = Counts::new(
        arch,
        shape.channels,
        shape.size,
        trainer.data().train.classes(),
    )?;
    Ok(FinalSummary {
        test_top1: result.test_top1,
        test_top5: result.test_top5,
        val_top1: result.val_top1,
        madds: counts.madds,
        params: counts.params,
        epochs: result.epochs,
        checkpoint: result.checkpoint,
        test_chance: Some(result.test_chance),
        learned_nothing: result.learned_nothing,
    })
}
