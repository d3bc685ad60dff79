//! Fitness (accuracy traded against size, as in MnasNet) and the population-quality curve.

use serde::{Deserialize, Serialize};

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
}

impl Default for FitnessConfig {
    fn default() -> Self {
        FitnessConfig {
            target_madds: 0.0,
            exponent: -0.07,
            max_madds: None,
            max_params: None,
        }
    }
}

impl FitnessConfig {
    pub fn fitness(&self, accuracy: f64, madds: u64, params: u64) -> f64 {
        if self.max_madds.is_some_and(|cap| madds > cap)
            || self.max_params.is_some_and(|cap| params > cap)
        {
            return 0.0;
        }
        if self.target_madds > 0.0 && self.exponent != 0.0 {
            accuracy * (madds as f64 / self.target_madds).powf(self.exponent)
        } else {
            accuracy
        }
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
