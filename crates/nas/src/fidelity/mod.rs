//! Proxy fidelity: how well a task's proxy training ranks architectures. The same architectures
//! are trained with the proxy recipe and with a longer reference recipe, and the two rankings of
//! their validation top-1 are compared (Kendall's tau-b, Spearman's rho). Every training is a job
//! folder run by an executor, so a cluster computes a measurement as it computes a search, and a
//! killed measurement continues where it stood.
//!
//! The reference is itself noisy: trained again from another seed (other initial weights, split
//! and order), a short training ranks the same architectures differently. With several reference
//! seeds the reference accuracy is their mean, and the report gives how well the reference agrees
//! with itself across seeds (its repeatability): a proxy cannot be expected to agree with one
//! reference run better than another run of the reference does.
//!
//! The proxy is noisy too, and a search trains each candidate once, from its own seed (which also
//! draws the proxy's data fraction and validation split): with several proxy seeds every seed's
//! proxy is ranked against the reference on its own, as one search would rank, and the tau
//! reported is the mean over them (with each seed's value beside it). Twelve architectures give a
//! tau whose spread from one proxy seed to the next is about 0.1-0.2, as wide as the difference
//! between two recipes: compare recipes over several proxy seeds.
//!
//! Folder: `plan.json` (what is measured), `proxy/NNNNN/` and `reference/NNNNN/` (one job each;
//! further proxy seeds in `proxy-run2/`..., further reference seeds in `reference-run2/`,
//! `reference-run3/`...), then `fidelity.json` (a [`FidelityReport`]) and `fidelity.svg` (the
//! scatter). A job folder holding the same training is never trained again, whatever measurement
//! wrote it, and [`Measurement::reuse`] takes another measurement's results of the same trainings
//! (`eatnas-cli fidelity --reuse DIR`), so several proxies are ranked against one reference that
//! trained once.

mod progress;

use std::path::{Path, PathBuf};

use eatnas_nn::Arch;
use eatnas_train::fs::write_atomic;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::batch::{run_batch, BatchEnd, BatchJob};
use crate::config::SearchConfig;
use crate::evolution::Outcome;
use crate::evolution::{Candidate, Origin};
use crate::executor::Executor;
use crate::job::{clear_attempt, read_result, Job, RESULT_FILE};
use crate::lock::Lock;
use crate::runner::Control;
use crate::space::Genome;
use crate::task::TaskConfig;
use crate::{stats, Error, Result};

pub use progress::Progress;

pub const PLAN_FILE: &str = "plan.json";
pub const REPORT_FILE: &str = "fidelity.json";
pub const CHART_FILE: &str = "fidelity.svg";

/// Fewer points than this give no meaningful rank correlation.
pub const MIN_SAMPLES: usize = 3;

/// Which task of a configuration is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskChoice {
    Small,
    Large,
}

impl std::str::FromStr for TaskChoice {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "small" => Ok(TaskChoice::Small),
            "large" => Ok(TaskChoice::Large),
            other => Err(format!("unknown task `{other}`; expected small or large")),
        }
    }
}

impl TaskChoice {
    pub fn name(self) -> &'static str {
        match self {
            TaskChoice::Small => "small",
            TaskChoice::Large => "large",
        }
    }

    pub fn of(self, config: &SearchConfig) -> &TaskConfig {
        match self {
            TaskChoice::Small => &config.small,
            TaskChoice::Large => &config.large,
        }
    }
}

/// The reference training, as changes to the proxy's recipe (fix them all to compare several
/// proxies against one reference).
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    /// Default: 5x the proxy's epochs.
    pub epochs: Option<usize>,
    /// Fraction of the training set (default: all of it).
    pub data_fraction: f64,
    /// Default: the proxy's.
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub warmup_epochs: Option<f64>,
    /// Fraction of the training data held out to rank on (default: the proxy's). Fixing it
    /// lets proxies that hold out other fractions share one reference.
    pub val_fraction: Option<f64>,
    /// Training seeds of the reference (at least 1): each architecture's reference accuracy is
    /// the mean over them, and two or more measure the reference's repeatability.
    pub seeds: usize,
}

impl Default for Reference {
    fn default() -> Self {
        Reference {
            epochs: None,
            data_fraction: 1.0,
            batch_size: None,
            lr: None,
            warmup_epochs: None,
            val_fraction: None,
            seeds: 1,
        }
    }
}

/// What one measurement trains: saved as `plan.json`; a folder holding another plan is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FidelityPlan {
    pub version: String,
    pub task: TaskChoice,
    pub proxy: TaskConfig,
    pub reference: TaskConfig,
    /// Seeds the sampling, and every training (weights, split and order) of both recipes.
    pub seed: u64,
    /// Reference trainings of each architecture, each from its own seed ([`Self::reference_seed`]).
    #[serde(default = "one")]
    pub reference_seeds: usize,
    /// Proxy trainings of each architecture, each from its own seed ([`Self::proxy_seed`]).
    #[serde(default = "one")]
    pub proxy_seeds: usize,
    pub genomes: Vec<Genome>,
}

fn one() -> usize {
    1
}

impl FidelityPlan {
    /// `samples` distinct random architectures of `config`'s space, or the architectures
    /// `archs` (each must lie in the space), trained on `task` by its proxy (from `proxy_seeds`
    /// seeds, at least 1) and by `reference`.
    pub fn new(
        config: &SearchConfig,
        task: TaskChoice,
        samples: usize,
        archs: Option<&[Arch]>,
        reference: &Reference,
        proxy_seeds: usize,
    ) -> Result<FidelityPlan> {
        config.validate()?;
        let proxy = task.of(config).clone();
        let blocks = proxy.macro_config.blocks();
        let genomes = match archs {
            Some(archs) => archs
                .iter()
                .map(|a| Genome::from_arch(a, &config.space, blocks))
                .collect::<Result<Vec<_>>>()?,
            None => {
                let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0xf1de_1117);
                let mut genomes: Vec<Genome> = Vec::new();
                // A space of fewer distinct genomes than asked for stops the drawing.
                for _ in 0..samples.saturating_mul(100) {
                    if genomes.len() == samples {
                        break;
                    }
                    let genome = Genome::random(&config.space, blocks, &mut rng);
                    if !genomes.contains(&genome) {
                        genomes.push(genome);
                    }
                }
                genomes
            }
        };
        if genomes.len() < MIN_SAMPLES {
            return Err(Error::invalid(
                "samples",
                format!(
                    "{} architecture(s); a rank correlation needs at least {MIN_SAMPLES}",
                    genomes.len()
                ),
            ));
        }
        if !(reference.data_fraction > 0.0 && reference.data_fraction <= 1.0) {
            return Err(Error::invalid(
                "reference data fraction",
                format!(
                    "expected a value in (0, 1], got {}",
                    reference.data_fraction
                ),
            ));
        }
        let seeds = reference.seeds;
        if seeds == 0 {
            return Err(Error::invalid(
                "reference seeds",
                "expected at least 1 training of the reference",
            ));
        }
        if proxy_seeds == 0 {
            return Err(Error::invalid(
                "proxy seeds",
                "expected at least 1 training of the proxy",
            ));
        }
        let epochs = reference.epochs.unwrap_or(5 * proxy.epochs);
        if epochs == 0 {
            return Err(Error::invalid("reference epochs", "expected at least 1"));
        }
        let reference = TaskConfig {
            epochs,
            data_fraction: reference.data_fraction,
            batch_size: reference.batch_size.unwrap_or(proxy.batch_size),
            lr: reference.lr.unwrap_or(proxy.lr),
            warmup_epochs: reference.warmup_epochs.unwrap_or(proxy.warmup_epochs),
            val_fraction: reference.val_fraction.unwrap_or(proxy.val_fraction),
            // The reference trains at the task's own resolution, whatever the proxy's.
            proxy_resolution: None,
            inherit_weights: false,
            ..proxy.clone()
        };
        reference.validate("reference")?;
        Ok(FidelityPlan {
            version: crate::VERSION.into(),
            task,
            proxy,
            reference,
            seed: config.seed,
            reference_seeds: seeds,
            proxy_seeds,
            genomes,
        })
    }

    /// The training seed of proxy run `run` (0-based): the plan's seed for the first, then seeds
    /// of their own stream (not the reference runs'). A proxy run also draws its data fraction
    /// and validation split from it, as a search from that seed does.
    pub fn proxy_seed(&self, run: usize) -> u64 {
        self.seed
            .wrapping_add((run as u64).wrapping_mul(0xd1b5_4a32_d192_ed03))
    }

    /// The training seed of reference run `run` (0-based): the plan's seed for the first, as the
    /// proxy's, then seeds far from any other measurement's.
    pub fn reference_seed(&self, run: usize) -> u64 {
        self.seed
            .wrapping_add((run as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// Every run of the measurement, in the order of its jobs: each proxy run, then each
    /// reference run. A proxy run draws its images from its own seed, as a search from that
    /// seed would; the reference's runs differ in their weights and batch order only, each
    /// training and validating on the images the first one does.
    pub fn runs(&self) -> Vec<Run> {
        let proxy = (0..self.proxy_seeds).map(|run| Run {
            folder: runs_folder("proxy", run),
            recipe: RecipeKind::Proxy,
            seed: self.proxy_seed(run),
            data_seed: self.proxy_seed(run),
        });
        let reference = (0..self.reference_seeds).map(|run| Run {
            folder: runs_folder("reference", run),
            recipe: RecipeKind::Reference,
            seed: self.reference_seed(run),
            data_seed: self.seed,
        });
        proxy.chain(reference).collect()
    }

    /// The task a recipe trains with.
    pub fn task_of(&self, recipe: RecipeKind) -> &TaskConfig {
        match recipe {
            RecipeKind::Proxy => &self.proxy,
            RecipeKind::Reference => &self.reference,
        }
    }
}

/// The folder of run `run`'s jobs of a recipe (`proxy` or `reference`): the recipe's name for
/// the first, then `proxy-run2`, `reference-run3`...
fn runs_folder(recipe: &str, run: usize) -> String {
    match run {
        0 => recipe.into(),
        _ => format!("{recipe}-run{}", run + 1),
    }
}

/// The two recipes a measurement compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipeKind {
    Proxy,
    Reference,
}

/// One run of a recipe over the plan's architectures.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Its jobs' folder in the measurement's (`proxy`, `reference-run2`...).
    pub folder: String,
    pub recipe: RecipeKind,
    /// The training seed (weights and batch order) of each of its trainings.
    pub seed: u64,
    /// The seed that draws its images (data fraction and validation split).
    pub data_seed: u64,
}

/// A recipe as the report shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub epochs: usize,
    pub data_fraction: f64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_epochs: f64,
    pub resolution: Option<usize>,
    /// Held-out fraction ranked on (absent from reports written before it was recorded).
    #[serde(default)]
    pub val_fraction: Option<f64>,
}

impl From<&TaskConfig> for Recipe {
    fn from(t: &TaskConfig) -> Recipe {
        Recipe {
            epochs: t.epochs,
            data_fraction: t.data_fraction,
            batch_size: t.batch_size,
            lr: t.lr,
            warmup_epochs: t.warmup_epochs,
            resolution: t.trained_resolution(),
            val_fraction: Some(t.val_fraction),
        }
    }
}

/// One architecture's trainings by both recipes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidelityPoint {
    pub genome: String,
    pub madds: u64,
    pub params: u64,
    /// Validation top-1, the mean of the recipe's runs; `None` unless every run of it finished
    /// (see `error`). The reference's is the mean of its runs that learned, when one did (see
    /// `reference_runs_at_chance`).
    pub proxy: Option<f64>,
    pub reference: Option<f64>,
    /// Each proxy seed's validation top-1, in run order (when every run finished).
    #[serde(default)]
    pub proxy_runs: Vec<f64>,
    /// Each reference seed's validation top-1, in run order (when every run finished).
    #[serde(default)]
    pub reference_runs: Vec<f64>,
    /// The runs (numbered from 1) that ended no better than always answering the validation
    /// split's most common class: trainings that collapsed with a finite loss, so no error. A
    /// proxy's stays in its ranking (a search would see the same); a reference's is left out of
    /// the architecture's reference, which is the quality it reaches when its training works,
    /// and the architecture out of the reference's repeatability when another of its runs
    /// learned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_runs_at_chance: Vec<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_runs_at_chance: Vec<usize>,
    pub proxy_seconds: f64,
    pub reference_seconds: f64,
    pub error: Option<String>,
}

/// `fidelity.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidelityReport {
    pub version: String,
    pub task: TaskChoice,
    pub data: String,
    pub proxy: Recipe,
    pub reference: Recipe,
    pub samples: usize,
    /// Architectures with every training done: the ones ranked.
    pub ranked: usize,
    /// Each proxy run's ranking against the reference, the mean over the proxy's seeds (one
    /// seed: that run's). `None` when fewer than two were ranked, or one side is constant.
    pub kendall_tau: Option<f64>,
    pub spearman_rho: Option<f64>,
    /// Kendall's tau over the better half of the ranked architectures by the reference (6 of
    /// 12; `top_half` of them), each proxy run's, their mean; `None` under 3. A proxy can rank
    /// a random sample well, telling poor networks from good ones, and still order the good
    /// ones by chance: they are what a search's last generations choose among.
    #[serde(default)]
    pub top_half_kendall_tau: Option<f64>,
    #[serde(default)]
    pub top_half: usize,
    /// Proxy trainings of each architecture, from distinct seeds.
    #[serde(default = "one")]
    pub proxy_seeds: usize,
    /// Kendall's tau of each proxy run against the reference, in run order (`kendall_tau` is
    /// their mean).
    #[serde(default)]
    pub proxy_run_taus: Vec<f64>,
    /// The proxy's repeatability: Kendall's tau between two of its runs, the mean over every pair
    /// (`None` with one seed).
    #[serde(default)]
    pub proxy_repeatability_tau: Option<f64>,
    /// Reference trainings of each architecture, from distinct seeds.
    #[serde(default = "one")]
    pub reference_seeds: usize,
    /// The reference's repeatability: Kendall's tau between two of its runs, the mean over every
    /// pair (`None` with one seed). A proxy ranks against one reference run about as well as
    /// another run of the reference does at best.
    #[serde(default)]
    pub reference_repeatability_tau: Option<f64>,
    /// The same over the better half (`top_half`): how much of the good networks' order by the
    /// reference is its own training noise. (Two single runs agree less than a proxy can with
    /// their mean, so this is no ceiling on `top_half_kendall_tau`.)
    #[serde(default)]
    pub top_half_reference_repeatability_tau: Option<f64>,
    /// The reference top-1 of the proxy's best architecture (the mean over the proxy's runs,
    /// each picking its own), and the best reference top-1.
    pub proxy_pick_reference: Option<f64>,
    pub best_reference: Option<f64>,
    /// Training seconds summed over the architectures.
    pub proxy_seconds: f64,
    pub reference_seconds: f64,
    pub points: Vec<FidelityPoint>,
}

/// One measurement's folder, checked against its plan, and the jobs that train it: every proxy
/// run's trainings, then every reference run's (job `j` is architecture `j % n` of run `j / n`).
pub struct Measurement<'p> {
    plan: &'p FidelityPlan,
    dir: PathBuf,
    /// The folder of each run (`proxy`, `proxy-run2`..., `reference`...).
    runs: Vec<String>,
    jobs: Vec<BatchJob>,
}

/// What [`Measurement::reuse`] took from another measurement's folder.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reused {
    /// Trainings whose result was copied from the other folder.
    pub taken: usize,
    /// Trainings this folder had done already (nothing copied).
    pub already_here: usize,
    /// The other folder's job folders that hold a result of another training, each with what
    /// differs (the fields of the job, or why it could not be read).
    pub differing: Vec<(PathBuf, String)>,
}

impl<'p> Measurement<'p> {
    /// Opens `dir` for `plan`: a folder holding another plan is refused; one holding this plan
    /// continues from the results on disk. Nothing is written until something is reused or run.
    pub fn open(plan: &'p FidelityPlan, dir: &Path) -> Result<Measurement<'p>> {
        let plan_path = dir.join(PLAN_FILE);
        if plan_path.exists() && read_plan(dir)? != *plan {
            return Err(Error::refused(
                &plan_path,
                "holds a measurement of other architectures, recipes, seed or eatnas version; choose another --out",
            ));
        }
        let search = crate::pipeline::search_name(dir);
        let runs = plan.runs();
        let jobs = runs
            .iter()
            .flat_map(
                |Run {
                     folder,
                     recipe,
                     seed,
                     data_seed,
                 }| {
                    let search = search.clone();
                    let task = plan.task_of(*recipe);
                    plan.genomes
                        .iter()
                        .enumerate()
                        .map(move |(i, genome)| BatchJob {
                            job: Job {
                                version: crate::VERSION.into(),
                                search: search.clone(),
                                stage: format!("fidelity-{folder}"),
                                candidate: Candidate {
                                    id: i,
                                    genome: genome.clone(),
                                    origin: Origin::Random,
                                },
                                task: task.clone(),
                                seed: *seed,
                                data_seed: None,
                                parent: None,
                                save_weights: false,
                            }
                            .with_data_seed(*data_seed),
                            dir: dir.join(folder).join(format!("{i:05}")),
                            name: format!("eatnas-{search}-fidelity-{folder}-{i}"),
                        })
                },
            )
            .collect();
        Ok(Measurement {
            plan,
            dir: dir.to_path_buf(),
            runs: runs.into_iter().map(|run| run.folder).collect(),
            jobs,
        })
    }

    /// Takes the results of the trainings that `other`, another measurement's folder, has done
    /// and this one has not, where its job folder of the same name holds the very same training
    /// (architecture, recipe, seeds, eatnas version): typically its reference, so that another
    /// proxy is ranked against it without training it again. Nothing of `other` is changed.
    pub fn reuse(&self, other: &Path) -> Result<Reused> {
        if !other.join(PLAN_FILE).is_file() {
            return Err(Error::refused(
                other,
                "is not a fidelity measurement's folder (no plan.json): nothing to reuse",
            ));
        }
        let same_folder = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same_folder(other, &self.dir) {
            return Err(Error::refused(
                other,
                "is this measurement's own folder: reuse another measurement's",
            ));
        }
        let mut reused = Reused::default();
        let mut taken: Vec<(&BatchJob, PathBuf)> = Vec::new();
        for batch_job in &self.jobs {
            let id = batch_job.job.candidate.id;
            let here_done = matches!(Job::read(&batch_job.dir), Ok(job) if job.same_training(&batch_job.job))
                && matches!(read_result(&batch_job.dir, id), Ok(Some(_)));
            if here_done {
                reused.already_here += 1;
                continue;
            }
            let relative = batch_job
                .dir
                .strip_prefix(&self.dir)
                .expect("a job folder lies in its measurement's folder");
            let there = other.join(relative);
            if !matches!(read_result(&there, id), Ok(Some(_))) {
                continue;
            }
            match Job::read(&there) {
                Ok(job) if job.same_training(&batch_job.job) => taken.push((batch_job, there)),
                Ok(job) => reused
                    .differing
                    .push((there, differing_fields(&job, &batch_job.job).join(", "))),
                Err(e) => reused.differing.push((there, e.to_string())),
            }
        }
        let _lock = match taken.is_empty() {
            true => None,
            false => Some(self.hold()?),
        };
        for (batch_job, there) in taken {
            clear_attempt(&batch_job.dir);
            batch_job.job.write(&batch_job.dir)?;
            let from = there.join(RESULT_FILE);
            let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
            write_atomic(&batch_job.dir.join(RESULT_FILE), &bytes)?;
            reused.taken += 1;
        }
        Ok(reused)
    }

    /// Takes the folder for this process (one coordinator per measurement, as for a search: two
    /// would train every job twice) and writes `plan.json`, which marks it as this plan's,
    /// unless it is there.
    fn hold(&self) -> Result<Lock> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let lock = Lock::acquire(&self.dir)?;
        let path = self.dir.join(PLAN_FILE);
        if !path.exists() {
            let text = serde_json::to_string_pretty(self.plan).expect("a plan serialises");
            write_atomic(&path, text.as_bytes())?;
        }
        Ok(lock)
    }

    /// Trains what is not done yet on `executor` (`workers` jobs in flight, `max_retries`
    /// attempts after the first), and writes and returns the report. `on_end` hears of each
    /// training as it ends: its run's folder, its architecture, how it ended, and whether it
    /// trained in this call.
    pub fn run(
        &self,
        executor: &mut dyn Executor,
        workers: usize,
        max_retries: usize,
        control: &Control,
        on_end: &mut dyn FnMut(&str, usize, &BatchEnd, bool),
    ) -> Result<FidelityReport> {
        let _lock = self.hold()?;
        let n = self.plan.genomes.len();
        let next = format!(
            "Continue with the same command: {} keeps every training done, and a stopped one continues from its checkpoint",
            self.dir.display()
        );
        let ends = run_batch(
            executor,
            &self.jobs,
            workers,
            max_retries,
            control,
            &next,
            &mut |i, end, ran| on_end(&self.runs[i / n], i % n, end, ran),
        )?;
        let report = report(self.plan, &ends.iter().map(Some).collect::<Vec<_>>());
        write_atomic(
            &self.dir.join(REPORT_FILE),
            serde_json::to_string_pretty(&report)
                .expect("a report serialises")
                .as_bytes(),
        )?;
        crate::plots::fidelity_chart(&self.dir.join(CHART_FILE), &report)?;
        Ok(report)
    }
}

/// The plan saved in a measurement's folder.
fn read_plan(dir: &Path) -> Result<FidelityPlan> {
    let path = dir.join(PLAN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::corrupt(&path, format!("not a fidelity plan ({e})")))
}

/// The fields in which two jobs' trainings differ (`task.lr`, `seed`...), each with its two
/// values (`there` first) unless they are long; the search's name, which never changes a
/// training, is left out.
fn differing_fields(there: &Job, here: &Job) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    let null = serde_json::Value::Null;
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(
                        &child,
                        a.get(key).unwrap_or(&null),
                        b.get(key).unwrap_or(&null),
                        out,
                    );
                }
            }
            // A long value (an architecture's blocks) is named, not printed.
            _ if a != b && a.to_string().len().max(b.to_string().len()) > 40 => {
                out.push(format!("{path} differs"))
            }
            _ if a != b => out.push(format!("{path} {a} there, {b} here")),
            _ => {}
        }
    }
    let value = |job: &Job| {
        serde_json::to_value(Job {
            search: String::new(),
            ..job.clone()
        })
        .expect("a job serialises")
    };
    let mut out = Vec::new();
    walk("", &value(there), &value(here), &mut out);
    out
}

/// The outcome of an end that trained, or why it has none.
fn outcome(end: Option<&BatchEnd>) -> std::result::Result<&Outcome, String> {
    match end {
        Some(BatchEnd::Completed(r)) => match &r.outcome.error {
            None => Ok(&r.outcome),
            Some(e) => Err(e.clone()),
        },
        Some(BatchEnd::Failed { reason, attempts }) => {
            Err(format!("no result after {attempts} attempts: {reason}"))
        }
        None => Err("not trained yet".into()),
    }
}

/// One recipe's runs of architecture `i` (`ends` holds every run's ends in turn, as the jobs
/// were made): each run's accuracy when every run finished, else the first failure named by its
/// run (`recipe` alone with one run).
struct Runs<'a> {
    finished: Vec<&'a Outcome>,
    failure: Option<String>,
}

impl<'a> Runs<'a> {
    fn of(ends: &[Option<&'a BatchEnd>], n: usize, i: usize, recipe: &str) -> Runs<'a> {
        let count = ends.len() / n;
        let outcomes: Vec<std::result::Result<&Outcome, String>> =
            ends.chunks(n).map(|run| outcome(run[i])).collect();
        let failure = outcomes.iter().enumerate().find_map(|(run, r)| {
            let e = r.as_ref().err()?;
            Some(match count {
                1 => format!("{recipe}: {e}"),
                _ => format!("{recipe} run {}: {e}", run + 1),
            })
        });
        Runs {
            finished: outcomes
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .copied()
                .collect(),
            failure,
        }
    }

    /// Each run's accuracy, when every run finished.
    fn accuracies(&self) -> Vec<f64> {
        match self.failure {
            None => self.finished.iter().map(|o| o.accuracy).collect(),
            Some(_) => Vec::new(),
        }
    }

    /// The runs (numbered from 1) that ended at chance on their validation split, when every
    /// run finished (results that do not record their split are never counted).
    fn at_chance(&self) -> Vec<usize> {
        if self.failure.is_some() {
            return Vec::new();
        }
        (1..)
            .zip(&self.finished)
            .filter(|(_, o)| o.validation_chance.is_some_and(|v| v.at_chance(o.accuracy)))
            .map(|(run, _)| run)
            .collect()
    }
}

/// The mean of the runs that learned (those not numbered in `at_chance`), or of every run when
/// none did: an architecture no training of which learns ranks at chance.
fn mean_of_learned(runs: &[f64], at_chance: &[usize]) -> Option<f64> {
    let learned: Vec<f64> = (1..)
        .zip(runs)
        .filter(|(run, _)| !at_chance.contains(run))
        .map(|(_, &a)| a)
        .collect();
    stats::mean(&learned).or_else(|| stats::mean(runs))
}

/// The report of `proxy`'s ends (every proxy run's, one per architecture, in turn) and
/// `reference`'s (every reference run's in turn).
/// The report of `plan` from its jobs' ends, in the order of the jobs (every proxy run's, then
/// every reference run's); an architecture with a training not ended (`None`) or failed is left
/// out of the ranking.
fn report(plan: &FidelityPlan, ends: &[Option<&BatchEnd>]) -> FidelityReport {
    let n = plan.genomes.len();
    let (proxy, reference) = ends.split_at(plan.proxy_seeds * n);
    let points: Vec<FidelityPoint> = plan
        .genomes
        .iter()
        .enumerate()
        .map(|(i, genome)| {
            let p = Runs::of(proxy, n, i, "proxy");
            let r = Runs::of(reference, n, i, "reference");
            let counted = p.finished.first().or(r.finished.first());
            let proxy_runs = p.accuracies();
            let reference_runs = r.accuracies();
            let reference_runs_at_chance = r.at_chance();
            FidelityPoint {
                genome: genome.key(),
                madds: counted.map_or(0, |o| o.madds),
                params: counted.map_or(0, |o| o.params),
                proxy: stats::mean(&proxy_runs),
                reference: mean_of_learned(&reference_runs, &reference_runs_at_chance),
                proxy_runs,
                reference_runs,
                proxy_runs_at_chance: p.at_chance(),
                reference_runs_at_chance,
                proxy_seconds: p.finished.iter().map(|o| o.seconds).sum(),
                reference_seconds: r.finished.iter().map(|o| o.seconds).sum(),
                error: p.failure.or(r.failure),
            }
        })
        .collect();
    let ranked: Vec<&FidelityPoint> = points
        .iter()
        .filter(|p| p.proxy.is_some() && p.reference.is_some())
        .collect();
    let reference: Vec<f64> = ranked.iter().filter_map(|p| p.reference).collect();
    let proxy_run = |run: usize| -> Vec<f64> { ranked.iter().map(|p| p.proxy_runs[run]).collect() };
    let all: Vec<usize> = (0..ranked.len()).collect();
    let top_half = top_half(&reference);
    // A rank correlation over fewer than three says nothing.
    let top_half_ranks = top_half.len() >= 3;
    // The reference's runs of an architecture some of whose trainings collapsed and some learned
    // disagree by the collapse, not by the order of networks that learned: left out of its
    // repeatability. (Runs that all ended at chance agree.)
    let reference_runs_agree = |p: &&FidelityPoint| {
        p.reference_runs_at_chance.is_empty()
            || p.reference_runs_at_chance.len() == p.reference_runs.len()
    };
    // Each proxy run ranks (and picks) on its own, as the search it stands for would: `measure`
    // of each run against the reference over the ranked architectures `over` (indices).
    let per_run = |over: &[usize], measure: fn(&[f64], &[f64]) -> Option<f64>| {
        let pick = |values: &[f64]| -> Vec<f64> { over.iter().map(|&k| values[k]).collect() };
        let reference = pick(&reference);
        (0..plan.proxy_seeds)
            .map(|run| measure(&pick(&proxy_run(run)), &reference))
            .collect::<Option<Vec<f64>>>()
    };
    let proxy_run_taus = per_run(&all, stats::kendall_tau).unwrap_or_default();
    let picks: Vec<f64> = (0..plan.proxy_seeds)
        .filter_map(|run| {
            let accuracies = proxy_run(run);
            let best = (0..accuracies.len()).reduce(|best, k| {
                if accuracies[k] > accuracies[best] {
                    k
                } else {
                    best
                }
            })?;
            Some(reference[best])
        })
        .collect();
    FidelityReport {
        version: crate::VERSION.into(),
        task: plan.task,
        data: plan.proxy.data.clone(),
        proxy: (&plan.proxy).into(),
        reference: (&plan.reference).into(),
        samples: plan.genomes.len(),
        ranked: ranked.len(),
        kendall_tau: stats::mean(&proxy_run_taus),
        spearman_rho: per_run(&all, stats::spearman_rho).and_then(|rhos| stats::mean(&rhos)),
        top_half_kendall_tau: per_run(&top_half, stats::kendall_tau)
            .filter(|_| top_half_ranks)
            .and_then(|taus| stats::mean(&taus)),
        top_half: top_half.len(),
        proxy_seeds: plan.proxy_seeds,
        proxy_run_taus,
        proxy_repeatability_tau: repeatability(
            points.iter().map(|p| p.proxy_runs.as_slice()),
            plan.proxy_seeds,
        ),
        reference_seeds: plan.reference_seeds,
        reference_repeatability_tau: repeatability(
            points
                .iter()
                .filter(reference_runs_agree)
                .map(|p| p.reference_runs.as_slice()),
            plan.reference_seeds,
        ),
        top_half_reference_repeatability_tau: repeatability(
            top_half
                .iter()
                .map(|&k| ranked[k])
                .filter(reference_runs_agree)
                .map(|p| p.reference_runs.as_slice()),
            plan.reference_seeds,
        )
        .filter(|_| top_half_ranks),
        proxy_pick_reference: stats::mean(&picks),
        best_reference: reference.iter().copied().reduce(f64::max),
        proxy_seconds: points.iter().map(|p| p.proxy_seconds).sum(),
        reference_seconds: points.iter().map(|p| p.reference_seconds).sum(),
        points,
    }
}

/// The indices of the better half of `reference` (rounded up), best first; ties keep their order.
fn top_half(reference: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..reference.len()).collect();
    order.sort_by(|&a, &b| reference[b].total_cmp(&reference[a]));
    order.truncate(reference.len().div_ceil(2));
    order
}

/// Architecture files of a folder (every `*.json`, by name).
pub fn read_archs(dir: &Path) -> Result<Vec<Arch>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Ok(Arch::load(p)?)).collect()
}

/// Kendall's tau between two runs of one recipe over the architectures whose every run
/// finished (`points_runs`: each architecture's runs), the mean over every pair of runs; `None`
/// with fewer than two runs (or a pair with no tau).
fn repeatability<'a>(points_runs: impl Iterator<Item = &'a [f64]>, runs: usize) -> Option<f64> {
    let complete: Vec<&[f64]> = points_runs.filter(|r| r.len() == runs).collect();
    let run = |k: usize| complete.iter().map(|r| r[k]).collect::<Vec<f64>>();
    let taus: Vec<f64> = (0..runs)
        .flat_map(|a| (a + 1..runs).map(move |b| (a, b)))
        .map(|(a, b)| stats::kendall_tau(&run(a), &run(b)))
        .collect::<Option<Vec<f64>>>()?;
    stats::mean(&taus)
}
