//! SVG charts of a search: population quality against evaluations (transfer and scratch on one
//! chart), and accuracy against cost (MAdds, or predicted latency) for every evaluated network
//! with the Pareto front marked.

use std::path::Path;

use plotters::prelude::*;

use crate::pareto::{front, CostAxis, Point};
use crate::{Error, Result};

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn plot_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |message| Error::Plot {
        path: path.to_path_buf(),
        message,
    }
}

/// One line per series: `(label, values by evaluation 1, 2, ...)`.
pub fn quality_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    let fail = plot_error(path);
    let longest = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let margin = ((hi - lo) * 0.1).max(1e-3);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(1f64..longest as f64, (lo - margin)..(hi + margin))
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("evaluations")
        .y_desc(y_label)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (i, (label, values)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(x, &y)| (x as f64 + 1.0, y)),
                colour.stroke_width(2),
            ))
            .map_err(|e| fail(e.to_string()))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}

/// Accuracy against `axis`'s cost, one colour per series `(label, (cost, accuracy) points)`, the
/// front over all points drawn as a line.
pub fn pareto_chart(
    path: &Path,
    title: &str,
    axis: &CostAxis,
    series: &[(String, Vec<Point>)],
) -> Result<()> {
    let fail = plot_error(path);
    let all: Vec<Point> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let x_max = all.iter().map(|p| p.0).fold(0.0f64, f64::max) * 1.05;
    let x_min = all
        .iter()
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min)
        .min(x_max)
        * 0.95;
    let y_min = all
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(1.0);
    let y_max = all.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            x_min..x_max.max(x_min + 1e-3),
            (y_min - 0.02).max(0.0)..(y_max + 0.02).min(1.0),
        )
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(axis.label())
        .y_desc("validation top-1")
        .x_label_formatter(&|x| format!("{x:.2}"))
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (i, (label, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(c, a)| Circle::new((c, a), 4, colour.filled())),
            )
            .map_err(|e| fail(e.to_string()))?
            .label(label.as_str())
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, colour.filled()));
    }
    let front = front(&all);
    chart
        .draw_series(LineSeries::new(
            front.iter().map(|&i| all[i]),
            BLACK.stroke_width(2),
        ))
        .map_err(|e| fail(e.to_string()))?
        .label(format!("Pareto front of accuracy and {}", axis.name()))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}

/// Reference top-1 against proxy top-1, one point per architecture ranked, with the rank
/// correlations in the title. Written atomically.
pub fn fidelity_chart(path: &Path, report: &crate::fidelity::FidelityReport) -> Result<()> {
    let fail = plot_error(path);
    let points: Vec<(f64, f64)> = report
        .points
        .iter()
        .filter_map(|p| Some((p.proxy?, p.reference?)))
        .collect();
    let range = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if lo.is_finite() {
            let margin = ((hi - lo) * 0.08).max(0.01);
            (lo - margin)..(hi + margin)
        } else {
            0.0..1.0
        }
    };
    let x_range = range(&mut points.iter().map(|p| p.0));
    let y_range = range(&mut points.iter().map(|p| p.1));
    let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    let repeatability = match report.reference_repeatability_tau {
        Some(tau) => format!("; reference self-agreement {tau:.3}"),
        None => String::new(),
    };
    let proxy_seeds = match report.proxy_seeds {
        1 => String::new(),
        n => format!(" (mean of {n} proxy seeds)"),
    };
    let top_half = match report.top_half_kendall_tau {
        Some(tau) => format!(", best {}: tau {tau:.3}", report.top_half),
        None => String::new(),
    };
    let title = format!(
        "{} task: Kendall tau {}{proxy_seeds}, Spearman rho {} ({} architectures{top_half}{repeatability})",
        report.task.name(),
        show(report.kendall_tau),
        show(report.spearman_rho),
        report.ranked
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(x_range, y_range)
            .map_err(|e| fail(e.to_string()))?;
        let recipe = |r: &crate::fidelity::Recipe| {
            format!(
                "{} epoch(s) on {:.0}% of the training set",
                r.epochs,
                100.0 * r.data_fraction
            )
        };
        let reference_seeds = match report.reference_seeds {
            1 => String::new(),
            n => format!(", mean of {n} seeds"),
        };
        let proxy_seeds = match report.proxy_seeds {
            1 => String::new(),
            n => format!(", mean of {n} seeds"),
        };
        chart
            .configure_mesh()
            .x_desc(format!(
                "proxy validation top-1 ({}{proxy_seeds})",
                recipe(&report.proxy)
            ))
            .y_desc(format!(
                "reference validation top-1 ({}{reference_seeds})",
                recipe(&report.reference)
            ))
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 5, COLOURS[0].filled())),
            )
            .map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    Ok(eatnas_train::fs::write_atomic(path, svg.as_bytes())?)
}
