//! `eatnas-cli fidelity`: how well a task's proxy training ranks architectures, against a longer
//! reference training of the same ones (Kendall's tau, Spearman's rho, a scatter plot).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use eatnas_nas::batch::BatchEnd;
use eatnas_nas::fidelity::{
    self, FidelityPlan, FidelityReport, Measurement, Progress, Reference, Reused, TaskChoice,
};
use eatnas_nas::runner::Control;
use eatnas_nas::ProxyTraining;

use crate::search::{load_config, out_dir, session, Common};

#[derive(clap::Args)]
pub struct Args {
    /// The task of the configuration whose proxy is measured: small or large.
    #[arg(long)]
    task: TaskChoice,
    /// Architectures sampled from the search space (at least 3).
    #[arg(long, default_value_t = 12)]
    samples: usize,
    /// Measure these architecture files (every *.json of the folder) instead of samples.
    #[arg(long)]
    archs: Option<PathBuf>,
    /// Epochs of the reference training (default: 5x the proxy's).
    #[arg(long)]
    reference_epochs: Option<usize>,
    /// Fraction of the training set the reference trains on.
    #[arg(long, default_value_t = 1.0)]
    reference_data_fraction: f64,
    /// Batch size of the reference training (default: the proxy's).
    #[arg(long)]
    reference_batch_size: Option<usize>,
    /// Peak learning rate of the reference training (default: the proxy's).
    #[arg(long)]
    reference_lr: Option<f64>,
    /// Warm-up epochs of the reference training (default: the proxy's).
    #[arg(long)]
    reference_warmup_epochs: Option<f64>,
    /// Fraction of the training data the reference holds out to rank on (default: the
    /// proxy's). Fix it to compare proxies that hold out other fractions against one reference.
    #[arg(long)]
    reference_val_fraction: Option<f64>,
    /// Reference trainings of each architecture, each from its own seed: the reference accuracy
    /// is their mean, and two or more also measure how well the reference agrees with itself.
    #[arg(long, default_value_t = 1)]
    reference_seeds: usize,
    /// Proxy trainings of each architecture, each from its own seed (which also draws the
    /// proxy's data fraction and validation split, as a search's seed does): each seed's proxy is
    /// ranked against the reference on its own, and the tau reported is their mean. One seed's
    /// tau over 12 architectures moves by 0.1-0.2 with the seed: compare proxies over several.
    #[arg(long, default_value_t = 1)]
    proxy_seeds: usize,
    /// Another measurement's folder whose trainings this one takes where they are the very same
    /// (architectures, recipe, seeds): typically its reference, to rank another proxy against
    /// it without training it again. Repeatable. Measure with the same --seed and --samples, and
    /// the reference set explicitly (--reference-lr, --reference-batch-size, ...), since its
    /// defaults follow the proxy.
    #[arg(long, value_name = "DIR")]
    reuse: Vec<PathBuf>,
    #[command(flatten)]
    common: Common,
}

/// " at RxR" for a recipe's training resolution, when set.
fn at(task: &eatnas_nas::TaskConfig) -> String {
    task.trained_resolution()
        .map_or(String::new(), |r| format!(" at {r}x{r}"))
}

pub fn run(args: &Args) -> Result<()> {
    let config = load_config(&args.common)?;
    config
        .executor
        .kind
        .check_detach(args.common.coordinator.detach)?;
    let dir = out_dir(&args.common, "fidelity");
    let archs = args
        .archs
        .as_deref()
        .map(fidelity::read_archs)
        .transpose()?;
    let reference = Reference {
        epochs: args.reference_epochs,
        data_fraction: args.reference_data_fraction,
        batch_size: args.reference_batch_size,
        lr: args.reference_lr,
        warmup_epochs: args.reference_warmup_epochs,
        val_fraction: args.reference_val_fraction,
        seeds: args.reference_seeds,
    };
    let plan = FidelityPlan::new(
        &config,
        args.task,
        args.samples,
        archs.as_deref(),
        &reference,
        args.proxy_seeds,
    )?;
    eprintln!(
        "eatnas fidelity: {} architectures on the {} task ({}), proxy {} epoch(s){} on {:.0}%, {:.0}% held out ({} seed(s)) against reference {} epoch(s){} on {:.0}%, {:.0}% held out ({} seed(s)), into {}",
        plan.genomes.len(),
        args.task.name(),
        plan.proxy.data,
        plan.proxy.epochs,
        at(&plan.proxy),
        100.0 * plan.proxy.data_fraction,
        100.0 * plan.proxy.val_fraction,
        plan.proxy_seeds,
        plan.reference.epochs,
        at(&plan.reference),
        100.0 * plan.reference.data_fraction,
        100.0 * plan.reference.val_fraction,
        plan.reference_seeds,
        dir.display()
    );
    let session = session(None, &args.common.coordinator)?;
    let mut executor = eatnas_nas::executor::make(
        &config.executor,
        config.workers,
        &config.devices,
        Arc::new(
            ProxyTraining::new()
                .checkpoint_by_time(config.executor.checkpoint_interval())
                .jobs_at_once(config.workers),
        ),
        &dir,
    )?;
    let total = plan.genomes.len();
    let mut progress = Progress::new(&plan, config.workers);
    let measurement = Measurement::open(&plan, &dir)?;
    for other in &args.reuse {
        report_reuse(other, &measurement.reuse(other)?)?;
    }
    let report = measurement.run(
        executor.as_mut(),
        config.workers,
        config.executor.max_retries,
        &Control {
            stop: &session.stop,
            detach: session.detach,
        },
        &mut |recipe, i, end, ran| {
            progress.ended(recipe, i, end);
            // Where the measurement stands, after each training that ran here (not after those done
            // before).
            let done = if ran {
                format!("; {}", progress.describe())
            } else {
                " (done before)".into()
            };
            match end {
                BatchEnd::Completed(r) => eprintln!(
                    "[{recipe} {:>3}/{total}] acc {:.4} {:>6.2}M MAdds {:>6.1} s{}{done}",
                    i + 1,
                    r.outcome.accuracy,
                    r.outcome.madds as f64 / 1e6,
                    r.outcome.seconds,
                    r.outcome
                        .error
                        .as_ref()
                        .map_or(String::new(), |e| format!(" FAILED: {e}"))
                ),
                BatchEnd::Failed { reason, .. } => {
                    eprintln!("[{recipe} {:>3}/{total}] FAILED: {reason}{done}", i + 1)
                }
            }
        },
    )?;
    print_report(&dir, &report);
    if args.common.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// Says what was taken from `other`; refuses to go on when none of its results could be taken
/// and some were of other trainings (a reference recipe that differs, most often), rather than
/// train for hours what the user meant to reuse.
fn report_reuse(other: &Path, reused: &Reused) -> Result<()> {
    // The folders not taken, grouped by what differs: "task.lr 0.1 there, 0.05 here (12 jobs:
    // reference/00000, ...)".
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (dir, what) in &reused.differing {
        let name = dir.strip_prefix(other).unwrap_or(dir);
        groups
            .entry(what.as_str())
            .or_default()
            .push(name.display().to_string());
    }
    let differing: Vec<String> = groups
        .iter()
        .map(|(what, dirs)| {
            let more = if dirs.len() > 2 { ", ..." } else { "" };
            let shown = dirs[..dirs.len().min(2)].join(", ");
            format!("{what} ({} job(s): {shown}{more})", dirs.len())
        })
        .collect();
    if reused.taken == 0 && reused.already_here == 0 && !differing.is_empty() {
        anyhow::bail!(
            "--reuse {}: none of its trainings is one of this measurement's: {}. Measure with its --seed and --samples, and its reference recipe set explicitly (--reference-epochs, --reference-lr, --reference-batch-size, --reference-warmup-epochs, --reference-val-fraction), whose defaults follow the proxy",
            other.display(),
            differing.join("; ")
        );
    }
    eprintln!(
        "took {} training(s) from {} ({} done here already)",
        reused.taken,
        other.display(),
        reused.already_here
    );
    for what in differing {
        eprintln!("  not taken, other trainings: {what}");
    }
    Ok(())
}

fn print_report(dir: &Path, report: &FidelityReport) {
    let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    eprintln!(
        "{:>4}  {:>8}  {:>9}  {:>8}  genome",
        "#", "proxy", "reference", "MAdds"
    );
    for (i, p) in report.points.iter().enumerate() {
        eprintln!(
            "{:>4}  {:>8}  {:>9}  {:>7.2}M  {}{}",
            i + 1,
            show(p.proxy),
            show(p.reference),
            p.madds as f64 / 1e6,
            p.genome,
            p.error
                .as_ref()
                .map_or(String::new(), |e| format!("  ({e})"))
        );
    }
    let runs = |numbers: &[usize]| -> String {
        let numbers: Vec<String> = numbers.iter().map(|n| n.to_string()).collect();
        match numbers.len() {
            1 => format!("run {}", numbers[0]),
            _ => format!("runs {}", numbers.join(", ")),
        }
    };
    for (i, p) in report.points.iter().enumerate() {
        if !p.reference_runs_at_chance.is_empty() {
            let learned = p.reference_runs.len() > p.reference_runs_at_chance.len();
            eprintln!(
                "warning: architecture {}: reference {} ended no better than always answering the most common class (it learned nothing, though its loss stayed finite); {}",
                i + 1,
                runs(&p.reference_runs_at_chance),
                if learned {
                    "its reference is the mean of its other runs, and it is left out of the reference's repeatability"
                } else {
                    "no reference run of it learned: it ranks at chance"
                }
            );
        }
        if !p.proxy_runs_at_chance.is_empty() {
            eprintln!(
                "note: architecture {}: proxy {} ended no better than always answering the most common class; kept in the ranking, as a search would see it",
                i + 1,
                runs(&p.proxy_runs_at_chance)
            );
        }
    }
    eprintln!(
        "{} task: Kendall tau {}, Spearman rho {} over {} of {} architectures; the proxy's pick scores {} on the reference (best {}); training {:.0} s proxy, {:.0} s reference",
        report.task.name(),
        show(report.kendall_tau),
        show(report.spearman_rho),
        report.ranked,
        report.samples,
        show(report.proxy_pick_reference),
        show(report.best_reference),
        report.proxy_seconds,
        report.reference_seconds,
    );
    eprintln!(
        "over the best {} by the reference: Kendall tau {} (how well the proxy orders the good networks a search ends among)",
        report.top_half,
        show(report.top_half_kendall_tau)
    );
    if report.proxy_seeds > 1 {
        let taus: Vec<String> = report
            .proxy_run_taus
            .iter()
            .map(|t| format!("{t:.3}"))
            .collect();
        eprintln!(
            "the proxy trained from {} seeds: Kendall tau per seed {} (the tau above is their mean); its runs agree with each other at {}",
            report.proxy_seeds,
            if taus.is_empty() { "-".into() } else { taus.join(", ") },
            show(report.proxy_repeatability_tau)
        );
    }
    if let Some(tau) = report.reference_repeatability_tau {
        eprintln!(
            "the reference is the mean of {} seeds; its runs agree with each other at Kendall tau {tau:.3} (how repeatable the reference itself is), over the best {} at {}",
            report.reference_seeds,
            report.top_half,
            show(report.top_half_reference_repeatability_tau)
        );
    }
    eprintln!(
        "wrote {} and {}",
        dir.join(fidelity::REPORT_FILE).display(),
        dir.join(fidelity::CHART_FILE).display()
    );
}
