//! The SVG charts (plotters, SVG backend only: text is left to the viewer's fonts).

use std::path::Path;

use plotters::prelude::*;

use crate::CLIENTS;
use crate::parse::{AblationStep, Contention, OutageSecond, StackRun};

/// One colour per series, in order (colour-blind-safe, Okabe–Ito).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0, 0, 0),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
];

const FONT: &str = "sans-serif";

fn err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Requests per second of the four clients with 32 tasks, one group of bars per run, each bar
/// labelled with its per-round median ratio to bare.
pub(crate) fn stack_throughput(path: &Path, runs: &[StackRun]) -> Result<(), String> {
    let e = err(path);
    let mode = "32 tasks";
    let top = runs
        .iter()
        .flat_map(|r| r.rows.iter())
        .filter(|r| r.mode == mode)
        .map(|r| r.rps)
        .fold(0.0, f64::max)
        * 1.2;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let groups = runs.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Loopback throughput, 32 concurrent requests (stack bench)",
            (FONT, 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups, 0f64..top.max(1.0))
        .map_err(&e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_labels(runs.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let k = (x - 0.5).round();
            if (x - 0.5 - k).abs() < 1e-6 && k >= 0.0 {
                format!("run {}", k + 1.0)
            } else {
                String::new()
            }
        })
        .y_desc("requests/s")
        .draw()
        .map_err(&e)?;
    let width = 0.8 / CLIENTS.len() as f64;
    for (c, (client, label)) in CLIENTS.iter().enumerate() {
        let colour = COLOURS[c];
        let mut bars = Vec::new();
        let mut notes = Vec::new();
        for (r, run) in runs.iter().enumerate() {
            let Some(row) = run.row(mode, client) else {
                continue;
            };
            let x0 = r as f64 + 0.1 + c as f64 * width;
            bars.push(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.9, row.rps)],
                colour.filled(),
            ));
            let note = match run.ratio(mode, client) {
                Some(ratio) => format!("{:.1} %", ratio.median),
                None => "100 %".to_owned(),
            };
            notes.push(Text::new(
                note,
                (x0, row.rps + top * 0.02),
                (FONT, 12).into_font(),
            ));
        }
        chart
            .draw_series(bars)
            .map_err(&e)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        chart.draw_series(notes).map_err(&e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// Instructions per request over bare, one layer added at a time.
pub(crate) fn ablation(path: &Path, steps: &[AblationStep]) -> Result<(), String> {
    let e = err(path);
    let bare = steps.first().map_or(0.0, AblationStep::per_request);
    let over: Vec<f64> = steps
        .iter()
        .map(|s| (s.per_request() - bare) / 1000.0)
        .collect();
    let right = over.iter().copied().fold(1.0, f64::max) * 2.2;
    let left = over.iter().copied().fold(0.0, f64::min).min(0.0) * 1.2;
    let n = steps.len() as f64;
    let root = SVGBackend::new(path, (900, 60 + 40 * steps.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Instructions per request over bare hyper-util, one layer added at a time (callgrind)",
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(10)
        .build_cartesian_2d(left..right, -0.5f64..n - 0.5)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_labels(0)
        .x_desc("thousand instructions per request over bare (client and server)")
        .draw()
        .map_err(&e)?;
    let y = |i: usize| n - 1.0 - i as f64;
    chart
        .draw_series(over.iter().enumerate().map(|(i, v)| {
            Rectangle::new([(0.0, y(i) - 0.35), (*v, y(i) + 0.35)], COLOURS[2].filled())
        }))
        .map_err(&e)?;
    chart
        .draw_series(steps.iter().zip(&over).enumerate().map(|(i, (step, v))| {
            Text::new(
                format!("{}  {:+.2} k", step.name, v),
                (v.max(0.0) + right * 0.01, y(i) + 0.15),
                (FONT, 13).into_font(),
            )
        }))
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// The contention simulation: total calls and time to finish per client count, one line per
/// jitter mode.
pub(crate) fn contention(path: &Path, rows: &[Contention]) -> Result<(), String> {
    let e = err(path);
    let mut modes: Vec<&str> = Vec::new();
    for row in rows {
        if !modes.contains(&row.jitter.as_str()) {
            modes.push(&row.jitter);
        }
    }
    let max_clients = rows.iter().map(|r| r.clients).max().unwrap_or(1) as f64;
    let max_calls = rows.iter().map(|r| r.calls).fold(1.0, f64::max);
    let min_time = rows.iter().map(|r| r.seconds).fold(f64::MAX, f64::min);
    let max_time = rows.iter().map(|r| r.seconds).fold(0.0, f64::max);
    let root = SVGBackend::new(path, (1000, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let root = root
        .titled(
            "Clients contending for one resource: one conflicting write each (virtual time)",
            (FONT, 18),
        )
        .map_err(&e)?;
    let (left, right) = root.split_horizontally(500);
    let series = |jitter: &str, value: &dyn Fn(&Contention) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.jitter == jitter)
            .map(|r| (f64::from(r.clients), value(r)))
            .collect()
    };
    {
        let mut chart = ChartBuilder::on(&left)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_clients * 1.05, 0f64..max_calls * 1.1)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("clients")
            .y_desc("total calls")
            .draw()
            .map_err(&e)?;
        for (i, mode) in modes.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    series(mode, &|r| r.calls),
                    colour.stroke_width(2),
                ))
                .map_err(&e)?
                .label(format!("{mode} jitter"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(&e)?;
    }
    {
        let mut chart = ChartBuilder::on(&right)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0f64..max_clients * 1.05,
                (min_time.min(max_time) * 0.8..max_time * 1.25).log_scale(),
            )
            .map_err(&e)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v}"))
            .x_desc("clients")
            .y_desc("time until every client succeeded, s (log)")
            .draw()
            .map_err(&e)?;
        for (i, mode) in modes.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    series(mode, &|r| r.seconds),
                    colour.stroke_width(2),
                ))
                .map_err(&e)?;
        }
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// The outage simulation at one capacity: the load offered and the load sent to the upstream per
/// second, with no budget, with the budget, with the budget and the breaker (the breaker alone
/// sends what budget and breaker send, and is left out).
pub(crate) fn outage(path: &Path, series: &[OutageSecond], capacity: u32) -> Result<(), String> {
    let e = err(path);
    let at: Vec<&OutageSecond> = series.iter().filter(|s| s.capacity == capacity).collect();
    let guards: Vec<&str> = ["none", "budget", "budget + breaker"]
        .into_iter()
        .filter(|g| at.iter().any(|s| s.guard == *g))
        .collect();
    let last = at.iter().map(|s| s.second).max().unwrap_or(1) as f64 + 1.0;
    let top = at.iter().map(|s| s.sent.max(s.offered)).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Outage for 30 s, then capacity {capacity}/s: load sent to the upstream per second"
            ),
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last, 0f64..top)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("second (virtual time)")
        .y_desc("requests/s")
        .draw()
        .map_err(&e)?;
    // The outage, shaded.
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (30.0, top)],
            RGBColor(200, 200, 200).mix(0.3).filled(),
        )))
        .map_err(&e)?;
    let points = |guard: &str, value: &dyn Fn(&OutageSecond) -> f64| -> Vec<(f64, f64)> {
        // Each second drawn as a step over [second, second + 1).
        at.iter()
            .filter(|s| s.guard == guard)
            .flat_map(|s| {
                let v = value(s);
                [(f64::from(s.second), v), (f64::from(s.second) + 1.0, v)]
            })
            .collect()
    };
    if let Some(first) = guards.first() {
        chart
            .draw_series(LineSeries::new(
                points(first, &|s| s.offered),
                COLOURS[0].stroke_width(2),
            ))
            .map_err(&e)?
            .label("offered")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], COLOURS[0]));
    }
    for (i, guard) in guards.iter().enumerate() {
        let colour = COLOURS[(i + 1) % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                points(guard, &|s| s.sent),
                colour.stroke_width(2),
            ))
            .map_err(&e)?
            .label(match *guard {
                "none" => "sent: retries, no budget".to_owned(),
                other => format!("sent: retries + {other}"),
            })
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}
