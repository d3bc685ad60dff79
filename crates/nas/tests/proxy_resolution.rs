//! A task whose proxy trains at a lower resolution than the task's own: the proxy's data, the
//! counted MAdds, the fidelity reference, and the configurations refused.

use eatnas_nas::fidelity::{FidelityPlan, Reference, TaskChoice};
use eatnas_nas::job::run_folder;
use eatnas_nas::*;
use eatnas_nn::Counts;
use eatnas_tensor::Device;
use eatnas_testkit::TestDir;
use rand::SeedableRng;

/// The embedded Fashion-MNIST, 600 images: the task at 12x12, its proxy at 8x8.
fn task() -> TaskConfig {
    TaskConfig {
        resolution: Some(12),
        proxy_resolution: Some(8),
        data_fraction: 0.06,
        val_fraction: 0.25,
        batch_size: 32,
        macro_config: MacroConfig {
            width_multiplier: 0.25,
            ..MacroConfig::default()
        },
        ..TaskConfig::default()
    }
}

#[test]
fn the_proxy_trains_at_its_resolution_and_counts_madds_at_the_tasks() {
    let task = task();
    task.validate("large").unwrap();
    assert_eq!(task.train_config(0, 1).resolution, Some(8));
    let data = ProxyTraining::new().data(&task, 3).unwrap();
    assert_eq!(data.train.shape().size, 8, "the proxy's images are 8x8");

    let genome = Genome::random(
        &SpaceConfig::default(),
        7,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(5),
    );
    let arch = genome.to_arch(&task.macro_config, "c").unwrap();
    let dir = TestDir::new("proxy-resolution");
    Job {
        version: VERSION.into(),
        search: "test".into(),
        stage: "stage".into(),
        candidate: Candidate {
            id: 0,
            genome,
            origin: Origin::Random,
        },
        task: task.clone(),
        seed: 3,
        data_seed: None,
        parent: None,
        save_weights: false,
    }
    .write(&dir)
    .unwrap();
    let result = run_folder(
        &dir,
        &ProxyTraining::new(),
        Device::Cpu,
        &Default::default(),
    )
    .unwrap();
    assert!(result.outcome.error.is_none(), "{:?}", result.outcome.error);
    let at_task = Counts::new(&arch, 1, 12, 10).unwrap();
    let at_proxy = Counts::new(&arch, 1, 8, 10).unwrap();
    assert_ne!(at_task.madds, at_proxy.madds);
    assert_eq!(
        result.outcome.madds, at_task.madds,
        "MAdds (the fitness's size term) are the network's at the task's resolution"
    );
}

#[test]
fn the_fidelity_reference_trains_at_the_tasks_resolution() {
    let config = SearchConfig {
        large: task(),
        ..SearchConfig::default()
    };
    let plan = FidelityPlan::new(
        &config,
        TaskChoice::Large,
        3,
        None,
        &Reference::default(),
        1,
    )
    .unwrap();
    assert_eq!(plan.proxy.train_config(0, 1).resolution, Some(8));
    assert_eq!(plan.reference.proxy_resolution, None);
    assert_eq!(plan.reference.train_config(0, 1).resolution, Some(12));
}

#[test]
fn a_proxy_resolution_without_the_tasks_or_above_it_is_refused() {
    let no_task_resolution = TaskConfig {
        resolution: None,
        ..task()
    };
    let error = no_task_resolution
        .validate("large")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("large.proxy_resolution") && error.contains("`resolution`"),
        "{error}"
    );
    for proxy in [0, 13] {
        let bad = TaskConfig {
            proxy_resolution: Some(proxy),
            ..task()
        };
        let error = bad.validate("large").unwrap_err().to_string();
        assert!(
            error.contains("large.proxy_resolution") && error.contains(&format!("got {proxy}")),
            "{error}"
        );
    }
}
