//! The metric names `k8s/monitoring` (alert rules and Grafana dashboard) refers to, and the
//! names a `/metrics` scrape exposes, for checking one against the other.

use std::collections::BTreeSet;

use super::workspace;

/// The monitoring files that name metrics.
pub const FILES: [&str; 2] = [
    "k8s/monitoring/prometheusrule.yaml",
    "k8s/monitoring/dashboard.json",
];

/// Every `apollo_*` metric name in `text` (PromQL, annotations, comments: a name mentioned
/// anywhere must exist).
pub fn names_in(text: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("apollo_") {
        // A match inside a longer identifier is not a name.
        let inside = rest[..i].chars().next_back().is_some_and(is_name);
        let tail = &rest[i..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        if !inside && end > "apollo_".len() {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

/// Names referred to by the rules and the dashboard.
pub fn referenced() -> BTreeSet<String> {
    FILES
        .iter()
        .flat_map(|f| {
            let text =
                std::fs::read_to_string(workspace().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            names_in(&text)
        })
        .collect()
}

/// Names a Prometheus server stores from this scrape: each sample's name, and for every
/// `# TYPE` the series names of its type (an empty label family shows only its `# TYPE`).
pub fn exposed(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut parts = decl.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            if end > 0 {
                names.insert(line[..end].to_owned());
            }
        }
    }
    names
}
