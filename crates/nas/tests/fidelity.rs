//! The fidelity measurement with a deterministic job runner: the rank correlations it reports,
//! a measurement that continues from its folder, and what it refuses.

use eatnas_testkit::TestDir;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use eatnas_data::ChanceLevel;
use eatnas_nas::executor::local::LocalExecutor;
use eatnas_nas::fidelity::{FidelityPlan, Measurement, Recipe, Reference, TaskChoice};
use eatnas_nas::runner::Control;
use eatnas_nas::*;
use eatnas_tensor::Device;

fn temp_dir(name: &str) -> TestDir {
    TestDir::new(&format!("fidelity-{name}"))
}

/// How the proxy's accuracy relates to the reference's.
#[derive(Clone, Copy)]
enum Proxy {
    /// The reference's order, squeezed: a perfect ranking.
    Faithful,
    /// The reference's order reversed.
    Reversed,
    /// Every architecture whose reference accuracy is at least this ranked above every other,
    /// but in reversed order among themselves: poor networks told from good ones, the good
    /// ones ordered wrongly.
    ReversedFrom(f64),
}

/// The reference accuracy grows with the genome's total width and depth (a distinct value for
/// each sampled genome, by a hash tie-break); the proxy's (trained for fewer epochs) is derived
/// from it.
struct Deterministic {
    proxy: Proxy,
    proxy_epochs: usize,
    calls: AtomicUsize,
    /// Every attempt of the proxy training of this genome fails.
    fails: Option<String>,
    /// Every reference training from this seed fails.
    reference_fails_with_seed: Option<u64>,
    /// The reference accuracy moves by up to this much with the training seed (a hash of the
    /// genome and the seed), as a short real training does.
    reference_noise: f64,
    /// The same for the proxy's accuracy.
    proxy_noise: f64,
    /// The chance level every outcome records (none: as in results written before it was).
    validation_chance: Option<ChanceLevel>,
    /// Trainings (proxy or not, genome, seed) that collapse: they end at `validation_chance`'s
    /// majority share with a finite loss.
    collapses: Vec<(bool, String, u64)>,
}

impl Deterministic {
    fn new(proxy: Proxy) -> Deterministic {
        Deterministic {
            proxy,
            proxy_epochs: 1,
            calls: AtomicUsize::new(0),
            fails: None,
            reference_fails_with_seed: None,
            reference_noise: 0.0,
            proxy_noise: 0.0,
            validation_chance: None,
            collapses: Vec::new(),
        }
    }
}

fn hash(text: &str) -> u32 {
    text.bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
}

fn reference_accuracy(genome: &Genome) -> f64 {
    let size: f64 = genome
        .blocks
        .iter()
        .map(|g| g.width + g.layers as f64)
        .sum();
    let tie_break = genome
        .key()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
        % 1000;
    0.5 + size / 100.0 + tie_break as f64 * 1e-6
}

impl JobRunner for Deterministic {
    fn run(
        &self,
        job: &Job,
        _dir: &std::path::Path,
        _device: Device,
        _stop: &eatnas_nas::job::StopFlag,
    ) -> Result<(Outcome, Option<Weights>)> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let genome = &job.candidate.genome;
        let is_proxy = job.task.epochs == self.proxy_epochs;
        if is_proxy && self.fails.as_deref() == Some(genome.key().as_str()) {
            return Err(Error::Invalid {
                key: "test".into(),
                message: "this node always fails".into(),
            });
        }
        if !is_proxy && self.reference_fails_with_seed == Some(job.seed) {
            return Err(Error::Invalid {
                key: "test".into(),
                message: "this seed's reference always fails".into(),
            });
        }
        let reference = reference_accuracy(genome);
        let noise = (hash(&format!("{}/{}", genome.key(), job.seed)) % 1000) as f64 / 1000.0;
        let accuracy = match (is_proxy, self.proxy) {
            (false, _) => reference + self.reference_noise * noise,
            (true, Proxy::Faithful) => reference / 2.0 + self.proxy_noise * noise,
            (true, Proxy::Reversed) => 1.0 - reference + self.proxy_noise * noise,
            (true, Proxy::ReversedFrom(good)) if reference >= good => 2.0 - reference,
            (true, Proxy::ReversedFrom(_)) => reference,
        };
        let collapsed = self.collapses.contains(&(is_proxy, genome.key(), job.seed));
        let outcome = Outcome {
            accuracy: match (collapsed, self.validation_chance) {
                (true, Some(v)) => v.majority_top1,
                _ => accuracy,
            },
            madds: 1000,
            params: 100,
            seconds: if is_proxy { 1.0 } else { 5.0 },
            error: None,
            inherited: None,
            latency_ms: None,
            validation_chance: self.validation_chance,
        };
        Ok((outcome, None))
    }
}

fn plan(samples: usize) -> FidelityPlan {
    plan_with_reference_seeds(samples, 1)
}

fn plan_with_reference_seeds(samples: usize, seeds: usize) -> FidelityPlan {
    plan_with_seeds(samples, 1, seeds)
}

fn plan_with_seeds(samples: usize, proxy_seeds: usize, reference_seeds: usize) -> FidelityPlan {
    FidelityPlan::new(
        &SearchConfig::default(),
        TaskChoice::Large,
        samples,
        None,
        &Reference {
            seeds: reference_seeds,
            ..Reference::default()
        },
        proxy_seeds,
    )
    .unwrap()
}

fn run(
    plan: &FidelityPlan,
    dir: &std::path::Path,
    runner: Arc<Deterministic>,
) -> Result<fidelity::FidelityReport> {
    let mut executor = LocalExecutor::new(runner, 2, &[]);
    Measurement::open(plan, dir)?.run(
        &mut executor,
        2,
        1,
        &Control {
            stop: &AtomicBool::new(false),
            detach: false,
        },
        &mut |_, _, _, _| {},
    )
}

use eatnas_nas::{fidelity, stats};

#[test]
fn a_faithful_proxy_ranks_with_tau_one_and_a_reversed_one_with_minus_one() {
    let plan = plan(8);
    assert_eq!(plan.genomes.len(), 8);
    assert_eq!(
        plan.reference.epochs,
        5 * plan.proxy.epochs,
        "default reference: 5x the epochs"
    );
    assert_eq!(
        plan.reference.data_fraction, 1.0,
        "default reference: the whole split"
    );
    let faithful = run(
        &plan,
        &temp_dir("faithful"),
        Arc::new(Deterministic::new(Proxy::Faithful)),
    )
    .unwrap();
    assert_eq!(faithful.ranked, 8);
    assert!(
        (faithful.kendall_tau.unwrap() - 1.0).abs() < 1e-12,
        "tau {:?}",
        faithful.kendall_tau
    );
    assert!((faithful.spearman_rho.unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(faithful.proxy_pick_reference, faithful.best_reference);
    assert_eq!(faithful.proxy_seconds, 8.0);
    assert_eq!(faithful.reference_seconds, 40.0);
    let reversed = run(
        &plan,
        &temp_dir("reversed"),
        Arc::new(Deterministic::new(Proxy::Reversed)),
    )
    .unwrap();
    assert!(
        (reversed.kendall_tau.unwrap() + 1.0).abs() < 1e-12,
        "tau {:?}",
        reversed.kendall_tau
    );
    assert!((reversed.spearman_rho.unwrap() + 1.0).abs() < 1e-12);
}

#[test]
fn the_top_half_tau_measures_how_the_proxy_orders_the_best_networks() {
    let plan = plan(8);
    let faithful = run(
        &plan,
        &temp_dir("top-half-faithful"),
        Arc::new(Deterministic::new(Proxy::Faithful)),
    )
    .unwrap();
    assert_eq!(faithful.top_half, 4);
    assert_eq!(faithful.top_half_kendall_tau, Some(1.0));
    // The four best by the reference ranked above the rest, reversed among themselves: of the
    // 28 pairs, the 16 across the halves and the bottom half's 6 agree, the top half's 6 do not.
    let mut references: Vec<f64> = plan.genomes.iter().map(reference_accuracy).collect();
    references.sort_by(|a, b| b.total_cmp(a));
    let runner = Deterministic::new(Proxy::ReversedFrom(references[3]));
    let dir = temp_dir("top-half-reversed");
    let report = run(&plan, &dir, Arc::new(runner)).unwrap();
    let svg = std::fs::read_to_string(dir.join("fidelity.svg")).unwrap();
    assert!(
        svg.contains("best 4: tau -1.000"),
        "the chart's title names the top half's tau"
    );
    assert!(
        (report.kendall_tau.unwrap() - 16.0 / 28.0).abs() < 1e-12,
        "overall tau {:?}",
        report.kendall_tau
    );
    assert_eq!(report.top_half, 4);
    assert_eq!(
        report.top_half_kendall_tau,
        Some(-1.0),
        "the good networks ordered backwards"
    );
    assert_eq!(
        report.proxy_pick_reference,
        Some(references[3]),
        "the proxy picks the fourth best"
    );
    // Under three in the better half there is no tau; an older report reads back without one.
    let small = run(
        &self::plan(4),
        &temp_dir("top-half-small"),
        Arc::new(Deterministic::new(Proxy::Faithful)),
    )
    .unwrap();
    assert_eq!((small.top_half, small.top_half_kendall_tau), (2, None));
    let mut json = serde_json::to_value(&report).unwrap();
    let object = json.as_object_mut().unwrap();
    object.remove("top_half_kendall_tau");
    object.remove("top_half");
    let old: fidelity::FidelityReport = serde_json::from_value(json).unwrap();
    assert_eq!((old.top_half, old.top_half_kendall_tau), (0, None));
}

#[test]
fn a_measurement_continues_from_its_folder_without_training_again() {
    let plan = plan(5);
    let dir = temp_dir("resume");
    let runner = Arc::new(Deterministic::new(Proxy::Faithful));
    let first = run(&plan, &dir, runner.clone()).unwrap();
    assert_eq!(
        runner.calls.load(Ordering::SeqCst),
        10,
        "5 proxy and 5 reference trainings"
    );
    // One result lost (as if that job had been killed): only it runs again.
    std::fs::remove_file(dir.join("reference/00003/result.json")).unwrap();
    let again = run(&plan, &dir, runner.clone()).unwrap();
    assert_eq!(
        runner.calls.load(Ordering::SeqCst),
        11,
        "only the lost job ran again"
    );
    // (Accuracies read back from result.json agree to JSON's float precision.)
    assert_eq!(first.kendall_tau, again.kendall_tau);
    assert_eq!(first.ranked, again.ranked);
    for (a, b) in first.points.iter().zip(&again.points) {
        assert_eq!(a.genome, b.genome);
        assert!((a.proxy.unwrap() - b.proxy.unwrap()).abs() < 1e-12);
        assert!((a.reference.unwrap() - b.reference.unwrap()).abs() < 1e-12);
    }
    assert!(dir.join("fidelity.json").is_file() && dir.join("fidelity.svg").is_file());
    let svg = std::fs::read_to_string(dir.join("fidelity.svg")).unwrap();
    assert!(
        svg.contains("Kendall tau 1.000"),
        "the chart's title names tau"
    );
}

/// Another proxy ranked against the reference an earlier measurement trained: the reference's
/// results are taken (nothing trains twice), the earlier proxy's are named as other trainings,
/// and the report is the one of a measurement that trained everything.
#[test]
fn a_measurement_reuses_the_trainings_another_one_did() {
    let base = temp_dir("reuse");
    let first = base.join("first");
    let first_plan = plan(5);
    run(
        &first_plan,
        &first,
        Arc::new(Deterministic::new(Proxy::Faithful)),
    )
    .unwrap();
    // A proxy of 2 epochs against the first's reference (5 epochs, set: its default follows the
    // proxy).
    let mut config = SearchConfig::default();
    config.large.epochs = 2;
    let reference = Reference {
        epochs: Some(first_plan.reference.epochs),
        ..Reference::default()
    };
    let second_plan =
        FidelityPlan::new(&config, TaskChoice::Large, 5, None, &reference, 1).unwrap();
    assert_eq!(second_plan.reference, first_plan.reference);
    let two_epochs = || {
        Arc::new(Deterministic {
            proxy_epochs: 2,
            ..Deterministic::new(Proxy::Reversed)
        })
    };
    let second = base.join("second");
    let measurement = Measurement::open(&second_plan, &second).unwrap();
    assert!(!second.exists(), "opening writes nothing");
    let reused = measurement.reuse(&first).unwrap();
    assert_eq!(
        (reused.taken, reused.already_here),
        (5, 0),
        "the five reference trainings taken"
    );
    assert_eq!(reused.differing.len(), 5, "{:?}", reused.differing);
    assert!(
        reused.differing[0].0.ends_with("proxy/00000")
            && reused.differing[0]
                .1
                .contains("task.epochs 1 there, 2 here"),
        "the first's proxy is another training, and says why: {:?}",
        reused.differing[0]
    );
    assert!(
        first.join("reference/00000/result.json").is_file(),
        "the other folder is left as it was"
    );
    let runner = two_epochs();
    let mut executor = LocalExecutor::new(runner.clone(), 2, &[]);
    let report = measurement
        .run(
            &mut executor,
            2,
            1,
            &Control {
                stop: &AtomicBool::new(false),
                detach: false,
            },
            &mut |_, _, _, _| {},
        )
        .unwrap();
    assert_eq!(
        runner.calls.load(Ordering::SeqCst),
        5,
        "only the new proxy trained"
    );
    let whole = run(&second_plan, &base.join("whole"), two_epochs()).unwrap();
    assert_eq!(report.kendall_tau, whole.kendall_tau);
    assert_eq!(report.kendall_tau, Some(-1.0));
    for (a, b) in report.points.iter().zip(&whole.points) {
        assert!((a.reference.unwrap() - b.reference.unwrap()).abs() < 1e-12);
    }
    // Again: everything is here already.
    let again = Measurement::open(&second_plan, &second)
        .unwrap()
        .reuse(&first)
        .unwrap();
    assert_eq!((again.taken, again.already_here), (0, 10));

    // Another sample (seed 1): nothing is the same training, and the differences are named.
    let other_sample = FidelityPlan::new(
        &SearchConfig {
            seed: 1,
            ..SearchConfig::default()
        },
        TaskChoice::Large,
        5,
        None,
        &Reference::default(),
        1,
    )
    .unwrap();
    let reused = Measurement::open(&other_sample, &base.join("other"))
        .unwrap()
        .reuse(&first)
        .unwrap();
    assert_eq!((reused.taken, reused.differing.len()), (0, 10));
    assert!(
        reused.differing[5].1.contains("candidate.genome")
            && reused.differing[5].1.contains("seed"),
        "{:?}",
        reused.differing[5]
    );
    assert!(
        !base.join("other").exists(),
        "nothing taken, nothing written"
    );
    // Folders that cannot be reused.
    let e = measurement.reuse(&second).unwrap_err().to_string();
    assert!(e.contains("own folder"), "{e}");
    let e = measurement
        .reuse(&base.join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere") && e.contains("no plan.json"), "{e}");
}

#[test]
fn a_folder_of_another_plan_is_refused() {
    let dir = temp_dir("other-plan");
    run(
        &plan(4),
        &dir,
        Arc::new(Deterministic::new(Proxy::Faithful)),
    )
    .unwrap();
    let error = run(
        &plan(5),
        &dir,
        Arc::new(Deterministic::new(Proxy::Faithful)),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("plan.json") && error.contains("another --out"),
        "{error}"
    );
}

#[test]
fn a_failed_training_is_reported_and_left_out_of_the_ranking() {
    let plan = plan(6);
    let mut runner = Deterministic::new(Proxy::Faithful);
    runner.fails = Some(plan.genomes[2].key());
    let runner = Arc::new(runner);
    let report = run(&plan, &temp_dir("failed"), runner.clone()).unwrap();
    assert_eq!(report.ranked, 5);
    let failed = &report.points[2];
    assert_eq!(failed.proxy, None);
    let error = failed.error.as_deref().unwrap();
    assert!(
        error.contains("proxy") && error.contains("2 attempts"),
        "{error}"
    );
    assert_eq!(
        runner.calls.load(Ordering::SeqCst),
        12 + 1,
        "one retry of the failing job"
    );
    assert!((report.kendall_tau.unwrap() - 1.0).abs() < 1e-12);
}

#[test]
fn too_few_samples_and_a_bad_reference_are_named() {
    let config = SearchConfig::default();
    let refusal = |samples: usize, reference: &Reference, proxy_seeds: usize| {
        FidelityPlan::new(
            &config,
            TaskChoice::Small,
            samples,
            None,
            reference,
            proxy_seeds,
        )
        .unwrap_err()
        .to_string()
    };
    let error = refusal(2, &Reference::default(), 1);
    assert!(
        error.contains("samples") && error.contains("at least 3"),
        "{error}"
    );
    let bad = Reference {
        data_fraction: 1.5,
        ..Reference::default()
    };
    let error = refusal(5, &bad, 1);
    assert!(error.contains("reference data fraction"), "{error}");
    let zero = Reference {
        epochs: Some(0),
        ..Reference::default()
    };
    let error = refusal(5, &zero, 1);
    assert!(error.contains("reference epochs"), "{error}");
    let no_seeds = Reference {
        seeds: 0,
        ..Reference::default()
    };
    let error = refusal(5, &no_seeds, 1);
    assert!(
        error.contains("reference seeds") && error.contains("at least 1"),
        "{error}"
    );
    let error = refusal(5, &Reference::default(), 0);
    assert!(
        error.contains("proxy seeds") && error.contains("at least 1"),
        "{error}"
    );
    for held_out in [0.0, 1.0, 1.5] {
        let bad_split = Reference {
            val_fraction: Some(held_out),
            ..Reference::default()
        };
        let error = refusal(5, &bad_split, 1);
        assert!(
            error.contains("reference") && error.contains("val_fraction"),
            "held-out fraction {held_out}: {error}"
        );
    }
}

#[test]
fn the_reference_holds_out_the_proxys_fraction_unless_told_otherwise() {
    let config = SearchConfig::default();
    let plan_for = |val_fraction: Option<f64>| {
        FidelityPlan::new(
            &config,
            TaskChoice::Large,
            5,
            None,
            &Reference {
                val_fraction,
                ..Reference::default()
            },
            1,
        )
        .unwrap()
    };
    let shared = plan_for(None);
    assert_eq!(shared.reference.val_fraction, config.large.val_fraction);
    let fixed = plan_for(Some(0.3));
    assert_eq!(fixed.reference.val_fraction, 0.3);
    assert_eq!(
        fixed.proxy.val_fraction, config.large.val_fraction,
        "the proxy keeps its own held-out fraction"
    );
    assert_eq!(
        Recipe::from(&fixed.reference).val_fraction,
        Some(0.3),
        "the report shows the reference's held-out fraction"
    );
}

#[test]
fn several_reference_seeds_average_the_reference_and_measure_its_repeatability() {
    let plan = plan_with_reference_seeds(10, 3);
    let seeds: Vec<u64> = (0..3).map(|run| plan.reference_seed(run)).collect();
    assert_eq!(
        seeds[0], plan.seed,
        "the first reference run trains as the proxy"
    );
    assert!(
        seeds[1] != seeds[0] && seeds[2] != seeds[1] && seeds[2] != seeds[0],
        "distinct seeds: {seeds:?}"
    );
    let mut runner = Deterministic::new(Proxy::Faithful);
    // Noise of the size of the differences between architectures: the runs disagree.
    runner.reference_noise = 0.05;
    let runner = Arc::new(runner);
    let dir = temp_dir("seeds");
    let report = run(&plan, &dir, runner.clone()).unwrap();
    assert_eq!(
        runner.calls.load(Ordering::SeqCst),
        10 + 3 * 10,
        "10 proxy trainings and 3 reference runs of 10"
    );
    for (run, folder) in ["reference", "reference-run2", "reference-run3"]
        .iter()
        .enumerate()
    {
        let job_dir = dir.join(folder).join("00009");
        assert!(
            job_dir.join("result.json").is_file(),
            "{folder}/00009 holds a result"
        );
        // Every run trains and validates on the images of the first: only its weights and
        // order move with its seed.
        let job = Job::read(&job_dir).unwrap();
        assert_eq!(job.seed, seeds[run], "{folder}: its own training seed");
        assert_eq!(job.data_seed(), plan.seed, "{folder}: the plan's images");
        let text = std::fs::read_to_string(job_dir.join("job.json")).unwrap();
        assert_eq!(
            text.contains("data_seed"),
            run > 0,
            "{folder}: a data seed is written only where it differs from the seed"
        );
    }
    assert_eq!(report.reference_seeds, 3);
    assert_eq!(report.ranked, 10);
    for p in &report.points {
        assert_eq!(
            p.reference_runs.len(),
            3,
            "{}: one accuracy per run",
            p.genome
        );
        let mean = p.reference_runs.iter().sum::<f64>() / 3.0;
        assert!(
            (p.reference.unwrap() - mean).abs() < 1e-12,
            "{}: the reference is the runs' mean",
            p.genome
        );
        assert_eq!(p.reference_seconds, 15.0, "three runs of 5 s");
    }
    let run_of =
        |k: usize| -> Vec<f64> { report.points.iter().map(|p| p.reference_runs[k]).collect() };
    let pairs = [(0, 1), (0, 2), (1, 2)];
    let expected = pairs
        .iter()
        .map(|&(a, b)| stats::kendall_tau(&run_of(a), &run_of(b)).unwrap())
        .sum::<f64>()
        / 3.0;
    let repeatability = report.reference_repeatability_tau.unwrap();
    assert!(
        (repeatability - expected).abs() < 1e-12,
        "the mean tau over the pairs of runs: {repeatability} against {expected}"
    );
    // The same over the five best by the mean reference.
    let mut best: Vec<usize> = (0..10).collect();
    best.sort_by(|&a, &b| {
        let r = |i: usize| report.points[i].reference.unwrap();
        r(b).total_cmp(&r(a))
    });
    best.truncate(5);
    let top_run_of = |k: usize| -> Vec<f64> {
        best.iter()
            .map(|&i| report.points[i].reference_runs[k])
            .collect()
    };
    let top_expected = pairs
        .iter()
        .map(|&(a, b)| stats::kendall_tau(&top_run_of(a), &top_run_of(b)).unwrap())
        .sum::<f64>()
        / 3.0;
    let top = report.top_half_reference_repeatability_tau.unwrap();
    assert!(
        (top - top_expected).abs() < 1e-12,
        "over the better half: {top} against {top_expected}"
    );
    assert!(
        repeatability < 0.99,
        "noisy runs do not agree perfectly: {repeatability}"
    );
    let svg = std::fs::read_to_string(dir.join("fidelity.svg")).unwrap();
    assert!(
        svg.contains("mean of 3 seeds") && svg.contains("self-agreement"),
        "the chart says what the reference is"
    );
    // One seed: no repeatability.
    let single = run(
        &plan_with_reference_seeds(10, 1),
        &temp_dir("one-seed"),
        runner,
    )
    .unwrap();
    assert_eq!(single.reference_repeatability_tau, None);
    assert_eq!(single.top_half_reference_repeatability_tau, None);
    assert!(single.points.iter().all(|p| p.reference_runs.len() == 1));
}

#[test]
fn several_proxy_seeds_rank_each_run_on_its_own_and_report_the_mean_tau() {
    let plan = plan_with_seeds(10, 3, 1);
    let seeds: Vec<u64> = (0..3).map(|run| plan.proxy_seed(run)).collect();
    assert_eq!(seeds[0], plan.seed, "the first proxy run trains as before");
    assert!(
        seeds[1] != seeds[0] && seeds[2] != seeds[1] && seeds[2] != seeds[0],
        "distinct seeds: {seeds:?}"
    );
    let plan_2 = plan_with_seeds(10, 3, 3);
    assert!(
        (1..3).all(|run| plan_2.proxy_seed(run) != plan_2.reference_seed(run)),
        "the proxy's later runs do not share the reference's seeds"
    );
    let mut runner = Deterministic::new(Proxy::Faithful);
    runner.proxy_noise = 0.05;
    let runner = Arc::new(runner);
    let dir = temp_dir("proxy-seeds");
    let report = run(&plan, &dir, runner.clone()).unwrap();
    assert_eq!(
        runner.calls.load(Ordering::SeqCst),
        3 * 10 + 10,
        "3 proxy runs of 10 and one reference run"
    );
    for (run, folder) in ["proxy", "proxy-run2", "proxy-run3"].iter().enumerate() {
        let job = Job::read(&dir.join(folder).join("00009")).unwrap();
        assert_eq!(job.seed, seeds[run], "{folder}: its own training seed");
        assert_eq!(
            job.data_seed(),
            seeds[run],
            "{folder}: its own images, as a search from its seed draws them"
        );
    }
    assert_eq!(report.proxy_seeds, 3);
    assert_eq!(report.ranked, 10);
    let reference: Vec<f64> = report.points.iter().map(|p| p.reference.unwrap()).collect();
    let run_of = |k: usize| -> Vec<f64> { report.points.iter().map(|p| p.proxy_runs[k]).collect() };
    let taus: Vec<f64> = (0..3)
        .map(|k| stats::kendall_tau(&run_of(k), &reference).unwrap())
        .collect();
    assert_eq!(report.proxy_run_taus, taus, "each run ranked on its own");
    let mean_tau = taus.iter().sum::<f64>() / 3.0;
    assert!(
        (report.kendall_tau.unwrap() - mean_tau).abs() < 1e-12,
        "kendall_tau {:?} is the mean of the runs' {taus:?}",
        report.kendall_tau
    );
    assert!(
        taus.iter().any(|&t| t < 0.99),
        "noisy proxy runs do not rank perfectly: {taus:?}"
    );
    let rhos: Vec<f64> = (0..3)
        .map(|k| stats::spearman_rho(&run_of(k), &reference).unwrap())
        .collect();
    assert!((report.spearman_rho.unwrap() - rhos.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    // Each run picks its own best; the pick's reference is the mean over the runs.
    let picks: Vec<f64> = (0..3)
        .map(|k| {
            let run = run_of(k);
            let best = (0..10).fold(0, |b, i| if run[i] > run[b] { i } else { b });
            reference[best]
        })
        .collect();
    assert!((report.proxy_pick_reference.unwrap() - picks.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    for p in &report.points {
        let mean = p.proxy_runs.iter().sum::<f64>() / 3.0;
        assert!(
            (p.proxy.unwrap() - mean).abs() < 1e-12,
            "{}: the proxy is the runs' mean",
            p.genome
        );
        assert_eq!(p.proxy_seconds, 3.0, "three proxy runs of 1 s");
    }
    let repeatability = report.proxy_repeatability_tau.unwrap();
    assert!(
        repeatability < 0.99 && repeatability > -1.0,
        "{repeatability}"
    );
    assert_eq!(report.reference_repeatability_tau, None);
    let svg = std::fs::read_to_string(dir.join("fidelity.svg")).unwrap();
    assert!(
        svg.contains("mean of 3 proxy seeds"),
        "the chart says the tau is a mean"
    );
    // A failed later proxy run leaves the architecture out, named by its run.
    let mut failing = Deterministic::new(Proxy::Faithful);
    failing.fails = Some(plan.genomes[0].key());
    let report = run(
        &plan_with_seeds(4, 2, 1),
        &temp_dir("proxy-run-fails"),
        Arc::new(failing),
    )
    .unwrap();
    let error = report.points[0].error.as_deref().unwrap();
    assert!(error.contains("proxy run 1"), "{error}");
    assert_eq!(report.points[0].proxy, None);
    assert_eq!(report.ranked, 3);
}

#[test]
fn a_report_written_before_proxy_seeds_reads_back_as_one_seed() {
    let plan = plan(4);
    let report = run(
        &plan,
        &temp_dir("old-report-proxy"),
        Arc::new(Deterministic::new(Proxy::Faithful)),
    )
    .unwrap();
    assert_eq!(report.proxy_run_taus.len(), 1);
    assert_eq!(report.kendall_tau, Some(report.proxy_run_taus[0]));
    let mut json = serde_json::to_value(&report).unwrap();
    let object = json.as_object_mut().unwrap();
    for key in ["proxy_seeds", "proxy_run_taus", "proxy_repeatability_tau"] {
        object.remove(key);
    }
    for point in object["points"].as_array_mut().unwrap() {
        point.as_object_mut().unwrap().remove("proxy_runs");
    }
    let old: fidelity::FidelityReport = serde_json::from_value(json).unwrap();
    assert_eq!(old.proxy_seeds, 1);
    assert!(old.proxy_run_taus.is_empty());
    // A plan saved before proxy seeds is the same plan as one proxy seed's.
    let mut saved = serde_json::to_value(&plan).unwrap();
    saved.as_object_mut().unwrap().remove("proxy_seeds");
    let old_plan: FidelityPlan = serde_json::from_value(saved).unwrap();
    assert_eq!(old_plan, plan);
}

#[test]
fn a_failed_reference_run_names_its_run_and_leaves_the_architecture_out() {
    let plan = plan_with_reference_seeds(5, 2);
    let mut runner = Deterministic::new(Proxy::Faithful);
    runner.reference_fails_with_seed = Some(plan.reference_seed(1));
    let report = run(&plan, &temp_dir("failed-run"), Arc::new(runner)).unwrap();
    assert_eq!(report.ranked, 0, "every second run failed");
    for p in &report.points {
        assert_eq!(p.reference, None);
        assert!(p.reference_runs.is_empty());
        let error = p.error.as_deref().unwrap();
        assert!(error.contains("reference run 2"), "{error}");
    }
    assert_eq!(report.kendall_tau, None);
    assert_eq!(report.reference_repeatability_tau, None);
}

#[test]
fn a_report_written_before_reference_seeds_reads_back_as_one_seed() {
    let plan = plan(4);
    let report = run(
        &plan,
        &temp_dir("old-report"),
        Arc::new(Deterministic::new(Proxy::Faithful)),
    )
    .unwrap();
    let mut json = serde_json::to_value(&report).unwrap();
    let object = json.as_object_mut().unwrap();
    object.remove("reference_seeds");
    object.remove("reference_repeatability_tau");
    for point in object["points"].as_array_mut().unwrap() {
        point.as_object_mut().unwrap().remove("reference_runs");
    }
    let old: fidelity::FidelityReport = serde_json::from_value(json).unwrap();
    assert_eq!(old.reference_seeds, 1);
    assert_eq!(old.reference_repeatability_tau, None);
}

#[test]
fn architectures_outside_the_space_are_refused() {
    let config = SearchConfig::default();
    let genome = Genome::random(
        &config.space,
        7,
        &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1),
    );
    let mut arch = genome.to_arch(&config.large.macro_config, "odd").unwrap();
    arch.blocks[0].layers = 6;
    let archs = vec![arch.clone(), arch.clone(), arch];
    let error = FidelityPlan::new(
        &config,
        TaskChoice::Large,
        3,
        Some(&archs),
        &Reference::default(),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("layers") && error.contains("not in the search space"),
        "{error}"
    );
}

#[test]
fn a_stopped_measurement_cancels_its_jobs_or_with_detach_leaves_them_running() {
    let plan = plan(3);
    for (detach, expected) in [(false, "cancelled"), (true, "left running")] {
        let dir = temp_dir(&format!("stopped-{detach}"));
        let mut executor =
            LocalExecutor::new(Arc::new(Deterministic::new(Proxy::Faithful)), 1, &[]);
        let stop = AtomicBool::new(true);
        let control = Control {
            stop: &stop,
            detach,
        };
        let error = Measurement::open(&plan, &dir)
            .unwrap()
            .run(&mut executor, 1, 0, &control, &mut |_, _, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(expected) && error.contains("interrupted"),
            "detach {detach}: {error}"
        );
        assert!(
            error.contains("Continue with the same command") && !error.contains("resume"),
            "a measurement continues by its own command, not `resume`: {error}"
        );
    }
}

#[test]
fn a_training_at_chance_is_named_and_a_reference_one_left_out_of_the_reference() {
    // Ten balanced classes on 1,000 images: chance is 0.1, and "no better" up to 0.128.
    let validation = ChanceLevel {
        images: 1000,
        majority_top1: 0.1,
    };
    let plan = plan_with_reference_seeds(8, 2);
    let faithful = |collapses: Vec<(bool, String, u64)>| {
        let mut runner = Deterministic::new(Proxy::Faithful);
        runner.validation_chance = Some(validation);
        runner.collapses = collapses;
        Arc::new(runner)
    };
    let clean = run(&plan, &temp_dir("chance-none"), faithful(Vec::new())).unwrap();
    assert_eq!(clean.kendall_tau, Some(1.0));
    assert_eq!(clean.reference_repeatability_tau, Some(1.0));
    assert!(clean
        .points
        .iter()
        .all(|p| p.reference_runs_at_chance.is_empty() && p.proxy_runs_at_chance.is_empty()));

    // The best architecture's second reference run collapses: averaged in, it would rank last
    // ((best + 0.1) / 2 is below every other reference) and the reference's runs would disagree.
    let best = (0..8)
        .max_by(|&a, &b| {
            let reference = |k: usize| clean.points[k].reference.unwrap();
            reference(a).total_cmp(&reference(b))
        })
        .unwrap();
    let genome = |k: usize| plan.genomes[k].key();
    let collapsed = run(
        &plan,
        &temp_dir("chance-reference"),
        faithful(vec![(false, genome(best), plan.reference_seed(1))]),
    )
    .unwrap();
    let point = &collapsed.points[best];
    assert_eq!(point.reference_runs_at_chance, vec![2], "run 2 is named");
    assert_eq!(
        point.reference_runs[1], 0.1,
        "its accuracy is kept as it was"
    );
    assert_eq!(
        point.reference,
        point.reference_runs.first().copied(),
        "the reference is the run that learned"
    );
    assert_eq!(
        collapsed.kendall_tau,
        Some(1.0),
        "the faithful proxy still ranks perfectly"
    );
    assert_eq!(
        collapsed.reference_repeatability_tau,
        Some(1.0),
        "the collapsed architecture is out of the reference's repeatability"
    );
    assert_eq!(collapsed.best_reference, clean.best_reference);

    // Every reference run of one architecture collapses: it ranks at chance. A proxy run's
    // collapse is named and kept in its ranking, as the search it stands for would see it.
    let second = (0..8).find(|&k| k != best).unwrap();
    let everywhere = run(
        &plan,
        &temp_dir("chance-everywhere"),
        faithful(vec![
            (false, genome(best), plan.reference_seed(0)),
            (false, genome(best), plan.reference_seed(1)),
            (true, genome(second), plan.proxy_seed(0)),
        ]),
    )
    .unwrap();
    assert_eq!(everywhere.points[best].reference_runs_at_chance, vec![1, 2]);
    assert_eq!(everywhere.points[best].reference, Some(0.1));
    assert_eq!(everywhere.points[second].proxy_runs_at_chance, vec![1]);
    assert_eq!(everywhere.points[second].proxy, Some(0.1));
    assert!(
        everywhere.kendall_tau.unwrap() < 1.0,
        "both collapses move the ranking: {:?}",
        everywhere.kendall_tau
    );

    // Results that do not record their validation split never count as at chance.
    let mut unrecorded = Deterministic::new(Proxy::Faithful);
    unrecorded.collapses = vec![(false, genome(best), plan.reference_seed(1))];
    let unrecorded = run(&plan, &temp_dir("chance-unrecorded"), Arc::new(unrecorded)).unwrap();
    assert!(unrecorded.points[best].reference_runs_at_chance.is_empty());
}
