//! `k8s/controller/deployment.yaml` and `k8s/rbac/controller.yaml`: what a reviewer checks
//! by eye, checked by a test, including that the manifest's arguments parse.

use std::path::PathBuf;

use apollo_controller::config::{Config, parse_args};
use apollo_process::env::MapEnv;
use serde_json::Value;

fn load(path: &str) -> Vec<Value> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} missing"))
}

#[test]
fn deployment_manifest_is_production_shaped_and_its_args_parse() {
    let docs = load("k8s/controller/deployment.yaml");
    assert_eq!(docs.len(), 1);
    let d = &docs[0];
    assert_eq!(s(d, "/kind"), "Deployment");
    assert_eq!(s(d, "/metadata/name"), "apollo-deviceprocess-controller");
    assert_eq!(s(d, "/metadata/namespace"), "default");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(
        s(pod, "/serviceAccountName"),
        "apollo-deviceprocess-controller"
    );
    let c = &pod["containers"][0];
    assert_eq!(s(c, "/image"), "apollo/controller:dev");
    assert_eq!(s(c, "/imagePullPolicy"), "IfNotPresent");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for kind in ["requests", "limits"] {
        assert!(c["resources"][kind]["cpu"].is_string(), "{kind}.cpu");
        assert!(c["resources"][kind]["memory"].is_string(), "{kind}.memory");
    }
    assert_eq!(s(c, "/livenessProbe/httpGet/path"), "/healthz");
    assert_eq!(s(c, "/readinessProbe/httpGet/path"), "/readyz");
    let ports: Vec<(&str, i64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (s(p, "/name"), p["containerPort"].as_i64().unwrap()))
        .collect();
    assert!(ports.contains(&("health", 8081)) && ports.contains(&("metrics", 8080)));
    assert_eq!(s(c, "/livenessProbe/httpGet/port"), "health");

    // The arguments and env of the manifest, as the binary parses them.
    let mut argv = vec!["apollo-controller".to_owned()];
    argv.extend(
        c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c["env"].as_array().unwrap() {
        let value = e["value"].as_str().map_or_else(
            || format!("from-{}", s(e, "/valueFrom/fieldRef/fieldPath")),
            str::to_owned,
        );
        env.push((s(e, "/name").to_owned(), value));
    }
    let env = MapEnv(env.into_iter().collect());
    let config = Config::from_args(parse_args(&argv).unwrap(), &env).unwrap();
    let le = config.leader_election.expect("--leader-elect");
    assert_eq!(le.namespace, "from-metadata.namespace");
    assert!(
        le.identity.starts_with("from-metadata.name_"),
        "{}",
        le.identity
    );
    assert_eq!(config.health_addr.unwrap().port(), 8081);
    assert_eq!(config.metrics_addr.unwrap().port(), 8080);
    assert!(
        config.health_addr.unwrap().ip().is_unspecified(),
        "probes reach the pod IP"
    );
    assert_eq!(config.namespace, None, "watches all namespaces");
}

#[test]
fn rbac_manifest_names_the_service_account_and_its_lease() {
    let docs = load("k8s/rbac/controller.yaml");
    let kinds: Vec<&str> = docs.iter().map(|d| s(d, "/kind")).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding"
        ]
    );
    for d in &docs {
        if let Some(subjects) = d["subjects"].as_array() {
            assert_eq!(s(&subjects[0], "/name"), "apollo-deviceprocess-controller");
        }
    }
    let role = &docs[3];
    let lease_rule = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resourceNames"].is_array())
        .unwrap();
    assert_eq!(
        lease_rule["resourceNames"],
        serde_json::json!(["apollo-deviceprocess-controller"])
    );
    // No wildcards anywhere.
    for d in &docs {
        for rule in d["rules"].as_array().into_iter().flatten() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !rule[field]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v.as_str() == Some("*")),
                    "wildcard in {rule}"
                );
            }
        }
    }
}
