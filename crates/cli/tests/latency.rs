//! `eatnas-cli latency build`, `inspect --latency`, and a search whose stage 2 optimises the
//! predicted latency with Pareto selection, end to end on a tiny configuration.

use eatnas_testkit::TestDir;
use std::path::PathBuf;
use std::process::{Command, Output};

const TINY: &str = r#"
seed = 2
[space]
layers = [1, 2]
[small]
resolution = 8
data_fraction = 0.05
val_fraction = 0.3
batch_size = 32
[small.macro]
width_multiplier = 0.125
[large]
resolution = 12
data_fraction = 0.05
val_fraction = 0.3
batch_size = 32
[large.macro]
width_multiplier = 0.125
[stage2]
population = 4
sample = 2
budget = 8
top_k = 2
"#;

fn temp_dir(name: &str) -> TestDir {
    TestDir::new(&format!("cli-latency-{name}"))
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eatnas-cli"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let output = cli(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds a CPU latency table of TINY's large task in `dir` (one timing each: the objective's
/// plumbing is tested here, not the timings), and returns its path.
fn tiny_table(dir: &std::path::Path) -> PathBuf {
    let tiny = dir.join("tiny.toml");
    std::fs::write(&tiny, TINY).unwrap();
    let table = dir.join("table.json");
    ok(&[
        "latency",
        "build",
        "--config",
        tiny.to_str().unwrap(),
        "--task",
        "large",
        "--device",
        "cpu",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--calibration",
        "1",
        "--out",
        table.to_str().unwrap(),
    ]);
    // One repeat of one calibration network on a busy CI host: the correction fitted on it
    // follows that one timing. These tests are about the search and the report, not the fit:
    // keep the sum of the pieces alone.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    let identity = serde_json::json!({"intercept_ms": 0.0, "slope": 1.0});
    json["correction"] = serde_json::json!({"inference": identity, "training": identity});
    std::fs::write(&table, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    table
}

/// TINY with `stage2` appended to its `[stage2]` section and a large-task latency objective
/// against `table`, whose other keys are `objective`'s lines; written in `dir`.
fn latency_config(
    dir: &std::path::Path,
    table: &std::path::Path,
    stage2: &str,
    objective: &str,
) -> PathBuf {
    let config = dir.join("latency.toml");
    std::fs::write(
        &config,
        format!(
            "{TINY}{stage2}[large_fitness.latency]\ntable = {:?}\n{objective}",
            table.to_str().unwrap()
        ),
    )
    .unwrap();
    config
}

#[test]
fn a_search_against_predicted_latency_draws_its_pareto_front() {
    let dir = temp_dir("search");
    let table = tiny_table(&dir);
    let table_s = table.to_str().unwrap();
    let config = latency_config(
        &dir,
        &table,
        "selection = \"pareto\"\n",
        "device = \"cpu\"\ntarget_ms = 1.0\nexponent = -0.07\n",
    );
    let out = dir.join("search");
    let stdout = ok(&[
        "transfer",
        "--from-scratch",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();

    let history = std::fs::read_to_string(out.join("scratch/history.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 8);
    for r in &records {
        let ms = r["latency_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("no latency in {r}"));
        let soft = r["accuracy"].as_f64().unwrap() * ms.powf(-0.07);
        assert!(
            (r["fitness"].as_f64().unwrap() - soft).abs() < 1e-9,
            "fitness of {r} is not accuracy * latency^-0.07"
        );
    }
    let front = summary["scratch"]["pareto_front"].as_array().unwrap();
    assert!(!front.is_empty(), "{summary}");
    let costs: Vec<f64> = front
        .iter()
        .map(|m| m["latency_ms"].as_f64().unwrap())
        .collect();
    assert!(
        costs.windows(2).all(|w| w[0] <= w[1]),
        "front by latency: {costs:?}"
    );
    assert!(out.join("scratch/latency-table.json").is_file());

    let pareto = std::fs::read_to_string(out.join("pareto.svg")).unwrap();
    assert!(
        pareto.contains("predicted latency on cpu, one inference pass (ms)"),
        "pareto.svg has no latency axis"
    );
    ok(&["report", out.to_str().unwrap()]);
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("Accuracy against latency"),
        "no latency chart"
    );
    assert!(report.contains("latency ms"), "no latency column");

    // inspect predicts a network's latency from the same table.
    let arch = out.join("final_arch.json");
    let inspected = ok(&[
        "inspect",
        arch.to_str().unwrap(),
        "--resolution",
        "12",
        "--classes",
        "10",
        "--in-channels",
        "1",
        "--latency",
        table_s,
    ]);
    assert!(inspected.contains("ms"), "{inspected}");
}

#[test]
fn a_latency_table_of_another_device_stops_the_search_before_it_trains() {
    let dir = temp_dir("refused");
    let table = tiny_table(&dir);
    let config = latency_config(&dir, &table, "", "device = \"cuda:0\"\n");
    let out = dir.join("search");
    let output = cli(&[
        "transfer",
        "--from-scratch",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("device cpu (wanted cuda:0)"), "{stderr}");
    assert!(!out.join("scratch/history.jsonl").exists(), "it trained");
}
