//! The committed CRDs are current, and they carry what kubectl users and the components need.

use std::path::Path;

use serde_json::{Value, json};

fn crd(plural: &str) -> Value {
    apollo_crdgen::crds()
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .find(|c| c["spec"]["names"]["plural"] == plural)
        .unwrap_or_else(|| panic!("no CRD for {plural}"))
}

fn version(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]
}

#[test]
fn committed_crds_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s/crds");
    if let Err(e) = apollo_crdgen::check(&dir) {
        panic!("{e}");
    }
}

#[test]
fn check_detects_a_stale_file() {
    let dir = tempfile::tempdir().unwrap();
    apollo_crdgen::write(dir.path()).unwrap();
    apollo_crdgen::check(dir.path()).unwrap();
    let path = dir.path().join("deviceprocesses.azure.com.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("observedSpecHash", "observedHash")).unwrap();
    let err = apollo_crdgen::check(dir.path()).unwrap_err().to_string();
    assert!(err.contains("deviceprocesses.azure.com.yaml"), "{err}");
}

#[test]
fn names_categories_and_scope() {
    for (plural, kind, short) in [
        ("networkswitches", "NetworkSwitch", "nsw"),
        ("deviceprocessdeployments", "DeviceProcessDeployment", "dpd"),
        ("deviceprocesses", "DeviceProcess", "dp"),
    ] {
        let c = crd(plural);
        assert_eq!(c["metadata"]["name"], format!("{plural}.azure.com"));
        assert_eq!(c["spec"]["group"], "azure.com");
        assert_eq!(c["spec"]["scope"], "Namespaced");
        assert_eq!(c["spec"]["names"]["kind"], kind);
        assert_eq!(c["spec"]["names"]["shortNames"], json!([short]));
        assert_eq!(c["spec"]["names"]["categories"], json!(["apollo"]));
        assert_eq!(version(&c)["name"], "v1alpha1");
        assert_eq!(version(&c)["served"], true);
        assert_eq!(version(&c)["storage"], true);
    }
}

fn column_names(c: &Value) -> Vec<String> {
    version(c)["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|col| col["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn printer_columns() {
    assert_eq!(
        column_names(&crd("deviceprocesses")),
        ["Device", "Phase", "Connected", "Observed", "Age"]
    );
    assert_eq!(
        column_names(&crd("deviceprocessdeployments")),
        [
            "Desired",
            "Current",
            "Up-To-Date",
            "Connected",
            "Observed",
            "Age"
        ]
    );
    assert_eq!(column_names(&crd("networkswitches")), ["Role", "Age"]);
    let dp = crd("deviceprocesses");
    let connected = &version(&dp)["additionalPrinterColumns"][2];
    assert_eq!(
        connected["jsonPath"],
        r#".status.conditions[?(@.type=="AgentConnected")].status"#
    );
}

#[test]
fn status_subresources_and_selectable_field() {
    for plural in ["deviceprocesses", "deviceprocessdeployments"] {
        assert_eq!(version(&crd(plural))["subresources"], json!({"status": {}}));
    }
    assert_eq!(
        version(&crd("deviceprocesses"))["selectableFields"],
        json!([{"jsonPath": ".spec.deviceRef.name"}])
    );
}

/// Paths in `value` that a structural schema would prune (not declared, not under
/// x-kubernetes-preserve-unknown-fields).
fn undeclared(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{path}.{k}");
                if let Some(sub) = schema["properties"].get(k) {
                    undeclared(sub, v, &p, out);
                } else if schema["additionalProperties"].is_object() {
                    undeclared(&schema["additionalProperties"], v, &p, out);
                } else {
                    out.push(p);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                undeclared(&schema["items"], v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn schema_keeps_every_field_the_components_write() {
    let dp = crd("deviceprocesses");
    let schema = &version(&dp)["schema"]["openAPIV3Schema"];
    let object = json!({
        "spec": {"deviceRef": {"name": "tor1-01"}, "artifact": {"type": "oci", "url": "alpine:3.19"},
            "execution": {"backend": "container", "command": ["/bin/sh"], "args": ["x"],
                "env": [{"name": "A", "value": "b"}]}},
        "status": {"phase": "Pending", "observedSpecHash": "0123456789abcdef", "observedGeneration": 2,
            "conditions": [{"type": "AgentConnected", "status": "True", "reason": "Heartbeat",
                "message": "m", "lastTransitionTime": "2026-11-26T06:00:00Z", "observedGeneration": 2}],
            "agent": {"version": "0.1.0", "instanceId": "abc"}}
    });
    let mut missing = Vec::new();
    undeclared(schema, &object, "", &mut missing);
    assert!(missing.is_empty(), "would be pruned: {missing:?}");
    let conditions = &schema["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));

    let dpd = crd("deviceprocessdeployments");
    let schema = &version(&dpd)["schema"]["openAPIV3Schema"];
    let object = json!({
        "spec": {"selector": {"matchLabels": {"site": "sfo"}, "matchExpressions": [{"key": "role", "operator": "In", "values": ["tor"]}]},
            "template": {"metadata": {"labels": {"app": "logger"}},
                "spec": {"artifact": {"type": "oci", "url": "u"}, "execution": {"backend": "container"}}}},
        "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
            "updatedNumberScheduled": 2, "numberAgentConnected": 2, "numberSpecObserved": 2,
            "conditions": [{"type": "Available", "status": "True", "reason": "AllUpdated", "message": "",
                "lastTransitionTime": "2026-11-26T06:00:00Z"}]}
    });
    let mut missing = Vec::new();
    undeclared(schema, &object, "", &mut missing);
    assert!(missing.is_empty(), "would be pruned: {missing:?}");

    // The placeholder inventory keeps anything in spec, like the runbook's `dummy: ok`.
    let nsw = crd("networkswitches");
    let schema = &version(&nsw)["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    undeclared(
        schema,
        &json!({"spec": {"dummy": "ok", "asn": 65001}}),
        "",
        &mut missing,
    );
    assert!(missing.is_empty(), "would be pruned: {missing:?}");
}

#[test]
fn enums_are_validated_by_the_schema() {
    let dp = crd("deviceprocesses");
    let schema = &version(&dp)["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        schema["properties"]["execution"]["properties"]["backend"]["enum"],
        json!(["container", "systemd"])
    );
    assert_eq!(
        schema["properties"]["artifact"]["properties"]["type"]["enum"],
        json!(["oci", "http"])
    );
    assert_eq!(
        schema["required"],
        json!(["artifact", "deviceRef", "execution"])
    );
}
