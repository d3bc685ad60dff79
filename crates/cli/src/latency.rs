//! `eatnas-cli latency build | check`: a latency table of a task's search space measured on this
//! machine's device, and its predictor's error on sampled whole networks.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use eatnas_data::DataSpec;
use eatnas_nas::fidelity::TaskChoice;
use eatnas_nas::latency::{sample_archs, space_pieces};
use eatnas_nas::stats::spearman_rho;
use eatnas_nas::SearchConfig;
use eatnas_nn::Counts;
use eatnas_tensor::Device;
use eatnas_train::latency::{LatencyTable, Measure, Provenance, Timing};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Time every piece (stem, layer configuration, head) the task's space can produce, alone,
    /// in inference and as a training step, then whole sampled networks for the correction (a
    /// network's time against its pieces' sum); write the table.
    Build(BuildArgs),
    /// Time sampled whole networks and report the table's prediction error (mean and worst
    /// relative error, Spearman's rho).
    Check(CheckArgs),
}

/// The task and the conditions a table is measured under.
#[derive(clap::Args)]
struct Where {
    /// Configuration (TOML) whose space and task macro are measured (default: the demo's).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The task: small or large.
    #[arg(long, default_value = "large")]
    task: TaskChoice,
    /// The device timed: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Input resolution (default: the task's).
    #[arg(long)]
    resolution: Option<usize>,
    /// Batch size (default: the task's proxy batch size).
    #[arg(long)]
    batch: Option<usize>,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs of each piece or network; the median is kept.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..))]
    repeats: u64,
    /// Rounds over all the pieces (or networks), each timed in every round; the median over
    /// the rounds is kept, so a slow spell of a shared host spoils one round, not the table.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    passes: u64,
}

#[derive(clap::Args)]
struct BuildArgs {
    #[command(flatten)]
    at: Where,
    /// Sampled whole networks the correction (a network's time against its pieces' sum) is
    /// fitted on.
    #[arg(long, default_value_t = 20)]
    calibration: usize,
    /// Seeds the calibration networks (check samples with another seed by default).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the table goes (JSON).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The table to check (from `latency build`).
    #[arg(long)]
    table: PathBuf,
    #[command(flatten)]
    at: Where,
    /// Whole networks sampled and timed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..))]
    networks: u64,
    /// Seeds the sample (default 1: not the build's calibration networks).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        Command::Build(args) => build(args),
        Command::Check(args) => check(args),
    }
}

/// The configuration, its task, the device, and the provenance a table must have here.
struct Setting {
    config: SearchConfig,
    task: TaskChoice,
    measure: Measure,
    provenance: Provenance,
}

fn setting(at: &Where) -> Result<Setting> {
    let config = match &at.config {
        Some(path) => SearchConfig::load(path)?,
        None => SearchConfig::default(),
    };
    let task = at.task.of(&config);
    let device = Device::parse(&at.device)?; // a GPU that cannot be used says why
    let spec = DataSpec::from_str(&task.data)?;
    let data = spec
        .open_with(task.resolution, task.skip_bad_images)
        .with_context(|| format!("opening the {} task's data `{}`", at.task.name(), task.data))?;
    let shape = data.shape();
    let resolution = at.resolution.unwrap_or(shape.size);
    let batch = at.batch.unwrap_or(task.batch_size);
    if resolution == 0 || batch == 0 {
        bail!("--resolution and --batch must be positive");
    }
    Ok(Setting {
        provenance: Provenance::here(device, resolution, batch, shape.channels, data.classes()),
        measure: Measure {
            device,
            batch,
            warmup: at.warmup,
            repeats: at.repeats as usize,
            passes: at.passes as usize,
        },
        task: at.task,
        config,
    })
}

fn build(args: &BuildArgs) -> Result<()> {
    let s = setting(&args.at)?;
    let task = s.task.of(&s.config);
    let p = &s.provenance;
    let pieces = space_pieces(
        &s.config.space,
        &task.macro_config,
        p.in_channels,
        p.resolution,
        p.classes,
    )?;
    let calibration = sample_archs(
        &s.config.space,
        &task.macro_config,
        args.calibration,
        args.seed,
    )?;
    eprintln!(
        "latency build: {} pieces and {} whole networks of the {} task on {} ({}, {} threads) at \
         {r}x{r}, batch {}",
        pieces.len(),
        calibration.len(),
        s.task.name(),
        p.device,
        p.device_name,
        p.threads,
        p.batch,
        r = p.resolution
    );
    let bar = indicatif::ProgressBar::new(0);
    let start = std::time::Instant::now();
    let table = LatencyTable::build(
        pieces,
        &calibration,
        s.provenance.clone(),
        s.measure,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64)
        },
    )?;
    bar.finish_and_clear();
    table.save(&args.out)?;
    println!(
        "wrote {}: {} pieces in {:.0} s; a network against the sum of its pieces: {} (inference), \
         {} (training step); metronome ({}) {:.3} ms",
        args.out.display(),
        table.entries.len(),
        start.elapsed().as_secs_f64(),
        table.correction.inference,
        table.correction.training,
        table.metronome,
        table.metronome_ms
    );
    Ok(())
}

/// Relative errors of predictions against measurements: (mean |error|, worst |error|, rho).
fn errors(measured: &[f64], predicted: &[f64]) -> (f64, f64, Option<f64>) {
    let relative: Vec<f64> = measured
        .iter()
        .zip(predicted)
        .map(|(m, p)| ((p - m) / m).abs())
        .collect();
    let mean = relative.iter().sum::<f64>() / relative.len().max(1) as f64;
    let worst = relative.iter().copied().fold(0.0, f64::max);
    (mean, worst, spearman_rho(measured, predicted))
}

fn check(args: &CheckArgs) -> Result<()> {
    let s = setting(&args.at)?;
    let table = LatencyTable::load(&args.table)?;
    table.check_fits(&s.provenance)?;
    let task = s.task.of(&s.config);
    let archs = sample_archs(
        &s.config.space,
        &task.macro_config,
        args.networks as usize,
        args.seed,
    )?;
    let p = &s.provenance;
    println!(
        "{:<12} {:>12} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7}",
        "network", "MAdds", "infer ms", "predicted", "error", "train ms", "predicted", "error"
    );
    let mut rows = Vec::new();
    let (mut measured, mut predicted) = (Vec::<Timing>::new(), Vec::<Timing>::new());
    let bar = indicatif::ProgressBar::new(0);
    let check = table.compare(&archs, s.measure, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let mut timed = Vec::<Timing>::new();
    for (arch, c) in archs.iter().zip(&check.networks) {
        let madds = Counts::new(arch, p.in_channels, p.resolution, p.classes)?.madds;
        let error = |m: f64, p: f64| 100.0 * (p - m) / m;
        println!(
            "{:<12} {:>12} {:>11.3} {:>11.3} {:>6.1}% {:>11.3} {:>11.3} {:>6.1}%",
            arch.name,
            madds,
            c.measured.inference_ms,
            c.predicted.inference_ms,
            error(c.measured.inference_ms, c.predicted.inference_ms),
            c.measured.training_ms,
            c.predicted.training_ms,
            error(c.measured.training_ms, c.predicted.training_ms),
        );
        rows.push(serde_json::json!({
            "arch": arch.name,
            "madds": madds,
            "measured": c.measured,
            "timed": c.timed,
            "predicted": c.predicted,
        }));
        timed.push(c.timed);
        measured.push(c.measured);
        predicted.push(c.predicted);
    }
    let of = |t: &[Timing], training: bool| -> Vec<f64> {
        t.iter()
            .map(|t| {
                if training {
                    t.training_ms
                } else {
                    t.inference_ms
                }
            })
            .collect()
    };
    let mut summary = serde_json::Map::new();
    let mut raw_errors = Vec::new();
    for (name, training) in [("inference", false), ("training", true)] {
        let (mean, worst, rho) = errors(&of(&measured, training), &of(&predicted, training));
        println!(
            "{name}: mean relative error {:.1}%, worst {:.1}%, Spearman rho {}",
            100.0 * mean,
            100.0 * worst,
            rho.map_or("undefined".into(), |r| format!("{r:.3}"))
        );
        // Against the raw times too: what the error would be without the metronome.
        let (raw_mean, raw_worst, raw_rho) =
            errors(&of(&timed, training), &of(&predicted, training));
        raw_errors.push(format!(
            "{:.1}% mean, {:.1}% worst ({name})",
            100.0 * raw_mean,
            100.0 * raw_worst
        ));
        summary.insert(
            name.into(),
            serde_json::json!({
                "mean_relative_error": mean, "worst_relative_error": worst, "spearman_rho": rho,
                "raw": {"mean_relative_error": raw_mean, "worst_relative_error": raw_worst, "spearman_rho": raw_rho},
            }),
        );
    }
    println!(
        "measured against the metronome ({}): {:.3} ms now, {:.3} ms when the table was built; \
         against the raw times the errors are {}",
        table.metronome,
        check.metronome_ms,
        table.metronome_ms,
        raw_errors.join(", ")
    );
    if args.json {
        summary.insert("device".into(), p.device.clone().into());
        summary.insert("metronome_ms".into(), check.metronome_ms.into());
        summary.insert("table_metronome_ms".into(), table.metronome_ms.into());
        summary.insert("networks".into(), rows.into());
        println!("{}", serde_json::Value::Object(summary));
    }
    Ok(())
}
