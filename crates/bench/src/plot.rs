//! SVG plots (plotters, SVG backend only: no fonts or system libraries):
//! downtime against memory size per strategy, and one bar chart of ratios
//! per benchmark.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::report::{Benchmark, Status};

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    path: PathBuf,
    message: String,
}

fn err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError {
        path: path.to_path_buf(),
        message,
    }
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One line of the downtime plot.
#[derive(Debug)]
pub struct Series {
    /// Legend.
    pub name: String,
    /// (MiB, median ms, min ms, max ms).
    pub points: Vec<(f64, f64, f64, f64)>,
    /// Drawn dashed-looking (thin, with hollow markers).
    pub secondary: bool,
}

/// Draws downtime (ms) against memory (MiB, log scale) into `path`.
pub fn downtime(path: &Path, title: &str, series: &[Series]) -> Result<(), PlotError> {
    let e = err(path);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.3))
        .collect();
    if xs.is_empty() {
        return Err(e("no points".into()));
    }
    // x: log2 of the size, so that 16, 64, 256, 1024 are evenly spaced
    // and labelled exactly; y: log scale, so that ~100 ms and ~10 s both
    // show.
    let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min).log2() - 0.5;
    let x_max = xs.iter().copied().fold(0.0, f64::max).log2() + 0.5;
    let lows: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.2))
        .filter(|&y| y > 0.0)
        .collect();
    let y_min = lows.iter().copied().fold(f64::INFINITY, f64::min).max(1.0) / 1.5;
    // Headroom at the top for the legend.
    let y_max = ys.iter().copied().fold(0.0, f64::max) * 4.0 + 1.0;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x_min..x_max, (y_min..y_max).log_scale())
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("workload memory (MiB)")
        .y_desc("ms (log scale)")
        .x_labels(((x_max - x_min).ceil() as usize + 1).max(2))
        .x_label_formatter(&|x| {
            let whole = x.round();
            if (x - whole).abs() < 0.01 && (0.0..40.0).contains(&whole) {
                format!("{:.0}", whole.exp2())
            } else {
                String::new()
            }
        })
        .y_labels(12)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let width = if s.secondary { 1 } else { 2 };
        let line = s.points.iter().map(|p| (p.0.log2(), p.1));
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(width)))
            .map_err(|x| e(x.to_string()))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        let filled = !s.secondary;
        chart
            .draw_series(s.points.iter().map(|p| {
                let style = if filled {
                    colour.filled()
                } else {
                    colour.stroke_width(1)
                };
                Circle::new((p.0.log2(), p.1), 4, style)
            }))
            .map_err(|x| e(x.to_string()))?;
        chart
            .draw_series(s.points.iter().map(|p| {
                ErrorBar::new_vertical(p.0.log2(), p.2, p.1, p.3, colour.stroke_width(1), 6)
            }))
            .map_err(|x| e(x.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(())
}

/// Draws the median ratio (bar) with its min–max (whisker) of every
/// compared case of `bench` into `path`, with a line at 1.0. Returns false
/// (and draws nothing) when no case has a ratio.
pub fn ratios(path: &Path, bench: &Benchmark) -> Result<bool, PlotError> {
    let e = err(path);
    let bars: Vec<(String, f64, f64, f64)> = bench
        .cases
        .iter()
        .filter(|c| c.status == Status::Ok)
        .filter_map(|c| {
            let cmp = c.comparison.as_ref()?;
            let r = cmp.ratio?;
            Some((c.label.clone(), r.median, r.min, r.max))
        })
        .collect();
    if bars.is_empty() {
        return Ok(false);
    }
    let sides: Vec<(&str, &str)> = bench
        .cases
        .iter()
        .filter_map(|c| c.comparison.as_ref().map(|c| (c.a.as_str(), c.b.as_str())))
        .collect();
    let caption = match sides.first() {
        Some((a, b)) if sides.iter().all(|s| s == &(*a, *b)) => {
            format!("{}: {a} / {b}", bench.name)
        }
        _ => format!("{}: A / B per case (see results.md)", bench.name),
    };
    let y_max = bars.iter().map(|b| b.3).fold(1.0, f64::max) * 1.15;
    let n = bars.len();
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..y_max)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.max(2))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() > 0.01 || i < 0.0 {
                return String::new();
            }
            labels.get(i as usize).cloned().unwrap_or_default()
        })
        .y_desc("ratio A / B (median, min–max)")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, bar)| {
            let x = i as f64;
            Rectangle::new(
                [(x - 0.3, 0.0), (x + 0.3, bar.1)],
                COLOURS[0].mix(0.7).filled(),
            )
        }))
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .map(|(i, bar)| ErrorBar::new_vertical(i as f64, bar.2, bar.1, bar.3, BLACK, 10)),
        )
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            [(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
            RED.stroke_width(1),
        ))
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(true)
}
