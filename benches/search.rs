//! What the latency objective costs the coordinator per evaluation (`cargo bench --bench
//! search`): predicting a candidate's latency from the demo's committed CPU table (one lookup per
//! piece), and a Pareto tournament (non-dominated ranks and crowding of the whole population)
//! at the demo's population and at a cluster-sized one. Both run once per evaluation, against
//! seconds (demo) to hours (ImageNet) of training.

use std::path::Path;

use criterion::Criterion;
use eatnas_nas::latency::StageLatency;
use eatnas_nas::pareto::select;
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
    criterion.final_summary();
}
