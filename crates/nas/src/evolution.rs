//! Regularized (aging) evolution, steady-state: a population of P, tournaments of S, each child
//! one mutation of its tournament's winner, the oldest member retired. Every random draw comes
//! from one seeded RNG that is saved with the state.

use std::collections::{BTreeMap, VecDeque};

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::fitness::{FitnessConfig, Quality};
use crate::space::{Genome, SpaceConfig};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvolutionConfig {
    /// P: members alive at once.
    pub population: usize,
    /// S: members drawn per tournament.
    pub sample: usize,
    /// Evaluations in all, the initial population included.
    pub budget: usize,
    /// k of the population-quality curve (mean fitness of the best k).
    pub top_k: usize,
    /// Asynchronous successive halving inside the evolution; absent: every child trains the
    /// task's full proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_fidelity: Option<MultiFidelity>,
    /// How a tournament picks its parent.
    #[serde(skip_serializing_if = "Selection::is_fitness")]
    pub selection: Selection,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        EvolutionConfig {
            population: 20,
            sample: 5,
            budget: 100,
            top_k: 5,
            multi_fidelity: None,
            selection: Selection::Fitness,
        }
    }
}

/// How a tournament picks the parent among the members it draws.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The highest fitness (then fewer MAdds, then the older).
    #[default]
    Fitness,
    /// The lowest Pareto rank of (accuracy, latency) in the population (MAdds when the task has
    /// no latency objective), then the larger crowding distance: parents spread along the front
    /// of accuracy against cost, and aging still retires the oldest.
    Pareto,
}

impl Selection {
    fn is_fitness(&self) -> bool {
        *self == Selection::Fitness
    }
}

/// ASHA-style rungs: a candidate first trains `rungs[0]` epochs; it goes on to the next rung
/// (continuing from its weights) only while it is in the top 1/eta of the candidates that
/// reached that rung so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiFidelity {
    /// Epochs trained in all by the end of each rung: increasing, the last at most the task's
    /// `epochs`.
    pub rungs: Vec<usize>,
    /// The reduction factor (> 1): the top 1/eta of a rung is promoted.
    pub eta: f64,
    /// What a candidate that stops below the top rung becomes.
    #[serde(default)]
    pub unpromoted: Unpromoted,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unpromoted {
    /// It enters the population with its low-rung fitness (its history line says which rung).
    #[default]
    Keep,
    /// It stays out of the population (its history line says so).
    Discard,
}

impl MultiFidelity {
    /// Checks the rungs against the task's epoch budget.
    pub fn validate(&self, name: &str, task_epochs: usize) -> Result<()> {
        let key = format!("{name}.multi_fidelity");
        if self.rungs.len() < 2 {
            return Err(Error::invalid(
                format!("{key}.rungs"),
                format!("expected at least two rungs, got {:?}", self.rungs),
            ));
        }
        if self.rungs[0] == 0 || self.rungs.windows(2).any(|w| w[1] <= w[0]) {
            return Err(Error::invalid(
                format!("{key}.rungs"),
                format!(
                    "expected strictly increasing epoch counts from 1, got {:?}",
                    self.rungs
                ),
            ));
        }
        let last = *self.rungs.last().expect("two rungs");
        if last > task_epochs {
            return Err(Error::invalid(
                format!("{key}.rungs"),
                format!(
                    "the last rung trains {last} epochs, beyond the task's epochs ({task_epochs})"
                ),
            ));
        }
        if self.eta.is_nan() || self.eta <= 1.0 {
            return Err(Error::invalid(
                format!("{key}.eta"),
                format!("expected a reduction factor above 1, got {}", self.eta),
            ));
        }
        Ok(())
    }
}

/// One rung a candidate trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RungResult {
    /// Epochs trained in all by the end of this rung.
    pub epochs: usize,
    pub accuracy: f64,
    pub seconds: f64,
    /// Its training failed (a diverging loss): it ends the candidate's rungs and is left out of
    /// the rung's ranking.
    #[serde(default)]
    pub diverged: bool,
}

impl EvolutionConfig {
    pub fn validate(&self, name: &str) -> Result<()> {
        let fail =
            |field: &str, message: String| Err(Error::invalid(format!("{name}.{field}"), message));
        if self.population < 2 {
            return fail(
                "population",
                format!("expected at least 2, got {}", self.population),
            );
        }
        if self.sample == 0 || self.sample > self.population {
            return fail(
                "sample",
                format!(
                    "expected 1 to the population ({}), got {}",
                    self.population, self.sample
                ),
            );
        }
        if self.budget < self.population {
            return fail(
                "budget",
                format!("{} evaluations cannot fill a population of {}; expected a budget of at least the population",
                self.budget, self.population
            ));
        }
        if self.top_k == 0 {
            return fail("top_k", "expected at least 1".into());
        }
        Ok(())
    }
}

/// How the initial population is made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Initializer {
    /// Uniform random genomes (stage 1, and the baseline from scratch).
    Random,
    /// Elastic architecture transfer: the basic architecture, then its perturbations.
    Transfer { basic: Genome, p: f64, q: f64 },
}

/// Where a candidate came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Random,
    Basic,
    Transfer,
    Mutation { parent: usize },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: usize,
    pub genome: Genome,
    pub origin: Origin,
}

/// What evaluating a candidate gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Validation top-1 after the proxy training (0 when the training failed).
    pub accuracy: f64,
    pub madds: u64,
    pub params: u64,
    pub seconds: f64,
    /// Why the training failed (a diverging loss, say); such a network has fitness 0.
    pub error: Option<String>,
    /// What it took from a parent's trained weights, when it had a parent's.
    #[serde(default)]
    pub inherited: Option<crate::job::Inherited>,
    /// Milliseconds on the target device, predicted by the coordinator from the stage's latency
    /// table (absent without a latency objective).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The chance level of the validation split `accuracy` was measured on (absent when the
    /// training failed, and from results written before eatnas recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_chance: Option<eatnas_data::ChanceLevel>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: usize,
    pub genome: Genome,
    pub accuracy: f64,
    pub fitness: f64,
    pub madds: u64,
    pub params: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl Member {
    /// The member as a point of the Pareto ranking: its cost (predicted latency, else MAdds)
    /// and its accuracy. A member of fitness 0 (a failed training, a broken cap) is the worst
    /// point there is, (infinite cost, 0): every working member dominates it, so it never
    /// wins a tournament by sitting alone at a cheap end of the front.
    pub fn pareto_point(&self) -> crate::pareto::Point {
        if self.fitness <= 0.0 {
            return (f64::INFINITY, 0.0);
        }
        (self.latency_ms.unwrap_or(self.madds as f64), self.accuracy)
    }

    /// Best first: higher fitness, then fewer MAdds, then the earlier id.
    pub fn rank(&self, other: &Member) -> std::cmp::Ordering {
        other
            .fitness
            .total_cmp(&self.fitness)
            .then(self.madds.cmp(&other.madds))
            .then(self.id.cmp(&other.id))
    }
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub evaluation: usize,
    pub id: usize,
    pub origin: Origin,
    pub genome: String,
    pub accuracy: f64,
    pub fitness: f64,
    pub madds: u64,
    pub params: u64,
    pub seconds: f64,
    /// The worker slot it ran in (0..workers).
    pub worker: usize,
    pub cached: bool,
    pub error: Option<String>,
    pub quality: Quality,
    /// The evaluation produced no result after every retry (its fitness is 0; `error` says why).
    #[serde(default)]
    pub failed: bool,
    /// Attempts after the first that it took.
    #[serde(default)]
    pub retries: usize,
    /// Where and when it ran (absent for a cached outcome).
    #[serde(default)]
    pub ran: Option<Ran>,
    /// With multi-fidelity: every rung it trained, in order; its accuracy and fitness are the
    /// last rung's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<RungResult>,
    /// Stopped below the top rung and kept out of the population (`unpromoted = "discard"`).
    #[serde(default)]
    pub discarded: bool,
    /// What it took from a parent's trained weights.
    #[serde(default)]
    pub inherited: Option<crate::job::Inherited>,
    /// Predicted milliseconds on the target device (with a latency objective).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// Where and when an evaluation ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ran {
    /// `local` or `slurm`.
    pub executor: String,
    /// The executor's ticket: the Slurm job id, or `local-PID-N`.
    pub job: String,
    pub host: String,
    pub device: String,
    /// Unix seconds: submitted by the coordinator, started and finished by the worker, its
    /// result read by the coordinator.
    pub submitted_at: f64,
    pub started_at: f64,
    pub finished_at: f64,
    pub collected_at: f64,
}

/// Everything a search needs to continue: saved after every evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvolutionState {
    pub config: EvolutionConfig,
    pub space: SpaceConfig,
    pub fitness: FitnessConfig,
    pub blocks: usize,
    pub initializer: Initializer,
    rng: ChaCha8Rng,
    /// Oldest first.
    pub population: VecDeque<Member>,
    /// Every member ever evaluated, in order.
    pub evaluated: Vec<Member>,
    pub proposed: usize,
    /// Proposed but not yet completed (in flight when the state was saved).
    pub pending: Vec<Candidate>,
    pub cache: BTreeMap<String, Outcome>,
    next_id: usize,
    /// With multi-fidelity: the rungs each candidate has trained (in flight or done), by id.
    #[serde(default)]
    pub rung_results: BTreeMap<usize, Vec<RungResult>>,
}

/// Attempts at drawing a genome not seen before, before a seen one is accepted.
const FRESH_TRIES: usize = 32;

impl EvolutionState {
    pub fn new(
        config: EvolutionConfig,
        space: SpaceConfig,
        fitness: FitnessConfig,
        blocks: usize,
        initializer: Initializer,
        seed: u64,
    ) -> Result<EvolutionState> {
        config.validate("evolution")?;
        space.validate()?;
        if let Initializer::Transfer { p, q, basic } = &initializer {
            if !(0.0..=1.0).contains(p) || !(0.0..=1.0).contains(q) {
                return Err(Error::invalid(
                    "transfer",
                    format!("probabilities p {p} and q {q} must lie in [0, 1]"),
                ));
            }
            if basic.blocks.len() != blocks {
                return Err(Error::invalid(
                    "transfer",
                    format!(
                        "basic architecture of {} blocks for {blocks}",
                        basic.blocks.len()
                    ),
                ));
            }
        }
        Ok(EvolutionState {
            config,
            space,
            fitness,
            blocks,
            initializer,
            rng: ChaCha8Rng::seed_from_u64(seed),
            population: VecDeque::new(),
            evaluated: Vec::new(),
            proposed: 0,
            pending: Vec::new(),
            cache: BTreeMap::new(),
            next_id: 0,
            rung_results: BTreeMap::new(),
        })
    }

    pub fn done(&self) -> bool {
        self.evaluated.len() >= self.config.budget
    }

    /// Whether another candidate may be proposed now.
    pub fn can_propose(&self) -> bool {
        self.proposed < self.config.budget
    }

    fn seen(&self, genome: &Genome) -> bool {
        let key = genome.key();
        self.cache.contains_key(&key) || self.pending.iter().any(|c| c.genome.key() == key)
    }

    /// Draws the next candidate: from the initializer until P have been proposed, then by
    /// tournament and mutation. Prefers genomes never evaluated.
    pub fn propose(&mut self) -> Candidate {
        let (genome, origin) =
            if self.proposed < self.config.population || self.population.is_empty() {
                self.initial()
            } else {
                self.mutation()
            };
        let candidate = Candidate {
            id: self.next_id,
            genome,
            origin,
        };
        self.next_id += 1;
        self.proposed += 1;
        self.pending.push(candidate.clone());
        candidate
    }

    fn initial(&mut self) -> (Genome, Origin) {
        let first = self.proposed == 0;
        let draw = |state: &mut Self| match &state.initializer {
            Initializer::Random => (
                Genome::random(&state.space, state.blocks, &mut state.rng),
                Origin::Random,
            ),
            Initializer::Transfer { basic, .. } if first => (basic.clone(), Origin::Basic),
            Initializer::Transfer { basic, p, q } => {
                let (basic, p, q) = (basic.clone(), *p, *q);
                (
                    basic.perturb(&state.space, p, q, &mut state.rng),
                    Origin::Transfer,
                )
            }
        };
        let mut pick = draw(self);
        for _ in 0..FRESH_TRIES {
            if !self.seen(&pick.0) {
                break;
            }
            pick = draw(self);
        }
        pick
    }

    fn mutation(&mut self) -> (Genome, Origin) {
        let size = self.population.len();
        let drawn = sample(&mut self.rng, size, self.config.sample.min(size));
        let winner = match self.config.selection {
            Selection::Fitness => drawn
                .iter()
                .min_by(|&a, &b| self.population[a].rank(&self.population[b]))
                .expect("a tournament of at least one"),
            Selection::Pareto => {
                let points: Vec<_> = self.population.iter().map(Member::pareto_point).collect();
                crate::pareto::select(&points, &drawn.into_vec(), |a, b| {
                    self.population[a].rank(&self.population[b])
                })
            }
        };
        let parent = self.population[winner].clone();
        let mut child = parent.genome.mutate(&self.space, &mut self.rng);
        for _ in 0..FRESH_TRIES {
            if !self.seen(&child) {
                break;
            }
            child = parent.genome.mutate(&self.space, &mut self.rng);
        }
        (child, Origin::Mutation { parent: parent.id })
    }

    /// Records that candidate `id` finished a rung and says whether it goes on to the next: it
    /// does when a next rung exists, it trained without diverging, and its accuracy ranks in the
    /// top 1/eta of the accuracies every candidate reached at this rung so far (itself included,
    /// diverged trainings left out).
    pub fn finish_rung(&mut self, id: usize, result: RungResult) -> bool {
        let Some(mf) = &self.config.multi_fidelity else {
            return false;
        };
        let done = self.rung_results.entry(id).or_default();
        done.push(result.clone());
        let rung = done.len() - 1;
        if rung + 1 >= mf.rungs.len() || result.diverged {
            return false;
        }
        let seen: Vec<f64> = self
            .rung_results
            .values()
            .filter_map(|rungs| rungs.get(rung))
            .filter(|r| !r.diverged)
            .map(|r| r.accuracy)
            .collect();
        let better = seen.iter().filter(|&&a| a > result.accuracy).count();
        (better as f64) < seen.len() as f64 / mf.eta
    }

    /// The rung candidate `id` trains next (0 before its first).
    pub fn rung_of(&self, id: usize) -> usize {
        self.rung_results.get(&id).map_or(0, Vec::len)
    }

    /// The cached outcome of a candidate whose genome was evaluated before.
    pub fn cached(&self, candidate: &Candidate) -> Option<Outcome> {
        self.cache.get(&candidate.genome.key()).cloned()
    }

    /// Adds an evaluated candidate to the population (retiring the oldest beyond P) and returns
    /// its history line.
    pub fn complete(
        &mut self,
        candidate: &Candidate,
        outcome: Outcome,
        worker: usize,
        cached: bool,
    ) -> Record {
        self.pending.retain(|c| c.id != candidate.id);
        let (accuracy, fitness) = if outcome.error.is_some() {
            (0.0, 0.0)
        } else {
            let fitness = self.fitness.fitness(
                outcome.accuracy,
                outcome.madds,
                outcome.params,
                outcome.latency_ms,
            );
            (outcome.accuracy, fitness)
        };
        let member = Member {
            id: candidate.id,
            genome: candidate.genome.clone(),
            accuracy,
            fitness,
            madds: outcome.madds,
            params: outcome.params,
            latency_ms: outcome.latency_ms,
        };
        self.cache
            .entry(candidate.genome.key())
            .or_insert_with(|| outcome.clone());
        let rungs = self
            .rung_results
            .get(&candidate.id)
            .cloned()
            .unwrap_or_default();
        let discarded = self.config.multi_fidelity.as_ref().is_some_and(|mf| {
            mf.unpromoted == Unpromoted::Discard
                && !rungs.is_empty()
                && rungs.len() < mf.rungs.len()
        });
        if !discarded {
            self.population.push_back(member.clone());
            if self.population.len() > self.config.population {
                self.population.pop_front();
            }
        }
        self.evaluated.push(member);
        let fitness_values: Vec<f64> = self.population.iter().map(|m| m.fitness).collect();
        Record {
            evaluation: self.evaluated.len(),
            id: candidate.id,
            origin: candidate.origin.clone(),
            genome: candidate.genome.key(),
            accuracy,
            fitness,
            madds: outcome.madds,
            params: outcome.params,
            seconds: outcome.seconds,
            worker,
            cached,
            error: outcome.error,
            inherited: outcome.inherited,
            latency_ms: outcome.latency_ms,
            quality: Quality::of(&fitness_values, self.config.top_k),
            failed: false,
            retries: 0,
            ran: None,
            rungs,
            discarded,
        }
    }

    /// Records a candidate whose evaluation produced no result after every retry: fitness 0 in
    /// the population, and not cached (a later proposal of its genome is tried again).
    pub fn fail(&mut self, candidate: &Candidate, reason: String, worker: usize) -> Record {
        let outcome = Outcome {
            accuracy: 0.0,
            madds: 0,
            params: 0,
            seconds: 0.0,
            error: Some(reason),
            inherited: None,
            latency_ms: None,
            validation_chance: None,
        };
        let key = candidate.genome.key();
        let cached_before = self.cache.contains_key(&key);
        let mut record = self.complete(candidate, outcome, worker, false);
        if !cached_before {
            self.cache.remove(&key);
        }
        record.failed = true;
        record
    }

    /// The best member ever evaluated (fitness, then fewer MAdds).
    pub fn best(&self) -> Option<&Member> {
        self.evaluated.iter().min_by(|a, b| a.rank(b))
    }

    /// The best `k` distinct genomes ever evaluated.
    pub fn top(&self, k: usize) -> Vec<&Member> {
        let mut all: Vec<&Member> = self.evaluated.iter().collect();
        all.sort_by(|a, b| a.rank(b));
        let mut seen = std::collections::HashSet::new();
        all.into_iter()
            .filter(|m| seen.insert(m.genome.key()))
            .take(k)
            .collect()
    }
}
