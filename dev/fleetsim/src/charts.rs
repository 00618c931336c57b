//! SVG charts of a benchmark report (`apollo-fleetsim charts`), drawn with plotters' SVG
//! backend (no fonts, no browser):
//!
//! - `memory-per-device.svg`: gateway RSS per device against fleet size;
//! - `rollout-progress.svg`: DeviceProcesses whose agent observed a new template against
//!   seconds since the patch, long poll and plain polling, for each fleet size;
//! - `conditional-get.svg`: conditional-GET requests per second of the gateway and of the bare
//!   hyper baseline measured in the same run.
//!
//! A chart whose data the report lacks (no throughput run, no rollout trace) is skipped.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::bench::BenchReport;

/// Why charts could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("the report has no fleet sizes")]
    Empty,
}

const SIZE: (u32, u32) = (720, 420);
const LONG_POLL: RGBColor = RGBColor(31, 119, 180);
const POLLING: RGBColor = RGBColor(255, 127, 14);
const BASELINE: RGBColor = RGBColor(127, 127, 127);

fn draw_err(path: &Path) -> impl Fn(String) -> ChartError + '_ {
    move |message| ChartError::Draw {
        path: path.to_path_buf(),
        message,
    }
}

/// Writes every chart the report has data for into `dir`; returns the files written.
pub fn render(report: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>, ChartError> {
    if report.sizes.is_empty() {
        return Err(ChartError::Empty);
    }
    let mut written = Vec::new();
    let path = dir.join("memory-per-device.svg");
    memory_per_device(report, &path).map_err(draw_err(&path))?;
    written.push(path);
    if report
        .sizes
        .iter()
        .any(|s| !s.rollout_long_poll_progress.is_empty() || !s.rollout_polling_progress.is_empty())
    {
        let path = dir.join("rollout-progress.svg");
        rollout_progress(report, &path).map_err(draw_err(&path))?;
        written.push(path);
    }
    if report.throughput.is_some() {
        let path = dir.join("conditional-get.svg");
        conditional_get(report, &path).map_err(draw_err(&path))?;
        written.push(path);
    }
    Ok(written)
}

fn memory_per_device(report: &BenchReport, path: &Path) -> Result<(), String> {
    // Sizes whose memory was not sampled (a phase that did not complete) have no point.
    let sampled = || {
        report
            .sizes
            .iter()
            .filter(|s| s.gateway_rss_bytes_per_device > 0.0)
    };
    let points: Vec<(f64, f64)> = sampled()
        .map(|s| (s.devices as f64, s.gateway_rss_bytes_per_device / 1024.0))
        .collect();
    // (RSS − baseline) / N, when the report measured the baseline.
    let over: Vec<(f64, f64)> = sampled()
        .filter(|s| s.gateway_baseline_rss_bytes > 0)
        .map(|s| {
            (
                s.devices as f64,
                s.gateway_bytes_per_device_over_baseline / 1024.0,
            )
        })
        .collect();
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points.iter().map(|p| p.1).fold(1.0, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Gateway memory per device", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x * 1.1, 0.0..max_y * 1.2)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("devices")
        .y_desc("RSS per device (KiB)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(points.clone(), LONG_POLL.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label("RSS / devices")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], LONG_POLL));
    chart
        .draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 4, LONG_POLL.filled())),
        )
        .map_err(|e| e.to_string())?;
    if !over.is_empty() {
        chart
            .draw_series(LineSeries::new(over.clone(), POLLING.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label("(RSS − RSS with 0 devices) / devices")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], POLLING));
        chart
            .draw_series(
                over.iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, POLLING.filled())),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    chart
        .draw_series(points.iter().map(|&(x, y)| {
            Text::new(
                format!("{y:.1} KiB"),
                (x, y + max_y * 0.06),
                ("sans-serif", 13),
            )
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// `color` for the largest fleet, paler for smaller ones, so sizes tell apart within a mode.
fn shade(color: RGBColor, index: usize, count: usize) -> RGBColor {
    let pale = (count - 1 - index.min(count - 1)) as f64 / count as f64 * 0.7;
    let mix = |c: u8| (c as f64 + (255.0 - c as f64) * pale).round() as u8;
    RGBColor(mix(color.0), mix(color.1), mix(color.2))
}

fn rollout_progress(report: &BenchReport, path: &Path) -> Result<(), String> {
    let count = report.sizes.len();
    let traces = report.sizes.iter().enumerate().flat_map(|(i, s)| {
        [
            (
                s.devices,
                "long poll",
                &s.rollout_long_poll_progress,
                shade(LONG_POLL, i, count),
            ),
            (
                s.devices,
                "polling",
                &s.rollout_polling_progress,
                shade(POLLING, i, count),
            ),
        ]
    });
    let traces: Vec<_> = traces.filter(|t| !t.2.is_empty()).collect();
    let max_x = traces
        .iter()
        .flat_map(|t| t.2.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let max_y = report.sizes.iter().map(|s| s.devices).max().unwrap_or(1) as f64;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Rollout: devices running the new spec", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x * 1.05, 0.0..max_y * 1.05)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since the template patch")
        .y_desc("devices observed")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (devices, mode, trace, color) in traces {
        // A step line: the count holds until the next change.
        let mut steps = Vec::with_capacity(trace.len() * 2);
        for (i, &(t, n)) in trace.iter().enumerate() {
            if i > 0 {
                steps.push((t, trace[i - 1].1 as f64));
            }
            steps.push((t, n as f64));
        }
        chart
            .draw_series(LineSeries::new(steps, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("{devices} devices, {mode}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn conditional_get(report: &BenchReport, path: &Path) -> Result<(), String> {
    let Some(t) = &report.throughput else {
        return Ok(());
    };
    let bars = [
        ("apollo-gateway", t.gateway.rps, LONG_POLL),
        ("bare hyper 304", t.baseline.rps, BASELINE),
    ];
    let max_y = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Conditional GET with HMAC: gateway at {:.0}% of the baseline",
                t.ratio * 100.0
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..2.0, 0.0..max_y * 1.2)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("requests per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, rps, color)) in bars.into_iter().enumerate() {
        let x = i as f64;
        chart
            .draw_series([Rectangle::new(
                [(x + 0.2, 0.0), (x + 0.8, rps)],
                color.filled(),
            )])
            .map_err(|e| e.to_string())?;
        chart
            .draw_series([Text::new(
                format!("{name}: {rps:.0}/s"),
                (x + 0.2, rps + max_y * 0.05),
                ("sans-serif", 14),
            )])
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{SizeResult, ThroughputResult};
    use crate::load::LoadResult;

    fn report() -> BenchReport {
        let size = |devices: usize, per_device: f64| SizeResult {
            devices,
            gateway_rss_bytes_per_device: per_device,
            gateway_bytes_per_device_over_baseline: per_device - 10_000.0,
            gateway_baseline_rss_bytes: 10_000 * 1000,
            rollout_long_poll_progress: vec![(0.0, 0), (0.4, devices / 2), (0.9, devices)],
            rollout_polling_progress: vec![(0.0, 0), (1.2, devices)],
            ..SizeResult::default()
        };
        BenchReport {
            cores: 2,
            heartbeat_seconds: 1.0,
            // The largest size's memory was not sampled (its connect phase ran out).
            sizes: vec![
                size(1000, 55_000.0),
                size(10_000, 38_000.0),
                SizeResult {
                    devices: 100_000,
                    ..SizeResult::default()
                },
            ],
            throughput: Some(ThroughputResult {
                gateway: LoadResult {
                    rps: 53_400.0,
                    ..LoadResult::default()
                },
                baseline: LoadResult {
                    rps: 66_300.0,
                    ..LoadResult::default()
                },
                ratio: 0.8,
                round_ratios: vec![0.8],
            }),
            agent_binary_bytes: None,
            memory_bytes: 0,
            started: String::new(),
            command: String::new(),
            api_server: String::new(),
            open_files: Default::default(),
            replicas: Vec::new(),
        }
    }

    #[test]
    fn draws_the_three_charts_from_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let files = render(&report(), dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "memory-per-device.svg",
                "rollout-progress.svg",
                "conditional-get.svg"
            ]
        );
        let svg = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        let memory = svg("memory-per-device.svg");
        assert!(memory.starts_with("<svg"), "{memory}");
        assert!(
            memory.contains("53.7 KiB") && memory.contains("37.1 KiB"),
            "{memory}"
        );
        assert!(
            !memory.contains("\n0.0 KiB"),
            "a point for the unsampled size"
        );
        assert!(
            !memory.contains("100000"),
            "the x axis ends at the sampled sizes"
        );
        let rollout = svg("rollout-progress.svg");
        for label in [
            "1000 devices, long poll",
            "1000 devices, polling",
            "10000 devices, long poll",
        ] {
            assert!(rollout.contains(label), "{label} missing");
        }
        let get = svg("conditional-get.svg");
        assert!(
            get.contains("80% of the baseline") && get.contains("66300/s"),
            "{get}"
        );
    }

    #[test]
    fn fleet_sizes_get_distinct_shades_the_largest_the_full_colour() {
        let shades: Vec<_> = (0..3).map(|i| shade(LONG_POLL, i, 3)).collect();
        assert_eq!(shades[2], LONG_POLL);
        assert!(shades[0] != shades[1] && shades[1] != shades[2]);
        // Paler means closer to white on every channel.
        assert!(shades[0].0 >= shades[1].0 && shades[1].0 >= shades[2].0);
        assert_eq!(shade(POLLING, 0, 1), POLLING);
    }

    #[test]
    fn a_report_without_throughput_or_traces_gets_the_memory_chart_only() {
        let mut r = report();
        r.throughput = None;
        for s in &mut r.sizes {
            s.rollout_long_poll_progress.clear();
            s.rollout_polling_progress.clear();
        }
        let dir = tempfile::tempdir().unwrap();
        let files = render(&r, dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        r.sizes.clear();
        assert!(matches!(render(&r, dir.path()), Err(ChartError::Empty)));
    }
}
