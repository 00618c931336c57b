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

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1048576.0)
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.2}x"))
}

/// The `i`-th write floor (kind and concurrency as [`crate::bench::run_size`] measures them).
fn floor_cell(r: &SizeResult, i: usize) -> String {
    r.write_floor.get(i).map_or_else(
        || "n/a".into(),
        |f| format!("{:.0} ({})", f.writes_per_second, f.concurrency),
    )
}

/// The report as a plain-text table.
pub fn render(report: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Apollo fleet benchmark: {} cores, {:.1} GiB, heartbeat {:.1}s, stale window {:.1}s",
        report.cores,
        report.memory_bytes as f64 / (1u64 << 30) as f64,
        report.heartbeat_seconds,
        report.heartbeat_seconds * 3.0
    );
    if !report.started.is_empty() {
        let _ = writeln!(out, "started {}: {}", report.started, report.command);
    }
    if !report.api_server.is_empty() {
        let _ = writeln!(out, "API server: {}", report.api_server);
    }
    let o = &report.open_files;
    if o.soft > 0 {
        let _ = writeln!(
            out,
            "open files (simulator and the gateway it starts): {} (was {}; hard {}){}",
            o.soft,
            o.soft_before,
            o.hard,
            o.note
                .as_deref()
                .map_or(String::new(), |n| format!("; {n}"))
        );
    }
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
        let rounds: Vec<String> = t
            .round_ratios
            .iter()
            .map(|r| format!("{:.0}%", r * 100.0))
            .collect();
        let _ = writeln!(
            out,
            "  gateway / baseline = {:.0}% (median rounds; each round: {})",
            t.ratio * 100.0,
            rounds.join(", ")
        );
    }
    let _ = writeln!(out, "\nPer fleet size:");
    let rows: [(&str, Cell); 36] = [
        ("write floor W, patches/s (in flight)", |r| floor_cell(r, 0)),
        ("… at the gateway's status workers", |r| floor_cell(r, 1)),
        ("apply floor A, applies/s (in flight)", |r| floor_cell(r, 2)),
        ("controller fan-out (s)", |r| opt(r.fanout_seconds)),
        ("… DeviceProcesses reached", |r| {
            r.fanout_reached.to_string()
        }),
        ("… over the floor N/W", |r| ratio(r.fanout_over_floor)),
        ("controller writes in fan-out", |r| {
            r.controller_writes_fanout.to_string()
        }),
        ("all connected + observed (s)", |r| opt(r.connect_seconds)),
        ("… devices reached", |r| r.connect_reached.to_string()),
        ("agent source addresses", |r| r.source_addresses.to_string()),
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
        ("gateway RSS, 0 devices (MiB)", |r| {
            mib(r.gateway_baseline_rss_bytes)
        }),
        ("gateway RSS at N (MiB)", |r| mib(r.gateway_rss_bytes)),
        ("controller RSS at N (MiB)", |r| mib(r.controller_rss_bytes)),
        ("gateway (RSS − baseline) / N (B)", |r| {
            format!("{:.0}", r.gateway_bytes_per_device_over_baseline)
        }),
        ("gateway RSS / N (B)", |r| {
            format!("{:.0}", r.gateway_rss_bytes_per_device)
        }),
        ("gateway CPU ms / 1000 heartbeats", |r| {
            format!("{:.1}", r.gateway_cpu_ms_per_1000_heartbeats)
        }),
        ("simulator RSS (MiB) / CPU %", |r| {
            format!(
                "{} / {:.0}",
                mib(r.simulator_rss_bytes),
                r.simulator_cpu_percent
            )
        }),
        ("rollout, long poll (s)", |r| {
            opt(r.rollout_long_poll_seconds)
        }),
        ("… over the floor 2N/W", |r| {
            ratio(r.rollout_long_poll_over_floor)
        }),
        ("… over the floor N/A + N/W", |r| {
            ratio(r.rollout_long_poll_over_apply_floor)
        }),
        ("… every spec written after (s)", |r| {
            opt(r.rollout_long_poll_specs_written_seconds)
        }),
        ("… CPU s: gateway / controller / sim", |r| {
            r.rollout_long_poll_cpu_seconds.map_or("n/a".into(), |c| {
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    c.gateway, c.controller, c.simulator
                )
            })
        }),
        ("rollout, polling (s)", |r| opt(r.rollout_polling_seconds)),
        ("… over the floor 2N/W", |r| {
            ratio(r.rollout_polling_over_floor)
        }),
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
        ("scenario wall time (s)", |r| {
            format!("{:.0}", r.wall_seconds)
        }),
        ("errors", |r| r.errors.len().to_string()),
    ];
    let _ = write!(out, "  {:<38}", "devices");
    for r in &report.sizes {
        let _ = write!(out, " {:>14}", r.devices);
    }
    let _ = writeln!(out);
    for (label, cell) in rows {
        let _ = write!(out, "  {label:<38}");
        for r in &report.sizes {
            let _ = write!(out, " {:>14}", cell(r));
        }
        let _ = writeln!(out);
    }
    for r in &report.sizes {
        for e in &r.errors {
            let _ = writeln!(out, "  error ({} devices): {e}", r.devices);
        }
    }
    if !report.replicas.is_empty() {
        let _ = writeln!(
            out,
            "\nGateway replicas (same fleet, agents list every replica):"
        );
        for run in &report.replicas {
            let _ = writeln!(
                out,
                "  {} replica(s), {} devices: connected + observed in {} s ({} reached); window {:.1} s, {} heartbeats",
                run.replicas,
                run.devices,
                opt(run.connect_seconds),
                run.connect_reached,
                run.steady_window_seconds,
                run.steady_reports
            );
            for s in &run.per_replica {
                let _ = writeln!(
                    out,
                    "    {:<6} RSS {:>8} MiB  CPU {:>5.1}% of a core  {:>7.1} ms / 1000 fleet heartbeats  owns {:>7}  long polls {:>7}",
                    s.id,
                    mib(s.rss_bytes),
                    s.cpu_percent,
                    s.cpu_ms_per_1000_heartbeats,
                    s.owned_devices,
                    s.long_polls_held
                );
            }
            if let Some(f) = &run.failover {
                let _ = writeln!(
                    out,
                    "    SIGKILL {} (owned {}): survivors own every device after {} s (lease {:.0} s); {} flaps",
                    f.killed,
                    f.owned_by_killed,
                    opt(f.seconds_to_full_ownership),
                    f.lease_seconds,
                    f.flaps
                );
            }
            for e in &run.errors {
                let _ = writeln!(out, "    error: {e}");
            }
        }
    }
    if let Some(bytes) = report.agent_binary_bytes {
        let _ = writeln!(out, "\nagent binary: {:.2} MiB", bytes as f64 / 1048576.0);
    }
    out
}
