//! Fitness (accuracy traded against size or measured latency, as in MnasNet) and the
//! population-quality curve.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitnessConfig {
    /// T in `accuracy * (MAdds / T)^w`; 0 turns the size term off.
    pub target_madds: f64,
    /// w (MnasNet's soft constraint: -0.07).
    pub exponent: f64,
    /// Hard caps instead of (or beside) the soft term: a network above either has fitness 0.
    pub max_madds: Option<u64>,
    pub max_params: Option<u64>,
    /// Latency on the target device, predicted from a latency table (`docs/latency.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyObjective>,
}

/// Which time of a latency table a search optimises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyPass {
    /// One forward pass in inference (the deployed network).
    #[default]
    Inference,
    /// One training step (forward, backward, SGD update).
    Training,
}

/// `[small_fitness.latency]` / `[large_fitness.latency]`: each candidate's latency is predicted
/// from a table built on the device the networks will run on, which need not be the device the
/// search trains on (stage 2 may target a GPU, stage 1 a CPU).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyObjective {
    /// The table (`eatnas-cli latency build`); copied into the stage's folder when the stage
    /// starts, so a resumed search predicts with the table it started with.
    pub table: PathBuf,
    /// The target device the table must have been measured on: `cpu` or `cuda:N`.
    pub device: String,
    #[serde(default)]
    pub pass: LatencyPass,
    /// The resolution and batch the table must have been measured at (default: the task's
    /// resolution when it sets one, and any batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// T in `accuracy * (latency / T)^w`, in milliseconds; absent: no soft term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ms: Option<f64>,
    /// w (MnasNet's soft constraint: -0.07).
    #[serde(default = "mnasnet_exponent")]
    pub exponent: f64,
    /// A hard cap: a network predicted slower has fitness 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
}

fn mnasnet_exponent() -> f64 {
    -0.07
}

impl LatencyObjective {
    pub fn validate(&self, key: &str) -> Result<()> {
        let positive = |field: &str, value: Option<f64>| match value {
            Some(v) if !(v > 0.0 && v.is_finite()) => Err(Error::invalid(
                format!("{key}.{field}"),
                format!("expected a latency above 0 milliseconds, got {v}"),
            )),
            _ => Ok(()),
        };
        positive("target_ms", self.target_ms)?;
        positive("max_ms", self.max_ms)?;
        if !self.exponent.is_finite() {
            return Err(Error::invalid(
                format!("{key}.exponent"),
                format!("expected a finite exponent, got {}", self.exponent),
            ));
        }
        let device_ok = self.device == "cpu"
            || self
                .device
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok());
        if !device_ok {
            return Err(Error::invalid(
                format!("{key}.device"),
                format!("expected `cpu` or `cuda:N`, got `{}`", self.device),
            ));
        }
        if self.table.as_os_str().is_empty() {
            return Err(Error::invalid(
                format!("{key}.table"),
                "expected the path of a latency table (eatnas-cli latency build)",
            ));
        }
        if self.resolution == Some(0) || self.batch == Some(0) {
            return Err(Error::invalid(
                key,
                "resolution and batch, when given, must be positive",
            ));
        }
        Ok(())
    }
}

impl Default for FitnessConfig {
    fn default() -> Self {
        FitnessConfig {
            target_madds: 0.0,
            exponent: -0.07,
            max_madds: None,
            max_params: None,
            latency: None,
        }
    }
}

impl FitnessConfig {
    pub fn validate(&self, key: &str) -> Result<()> {
        if !(self.target_madds >= 0.0 && self.target_madds.is_finite()) {
            return Err(Error::invalid(
                format!("{key}.target_madds"),
                format!(
                    "expected 0 (off) or a positive MAdds count, got {}",
                    self.target_madds
                ),
            ));
        }
        match &self.latency {
            Some(latency) => latency.validate(&format!("{key}.latency")),
            None => Ok(()),
        }
    }

    /// `accuracy` times each soft term configured (MAdds, latency), or 0 above a hard cap.
    /// `latency_ms` is the candidate's predicted latency when the objective has one.
    pub fn fitness(&self, accuracy: f64, madds: u64, params: u64, latency_ms: Option<f64>) -> f64 {
        let latency = self.latency.as_ref().zip(latency_ms);
        if self.max_madds.is_some_and(|cap| madds > cap)
            || self.max_params.is_some_and(|cap| params > cap)
            || latency.is_some_and(|(l, ms)| l.max_ms.is_some_and(|cap| ms > cap))
        {
            return 0.0;
        }
        let mut fitness = accuracy;
        if self.target_madds > 0.0 && self.exponent != 0.0 {
            fitness *= (madds as f64 / self.target_madds).powf(self.exponent);
        }
        if let Some((l, ms)) = latency {
            if let Some(target) = l.target_ms {
                fitness *= (ms / target).powf(l.exponent);
            }
        }
        fitness
    }
}

/// How good a population is: the mean fitness of its best `k`, its best, and the standard
/// deviation of all its members' fitness.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub top_k_mean: f64,
    pub best: f64,
    pub spread: f64,
}

impl Quality {
    pub fn of(fitness: &[f64], k: usize) -> Quality {
        if fitness.is_empty() {
            return Quality {
                top_k_mean: 0.0,
                best: 0.0,
                spread: 0.0,
            };
        }
        let mut sorted = fitness.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let top = &sorted[..k.clamp(1, sorted.len())];
        let mean = fitness.iter().sum::<f64>() / fitness.len() as f64;
        let variance =
            fitness.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / fitness.len() as f64;
        Quality {
            top_k_mean: top.iter().sum::<f64>() / top.len() as f64,
            best: sorted[0],
            spread: variance.sqrt(),
        }
    }
}
