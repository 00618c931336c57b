//! Every sample under `k8s/samples/` and the runbook's YAML parse into the typed API and
//! serialize back to the same document.

use std::path::{Path, PathBuf};

use apollo_api::{DeviceProcess, DeviceProcessDeployment, NetworkSwitch};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Value {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{doc}: {e}"));
    serde_json::to_value(&typed).unwrap()
}

fn assert_round_trips(doc: &Value) {
    let back = match doc["kind"].as_str() {
        Some("NetworkSwitch") => round_trip::<NetworkSwitch>(doc),
        Some("DeviceProcessDeployment") => round_trip::<DeviceProcessDeployment>(doc),
        Some("DeviceProcess") => round_trip::<DeviceProcess>(doc),
        other => panic!("unexpected kind {other:?} in samples"),
    };
    assert_eq!(&back, doc, "round trip changed the document");
}

#[test]
fn every_sample_round_trips() {
    let dir = repo_root().join("k8s/samples");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            for doc in documents(&path) {
                assert_round_trips(&doc);
                count += 1;
            }
        }
    }
    assert!(
        count >= 3,
        "expected the runbook's switches and deployment, found {count}"
    );
}

#[test]
fn runbook_switches_keep_their_placeholder_field_and_labels() {
    let docs = documents(&repo_root().join("k8s/samples/networkswitches.yaml"));
    let names: Vec<_> = docs.iter().map(|d| d["metadata"]["name"].clone()).collect();
    assert_eq!(names, ["tor1-01", "tor1-02"]);
    for doc in docs {
        let nsw: NetworkSwitch = serde_json::from_value(doc).unwrap();
        assert_eq!(nsw.spec.dummy.as_deref(), Some("ok"));
        let labels = nsw.metadata.labels.unwrap();
        assert_eq!(labels["site"], "sfo");
        assert_eq!(labels["role"], "tor");
    }
    // Unknown inventory fields survive too.
    let doc = serde_json::json!({"apiVersion": "azure.com/v1alpha1", "kind": "NetworkSwitch",
        "metadata": {"name": "x"}, "spec": {"dummy": "ok", "asn": 65001, "mgmt": {"ip": "10.0.0.1"}}});
    assert_eq!(round_trip::<NetworkSwitch>(&doc), doc);
}

#[test]
fn runbook_deployment_template_is_kept_verbatim() {
    let docs = documents(&repo_root().join("k8s/samples/demo-logger.yaml"));
    let dpd: DeviceProcessDeployment = serde_json::from_value(docs[0].clone()).unwrap();
    let spec = &dpd.spec.template.spec;
    assert_eq!(spec.execution.command, ["/bin/sh", "-c"]);
    assert_eq!(
        spec.execution.args,
        ["echo hello from ${APOLLO_DEVICE_NAME}; sleep 3600"]
    );
    assert_eq!(spec.execution.env[0].value, "${APOLLO_DEVICE_NAME}");
    let per_device = spec.for_device("tor1-01");
    assert_eq!(per_device.device_ref.name, "tor1-01");
    assert_eq!(per_device.template(), *spec);
}

#[test]
fn a_full_device_process_round_trips() {
    let doc = serde_json::json!({
        "apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcess",
        "metadata": {"name": "demo-logger-tor1-01", "namespace": "default",
            "labels": {"app": "logger", "apollo.azure.com/deployment": "demo-logger", "apollo.azure.com/device": "tor1-01"}},
        "spec": {"deviceRef": {"name": "tor1-01"}, "artifact": {"type": "oci", "url": "alpine:3.19"},
            "execution": {"backend": "container", "args": ["echo", "updated"]}},
        "status": {"phase": "Pending", "observedSpecHash": "0123456789abcdef", "observedGeneration": 2,
            "conditions": [{"type": "AgentConnected", "status": "True", "reason": "Heartbeat", "message": "agent 0.1.0 reporting", "lastTransitionTime": "2026-11-26T06:00:00Z"}],
            "agent": {"version": "0.1.0", "instanceId": "abc"}}
    });
    assert_eq!(round_trip::<DeviceProcess>(&doc), doc);
}

#[test]
fn invalid_enum_values_are_refused() {
    let doc = serde_json::json!({"deviceRef": {"name": "x"}, "artifact": {"type": "ftp", "url": "u"},
        "execution": {"backend": "container"}});
    let err = serde_json::from_value::<apollo_api::DeviceProcessSpec>(doc).unwrap_err();
    assert!(err.to_string().contains("ftp"), "{err}");
}
