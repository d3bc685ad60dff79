//! The search with a cheap deterministic job runner on the local executor: budget, population,
//! cache, transfer, resume after a stop, retries and failures, inheritance through job folders,
//! and bad configurations.

use eatnas_testkit::TestDir;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use eatnas_nas::executor::local::LocalExecutor;
use eatnas_nas::runner::{run_stage, Control, SavedStage, StageRun};
use eatnas_nas::*;
use eatnas_nn::Counts;
use eatnas_tensor::Device;
use rand::SeedableRng;

fn temp_dir(name: &str) -> TestDir {
    TestDir::new(&format!("nas-{name}"))
}

/// Accuracy from the genome alone: wider, deeper, bigger kernels and MBConv score higher, with a
/// hash-based wobble; MAdds and params counted for real at 16x16.
struct Synthetic {
    macro_config: MacroConfig,
    calls: AtomicUsize,
    /// Asks the coordinator to stop (as Ctrl-C does) once this many evaluations have run.
    stop_after: Option<(usize, Arc<AtomicBool>)>,
    /// Candidates whose every attempt fails, and candidates whose first attempt fails.
    always_fails: Vec<usize>,
    fails_once: Vec<usize>,
    failed_once: std::sync::Mutex<Vec<usize>>,
}

impl Synthetic {
    fn new() -> Self {
        Synthetic {
            macro_config: MacroConfig {
                width_multiplier: 0.25,
                ..MacroConfig::default()
            },
            calls: AtomicUsize::new(0),
            stop_after: None,
            always_fails: Vec::new(),
            fails_once: Vec::new(),
            failed_once: Default::default(),
        }
    }

    fn stopping_after(n: usize, stop: &Arc<AtomicBool>) -> Self {
        Synthetic {
            stop_after: Some((n, stop.clone())),
            ..Synthetic::new()
        }
    }
}

impl JobRunner for Synthetic {
    fn run(
        &self,
        job: &Job,
        _dir: &Path,
        _device: Device,
        _stop: &eatnas_nas::job::StopFlag,
    ) -> eatnas_nas::Result<(Outcome, Option<Weights>)> {
        let candidate = &job.candidate;
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some((limit, stop)) = &self.stop_after {
            if n + 1 >= *limit {
                stop.store(true, Ordering::SeqCst);
            }
        }
        if self.always_fails.contains(&candidate.id) {
            return Err(Error::Invalid {
                key: "test".into(),
                message: format!("candidate {} always fails", candidate.id),
            });
        }
        if self.fails_once.contains(&candidate.id) {
            let mut failed = self.failed_once.lock().unwrap();
            if !failed.contains(&candidate.id) {
                failed.push(candidate.id);
                return Err(Error::Invalid {
                    key: "test".into(),
                    message: "a flaky node".into(),
                });
            }
        }
        let arch = candidate.genome.to_arch(&self.macro_config, "synthetic")?;
        let counts = Counts::new(&arch, 1, 16, 10)?;
        let score: f64 = candidate
            .genome
            .blocks
            .iter()
            .map(|g| {
                g.width * 0.1
                    + g.layers as f64 * 0.05
                    + g.kernel as f64 * 0.01
                    + if g.op == eatnas_nn::Op::Mb6 {
                        0.05
                    } else {
                        0.0
                    }
            })
            .sum::<f64>();
        let wobble = candidate
            .genome
            .key()
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
            % 100;
        // Longer trainings score higher (the rungs of multi-fidelity); one epoch is the base.
        let epochs = job.task.epochs as f64;
        let outcome = Outcome {
            accuracy: ((score / 3.0 + wobble as f64 * 1e-3) * (1.0 + 0.1 * (epochs - 1.0)))
                .min(1.0),
            madds: counts.madds,
            params: counts.params,
            seconds: 0.0,
            error: None,
            inherited: None,
            latency_ms: None,
            validation_chance: None,
        };
        Ok((outcome, None))
    }
}

fn state(initializer: Initializer, seed: u64) -> EvolutionState {
    let config = EvolutionConfig {
        population: 6,
        sample: 3,
        budget: 30,
        top_k: 3,
        multi_fidelity: None,
        selection: Default::default(),
    };
    EvolutionState::new(
        config,
        SpaceConfig::default(),
        FitnessConfig::default(),
        7,
        initializer,
        seed,
    )
    .unwrap()
}

/// Runs the stage saved in `saved` (or a fresh one) in `dir` on `workers` local threads.
fn run_with(
    dir: &Path,
    saved: &mut SavedStage,
    runner: Arc<dyn JobRunner>,
    workers: usize,
    stop: &AtomicBool,
) -> eatnas_nas::Result<()> {
    run_task(dir, saved, runner, workers, stop, &TaskConfig::default())
}

/// [`run_with`] on `task`.
fn run_task(
    dir: &Path,
    saved: &mut SavedStage,
    runner: Arc<dyn JobRunner>,
    workers: usize,
    stop: &AtomicBool,
    task: &TaskConfig,
) -> eatnas_nas::Result<()> {
    let mut executor = LocalExecutor::new(runner, workers, &[]);
    run_on(dir, saved, &mut executor, workers, stop, task)
}

/// Runs the stage saved in `saved` in `dir` with `workers` jobs in flight on `executor`.
fn run_on(
    dir: &Path,
    saved: &mut SavedStage,
    executor: &mut LocalExecutor,
    workers: usize,
    stop: &AtomicBool,
    task: &TaskConfig,
) -> eatnas_nas::Result<()> {
    let run = StageRun {
        dir,
        search: "test",
        stage: "stage",
        task,
        seed: 0,
        workers,
        max_retries: 2,
        transfer_weights: None,
        keep_best_weights: false,
        latency: None,
    };
    let control = Control {
        stop,
        detach: false,
    };
    run_stage(saved, executor, &run, &control, &mut |_| {})
}

fn run(
    dir: &Path,
    state: &mut EvolutionState,
    runner: Synthetic,
    workers: usize,
) -> eatnas_nas::Result<()> {
    let stop = runner
        .stop_after
        .as_ref()
        .map_or_else(|| Arc::new(AtomicBool::new(false)), |(_, s)| s.clone());
    let mut saved = SavedStage::new(state.clone(), "test");
    let outcome = run_with(dir, &mut saved, Arc::new(runner), workers, &stop);
    *state = saved.state;
    outcome
}

fn load(dir: &Path) -> SavedStage {
    SavedStage::load(dir, "test")
        .unwrap()
        .expect("a saved state")
}

fn records(dir: &Path) -> Vec<Record> {
    std::fs::read_to_string(dir.join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn population(state: &EvolutionState) -> Vec<(usize, String, f64)> {
    state
        .population
        .iter()
        .map(|m| (m.id, m.genome.key(), m.fitness))
        .collect()
}

#[test]
fn evolution_keeps_its_budget_population_and_cache() {
    let dir = temp_dir("budget");
    let mut s = state(Initializer::Random, 1);
    run(&dir, &mut s, Synthetic::new(), 1).unwrap();
    assert!(s.done());
    assert_eq!(s.evaluated.len(), 30);
    assert_eq!(s.population.len(), 6);
    let history = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
    let records: Vec<Record> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 30);
    // The population is always the 6 youngest members.
    let youngest: Vec<usize> = records[24..].iter().map(|r| r.id).collect();
    assert_eq!(
        s.population.iter().map(|m| m.id).collect::<Vec<_>>(),
        youngest
    );
    // After the initial population every candidate is a mutation of a member.
    assert!(records[6..]
        .iter()
        .all(|r| matches!(r.origin, Origin::Mutation { .. })));
    // No genome is trained twice: repeats come from the cache.
    let mut trained = std::collections::HashSet::new();
    for r in &records {
        if !r.cached {
            assert!(
                trained.insert(r.genome.clone()),
                "{} trained twice",
                r.genome
            );
        }
    }
    // Quality: the top-k mean never exceeds the best.
    assert!(records
        .iter()
        .all(|r| r.quality.top_k_mean <= r.quality.best + 1e-12));
    let best = s.best().unwrap();
    assert!(records.iter().all(|r| r.fitness <= best.fitness));
}

#[test]
fn a_search_killed_mid_way_resumes_to_the_same_final_population() {
    let (whole, killed) = (temp_dir("whole"), temp_dir("killed"));
    let mut uninterrupted = state(Initializer::Random, 5);
    run(&whole, &mut uninterrupted, Synthetic::new(), 1).unwrap();

    let mut interrupted = state(Initializer::Random, 5);
    let stop = Arc::new(AtomicBool::new(false));
    let e = run(
        &killed,
        &mut interrupted,
        Synthetic::stopping_after(13, &stop),
        1,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Interrupted { .. }), "{e}");
    let mut resumed = load(&killed);
    assert_eq!(resumed.state.evaluated.len(), 13);
    let no_stop = AtomicBool::new(false);
    run_with(
        &killed,
        &mut resumed,
        Arc::new(Synthetic::new()),
        1,
        &no_stop,
    )
    .unwrap();

    assert_eq!(population(&resumed.state), population(&uninterrupted));
    // The same evaluations in the same order (where and when they ran aside).
    let key = |r: &Record| (r.id, r.genome.clone(), r.fitness, r.cached);
    let (a, b) = (records(&whole), records(&killed));
    assert_eq!(
        a.iter().map(key).collect::<Vec<_>>(),
        b.iter().map(key).collect::<Vec<_>>()
    );
}

#[test]
fn several_workers_finish_the_budget_and_resume_their_work_in_flight() {
    let dir = temp_dir("workers");
    let mut s = state(Initializer::Random, 2);
    let stop = Arc::new(AtomicBool::new(false));
    assert!(run(&dir, &mut s, Synthetic::stopping_after(10, &stop), 3).is_err());
    let mut resumed = load(&dir);
    assert!(
        resumed.state.evaluated.len() >= 8,
        "at most the evaluations in flight are lost"
    );
    let no_stop = AtomicBool::new(false);
    run_with(&dir, &mut resumed, Arc::new(Synthetic::new()), 3, &no_stop).unwrap();
    assert_eq!(resumed.state.evaluated.len(), 30);
    assert_eq!(
        std::fs::read_to_string(dir.join("history.jsonl"))
            .unwrap()
            .lines()
            .count(),
        30
    );
}

/// [`Synthetic`], recording on which thread pool each job ran and how many jobs ran at once.
struct PoolRecorder {
    scores: Synthetic,
    /// Each job's thread name and the size of the rayon pool it ran on.
    seen: std::sync::Mutex<Vec<(String, usize)>>,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl JobRunner for PoolRecorder {
    fn run(
        &self,
        job: &Job,
        dir: &Path,
        device: Device,
        stop: &eatnas_nas::job::StopFlag,
    ) -> eatnas_nas::Result<(Outcome, Option<Weights>)> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        self.seen
            .lock()
            .unwrap()
            .push((thread, rayon::current_num_threads()));
        // Long enough that the coordinator's second job finds the first still running.
        std::thread::sleep(std::time::Duration::from_millis(20));
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.scores.run(job, dir, device, stop)
    }
}

#[test]
fn each_local_worker_trains_on_a_thread_pool_of_its_own() {
    let dir = temp_dir("pools");
    let runner = Arc::new(PoolRecorder {
        scores: Synthetic::new(),
        seen: Default::default(),
        running: AtomicUsize::new(0),
        most_at_once: AtomicUsize::new(0),
    });
    // Three threads a worker: a job that ran on rayon's global pool instead shows a thread of
    // another name, and (on a machine of other than three cores) another pool size.
    let mut executor = LocalExecutor::with_threads(runner.clone(), 2, 3, &[]);
    let mut saved = SavedStage::new(state(Initializer::Random, 4), "test");
    let stop = AtomicBool::new(false);
    run_on(
        &dir,
        &mut saved,
        &mut executor,
        2,
        &stop,
        &TaskConfig::default(),
    )
    .unwrap();
    assert_eq!(
        runner.most_at_once.load(Ordering::SeqCst),
        2,
        "two jobs at once"
    );
    let seen = runner.seen.lock().unwrap();
    assert_eq!(seen.len(), 30);
    let mut pools: Vec<&str> = Vec::new();
    for (thread, threads) in seen.iter() {
        assert_eq!(
            *threads, 3,
            "{thread} ran a job on a pool of {threads} thread(s)"
        );
        let pool = thread
            .rsplit_once('-')
            .map(|(pool, _)| pool)
            .filter(|pool| pool.starts_with("eatnas-worker"))
            .unwrap_or_else(|| panic!("a job ran on {thread}, not a worker's pool"));
        if !pools.contains(&pool) {
            pools.push(pool);
        }
    }
    pools.sort();
    assert_eq!(
        pools,
        ["eatnas-worker0", "eatnas-worker1"],
        "one pool per worker"
    );
}

#[test]
fn transfer_seeds_the_population_with_the_basic_architecture_and_its_perturbations() {
    let space = SpaceConfig::default();
    let basic = Genome::random(&space, 7, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
    let mut s = state(
        Initializer::Transfer {
            basic: basic.clone(),
            p: 1.0,
            q: 0.0,
        },
        9,
    );
    let first = s.propose();
    assert_eq!(
        (first.genome.clone(), first.origin.clone()),
        (basic.clone(), Origin::Basic)
    );
    for _ in 1..6 {
        let c = s.propose();
        assert_eq!(c.origin, Origin::Transfer);
        for (g, b) in c.genome.blocks.iter().zip(&basic.blocks) {
            // q = 0: operation, kernel and skip stay; p = 1: width and depth move at most one step.
            assert_eq!((g.op, g.kernel, g.skip), (b.op, b.kernel, b.skip));
            assert!((g.layers as i64 - b.layers as i64).abs() <= 1);
            assert!((g.width - b.width).abs() <= 0.5 + 1e-9);
        }
    }
}

#[test]
fn a_mutation_changes_one_field_of_one_block() {
    let space = SpaceConfig::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    for _ in 0..50 {
        let parent = Genome::random(&space, 7, &mut rng);
        let child = parent.mutate(&space, &mut rng);
        let changed: usize = parent
            .blocks
            .iter()
            .zip(&child.blocks)
            .map(|(a, b)| {
                usize::from(a.op != b.op)
                    + usize::from(a.kernel != b.kernel)
                    + usize::from(a.skip != b.skip)
                    + usize::from(a.layers != b.layers)
                    + usize::from(a.width != b.width)
            })
            .sum();
        assert_eq!(changed, 1);
    }
}

#[test]
fn bad_configurations_are_named() {
    let e = SearchConfig::from_toml("seed = 1\npopulaton = 3\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `populaton`"), "{e}");
    let e = SearchConfig::from_toml("[small]\ninit = \"kaiming\"\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("kaiming") && e.contains("torchvision") && e.contains("init"),
        "{e}"
    );
    let chosen = SearchConfig::from_toml(
        "[large]\ninit = \"torchvision\"\nzero_residual_bn = true\n",
        "c.toml",
    )
    .unwrap();
    let proxy = chosen.large.train_config(0, 1);
    assert_eq!(proxy.init, eatnas_nn::InitScheme::Torchvision);
    assert!(proxy.zero_residual_bn);
    let e = SearchConfig::from_toml("[space]\nkernels = []\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("space.kernels: the list of allowed values is empty"),
        "{e}"
    );
    let e = SearchConfig::from_toml("[stage2]\npopulation = 10\nbudget = 5\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage2.budget: 5 evaluations cannot fill a population of 10"),
        "{e}"
    );
    let e = SearchConfig::from_toml("[space]\nkernels = [4]\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("space.kernels: 4 is not allowed"), "{e}");
    let e = SearchConfig::from_toml("[small.macro]\nstrides = [1, 2]\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("small.macro.strides: 2 entries for 7 blocks"),
        "{e}"
    );
    let e = SearchConfig::from_toml("[executor]\ncheckpoint_minutes = -1\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("executor.checkpoint_minutes: expected minutes >= 0, got -1"),
        "{e}"
    );
    let e = SearchConfig::from_toml("seed = \"x\"\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("seed"), "{e}");

    // A seed architecture outside the space.
    let space = SpaceConfig {
        kernels: vec![3, 5],
        ..SpaceConfig::default()
    };
    let arch = Genome::random(
        &SpaceConfig {
            kernels: vec![7],
            ..SpaceConfig::default()
        },
        7,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
    )
    .to_arch(&MacroConfig::default(), "seed")
    .unwrap();
    let e = Genome::from_arch(&arch, &space, 7).unwrap_err().to_string();
    assert!(
        e.contains("blocks[0].kernel 7 is not in the search space (allowed: 3, 5)"),
        "{e}"
    );
    let e = Genome::from_arch(&arch, &SpaceConfig::default(), 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("has 7 blocks; the search space has 5"), "{e}");
}

#[test]
fn a_state_from_another_configuration_is_refused() {
    let dir = temp_dir("fingerprint");
    let mut s = state(Initializer::Random, 1);
    let stop = Arc::new(AtomicBool::new(false));
    run(&dir, &mut s, Synthetic::stopping_after(3, &stop), 1).unwrap_err();
    let e = SavedStage::load(&dir, "other").err().unwrap().to_string();
    assert!(e.contains("another configuration"), "{e}");
    let text = std::fs::read_to_string(dir.join("state.json"))
        .unwrap()
        .replace(
            &format!("\"version\":\"{VERSION}\""),
            "\"version\":\"0.0.1\"",
        );
    std::fs::write(dir.join("state.json"), text).unwrap();
    let e = SavedStage::load(&dir, "test").err().unwrap().to_string();
    assert!(e.contains("written by eatnas 0.0.1"), "{e}");
}

#[test]
fn every_example_configuration_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            SearchConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            count += 1;
        }
    }
    assert!(
        count >= 3,
        "configs/ holds the demo, Fashion-MNIST and CIFAR-10 -> ImageNet"
    );
    let demo = SearchConfig::load(&dir.join("demo.toml")).unwrap();
    assert_eq!(
        demo,
        SearchConfig::default(),
        "configs/demo.toml is the default configuration"
    );
}

#[test]
fn a_failing_evaluation_is_retried_and_one_that_always_fails_is_recorded_as_failed() {
    let dir = temp_dir("failures");
    let mut s = state(Initializer::Random, 7);
    let runner = Synthetic {
        always_fails: vec![2],
        fails_once: vec![4],
        ..Synthetic::new()
    };
    run(&dir, &mut s, runner, 2).unwrap();
    assert!(s.done(), "the search goes on past a failed candidate");
    let records = records(&dir);
    assert_eq!(records.len(), 30);
    let failed = records
        .iter()
        .find(|r| r.id == 2)
        .expect("candidate 2 recorded");
    assert!(failed.failed && failed.fitness == 0.0, "{failed:?}");
    assert_eq!(failed.retries, 2, "max_retries attempts after the first");
    let error = failed.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("no result after 3 attempts") && error.contains("always fails"),
        "{error}"
    );
    let flaky = records
        .iter()
        .find(|r| r.id == 4)
        .expect("candidate 4 recorded");
    assert!(
        !flaky.failed && flaky.retries == 1 && flaky.fitness > 0.0,
        "{flaky:?}"
    );
    assert_eq!(records.iter().filter(|r| r.failed).count(), 1);
    // Every evaluation says where it ran.
    for r in records.iter().filter(|r| !r.cached) {
        // A failed one too: its worker's error.json says where.
        let ran = r
            .ran
            .as_ref()
            .unwrap_or_else(|| panic!("record {} has no placement", r.id));
        assert_eq!(
            (ran.executor.as_str(), ran.device.as_str()),
            ("local", "cpu")
        );
        assert!(r.worker < 2 && ran.collected_at >= ran.finished_at);
    }
}

/// Trains nothing: hands each candidate a one-tensor "weights" map holding its id, and records
/// which parent id each candidate inherited from (read from the weights file its job names).
struct Recorder {
    inherited: std::sync::Mutex<Vec<(usize, Option<f32>)>>,
}

impl JobRunner for Recorder {
    fn run(
        &self,
        job: &Job,
        _dir: &Path,
        _device: Device,
        _stop: &eatnas_nas::job::StopFlag,
    ) -> eatnas_nas::Result<(Outcome, Option<Weights>)> {
        let candidate = &job.candidate;
        let parent = job
            .parent
            .as_ref()
            .map(|p| eatnas_train::checkpoint::decode(&p.file).unwrap().0);
        let from = parent.map(|w| w["id"].to_vec().unwrap()[0]);
        self.inherited.lock().unwrap().push((candidate.id, from));
        let mine = eatnas_tensor::Tensor::from_vec(vec![candidate.id as f32], &[1]).unwrap();
        let outcome = Outcome {
            accuracy: 0.5 + candidate.id as f64 * 1e-3,
            madds: 1,
            params: 1,
            seconds: 0.0,
            error: None,
            inherited: None,
            latency_ms: None,
            validation_chance: None,
        };
        Ok((outcome, Some(Weights::from([("id".to_string(), mine)]))))
    }
}

#[test]
fn mutated_children_inherit_their_parents_weights() {
    let recorder = Arc::new(Recorder {
        inherited: std::sync::Mutex::new(Vec::new()),
    });
    let dir = temp_dir("inherit");
    let task = TaskConfig {
        inherit_weights: true,
        ..TaskConfig::default()
    };
    let mut saved = SavedStage::new(state(Initializer::Random, 11), "test");
    let stop = AtomicBool::new(false);
    run_task(&dir, &mut saved, recorder.clone(), 1, &stop, &task).unwrap();
    let records = records(&dir);
    let inherited = recorder.inherited.lock().unwrap().clone();
    for (id, from) in &inherited {
        let record = records.iter().find(|r| r.id == *id).unwrap();
        match &record.origin {
            Origin::Mutation { parent } => {
                assert_eq!(*from, Some(*parent as f32), "candidate {id}")
            }
            _ => assert_eq!(*from, None, "initial candidate {id} inherits nothing"),
        }
    }
    // Only members that can still be parents keep their weights on disk.
    let kept: Vec<usize> = (0..30)
        .filter(|id| {
            dir.join(format!("jobs/{id:05}/weights.safetensors"))
                .exists()
        })
        .collect();
    let population: Vec<usize> = saved.state.population.iter().map(|m| m.id).collect();
    assert!(
        kept.iter().all(|id| population.contains(id)),
        "kept {kept:?}, population {population:?}"
    );
}

/// A stage with rungs of 1 and 3 epochs and eta 3, on `workers` threads, stopped after `stop_after`
/// trainings when given.
fn run_multi_fidelity(
    dir: &Path,
    saved: &mut SavedStage,
    stop_after: Option<usize>,
) -> eatnas_nas::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let runner = match stop_after {
        Some(n) => Synthetic::stopping_after(n, &stop),
        None => Synthetic::new(),
    };
    let task = TaskConfig {
        epochs: 3,
        ..TaskConfig::default()
    };
    run_task(dir, saved, Arc::new(runner), 1, &stop, &task)
}

fn multi_fidelity_state(unpromoted: Unpromoted) -> EvolutionState {
    let mut state = state(Initializer::Random, 8);
    state.config.multi_fidelity = Some(MultiFidelity {
        rungs: vec![1, 3],
        eta: 3.0,
        unpromoted,
    });
    state
}

#[test]
fn multi_fidelity_promotes_the_top_third_of_each_rung_and_records_every_rung() {
    let dir = temp_dir("asha");
    let mut saved = SavedStage::new(multi_fidelity_state(Unpromoted::Keep), "test");
    run_multi_fidelity(&dir, &mut saved, None).unwrap();
    let records = records(&dir);
    assert_eq!(records.len(), 30, "the budget counts candidates, not rungs");
    let mut seen: Vec<f64> = Vec::new();
    let mut promoted = 0;
    for r in records.iter().filter(|r| !r.cached) {
        let first = &r.rungs[0];
        assert_eq!(
            first.epochs, 1,
            "candidate {}: the first rung is 1 epoch",
            r.id
        );
        seen.push(first.accuracy);
        let better = seen.iter().filter(|&&a| a > first.accuracy).count();
        let expected = (better as f64) < seen.len() as f64 / 3.0;
        assert_eq!(
            r.rungs.len() == 2,
            expected,
            "candidate {}: promotion of {:?} among {seen:?}",
            r.id,
            r.rungs
        );
        if expected {
            promoted += 1;
            assert_eq!(r.rungs[1].epochs, 3);
            assert!(
                r.rungs[1].accuracy > first.accuracy,
                "the longer rung scores higher here"
            );
        }
        let last = r.rungs.last().unwrap();
        assert_eq!(
            r.accuracy, last.accuracy,
            "the record's accuracy is its last rung's"
        );
        let seconds: f64 = r.rungs.iter().map(|g| g.seconds).sum();
        assert_eq!(r.seconds, seconds);
        assert!(!r.discarded);
    }
    assert!(
        promoted > 0 && promoted < records.len(),
        "{promoted} promoted"
    );
    // A promoted candidate's second rung continued from its first rung's weights.
    let promoted_id = records.iter().find(|r| r.rungs.len() == 2).unwrap().id;
    let job: Job = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("jobs/{promoted_id:05}/rung-1/job.json")))
            .unwrap(),
    )
    .unwrap();
    let parent = job.parent.expect("the next rung starts from the last");
    assert!(parent
        .file
        .ends_with(format!("jobs/{promoted_id:05}/weights.safetensors")));
    assert_eq!(
        job.task.inherited_epochs, 2,
        "it trains the 2 epochs left to 3"
    );
}

#[test]
fn multi_fidelity_resumes_with_its_rung_state() {
    let (whole, killed) = (temp_dir("asha-whole"), temp_dir("asha-killed"));
    let mut uninterrupted = SavedStage::new(multi_fidelity_state(Unpromoted::Keep), "test");
    run_multi_fidelity(&whole, &mut uninterrupted, None).unwrap();
    let mut interrupted = SavedStage::new(multi_fidelity_state(Unpromoted::Keep), "test");
    let e = run_multi_fidelity(&killed, &mut interrupted, Some(17)).unwrap_err();
    assert!(matches!(e, Error::Interrupted { .. }), "{e}");
    let mut resumed = load(&killed);
    run_multi_fidelity(&killed, &mut resumed, None).unwrap();
    let key = |r: &Record| (r.id, r.genome.clone(), r.fitness, r.rungs.len());
    assert_eq!(
        records(&whole).iter().map(key).collect::<Vec<_>>(),
        records(&killed).iter().map(key).collect::<Vec<_>>()
    );
    assert_eq!(population(&resumed.state), population(&uninterrupted.state));
}

#[test]
fn multi_fidelity_can_discard_the_unpromoted() {
    let dir = temp_dir("asha-discard");
    let mut saved = SavedStage::new(multi_fidelity_state(Unpromoted::Discard), "test");
    run_multi_fidelity(&dir, &mut saved, None).unwrap();
    let records = records(&dir);
    let discarded: Vec<usize> = records
        .iter()
        .filter(|r| r.discarded)
        .map(|r| r.id)
        .collect();
    assert!(!discarded.is_empty());
    for r in &records {
        assert_eq!(
            r.discarded,
            !r.cached && r.rungs.len() == 1,
            "candidate {}",
            r.id
        );
    }
    assert!(saved
        .state
        .population
        .iter()
        .all(|m| !discarded.contains(&m.id)));
}

#[test]
fn bad_rungs_are_named() {
    let mut config = SearchConfig::default();
    config.large.epochs = 3;
    for (rungs, eta, expected) in [
        (vec![1, 1], 3.0, "strictly increasing"),
        (vec![2, 1], 3.0, "strictly increasing"),
        (vec![1, 5], 3.0, "beyond the task's epochs (3)"),
        (vec![3], 3.0, "at least two rungs"),
        (vec![1, 3], 1.0, "eta"),
    ] {
        config.stage2.multi_fidelity = Some(MultiFidelity {
            rungs: rungs.clone(),
            eta,
            unpromoted: Unpromoted::Keep,
        });
        let e = config.validate().unwrap_err().to_string();
        assert!(
            e.contains("stage2.multi_fidelity") && e.contains(expected),
            "{rungs:?}: {e}"
        );
    }
}
