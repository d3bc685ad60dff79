//! A measurement's progress as it goes: how long it has left to train, and the rank
//! correlation over the architectures whose trainings have all ended.
//!
//! The time left: the proxies train first, and an architecture's proxy seconds are the best
//! measure of what its other trainings cost (a network's MAdds are not: small networks spend more
//! per MAdd in memory-bound layers). A reference training of it costs its proxy seconds times the
//! reference's ratio, measured over the reference trainings that ended (before any did, the ratio
//! of the two recipes' work: images seen times pixels). The seconds left, over the jobs in flight
//! at once, is the estimate.

use crate::batch::BatchEnd;
use crate::task::TaskConfig;

use super::{report, FidelityPlan, FidelityReport, RecipeKind, Run, MIN_SAMPLES};

/// The progress of one measurement; fed every training's end.
#[derive(Clone, Debug)]
pub struct Progress {
    plan: FidelityPlan,
    runs: Vec<Run>,
    /// Each job's end, once known (run-major, as the measurement's jobs).
    ends: Vec<Option<BatchEnd>>,
    /// A reference training's work over a proxy training's (images seen times pixels): the
    /// ratio of their seconds until a reference training ended.
    reference_work: f64,
    workers: usize,
}

/// Images a training of `task` sees, times its pixels (up to a constant).
fn work(task: &TaskConfig) -> f64 {
    let pixels = task.trained_resolution().map_or(1.0, |r| (r * r) as f64);
    task.epochs as f64 * task.data_fraction * (1.0 - task.val_fraction) * pixels
}

impl Progress {
    /// The progress of `plan`'s trainings, `workers` of them in flight at once.
    pub fn new(plan: &FidelityPlan, workers: usize) -> Progress {
        let runs = plan.runs();
        let proxy_work = work(&plan.proxy);
        Progress {
            ends: vec![None; runs.len() * plan.genomes.len()],
            runs,
            reference_work: if proxy_work > 0.0 {
                work(&plan.reference) / proxy_work
            } else {
                1.0
            },
            workers: workers.max(1),
            plan: plan.clone(),
        }
    }

    /// Training `i` of the run in folder `run` ended as `end`.
    pub fn ended(&mut self, run: &str, i: usize, end: &BatchEnd) {
        let n = self.plan.genomes.len();
        let Some(r) = self.runs.iter().position(|r| r.folder == run) else {
            return;
        };
        if i < n {
            self.ends[r * n + i] = Some(end.clone());
        }
    }

    /// Trainings whose end is not known yet.
    pub fn trainings_left(&self) -> usize {
        self.ends.iter().filter(|e| e.is_none()).count()
    }

    /// The report over the architectures whose trainings have all ended (the others are left out
    /// of the ranking, as "not trained yet").
    pub fn so_far(&self) -> FidelityReport {
        report(
            &self.plan,
            &self.ends.iter().map(Option::as_ref).collect::<Vec<_>>(),
        )
    }

    /// The seconds of each job that trained to a result, with its recipe and architecture. A
    /// failed training says nothing of how long one takes.
    fn trained(&self) -> impl Iterator<Item = (RecipeKind, usize, f64)> + '_ {
        let n = self.plan.genomes.len();
        self.ends
            .iter()
            .enumerate()
            .filter_map(move |(j, end)| match end {
                Some(BatchEnd::Completed(r)) if r.outcome.error.is_none() => {
                    Some((self.runs[j / n].recipe, j % n, r.outcome.seconds))
                }
                _ => None,
            })
    }

    /// Seconds of wall-clock left, or `None` with nothing to estimate from yet (no proxy
    /// training ended, nor a reference one).
    pub fn seconds_left(&self) -> Option<f64> {
        let n = self.plan.genomes.len();
        // Each architecture's proxy seconds (the mean over its proxy runs), where known.
        let mut sums = vec![(0.0, 0usize); n];
        for (recipe, i, seconds) in self.trained() {
            if recipe == RecipeKind::Proxy {
                sums[i].0 += seconds;
                sums[i].1 += 1;
            }
        }
        let cost: Vec<Option<f64>> = sums
            .iter()
            .map(|&(sum, runs)| (runs > 0).then(|| sum / runs as f64))
            .collect();
        let known: Vec<f64> = cost.iter().flatten().copied().collect();
        // The reference's seconds over its architectures' proxy seconds.
        let (reference, proxy) = self
            .trained()
            .filter(|(recipe, ..)| *recipe == RecipeKind::Reference)
            .filter_map(|(_, i, seconds)| cost[i].map(|c| (seconds, c)))
            .fold((0.0, 0.0), |(r, p), (seconds, c)| (r + seconds, p + c));
        let ratio = if proxy > 0.0 {
            reference / proxy
        } else {
            self.reference_work
        };
        let left = self.trainings_left();
        let total: f64 = if known.is_empty() {
            // No proxy ended: the reference trainings that did, each as the mean of them.
            let ended: Vec<f64> = self
                .trained()
                .filter(|(recipe, ..)| *recipe == RecipeKind::Reference)
                .map(|(.., seconds)| seconds)
                .collect();
            crate::stats::mean(&ended)? * left as f64
        } else {
            let typical = known.iter().sum::<f64>() / known.len() as f64;
            self.ends
                .iter()
                .enumerate()
                .filter(|(_, end)| end.is_none())
                .map(|(j, _)| {
                    let c = cost[j % n].unwrap_or(typical);
                    match self.runs[j / n].recipe {
                        RecipeKind::Proxy => c,
                        RecipeKind::Reference => c * ratio,
                    }
                })
                .sum()
        };
        Some(if left == 0 {
            0.0
        } else {
            total / self.workers.min(left) as f64
        })
    }

    /// "N training(s) left, about T; Kendall tau so far X over K architectures" (the time when
    /// it can be estimated, the tau while some, at least [`MIN_SAMPLES`], but not all
    /// architectures are ranked).
    pub fn describe(&self) -> String {
        let left = self.trainings_left();
        let mut line = match self.seconds_left() {
            Some(s) if left > 0 => format!(
                "{left} training(s) left, about {}",
                crate::report::format_seconds(s)
            ),
            _ => format!("{left} training(s) left"),
        };
        let so_far = self.so_far();
        let partly = (MIN_SAMPLES..so_far.samples).contains(&so_far.ranked);
        if let (Some(tau), true) = (so_far.kendall_tau, partly) {
            line += &format!(
                "; Kendall tau so far {tau:.3} over {} architectures",
                so_far.ranked
            );
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SearchConfig;
    use crate::evolution::Outcome;
    use crate::fidelity::{Reference, TaskChoice};
    use crate::job::{JobResult, Placement};

    fn plan() -> FidelityPlan {
        plan_of(3)
    }

    fn plan_of(samples: usize) -> FidelityPlan {
        // The reference: 5x the epochs on twice the data (10x the work).
        let mut config = SearchConfig::default();
        config.large.data_fraction = 0.5;
        config.large.proxy_resolution = None;
        FidelityPlan::new(
            &config,
            TaskChoice::Large,
            samples,
            None,
            &Reference::default(),
            1,
        )
        .unwrap()
    }

    fn completed(madds: u64, seconds: f64) -> BatchEnd {
        trained(madds, seconds, 0.5)
    }

    fn trained(madds: u64, seconds: f64, accuracy: f64) -> BatchEnd {
        BatchEnd::Completed(Box::new(JobResult {
            candidate: 0,
            genome: String::new(),
            outcome: Outcome {
                accuracy,
                madds,
                params: 1,
                seconds,
                error: None,
                inherited: None,
                latency_ms: None,
                validation_chance: None,
            },
            ran: Placement {
                host: "here".into(),
                device: "cpu".into(),
                slurm_job_id: None,
                started_at: 0.0,
                finished_at: seconds,
            },
        }))
    }

    #[test]
    fn the_reference_is_estimated_from_each_architectures_proxy_seconds() {
        let mut left = Progress::new(&plan(), 2);
        assert_eq!(
            left.seconds_left(),
            None,
            "nothing ended: nothing to estimate from"
        );
        assert_eq!(left.describe(), "6 training(s) left");
        // Proxies of 10, 20 and 30 s (their MAdds say nothing: small networks cost more per
        // MAdd).
        left.ended("proxy", 0, &completed(3_000_000, 10.0));
        // Two proxies left, each estimated as the one that ended; the reference's three at 10x
        // the work; two in flight at once.
        let seconds = left.seconds_left().unwrap();
        assert!(
            (seconds - (2.0 * 10.0 + 3.0 * 100.0) / 2.0).abs() < 1e-6,
            "{seconds}"
        );
        left.ended("proxy", 1, &completed(1_000_000, 20.0));
        left.ended("proxy", 2, &completed(2_000_000, 30.0));
        let seconds = left.seconds_left().unwrap();
        assert!((seconds - 600.0 / 2.0).abs() < 1e-6, "{seconds}");
        assert_eq!(left.describe(), "3 training(s) left, about 5.0 min");
        // The first reference training of architecture 1 took 5x its proxy: the reference's
        // ratio now.
        left.ended("reference", 1, &completed(1_000_000, 100.0));
        let seconds = left.seconds_left().unwrap();
        assert!(
            (seconds - (10.0 + 30.0) * 5.0 / 2.0).abs() < 1e-6,
            "{seconds}"
        );
        // A failed training ends but says nothing of the time; the last one runs alone.
        left.ended(
            "reference",
            0,
            &BatchEnd::Failed {
                reason: "node lost".into(),
                attempts: 3,
            },
        );
        let seconds = left.seconds_left().unwrap();
        assert!(
            (seconds - 30.0 * 5.0).abs() < 1e-6,
            "one left, one in flight: {seconds}"
        );
        left.ended("reference", 2, &completed(3_000_000, 150.0));
        assert_eq!((left.trainings_left(), left.seconds_left()), (0, Some(0.0)));
    }

    #[test]
    fn without_proxies_the_references_that_ended_estimate_the_rest() {
        let mut left = Progress::new(&plan(), 1);
        for i in 0..3 {
            left.ended(
                "proxy",
                i,
                &BatchEnd::Failed {
                    reason: "out of memory".into(),
                    attempts: 1,
                },
            );
        }
        assert_eq!(left.seconds_left(), None);
        left.ended("reference", 0, &completed(1, 40.0));
        assert_eq!(
            left.seconds_left(),
            Some(80.0),
            "two left at 40 s, one at a time"
        );
        assert_eq!(left.ends.len(), 6);
        left.ended("elsewhere", 0, &completed(1, 1.0));
        assert_eq!(
            left.trainings_left(),
            2,
            "a run folder of no plan is ignored"
        );
    }

    #[test]
    fn the_tau_so_far_ranks_the_architectures_whose_trainings_all_ended() {
        let mut progress = Progress::new(&plan_of(4), 2);
        // The proxy orders the four as the reference will.
        for i in 0..4 {
            progress.ended("proxy", i, &trained(1, 10.0, 0.1 * (i + 1) as f64));
        }
        assert_eq!(progress.so_far().ranked, 0);
        progress.ended("reference", 0, &trained(1, 100.0, 0.5));
        progress.ended("reference", 1, &trained(1, 100.0, 0.6));
        assert!(
            !progress.describe().contains("tau"),
            "two ranked: no tau yet: {}",
            progress.describe()
        );
        progress.ended("reference", 3, &trained(1, 100.0, 0.9));
        let so_far = progress.so_far();
        assert_eq!((so_far.ranked, so_far.kendall_tau), (3, Some(1.0)));
        assert_eq!(
            progress.describe(),
            "1 training(s) left, about 1.7 min; Kendall tau so far 1.000 over 3 architectures"
        );
        // Once all are ranked the report itself says it: the line does not.
        progress.ended("reference", 2, &trained(1, 100.0, 0.4));
        assert_eq!(progress.describe(), "0 training(s) left");
    }
}
