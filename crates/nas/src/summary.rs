//! `summary.json`: what a search found, typed.

use std::path::PathBuf;

use eatnas_nn::Arch;
use serde::{Deserialize, Serialize};

use crate::pipeline::Command;

/// Absent stages (a `search` has no stage 2) are left out of the JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub version: String,
    pub seed: u64,
    pub command: Command,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage1: Option<StageSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<StageSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<StageSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_vs_scratch: Option<Comparison>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "final")]
    pub final_training: Option<FinalSummary>,
    /// Every file the search wrote for its user.
    pub outputs: Vec<PathBuf>,
    pub seconds_this_session: f64,
    /// CPU seconds this coordinator process used (user + system), training included when the
    /// executor is local.
    pub coordinator_cpu_seconds: f64,
    pub fingerprint: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    pub evaluations: usize,
    /// Evaluations recorded as failed after every retry.
    pub failed: usize,
    pub best: BestMember,
    pub final_population_top_k_mean: Option<f64>,
    /// Mean fitness of the population's top k after each evaluation.
    pub quality_curve: Vec<f64>,
    /// The evaluated networks no other beats in both accuracy and cost (predicted latency with
    /// a latency objective, else MAdds), by increasing cost: the trade-offs to choose from.
    #[serde(default)]
    pub pareto_front: Vec<FrontMember>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrontMember {
    pub id: usize,
    pub genome: String,
    pub accuracy: f64,
    pub fitness: f64,
    pub madds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestMember {
    pub id: usize,
    pub genome: String,
    pub accuracy: f64,
    pub fitness: f64,
    pub madds: u64,
    pub params: u64,
    /// Predicted on the stage's target device (with a latency objective).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    pub arch: Arch,
}

/// Transfer against the search from scratch, on the same budget and seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub metric: String,
    pub at: Vec<ComparisonPoint>,
    /// Mean of each quality curve (the area under it per evaluation).
    pub area_transfer: f64,
    pub area_scratch: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComparisonPoint {
    pub evaluations: usize,
    pub transfer: Option<f64>,
    pub scratch: Option<f64>,
}

/// The winner trained in full.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalSummary {
    pub test_top1: f64,
    pub test_top5: f64,
    pub val_top1: Option<f64>,
    pub madds: u64,
    pub params: u64,
    pub epochs: usize,
    pub checkpoint: Option<PathBuf>,
    /// What a network that learned nothing scores on the test set (absent from summaries
    /// written before eatnas recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_chance: Option<eatnas_data::ChanceLevel>,
    /// Whether the test top-1 is no better than `test_chance`: the final training collapsed
    /// (see `eatnas_data::ChanceLevel::at_chance`; false in older summaries).
    #[serde(default)]
    pub learned_nothing: bool,
}

/// CPU seconds (user + system) this process has used so far.
pub fn process_cpu_seconds() -> f64 {
    // /proc/self/stat fields 14 and 15 (utime, stime), in clock ticks, after the command name.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(after_name) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Field 3 is the first after the name: utime is field 14, stime 15.
    (ticks(11) + ticks(12)) / 100.0
}
