//! Elastic weight inheritance through job folders, with real (tiny) trainings: what a child
//! starts from, and what happens when its parent's weights cannot be used.

use eatnas_testkit::TestDir;
use std::path::Path;

use eatnas_nas::job::{run_folder, starting_trainer, ParentWeights, WEIGHTS_FILE};
use eatnas_nas::*;
use eatnas_tensor::Device;
use rand::SeedableRng;

fn temp_dir(name: &str) -> TestDir {
    TestDir::new(&format!("weights-{name}"))
}

/// The embedded Fashion-MNIST at 8x8, 600 images, one epoch: a training of about a second.
fn task() -> TaskConfig {
    TaskConfig {
        resolution: Some(8),
        data_fraction: 0.06,
        val_fraction: 0.25,
        batch_size: 32,
        bn_recalibration_batches: 3,
        macro_config: MacroConfig {
            width_multiplier: 0.25,
            ..MacroConfig::default()
        },
        ..TaskConfig::default()
    }
}

fn genome(seed: u64) -> Genome {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Genome::random(&SpaceConfig::default(), 7, &mut rng)
}

fn job(genome: &Genome, parent: Option<ParentWeights>, save_weights: bool) -> Job {
    Job {
        version: VERSION.into(),
        search: "test".into(),
        stage: "stage".into(),
        candidate: Candidate {
            id: 0,
            genome: genome.clone(),
            origin: Origin::Random,
        },
        task: task(),
        seed: 3,
        data_seed: None,
        parent,
        save_weights,
    }
}

/// Trains `genome` as a parent in `dir` and returns its result and how to inherit from it.
fn train_parent(dir: &Path, genome: &Genome) -> (JobResult, ParentWeights) {
    job(genome, None, true).write(dir).unwrap();
    let result = run_folder(dir, &ProxyTraining::new(), Device::Cpu, &Default::default()).unwrap();
    let parent = ParentWeights {
        file: dir.join(WEIGHTS_FILE),
        arch: genome.to_arch(&task().macro_config, "parent").unwrap(),
        other_task: false,
    };
    (result, parent)
}

#[test]
fn a_child_identical_to_its_parent_starts_with_the_parents_exact_loss() {
    let dir = temp_dir("identical");
    let genome = genome(1);
    let (parent_result, parent) = train_parent(&dir.join("parent"), &genome);
    let training = ProxyTraining::new();
    let data = training.data(&task(), 3).unwrap();
    // The parent's trained network, read back from its weights file.
    let (weights, _) = eatnas_train::checkpoint::decode(&parent.file).unwrap();
    let child = job(&genome, Some(parent), false);
    let (mut trainer, inherited) =
        starting_trainer(&child, data.clone(), Device::Cpu, None).unwrap();
    let inherited = inherited.unwrap();
    assert!(inherited.mapping.unwrap().exact(), "{inherited:?}");
    assert_eq!(
        inherited.recalibrated_batches, 0,
        "an exact copy keeps its statistics"
    );
    let start = trainer.evaluate_val().unwrap().unwrap();
    assert_eq!(
        start.top1, parent_result.outcome.accuracy,
        "the child starts where the parent ended"
    );
    let mut net = eatnas_nn::Network::new(&child.arch().unwrap(), 1, 10, 0).unwrap();
    net.load(&weights).unwrap();
    let config = child.task.train_config(3, 1);
    let mut reference = eatnas_train::Trainer::with_network(config, net, data, None).unwrap();
    let parent_loss = reference.evaluate_val().unwrap().unwrap().loss;
    assert_eq!(
        start.loss, parent_loss,
        "the child's loss before training is the parent's"
    );
}

#[test]
fn a_reshaped_child_recalibrates_its_statistics_and_trains() {
    let dir = temp_dir("reshaped");
    let parent_genome = genome(2);
    let (_, parent) = train_parent(&dir.join("parent"), &parent_genome);
    let mut child_genome = parent_genome.clone();
    child_genome.blocks[3].width = if child_genome.blocks[3].width == 2.0 {
        1.0
    } else {
        2.0
    };
    child_genome.blocks[5].kernel = if child_genome.blocks[5].kernel == 7 {
        3
    } else {
        7
    };
    let child_dir = dir.join("child");
    job(&child_genome, Some(parent), false)
        .write(&child_dir)
        .unwrap();
    let result = run_folder(
        &child_dir,
        &ProxyTraining::new(),
        Device::Cpu,
        &Default::default(),
    )
    .unwrap();
    let inherited = result.outcome.inherited.unwrap();
    let mapping = inherited.mapping.unwrap();
    assert!(mapping.reshaped > 0 && mapping.copied > 0, "{mapping:?}");
    assert_eq!(inherited.recalibrated_batches, 3);
    assert!(result.outcome.accuracy > 0.0 && result.outcome.error.is_none());
}

#[test]
fn a_missing_or_foreign_parent_file_trains_from_scratch_and_says_so() {
    let dir = temp_dir("bad-parent");
    let genome_a = genome(4);
    let (_, parent_a) = train_parent(&dir.join("a"), &genome_a);
    let genome_b = genome(5);
    // Missing: the file was removed (a member retired, a disk cleaned).
    let missing = ParentWeights {
        file: dir.join("nowhere").join(WEIGHTS_FILE),
        ..parent_a.clone()
    };
    // Foreign: the file holds A's weights, but the job says the parent was B.
    let foreign = ParentWeights {
        arch: genome_b.to_arch(&task().macro_config, "b").unwrap(),
        ..parent_a.clone()
    };
    // Not weights at all.
    let garbage_file = dir.join("garbage.safetensors");
    std::fs::write(&garbage_file, b"not a safetensors file").unwrap();
    let garbage = ParentWeights {
        file: garbage_file,
        ..parent_a
    };
    for (name, parent, expected) in [
        ("missing", missing, "cannot be read"),
        ("foreign", foreign, "another architecture"),
        ("garbage", garbage, "cannot be read"),
    ] {
        let child_dir = dir.join(name);
        job(&genome_b, Some(parent), false)
            .write(&child_dir)
            .unwrap();
        let result = run_folder(
            &child_dir,
            &ProxyTraining::new(),
            Device::Cpu,
            &Default::default(),
        )
        .unwrap_or_else(|f| panic!("{name}: the child failed: {}", f.reason));
        let inherited = result.outcome.inherited.unwrap();
        assert_eq!(inherited.mapping, None, "{name}");
        let note = inherited.note.unwrap();
        assert!(
            note.contains("trained from scratch") && note.contains(expected),
            "{name}: {note}"
        );
        assert!(
            result.outcome.accuracy > 0.0,
            "{name}: the child still trained"
        );
    }
}

#[test]
fn a_candidate_whose_loss_diverges_is_recorded_with_the_reason() {
    let dir = temp_dir("diverges");
    let mut diverging = job(&genome(2), None, false);
    diverging.task.lr = 1e12;
    diverging.write(&dir).unwrap();
    let result = run_folder(
        &dir,
        &ProxyTraining::new(),
        Device::Cpu,
        &Default::default(),
    )
    .unwrap();
    let error = result
        .outcome
        .error
        .expect("a diverged training says why it has no accuracy");
    assert!(
        error.contains("training diverged") && error.contains("the loss is"),
        "{error}"
    );
    assert_eq!(result.outcome.accuracy, 0.0);
}
