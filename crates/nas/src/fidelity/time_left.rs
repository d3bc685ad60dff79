//! How long a measurement has left to train, estimated as it goes. The proxies train first, and
//! an architecture's proxy seconds are the best measure of what its other trainings cost (a
//! network's MAdds are not: small networks spend more per MAdd in memory-bound layers): a
//! reference training of it costs its proxy seconds times the reference's ratio, measured over
//! the reference trainings that ended (before any did, the ratio of the two recipes' work:
//! images seen times pixels). The seconds left, over the jobs in flight at once, is the estimate.

use crate::batch::BatchEnd;
use crate::task::TaskConfig;

use super::FidelityPlan;

/// The recipe of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recipe {
    Proxy,
    Reference,
}

/// The running estimate of one measurement; fed every training's end.
#[derive(Clone, Debug)]
pub struct TimeLeft {
    /// Each run's folder (`proxy`, `proxy-run2`..., `reference`...), and its recipe.
    runs: Vec<(String, Recipe)>,
    /// Architectures of each run.
    n: usize,
    /// Each job's end, once known: its seconds when it trained to a result (run-major).
    ended: Vec<Option<Option<f64>>>,
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

impl TimeLeft {
    /// An estimate for `plan`'s trainings, `workers` of them in flight at once.
    pub fn new(plan: &FidelityPlan, workers: usize) -> TimeLeft {
        let runs: Vec<(String, Recipe)> = (0..plan.proxy_seeds)
            .map(|run| (FidelityPlan::run_folder("proxy", run), Recipe::Proxy))
            .chain((0..plan.reference_seeds).map(|run| {
                (
                    FidelityPlan::run_folder("reference", run),
                    Recipe::Reference,
                )
            }))
            .collect();
        let n = plan.genomes.len();
        let proxy_work = work(&plan.proxy);
        TimeLeft {
            ended: vec![None; runs.len() * n],
            runs,
            n,
            reference_work: if proxy_work > 0.0 {
                work(&plan.reference) / proxy_work
            } else {
                1.0
            },
            workers: workers.max(1),
        }
    }

    /// Training `i` of the run in folder `run` ended as `end`. A failed training adds no
    /// time, as it says nothing of how long one takes.
    pub fn ended(&mut self, run: &str, i: usize, end: &BatchEnd) {
        let Some(r) = self.runs.iter().position(|(folder, _)| folder == run) else {
            return;
        };
        if i >= self.n {
            return;
        }
        let seconds = match end {
            BatchEnd::Completed(result) if result.outcome.error.is_none() => {
                Some(result.outcome.seconds)
            }
            _ => None,
        };
        self.ended[r * self.n + i] = Some(seconds);
    }

    /// Trainings whose end is not known yet.
    pub fn trainings_left(&self) -> usize {
        self.ended.iter().filter(|e| e.is_none()).count()
    }

    /// The seconds of each job that trained to a result, with its recipe and architecture.
    fn trained(&self) -> impl Iterator<Item = (Recipe, usize, f64)> + '_ {
        self.ended.iter().enumerate().filter_map(|(j, end)| {
            end.flatten()
                .map(|seconds| (self.runs[j / self.n].1, j % self.n, seconds))
        })
    }

    /// Seconds of wall-clock left, or `None` with nothing to estimate from yet (no proxy
    /// training ended, nor a reference one).
    pub fn seconds(&self) -> Option<f64> {
        // Each architecture's proxy seconds (the mean over its proxy runs), where known.
        let mut sums = vec![(0.0, 0usize); self.n];
        for (recipe, i, seconds) in self.trained() {
            if recipe == Recipe::Proxy {
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
            .filter(|(recipe, ..)| *recipe == Recipe::Reference)
            .filter_map(|(_, i, seconds)| cost[i].map(|c| (seconds, c)))
            .fold((0.0, 0.0), |(r, p), (seconds, c)| (r + seconds, p + c));
        let ratio = if proxy > 0.0 {
            reference / proxy
        } else {
            self.reference_work
        };
        let total: f64 = if known.is_empty() {
            // No proxy ended: the reference trainings that did, each as the mean of them.
            let ended: Vec<f64> = self
                .trained()
                .filter(|(recipe, ..)| *recipe == Recipe::Reference)
                .map(|(.., seconds)| seconds)
                .collect();
            let mean = crate::stats::mean(&ended)?;
            mean * self.trainings_left() as f64
        } else {
            let typical = known.iter().sum::<f64>() / known.len() as f64;
            self.ended
                .iter()
                .enumerate()
                .filter(|(_, end)| end.is_none())
                .map(|(j, _)| {
                    let c = cost[j % self.n].unwrap_or(typical);
                    match self.runs[j / self.n].1 {
                        Recipe::Proxy => c,
                        Recipe::Reference => c * ratio,
                    }
                })
                .sum()
        };
        let left = self.trainings_left();
        Some(if left == 0 {
            0.0
        } else {
            total / self.workers.min(left) as f64
        })
    }

    /// "N training(s) left, about T" (or just the count, with nothing to estimate from yet).
    pub fn describe(&self) -> String {
        let left = self.trainings_left();
        match self.seconds() {
            Some(s) if left > 0 => format!(
                "{left} training(s) left, about {}",
                crate::report::format_seconds(s)
            ),
            _ => format!("{left} training(s) left"),
        }
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
        // 3 architectures; the reference: 5x the epochs on twice the data (10x the work).
        let mut config = SearchConfig::default();
        config.large.data_fraction = 0.5;
        config.large.proxy_resolution = None;
        FidelityPlan::new(
            &config,
            TaskChoice::Large,
            3,
            None,
            &Reference::default(),
            1,
        )
        .unwrap()
    }

    fn completed(madds: u64, seconds: f64) -> BatchEnd {
        BatchEnd::Completed(Box::new(JobResult {
            candidate: 0,
            genome: String::new(),
            outcome: Outcome {
                accuracy: 0.5,
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
        let mut left = TimeLeft::new(&plan(), 2);
        assert_eq!(
            left.seconds(),
            None,
            "nothing ended: nothing to estimate from"
        );
        assert_eq!(left.describe(), "6 training(s) left");
        // Proxies of 10, 20 and 30 s (their MAdds say nothing: small networks cost more per
        // MAdd).
        left.ended("proxy", 0, &completed(3_000_000, 10.0));
        // Two proxies left, each estimated as the one that ended; the reference's three at 10x
        // the work; two in flight at once.
        let seconds = left.seconds().unwrap();
        assert!(
            (seconds - (2.0 * 10.0 + 3.0 * 100.0) / 2.0).abs() < 1e-6,
            "{seconds}"
        );
        left.ended("proxy", 1, &completed(1_000_000, 20.0));
        left.ended("proxy", 2, &completed(2_000_000, 30.0));
        let seconds = left.seconds().unwrap();
        assert!((seconds - 600.0 / 2.0).abs() < 1e-6, "{seconds}");
        assert_eq!(left.describe(), "3 training(s) left, about 5.0 min");
        // The first reference training of architecture 1 took 5x its proxy: the reference's
        // ratio now.
        left.ended("reference", 1, &completed(1_000_000, 100.0));
        let seconds = left.seconds().unwrap();
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
        let seconds = left.seconds().unwrap();
        assert!(
            (seconds - 30.0 * 5.0).abs() < 1e-6,
            "one left, one in flight: {seconds}"
        );
        left.ended("reference", 2, &completed(3_000_000, 150.0));
        assert_eq!((left.trainings_left(), left.seconds()), (0, Some(0.0)));
    }

    #[test]
    fn without_proxies_the_references_that_ended_estimate_the_rest() {
        let mut left = TimeLeft::new(&plan(), 1);
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
        assert_eq!(left.seconds(), None);
        left.ended("reference", 0, &completed(1, 40.0));
        assert_eq!(
            left.seconds(),
            Some(80.0),
            "two left at 40 s, one at a time"
        );
        assert_eq!(left.ended.len(), 6);
        left.ended("elsewhere", 0, &completed(1, 1.0));
        assert_eq!(
            left.trainings_left(),
            2,
            "a run folder of no plan is ignored"
        );
    }
}
