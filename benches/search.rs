//! What the latency objective costs the coordinator per evaluation (`cargo bench --bench
//! search`): predicting a candidate's latency from the demo's committed CPU table (one lookup per
//! piece), and a Pareto tournament (non-dominated ranks and crowding of the whole population)
//! at the demo's population and at a cluster-sized one. Both run once per evaluation, against
//! seconds (demo) to hours (ImageNet) of training.
//!
//! And what local workers buy (`cargo bench --bench search -- local_workers`): the demo's stage 1
//! cut to its 8 random candidates, the same 8 trainings whatever the workers, through the local
//! executor with one worker and with two (each on its share of the cores), on this machine's
//! cores. About 10-20 s an iteration, 10 iterations a row.

use std::path::Path;

use criterion::Criterion;
use eatnas_nas::latency::StageLatency;
use eatnas_nas::pareto::select;
use eatnas_nas::pipeline::{self, Command, Session};
use eatnas_nas::{Genome, LatencyObjective, LatencyPass, SearchConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let config = SearchConfig::default();
    let objective = LatencyObjective {
        table: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/results/latency/demo-large-cpu.json"),
        device: "cpu".into(),
        pass: LatencyPass::Inference,
        resolution: None,
        batch: None,
        target_ms: Some(15.0),
        exponent: -0.07,
        max_ms: None,
    };
    let stage = std::env::temp_dir().join(format!("eatnas-bench-search-{}", std::process::id()));
    let latency = StageLatency::open(&objective, &config.space, &config.large, &stage)
        .expect("the committed demo table fits the demo's large task");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let genomes: Vec<Genome> = (0..64)
        .map(|_| Genome::random(&config.space, config.large.macro_config.blocks(), &mut rng))
        .collect();
    let mut i = 0;
    criterion.bench_function("predict_latency_demo_large", |b| {
        b.iter(|| {
            i = (i + 1) % genomes.len();
            latency.predict_ms(&genomes[i]).unwrap()
        })
    });
    for population in [8, 20, 100] {
        let points: Vec<(f64, f64)> = (0..population)
            .map(|_| (rng.gen_range(5.0..50.0), rng.gen_range(0.3..0.9)))
            .collect();
        let drawn: Vec<usize> = (0..population.min(5)).collect();
        criterion.bench_function(&format!("pareto_tournament_population_{population}"), |b| {
            b.iter(|| select(&points, &drawn, |a, b| a.cmp(&b)))
        });
    }
    let _ = std::fs::remove_dir_all(&stage);
    local_workers(&mut criterion);
    criterion.final_summary();
}

/// Stage 1 of the demo with only its random initial population (8 candidates, so every row
/// trains the same 8 networks), with 1 and 2 local workers.
fn local_workers(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("local_workers");
    group.sample_size(10);
    for workers in [1, 2] {
        let mut config = SearchConfig::default();
        config.stage1.population = 8;
        config.stage1.budget = 8;
        config.workers = workers;
        let name = format!("demo_stage1_8_candidates_workers_{workers}");
        let mut run = 0;
        group.bench_function(&name, |b| {
            b.iter(|| {
                run += 1;
                let dir = std::env::temp_dir()
                    .join(format!("eatnas-bench-{name}-{}-{run}", std::process::id()));
                let summary = pipeline::start(
                    config.clone(),
                    Command::Search,
                    &dir,
                    &Session::default(),
                    &mut |_| {},
                )
                .expect("the demo's stage 1 runs");
                let _ = std::fs::remove_dir_all(&dir);
                summary
            })
        });
    }
    group.finish();
}
