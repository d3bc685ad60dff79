//! `report.html`: one self-contained page of a search folder (inline CSS, inline SVG, a little
//! plain JavaScript, no request to anywhere): where the search stands, population quality against
//! evaluations, accuracy against MAdds with the Pareto front, every evaluation in a sortable,
//! filterable table, the basic and final architectures as block diagrams, and the configuration.
//! Written by the pipeline as the search goes (the page then reloads itself) and at its end, and
//! by `eatnas-cli report DIR` for any search folder.

use std::fmt::Write as _;
use std::path::Path;

use eatnas_nn::Arch;
use eatnas_train::fs::write_atomic;

use crate::config::SearchConfig;
use crate::evolution::Record;
use crate::pareto::{front, CostAxis};
use crate::runner::{parse_history, HISTORY_FILE, STATE_FILE};
use crate::{Error, Result};

pub const REPORT_FILE: &str = "report.html";

/// The stages a folder may hold, in pipeline order.
const STAGES: [&str; 3] = ["stage1", "transfer", "scratch"];

/// What a report showed.
#[derive(Debug, Default)]
pub struct ReportStats {
    /// Table rows: one per history line read.
    pub rows: usize,
    /// History lines that could not be read (a line cut by a kill), by file and line number.
    pub skipped: Vec<String>,
}

struct Stage {
    name: &'static str,
    budget: usize,
    records: Vec<Record>,
    in_flight: usize,
    /// What its networks' accuracy is drawn against.
    cost: CostAxis,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Reads a stage's history, keeping what parses and naming what does not.
fn read_stage(
    dir: &Path,
    name: &'static str,
    budget: usize,
    cost: CostAxis,
    skipped: &mut Vec<String>,
) -> Option<Stage> {
    let stage_dir = dir.join(name);
    let text = std::fs::read_to_string(stage_dir.join(HISTORY_FILE)).ok()?;
    let (records, unreadable) = parse_history(&text);
    skipped.extend(
        unreadable
            .into_iter()
            .map(|(line, e)| format!("{name}/{HISTORY_FILE} line {line}: {e}")),
    );
    let in_flight = std::fs::read_to_string(stage_dir.join(STATE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["state"]["pending"].as_array().map(Vec::len))
        .unwrap_or(0);
    Some(Stage {
        name,
        budget,
        records,
        in_flight,
        cost,
    })
}

/// Writes `dir/report.html` atomically. `live`: the search is running (the page reloads itself).
pub fn write_report(dir: &Path, live: bool) -> Result<ReportStats> {
    let config_path = dir.join("config.toml");
    if !config_path.is_file() {
        return Err(Error::refused(
            dir,
            "not a search folder (no config.toml); expected the --out folder of run, search or transfer",
        ));
    }
    let config_text =
        std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config = SearchConfig::from_toml(&config_text, &config_path.display().to_string())?;
    let mut stats = ReportStats::default();
    let stages: Vec<Stage> = STAGES
        .iter()
        .filter_map(|&name| {
            let (budget, fitness) = if name == "stage1" {
                (config.stage1.budget, &config.small_fitness)
            } else {
                (config.stage2.budget, &config.large_fitness)
            };
            read_stage(dir, name, budget, CostAxis::of(fitness), &mut stats.skipped)
        })
        .collect();
    stats.rows = stages.iter().map(|s| s.records.len()).sum();

    let mut html = String::new();
    let title = format!(
        "eatnas search {}",
        dir.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned())
    );
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{}<title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        if live { "<meta http-equiv=\"refresh\" content=\"5\">" } else { "" },
        escape(&title),
        escape(&title)
    );
    status_section(&mut html, &stages, live, &stats);
    quality_section(&mut html, &stages);
    pareto_section(&mut html, &stages);
    table_section(&mut html, &stages);
    for (file, label, task) in [
        (
            "basic_arch.json",
            "Basic architecture (the best of stage 1)",
            &config.small,
        ),
        ("final_arch.json", "Final architecture", &config.large),
    ] {
        if let Ok(arch) = Arch::load(&dir.join(file)) {
            let resolution = task.resolution.unwrap_or(28);
            arch_section(&mut html, label, &arch, resolution);
        }
    }
    let _ = write!(
        html,
        "<h2>Configuration</h2><pre id=\"config\">{}</pre>\n<script>{SCRIPT}</script>\n</body></html>\n",
        escape(&config_text)
    );
    write_atomic(&dir.join(REPORT_FILE), html.as_bytes())?;
    Ok(stats)
}

fn status_section(html: &mut String, stages: &[Stage], live: bool, stats: &ReportStats) {
    let _ = write!(
        html,
        "<p class=\"status\" id=\"state\">{}</p>\n<table class=\"stages\"><tr><th>stage</th><th>evaluations</th><th>running</th><th>failed</th><th>elapsed</th><th>left (estimate)</th><th>best fitness</th></tr>\n",
        if live { "running (this page reloads every 5 s)" } else { "not running" }
    );
    for stage in stages {
        let done = stage.records.len();
        let failed = stage.records.iter().filter(|r| r.failed).count();
        let times: Vec<(f64, f64)> = stage
            .records
            .iter()
            .filter_map(|r| {
                r.ran
                    .as_ref()
                    .map(|ran| (ran.submitted_at, ran.collected_at))
            })
            .collect();
        let elapsed = match (
            times.iter().map(|t| t.0).reduce(f64::min),
            times.iter().map(|t| t.1).reduce(f64::max),
        ) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => 0.0,
        };
        let left = if done > 0 && done < stage.budget {
            format_seconds(elapsed / done as f64 * (stage.budget - done) as f64)
        } else {
            "-".into()
        };
        let best = stage.records.iter().map(|r| r.fitness).reduce(f64::max);
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{done} / {}</td><td>{}</td><td>{failed}</td><td>{}</td><td>{left}</td><td>{}</td></tr>",
            stage.name,
            stage.budget,
            stage.in_flight,
            format_seconds(elapsed),
            best.map_or("-".into(), |b| format!("{b:.4}")),
        );
    }
    html.push_str("</table>\n");
    if !stats.skipped.is_empty() {
        let _ = writeln!(
            html,
            "<p class=\"warn\">Skipped unreadable history lines: {}</p>",
            escape(&stats.skipped.join("; "))
        );
    }
}

pub(crate) fn format_seconds(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

const COLORS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];
/// Chart width, height and margin (SVG user units).
const W: f64 = 640.0;
const H: f64 = 300.0;
const PAD: f64 = 48.0;

/// Maps data ranges onto the plot area.
struct Axes {
    x: (f64, f64),
    y: (f64, f64),
}

impl Axes {
    fn px(&self, x: f64, y: f64) -> (f64, f64) {
        let fx = if self.x.1 > self.x.0 {
            (x - self.x.0) / (self.x.1 - self.x.0)
        } else {
            0.5
        };
        let fy = if self.y.1 > self.y.0 {
            (y - self.y.0) / (self.y.1 - self.y.0)
        } else {
            0.5
        };
        (PAD + fx * (W - 2.0 * PAD), H - PAD - fy * (H - 2.0 * PAD))
    }

    fn frame(
        &self,
        html: &mut String,
        x_label: &str,
        y_label: &str,
        x_fmt: &dyn Fn(f64) -> String,
    ) {
        let _ = write!(
            html,
            "<rect x=\"{PAD}\" y=\"{PAD}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>",
            W - 2.0 * PAD,
            H - 2.0 * PAD
        );
        for i in 0..=4 {
            let f = i as f64 / 4.0;
            let (xv, yv) = (
                self.x.0 + f * (self.x.1 - self.x.0),
                self.y.0 + f * (self.y.1 - self.y.0),
            );
            let (x, _) = self.px(xv, self.y.0);
            let (_, y) = self.px(self.x.0, yv);
            let _ = write!(
                html,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{yv:.3}</text>",
                H - PAD + 16.0,
                x_fmt(xv),
                PAD - 4.0,
                y + 4.0
            );
        }
        let _ = write!(
            html,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
            W / 2.0,
            H - 8.0,
            escape(x_label),
            H / 2.0,
            H / 2.0,
            escape(y_label)
        );
    }
}

fn legend(html: &mut String, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let _ = write!(
            html,
            "<rect x=\"{:.1}\" y=\"8\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"18\">{}</text>",
            PAD + i as f64 * 140.0,
            COLORS[i % 3],
            PAD + i as f64 * 140.0 + 16.0,
            name
        );
    }
}

/// Population quality (top-k mean, and the spread around the population's mean as a band)
/// against evaluations, one line per stage.
fn quality_section(html: &mut String, stages: &[Stage]) {
    let all: Vec<&Record> = stages.iter().flat_map(|s| &s.records).collect();
    if all.is_empty() {
        return;
    }
    let max_n = stages.iter().map(|s| s.records.len()).max().unwrap_or(1) as f64;
    let hi = all.iter().map(|r| r.quality.best).fold(0.0, f64::max);
    let axes = Axes {
        x: (1.0, max_n.max(2.0)),
        y: (0.0, (hi * 1.05).max(1e-3)),
    };
    html.push_str(
        "<h2>Population quality</h2>\n<svg id=\"quality\" viewBox=\"0 0 640 300\" role=\"img\">",
    );
    axes.frame(
        html,
        "evaluations",
        "mean fitness of the population's top k",
        &|v| format!("{v:.0}"),
    );
    for (i, stage) in stages.iter().enumerate() {
        let color = COLORS[i % 3];
        let points = |f: &dyn Fn(&Record) -> f64| -> String {
            stage
                .records
                .iter()
                .enumerate()
                .map(|(n, r)| {
                    let (x, y) = axes.px((n + 1) as f64, f(r));
                    format!("{x:.1},{y:.1}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        // The band: top-k mean plus and minus the population's spread.
        let upper = points(&|r| r.quality.top_k_mean + r.quality.spread);
        let lower: Vec<String> = stage
            .records
            .iter()
            .enumerate()
            .rev()
            .map(|(n, r)| {
                let (x, y) = axes.px(
                    (n + 1) as f64,
                    (r.quality.top_k_mean - r.quality.spread).max(0.0),
                );
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            html,
            "<polygon points=\"{upper} {}\" fill=\"{color}\" opacity=\"0.12\"/><polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
            lower.join(" "),
            points(&|r| r.quality.top_k_mean)
        );
    }
    legend(html, &stages.iter().map(|s| s.name).collect::<Vec<_>>());
    html.push_str("</svg>\n");
}

/// Accuracy against cost of every evaluated network, one chart per cost (MAdds, or the
/// latency each stage's objective predicts), the Pareto front of each stage drawn as a line,
/// each point naming its architecture on hover.
fn pareto_section(html: &mut String, stages: &[Stage]) {
    let mut axes_seen: Vec<&CostAxis> = Vec::new();
    for stage in stages {
        if !axes_seen.contains(&&stage.cost) {
            axes_seen.push(&stage.cost);
        }
    }
    for (chart, axis) in axes_seen.into_iter().enumerate() {
        let on_axis: Vec<&Stage> = stages.iter().filter(|s| &s.cost == axis).collect();
        pareto_chart(html, chart, axis, &on_axis);
    }
}

fn pareto_chart(html: &mut String, chart: usize, axis: &CostAxis, stages: &[&Stage]) {
    let point = |r: &Record| Some((axis.cost(r.madds, r.latency_ms)?, r.accuracy));
    let all: Vec<(f64, f64)> = stages
        .iter()
        .flat_map(|s| &s.records)
        .filter(|r| !r.failed)
        .filter_map(point)
        .collect();
    if all.is_empty() {
        return;
    }
    let (lo, hi) = all.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let top = all.iter().map(|p| p.1).fold(0.0, f64::max);
    let axes = Axes {
        x: (lo, hi),
        y: (0.0, (top * 1.05).max(1e-3)),
    };
    let id = if chart == 0 {
        "pareto".to_string()
    } else {
        format!("pareto-{chart}")
    };
    let _ = write!(
        html,
        "<h2>Accuracy against {}</h2>\n<svg id=\"{id}\" class=\"pareto\" viewBox=\"0 0 640 300\" role=\"img\">",
        axis.name()
    );
    axes.frame(html, &axis.label(), "validation top-1", &|v| {
        format!("{v:.2}")
    });
    for (i, stage) in stages.iter().enumerate() {
        let color = COLORS[i % 3];
        let mut points = Vec::new();
        for r in stage.records.iter().filter(|r| !r.failed) {
            let Some((cost, accuracy)) = point(r) else {
                continue;
            };
            points.push((cost, accuracy));
            let (x, y) = axes.px(cost, accuracy);
            let latency = r
                .latency_ms
                .map_or(String::new(), |ms| format!(", {ms:.2} ms predicted"));
            let _ = write!(
                html,
                "<circle class=\"point\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{color}\" opacity=\"0.7\"><title>{} #{}: {}\naccuracy {:.4}, {:.2}M MAdds{latency}, {:.1}k params</title></circle>",
                stage.name,
                r.id,
                escape(&r.genome),
                r.accuracy,
                r.madds as f64 / 1e6,
                r.params as f64 / 1e3
            );
        }
        let line: Vec<String> = front(&points)
            .into_iter()
            .map(|i| {
                let (x, y) = axes.px(points[i].0, points[i].1);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            html,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-dasharray=\"4 3\"/>",
            line.join(" ")
        );
    }
    legend(html, &stages.iter().map(|s| s.name).collect::<Vec<_>>());
    html.push_str("</svg>\n");
}

fn table_section(html: &mut String, stages: &[Stage]) {
    html.push_str(
        "<h2>Every evaluation</h2>\n<p><input id=\"filter\" placeholder=\"filter rows (any text: a stage, slurm, failed, an op...)\" size=\"60\"> <span id=\"shown\"></span></p>\n<table id=\"evaluations\" class=\"sortable\"><thead><tr>",
    );
    for (column, numeric) in [
        ("stage", false),
        ("#", true),
        ("id", true),
        ("origin", false),
        ("fitness", true),
        ("accuracy", true),
        ("MAdds", true),
        ("params", true),
        ("latency ms", true),
        ("seconds", true),
        ("where", false),
        ("retries", true),
        ("status", false),
        ("training", false),
        ("genome", false),
    ] {
        let _ = write!(html, "<th data-numeric=\"{numeric}\">{column}</th>");
    }
    html.push_str("</tr></thead><tbody>\n");
    for stage in stages {
        for r in &stage.records {
            let origin = match &r.origin {
                crate::evolution::Origin::Mutation { parent } => format!("mutation of {parent}"),
                other => format!("{other:?}").to_lowercase(),
            };
            let place = r
                .ran
                .as_ref()
                .map_or("-".into(), |ran| match ran.executor.as_str() {
                    "slurm" => format!("slurm job {} on {} ({})", ran.job, ran.host, ran.device),
                    _ => format!("local worker {} on {} ({})", r.worker, ran.host, ran.device),
                });
            let status = if r.failed {
                "failed"
            } else if r.cached {
                "cached"
            } else if r.error.is_some() {
                "diverged"
            } else {
                "ok"
            };
            let training = training_text(r);
            let title = r
                .error
                .as_deref()
                .map_or(String::new(), |e| format!(" title=\"{}\"", escape(e)));
            let _ = writeln!(
                html,
                "<tr class=\"{status}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td{title}>{status}</td><td>{}</td><td class=\"genome\">{}</td></tr>",
                stage.name,
                r.evaluation,
                r.id,
                escape(&origin),
                r.fitness,
                r.accuracy,
                r.madds,
                r.params,
                r.latency_ms.map_or("-".into(), |ms| format!("{ms:.3}")),
                r.seconds,
                escape(&place),
                r.retries,
                escape(&training),
                escape(&r.genome),
            );
        }
    }
    html.push_str("</tbody></table>\n");
}

/// How an evaluation trained: its rungs (multi-fidelity) and what it inherited.
fn training_text(r: &Record) -> String {
    let mut parts = Vec::new();
    if !r.rungs.is_empty() {
        let epochs: Vec<String> = r.rungs.iter().map(|g| g.epochs.to_string()).collect();
        let discarded = if r.discarded { ", discarded" } else { "" };
        parts.push(format!("rungs {} epochs{discarded}", epochs.join(" > ")));
    }
    if let Some(inherited) = &r.inherited {
        parts.push(match (&inherited.mapping, &inherited.note) {
            (Some(m), _) => format!(
                "inherited: {} copied, {} reshaped, {} fresh",
                m.copied, m.reshaped, m.fresh
            ),
            (None, Some(note)) => note.clone(),
            (None, None) => "inherited nothing".into(),
        });
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

/// The network as boxes: the stem, each block (op, kernel, width, channels, layers, skip, the
/// feature map it outputs), the head.
fn arch_section(html: &mut String, label: &str, arch: &Arch, resolution: usize) {
    let down = |size: usize, stride: usize| size.div_ceil(stride.max(1));
    let mut size = down(resolution, arch.stem.stride);
    let _ = write!(
        html,
        "<h2>{}</h2><div class=\"arch\"><div class=\"box stem\"><b>stem</b><br>conv {k}x{k}, {}<br>{c} ch<br>{size}x{size}</div>",
        escape(label),
        if arch.stem.stride > 1 { format!("stride {}", arch.stem.stride) } else { "stride 1".into() },
        k = arch.stem.kernel,
        c = arch.stem.channels,
    );
    for (i, b) in arch.blocks.iter().enumerate() {
        size = down(size, b.stride);
        let _ = write!(
            html,
            "<div class=\"box block\"><b>block {}</b><br>{} k{}<br>width {} &rarr; {} ch<br>{} layer{}{}<br>{size}x{size}{}</div>",
            i + 1,
            b.op.name(),
            b.kernel,
            b.width,
            b.out_channels(),
            b.layers,
            if b.layers == 1 { "" } else { "s" },
            if b.skip { ", skip" } else { "" },
            if b.stride > 1 { format!(" (stride {})", b.stride) } else { String::new() },
        );
    }
    let _ = writeln!(
        html,
        "<div class=\"box head\"><b>head</b><br>conv 1x1 {} ch<br>pool, linear</div></div>",
        arch.head.channels
    );
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee;cursor:pointer}td.genome{text-align:left;font-family:monospace;font-size:.9em}tr.failed{background:#fdd}tr.cached{color:#888}tr.diverged{background:#ffe8cc}svg{max-width:760px;width:100%;font-size:11px;background:#fff}.warn{color:#a40}.status{font-weight:bold}.arch{display:flex;flex-wrap:wrap;gap:6px}.box{border:1px solid #888;border-radius:4px;padding:4px 8px;font-size:.8em;background:#f4f8ff;text-align:center}.stem,.head{background:#eee}pre{background:#f6f6f6;padding:8px;font-size:.8em;max-height:30em;overflow:auto}";

/// Sorting by a column header's click, filtering by the text box; nothing is fetched.
const SCRIPT: &str = r#"(function(){
var table=document.getElementById('evaluations');if(!table)return;
var body=table.tBodies[0],filter=document.getElementById('filter'),shown=document.getElementById('shown');
function count(){var n=0;for(var r of body.rows)if(r.style.display!=='none')n++;shown.textContent=n+' of '+body.rows.length+' rows';}
filter.addEventListener('input',function(){var q=filter.value.toLowerCase();for(var r of body.rows)r.style.display=r.textContent.toLowerCase().indexOf(q)<0?'none':'';count();});
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){var asc=true;th.addEventListener('click',function(){
var numeric=th.dataset.numeric==='true',rows=Array.prototype.slice.call(body.rows);
rows.sort(function(a,b){var x=a.cells[i].textContent,y=b.cells[i].textContent;var c=numeric?(parseFloat(x)-parseFloat(y)):x.localeCompare(y);return asc?c:-c;});
asc=!asc;rows.forEach(function(r){body.appendChild(r);});});});
count();})();"#;
