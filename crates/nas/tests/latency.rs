//! The pieces a latency table of a task must hold cover every architecture of the space.

use eatnas_testkit::TestDir;
use std::collections::BTreeSet;

use eatnas_nas::latency::{sample_archs, space_pieces};
use eatnas_nas::SearchConfig;
use eatnas_train::latency::pieces;

#[test]
fn the_space_pieces_cover_every_sampled_architecture() {
    let config = SearchConfig::default();
    let task = &config.large;
    let all: BTreeSet<_> = space_pieces(&config.space, &task.macro_config, 1, 28, 10)
        .unwrap()
        .into_iter()
        .collect();
    for arch in sample_archs(&config.space, &task.macro_config, 200, 7).unwrap() {
        for piece in pieces(&arch, 1, 28, 10).unwrap() {
            assert!(
                all.contains(&piece),
                "{}: {piece} is not among the space's {} pieces",
                arch.name,
                all.len()
            );
        }
    }
}

// ---- The latency objective of a stage ----

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use eatnas_nas::executor::local::LocalExecutor;
use eatnas_nas::latency::{StageLatency, STAGE_TABLE_FILE};
use eatnas_nas::runner::{run_stage, Control, SavedStage, StageRun};
use eatnas_nas::{
    EvolutionConfig, EvolutionState, FitnessConfig, Initializer, Job, JobRunner, LatencyObjective,
    LatencyPass, Outcome, Record, Selection, TaskConfig, Weights,
};
use eatnas_tensor::Device;
use eatnas_train::latency::{
    metronome, Correction, Entry, LatencyTable, Line, Provenance, Timing, FORMAT,
};

const RESOLUTION: usize = 16;

fn temp_dir(name: &str) -> TestDir {
    TestDir::new(&format!("latency-{name}"))
}

fn task() -> TaskConfig {
    let config = SearchConfig::default();
    TaskConfig {
        resolution: Some(RESOLUTION),
        ..config.large
    }
}

/// A table of every piece of the default space on the large task's macro at 16x16, with made-up
/// times that grow with a piece's work (no timing: the objective is what is tested here).
fn synthetic_table(device: &str) -> LatencyTable {
    let config = SearchConfig::default();
    let task = task();
    let pieces = space_pieces(&config.space, &task.macro_config, 1, RESOLUTION, 10).unwrap();
    let entries = pieces
        .into_iter()
        .map(|piece| {
            let work = match &piece {
                eatnas_train::latency::Piece::Layer {
                    kernel,
                    out_channels,
                    in_channels,
                    resolution,
                    ..
                } => (kernel * kernel + in_channels + out_channels) * resolution * resolution,
                _ => 1000,
            } as f64;
            Entry {
                piece,
                timing: Timing {
                    inference_ms: work * 1e-4,
                    training_ms: work * 3e-4,
                },
            }
        })
        .collect();
    let mut provenance = Provenance::here(Device::Cpu, RESOLUTION, 8, 1, 10);
    provenance.device = device.into();
    LatencyTable {
        format: FORMAT.into(),
        provenance,
        correction: Correction {
            inference: Line {
                intercept_ms: 0.5,
                slope: 1.0,
            },
            training: Line {
                intercept_ms: 2.0,
                slope: 1.0,
            },
        },
        calibration_networks: 0,
        metronome: metronome(),
        metronome_ms: 1.0,
        entries,
    }
}

fn objective(table: &Path, device: &str) -> LatencyObjective {
    LatencyObjective {
        table: table.to_path_buf(),
        device: device.into(),
        pass: LatencyPass::Inference,
        resolution: None,
        batch: None,
        target_ms: Some(10.0),
        exponent: -0.5,
        max_ms: None,
    }
}

/// Accuracy from the genome alone: wider and deeper networks score higher (and are slower).
struct Synthetic;

impl JobRunner for Synthetic {
    fn run(
        &self,
        job: &Job,
        _dir: &Path,
        _device: Device,
        _stop: &eatnas_nas::job::StopFlag,
    ) -> eatnas_nas::Result<(Outcome, Option<Weights>)> {
        let genome = &job.candidate.genome;
        let score: f64 = genome
            .blocks
            .iter()
            .map(|g| g.width * 0.1 + g.layers as f64 * 0.03)
            .sum();
        let outcome = Outcome {
            accuracy: (score / 3.0).min(1.0),
            madds: 1_000_000,
            params: 1_000,
            seconds: 0.0,
            error: None,
            inherited: None,
            latency_ms: None,
            validation_chance: None,
        };
        Ok((outcome, None))
    }
}

fn run_with_latency(
    dir: &Path,
    fitness: FitnessConfig,
    selection: Selection,
    latency: &StageLatency,
) -> (EvolutionState, Vec<Record>) {
    let config = EvolutionConfig {
        population: 6,
        sample: 3,
        budget: 24,
        top_k: 3,
        multi_fidelity: None,
        selection,
    };
    let state = EvolutionState::new(
        config,
        Default::default(),
        fitness,
        7,
        Initializer::Random,
        3,
    )
    .unwrap();
    let mut saved = SavedStage::new(state, "test");
    let task = task();
    let run = StageRun {
        dir,
        search: "test",
        stage: "stage",
        task: &task,
        seed: 0,
        workers: 2,
        max_retries: 0,
        transfer_weights: None,
        keep_best_weights: false,
        latency: Some(latency),
    };
    let mut executor = LocalExecutor::new(Arc::new(Synthetic), 2, &[]);
    let stop = AtomicBool::new(false);
    let control = Control {
        stop: &stop,
        detach: false,
    };
    run_stage(&mut saved, &mut executor, &run, &control, &mut |_| {}).unwrap();
    let records = std::fs::read_to_string(dir.join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (saved.state, records)
}

#[test]
fn each_candidate_gets_its_predicted_latency_and_the_soft_term_of_it() {
    let dir = temp_dir("soft");
    let table = synthetic_table("cpu");
    table.save(&dir.join("table.json")).unwrap();
    let objective = objective(&dir.join("table.json"), "cpu");
    let fitness = FitnessConfig {
        latency: Some(objective.clone()),
        ..FitnessConfig::default()
    };
    let stage_dir = dir.join("stage");
    let latency = StageLatency::open(
        &objective,
        &SearchConfig::default().space,
        &task(),
        &stage_dir,
    )
    .unwrap();
    // The table is copied into the stage: a resumed stage predicts with it even if the
    // configured file is gone.
    assert!(stage_dir.join(STAGE_TABLE_FILE).is_file());
    let (state, records) = run_with_latency(&stage_dir, fitness, Selection::Fitness, &latency);
    assert_eq!(records.len(), 24);
    for r in &records {
        let member = state.evaluated.iter().find(|m| m.id == r.id).unwrap();
        let arch = member
            .genome
            .to_arch(&task().macro_config, "check")
            .unwrap();
        let want = table.predict(&arch).unwrap().inference_ms;
        let got = r.latency_ms.expect("every record has a latency");
        assert!(
            (got - want).abs() < 1e-9,
            "#{}: {got} ms, predicted {want}",
            r.id
        );
        let fitness = r.accuracy * (want / 10.0).powf(-0.5);
        assert!(
            (r.fitness - fitness).abs() < 1e-9,
            "#{}: fitness {} for accuracy {} at {want} ms",
            r.id,
            r.fitness,
            r.accuracy
        );
    }
    std::fs::remove_file(dir.join("table.json")).unwrap();
    StageLatency::open(
        &objective,
        &SearchConfig::default().space,
        &task(),
        &stage_dir,
    )
    .expect("the stage's copy of the table");
}

#[test]
fn pareto_selection_runs_to_its_budget_and_its_front_is_undominated() {
    let dir = temp_dir("pareto");
    synthetic_table("cpu")
        .save(&dir.join("table.json"))
        .unwrap();
    let objective = LatencyObjective {
        target_ms: None,
        ..objective(&dir.join("table.json"), "cpu")
    };
    let latency = StageLatency::open(
        &objective,
        &SearchConfig::default().space,
        &task(),
        &dir.join("stage"),
    )
    .unwrap();
    let fitness = FitnessConfig {
        latency: Some(objective),
        ..FitnessConfig::default()
    };
    let (state, records) =
        run_with_latency(&dir.join("stage"), fitness, Selection::Pareto, &latency);
    assert!(state.done());
    // Without a soft term the fitness is the accuracy; the front trades it against latency.
    assert!(records.iter().all(|r| r.fitness == r.accuracy));
    let points: Vec<_> = state.evaluated.iter().map(|m| m.pareto_point()).collect();
    let front = eatnas_nas::pareto::front(&points);
    assert!(front.len() >= 2, "a front of {} members", front.len());
    for &i in &front {
        assert!(
            !points
                .iter()
                .any(|&p| eatnas_nas::pareto::dominates(p, points[i])),
            "front member {i} {:?} is dominated",
            points[i]
        );
    }
}

#[test]
fn a_latency_cap_zeroes_the_fitness_of_slower_networks() {
    let fitness = FitnessConfig {
        latency: Some(LatencyObjective {
            target_ms: None,
            max_ms: Some(5.0),
            ..objective(Path::new("t.json"), "cpu")
        }),
        ..FitnessConfig::default()
    };
    assert_eq!(fitness.fitness(0.8, 1, 1, Some(4.9)), 0.8);
    assert_eq!(fitness.fitness(0.8, 1, 1, Some(5.1)), 0.0);
}

#[test]
fn a_table_for_another_target_or_without_a_piece_of_the_space_is_refused() {
    let dir = temp_dir("refused");
    let space = SearchConfig::default().space;
    let path = dir.join("table.json");
    let open = |objective: &LatencyObjective, stage: &str| {
        StageLatency::open(objective, &space, &task(), &dir.join(stage))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    synthetic_table("cuda:0").save(&path).unwrap();
    let e = open(&objective(&path, "cpu"), "device");
    assert!(e.contains("device cuda:0 (wanted cpu)"), "{e}");
    assert!(!dir.join("device").join(STAGE_TABLE_FILE).exists());

    synthetic_table("cpu").save(&path).unwrap();
    let e = open(
        &LatencyObjective {
            resolution: Some(32),
            batch: Some(1),
            ..objective(&path, "cpu")
        },
        "size",
    );
    assert!(
        e.contains("resolution 16 (wanted 32)") && e.contains("batch 8 (wanted 1)"),
        "{e}"
    );

    let mut old = synthetic_table("cpu");
    old.provenance.eatnas_version = "0.0.1".into();
    old.save(&path).unwrap();
    let e = open(&objective(&path, "cpu"), "version");
    assert!(e.contains("eatnas version 0.0.1"), "{e}");

    let mut partial = synthetic_table("cpu");
    let gone = partial.entries.remove(partial.entries.len() / 2).piece;
    partial.save(&path).unwrap();
    let e = open(&objective(&path, "cpu"), "partial");
    assert!(e.contains(&format!("no entry for {gone}")), "{e}");
}

#[test]
fn bad_latency_objectives_are_named() {
    let with = |body: &str| {
        SearchConfig::from_toml(
            &format!("[large_fitness.latency]\ntable = \"t.json\"\n{body}\n"),
            "c.toml",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    let e = with("device = \"cpu\"\ntarget_ms = 0.0");
    assert!(
        e.contains("large_fitness.latency.target_ms: expected a latency above 0"),
        "{e}"
    );
    let e = with("device = \"cpu\"\nmax_ms = -3.0");
    assert!(e.contains("large_fitness.latency.max_ms"), "{e}");
    let e = with("device = \"gpu\"");
    assert!(e.contains("expected `cpu` or `cuda:N`, got `gpu`"), "{e}");
    let e = with("");
    assert!(e.contains("device"), "{e}");
    assert_eq!(
        with("device = \"cuda:0\"\npass = \"training\"\ntarget_ms = 8.0"),
        ""
    );
}

#[test]
fn a_failed_member_never_wins_a_pareto_tournament() {
    use eatnas_nas::{Genome, Member};
    use rand::SeedableRng;
    let space = SearchConfig::default().space;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut member = |id, accuracy, fitness, latency_ms| Member {
        id,
        genome: Genome::random(&space, 7, &mut rng),
        accuracy,
        fitness,
        madds: 0,
        params: 0,
        latency_ms,
    };
    // A failed training has no latency and no MAdds; beside a front of two working members
    // it must not count as the front's cheap end.
    let population = [
        member(0, 0.0, 0.0, None),
        member(1, 0.6, 0.6, Some(5.0)),
        member(2, 0.8, 0.8, Some(10.0)),
    ];
    let points: Vec<_> = population.iter().map(Member::pareto_point).collect();
    let winner =
        eatnas_nas::pareto::select(&points, &[0, 1], |a, b| population[a].rank(&population[b]));
    assert_eq!(
        winner, 1,
        "a failed member (point {:?}) won a tournament against a working one ({:?})",
        points[0], points[1]
    );
    assert_eq!(
        eatnas_nas::pareto::front(&points),
        [1, 2],
        "the front of {points:?}"
    );
}
