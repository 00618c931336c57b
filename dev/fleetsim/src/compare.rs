//! Per-row deltas between two bench reports (`apollo-fleetsim compare OLD.json NEW.json`, or
//! `bench --compare OLD.json`): every number of the JSON, matched by fleet size and replica
//! count, with the old value, the new one, the difference and the relative change. Rows only
//! one side has are listed with `-` on the other, so reports of different versions compare.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::bench::BenchReport;

/// Numbers of one report by row name, in a stable order.
pub type Rows = BTreeMap<String, f64>;

/// Adds every number under `value` to `rows`, keyed `prefix.field`; arrays of numbers or of
/// `[label, number]` pairs (the paced rollouts) become one row per label; progress traces
/// (arrays of points) are left out.
fn flatten(prefix: &str, value: &Value, rows: &mut Rows) {
    match value {
        Value::Number(n) => {
            if let Some(v) = n.as_f64() {
                rows.insert(prefix.to_owned(), v);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if k.ends_with("_progress") {
                    continue;
                }
                flatten(&format!("{prefix}.{k}"), v, rows);
            }
        }
        Value::Array(items) => {
            for item in items {
                if let Value::Array(pair) = item
                    && let [Value::String(label), v] = pair.as_slice()
                {
                    flatten(&format!("{prefix}[{label}]"), v, rows);
                }
            }
            if prefix.ends_with("errors") {
                rows.insert(prefix.to_owned(), items.len() as f64);
            }
        }
        _ => {}
    }
}

/// Every comparable number of `report`.
pub fn rows(report: &BenchReport) -> Rows {
    let mut rows = Rows::new();
    if let Ok(t) = serde_json::to_value(&report.throughput) {
        for key in ["ratio"] {
            if let Some(v) = t.get(key) {
                flatten(&format!("throughput.{key}"), v, &mut rows);
            }
        }
        for side in ["gateway", "baseline"] {
            for key in ["rps", "p50_us", "p99_us", "errors"] {
                if let Some(v) = t.get(side).and_then(|s| s.get(key)) {
                    flatten(&format!("throughput.{side}.{key}"), v, &mut rows);
                }
            }
        }
    }
    for size in &report.sizes {
        if let Ok(mut v) = serde_json::to_value(size) {
            // The write floor as one row per concurrency.
            if let Some(Value::Array(floors)) = v.get("write_floor").cloned() {
                for f in floors {
                    if let (Some(c), Some(w)) = (f.get("concurrency"), f.get("writes_per_second")) {
                        let kind = f
                            .get("write")
                            .and_then(Value::as_str)
                            .unwrap_or("status-patch");
                        flatten(
                            &format!("{}.write_floor[{kind}, {c} in flight]", size.devices),
                            w,
                            &mut rows,
                        );
                    }
                }
            }
            if let Value::Object(map) = &mut v {
                map.remove("write_floor");
                map.remove("devices");
            }
            flatten(&size.devices.to_string(), &v, &mut rows);
        }
    }
    for run in &report.replicas {
        let prefix = format!("replicas-{}x{}", run.replicas, run.devices);
        for (key, v) in [
            ("connect_seconds", run.connect_seconds),
            (
                "failover_seconds",
                run.failover
                    .as_ref()
                    .and_then(|f| f.seconds_to_full_ownership),
            ),
            (
                "failover_flaps",
                run.failover.as_ref().map(|f| f.flaps as f64),
            ),
        ] {
            if let Some(v) = v {
                rows.insert(format!("{prefix}.{key}"), v);
            }
        }
        for s in &run.per_replica {
            rows.insert(format!("{prefix}.{}.rss_bytes", s.id), s.rss_bytes as f64);
            rows.insert(format!("{prefix}.{}.cpu_percent", s.id), s.cpu_percent);
        }
    }
    rows
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The comparison table of `old` and `new`.
pub fn render(old: &BenchReport, new: &BenchReport) -> String {
    let (a, b) = (rows(old), rows(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(10).max(10);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "old: {} ({}), new: {} ({})",
        if old.started.is_empty() {
            "?"
        } else {
            &old.started
        },
        old.api_server,
        if new.started.is_empty() {
            "?"
        } else {
            &new.started
        },
        new.api_server
    );
    let _ = writeln!(
        out,
        "{:<width$} {:>14} {:>14} {:>14} {:>9}",
        "row", "old", "new", "delta", "change"
    );
    for key in keys {
        let (o, n) = (a.get(key), b.get(key));
        let (delta, change) = match (o, n) {
            (Some(o), Some(n)) => (
                num(n - o),
                if *o != 0.0 {
                    format!("{:+.1}%", (n - o) / o.abs() * 100.0)
                } else {
                    "-".into()
                },
            ),
            _ => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{key:<width$} {:>14} {:>14} {:>14} {:>9}",
            o.map_or("-".into(), |v| num(*v)),
            n.map_or("-".into(), |v| num(*v)),
            delta,
            change
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::SizeResult;

    fn report(fanout: f64, paced: Option<f64>) -> BenchReport {
        BenchReport {
            cores: 2,
            memory_bytes: 0,
            started: String::new(),
            command: String::new(),
            api_server: "dev".into(),
            open_files: Default::default(),
            heartbeat_seconds: 1.0,
            sizes: vec![SizeResult {
                devices: 10,
                fanout_seconds: Some(fanout),
                rollout_paced_seconds: vec![("1%".into(), paced)],
                rollout_long_poll_progress: vec![(0.1, 3)],
                ..SizeResult::default()
            }],
            throughput: None,
            replicas: Vec::new(),
            agent_binary_bytes: None,
        }
    }

    #[test]
    fn deltas_per_row_and_missing_rows() {
        let text = render(&report(2.0, Some(1.0)), &report(1.0, None));
        let line = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("no row {key} in\n{text}"))
                .to_owned()
        };
        let fanout = line("10.fanout_seconds");
        assert!(fanout.contains("-50.0%"), "{fanout}");
        let paced = line("10.rollout_paced_seconds[1%]");
        assert!(paced.trim_end().ends_with('-'), "{paced}");
        assert!(!text.contains("progress"), "{text}");
    }
}
