//! `k8s/monitoring` is well formed: the Grafana dashboard's JSON structure and queries, the
//! dashboard ConfigMap generated from that same file for the Grafana sidecar, and every alert
//! with its annotations, a runbook section in docs/OPERATIONS.md and promtool tests that make
//! it fire and not fire. (promtool itself runs in `make monitoring-check`; that the metric
//! names exist in the binaries is checked against a real run in `fast_demo.rs`.)

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{monitoring, workspace};
use serde_json::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("k8s/monitoring/dashboard.json")).expect("dashboard.json is JSON")
}

/// Round and curly brackets balance and quotes close (a cheap PromQL sanity check).
fn balanced(expr: &str) -> bool {
    let mut stack = Vec::new();
    let mut quoted = false;
    for c in expr.chars() {
        match (quoted, c) {
            (_, '"') => quoted = !quoted,
            (true, _) => {}
            (false, '(' | '{' | '[') => stack.push(c),
            (false, ')') if stack.pop() != Some('(') => return false,
            (false, '}') if stack.pop() != Some('{') => return false,
            (false, ']') if stack.pop() != Some('[') => return false,
            _ => {}
        }
    }
    stack.is_empty() && !quoted
}

#[test]
fn dashboard_structure_and_queries() {
    let d = dashboard();
    assert_eq!(d["uid"], "apollo-deviceprocess");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus datasource variable: {vars:?}"
    );
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut rows = Vec::new();
    let mut cells: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut exprs = Vec::new();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().expect("x"),
            g["y"].as_u64().expect("y"),
            g["w"].as_u64().expect("w"),
            g["h"].as_u64().expect("h"),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "panel {id} gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), id) {
                    panic!("panels {other} and {id} overlap at ({cx}, {cy})");
                }
            }
        }
        let title = p["title"].as_str().expect("title");
        if p["type"] == "row" {
            rows.push(title.to_owned());
            continue;
        }
        assert!(
            ["timeseries", "stat", "gauge", "table", "bargauge"]
                .contains(&p["type"].as_str().unwrap_or("")),
            "panel {title}: type {}",
            p["type"]
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {title}");
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "panel {title} has no description"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId twice"
            );
            let expr = t["expr"].as_str().expect("expr");
            assert!(balanced(expr), "panel {title}: unbalanced {expr}");
            assert!(
                !monitoring::names_in(expr).is_empty(),
                "panel {title}: {expr} names no apollo_* metric"
            );
            exprs.push(expr.to_owned());
        }
    }
    assert_eq!(rows, ["Fleet", "Gateway", "Controller", "Rollout"]);
    // What the operations pack promises to show.
    let all = exprs.join("\n");
    for needle in [
        "state=\"connected\"",
        "state=\"stale\"",
        "state=\"observed\"",
        "apollo_gateway_http_requests_total",
        "apollo_gateway_desired_not_modified_ratio",
        "apollo_gateway_long_polls_held",
        "apollo_gateway_auth_failures_total",
        "apollo_gateway_status_writes_total",
        "apollo_gateway_status_write_queue",
        "apollo_gateway_events_total",
        "result=\"fenced\"",
        "apollo_gateway_members",
        "apollo_gateway_owned_devices",
        "apollo_gateway_lease_renewals_total",
        "apollo_gateway_lease_held",
        "apollo_controller_reconciles_total",
        "apollo_controller_reconcile_errors_total",
        "apollo_controller_writes_total",
        "apollo_controller_rollout_stalled",
    ] {
        assert!(all.contains(needle), "the dashboard does not show {needle}");
    }
}

#[test]
fn dashboard_configmap_is_generated_from_the_json() {
    let k = yaml("k8s/monitoring/kustomization.yaml");
    assert_eq!(k["kind"], "Component");
    let gens = k["configMapGenerator"]
        .as_array()
        .expect("configMapGenerator");
    let cm = gens
        .iter()
        .find(|g| g["name"] == "apollo-grafana-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(cm["files"][0], "apollo.json=dashboard.json");
    assert_eq!(cm["options"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["options"]["disableNameSuffixHash"], true);
    // The default install does not need the Prometheus Operator.
    let base = yaml("k8s/kustomization.yaml");
    let resources = base["resources"].as_array().expect("resources");
    assert!(
        resources
            .iter()
            .all(|r| !r.as_str().unwrap_or("").contains("monitoring")),
        "{resources:?}"
    );
    let monitors: Vec<Value> =
        serde_saphyr::from_multiple(&read("k8s/monitoring/podmonitors.yaml")).expect("YAML");
    let ports: Vec<(&str, &str)> = monitors
        .iter()
        .map(|m| {
            (
                m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
                    .as_str()
                    .expect("selector"),
                m["spec"]["podMetricsEndpoints"][0]["port"]
                    .as_str()
                    .expect("port"),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("apollo-deviceprocess-controller", "metrics"),
            ("apollo-deviceprocess-gateway", "metrics")
        ]
    );
    // The port named `metrics` exists on both Deployments.
    for file in [
        "k8s/controller/deployment.yaml",
        "k8s/gateway/deployment.yaml",
    ] {
        let d = yaml(file);
        let ports = &d["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert!(
            ports
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "metrics")),
            "{file}: no port named metrics"
        );
    }
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_is_documented_and_tested_both_ways() {
    let rule = yaml("k8s/monitoring/prometheusrule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    let docs = read("docs/OPERATIONS.md");
    let anchors: BTreeSet<String> = docs
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let tests = yaml("k8s/monitoring/tests/apollo.test.yaml");
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().expect("alert_rule_test") {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fires.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    let mut alerts = Vec::new();
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().expect("only alerting rules").to_owned();
            let a = &r["annotations"];
            for key in ["summary", "description", "runbook_url"] {
                assert!(
                    a[key].as_str().is_some_and(|s| s.len() > 10),
                    "{name}: no {key}"
                );
            }
            assert!(
                ["critical", "warning"].contains(&r["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity"
            );
            assert!(balanced(r["expr"].as_str().expect("expr")), "{name}");
            let url = a["runbook_url"].as_str().unwrap_or("");
            let (page, section) = url.split_once('#').expect("runbook_url has an anchor");
            assert!(page.ends_with("/docs/OPERATIONS.md"), "{name}: {url}");
            assert!(
                anchors.contains(section),
                "{name}: docs/OPERATIONS.md has no section #{section}"
            );
            assert!(
                fires.contains(&name),
                "{name}: no promtool test makes it fire"
            );
            assert!(
                quiet.contains(&name),
                "{name}: no promtool test where it stays quiet"
            );
            alerts.push(name);
        }
    }
    assert!(alerts.len() >= 9, "{alerts:?}");
}

#[test]
fn metric_names_are_found_in_text_and_scrapes() {
    let names = monitoring::names_in(
        "sum(rate(apollo_gateway_http_requests_total{route=\"x\"}[5m])) / my_apollo_x + apollo_",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["apollo_gateway_http_requests_total"]
    );
    let exposed = monitoring::exposed(
        "# TYPE apollo_a counter\n# TYPE apollo_b histogram\napollo_b_bucket{le=\"1\"} 0\n\
         # TYPE apollo_c gauge\napollo_c 1\n# EOF\n",
    );
    for n in [
        "apollo_a_total",
        "apollo_b_bucket",
        "apollo_b_sum",
        "apollo_b_count",
        "apollo_c",
    ] {
        assert!(exposed.contains(n), "{n} in {exposed:?}");
    }
    assert!(!exposed.contains("apollo_a"));
}
