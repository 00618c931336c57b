//! The benchmark report as a table (stdout) and JSON (file).

use std::fmt::Write;

use crate::bench::{BenchReport, SizeResult};

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.2}"))
}

/// Seconds of the `i`-th paced rollout ([`crate::bench::PACED`]).
fn paced(r: &SizeResult, i: usize) -> String {
    opt(r.rollout_paced_seconds.get(i).and_then(|(_, s)| *s))
}

/// Renders one cell of a per-size row.
type Cell = fn(&SizeResult) -> String;

/// The report as a plain-text table.
pub fn render(report: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Apollo fleet benchmark: {} cores, heartbeat {:.1}s, stale window {:.1}s",
        report.cores,
        report.heartbeat_seconds,
        report.heartbeat_seconds * 3.0
    );
    if let Some(t) = &report.throughput {
        let _ = writeln!(out, "\nConditional GET (HMAC on), same client, same run:");
        let _ = writeln!(
            out,
            "  {:<22} {:>10} {:>10} {:>10} {:>8}",
            "server", "req/s", "p50 µs", "p99 µs", "errors"
        );
        for (name, r) in [
            ("apollo-gateway", &t.gateway),
            ("bare hyper 304", &t.baseline),
        ] {
            let _ = writeln!(
                out,
                "  {:<22} {:>10.0} {:>10} {:>10} {:>8}",
                name, r.rps, r.p50_us, r.p99_us, r.errors
            );
        }
        let _ = writeln!(out, "  gateway / baseline = {:.0}%", t.ratio * 100.0);
    }
    let _ = writeln!(out, "\nPer fleet size:");
    let rows: [(&str, Cell); 19] = [
        ("controller fan-out (s)", |r| {
            format!("{:.2}", r.fanout_seconds)
        }),
        ("controller writes in fan-out", |r| {
            r.controller_writes_fanout.to_string()
        }),
        ("all connected + observed (s)", |r| {
            format!("{:.2}", r.connect_seconds)
        }),
        ("steady window (s)", |r| {
            format!("{:.1}", r.steady_window_seconds)
        }),
        ("heartbeats in window", |r| r.steady_reports.to_string()),
        ("status writes in window", |r| {
            r.steady_status_writes.to_string()
        }),
        ("controller writes in window", |r| {
            r.steady_controller_writes.to_string()
        }),
        ("gateway lists / watches", |r| {
            format!("{} / {}", r.gateway_lists, r.gateway_watches)
        }),
        ("gateway RSS (MiB)", |r| {
            format!("{:.1}", r.gateway_rss_bytes as f64 / 1048576.0)
        }),
        ("gateway bytes per device", |r| {
            format!("{:.0}", r.gateway_rss_bytes_per_device)
        }),
        ("gateway CPU ms / 1000 heartbeats", |r| {
            format!("{:.1}", r.gateway_cpu_ms_per_1000_heartbeats)
        }),
        ("rollout, long poll (s)", |r| {
            opt(r.rollout_long_poll_seconds)
        }),
        ("rollout, polling (s)", |r| opt(r.rollout_polling_seconds)),
        ("rollout, maxUnavailable 1% (s)", |r| paced(r, 0)),
        ("rollout, maxUnavailable 10% (s)", |r| paced(r, 1)),
        ("rollout, maxUnavailable 100% (s)", |r| paced(r, 2)),
        ("stale devices", |r| r.stale_devices.to_string()),
        ("agent stop → all stale (s) / window", |r| {
            format!(
                "{} / {:.1}",
                opt(r.stale_flip_max_seconds),
                r.stale_window_seconds
            )
        }),
        ("errors", |r| r.errors.len().to_string()),
    ];
    let _ = write!(out, "  {:<34}", "devices");
    for r in &report.sizes {
        let _ = write!(out, " {:>12}", r.devices);
    }
    let _ = writeln!(out);
    for (label, cell) in rows {
        let _ = write!(out, "  {label:<34}");
        for r in &report.sizes {
            let _ = write!(out, " {:>12}", cell(r));
        }
        let _ = writeln!(out);
    }
    for r in &report.sizes {
        for e in &r.errors {
            let _ = writeln!(out, "  error ({} devices): {e}", r.devices);
        }
    }
    if let Some(bytes) = report.agent_binary_bytes {
        let _ = writeln!(out, "\nagent binary: {:.2} MiB", bytes as f64 / 1048576.0);
    }
    out
}
