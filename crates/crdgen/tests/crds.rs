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

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn committed_crds_and_variants_are_up_to_date() {
    let dir = repo().join("k8s/crds");
    if let Err(e) = apollo_crdgen::check_with_variants(&dir) {
        panic!("{e}");
    }
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).unwrap()
}

/// Every generated CRD as `(file name, value)` from a directory of CRD files.
fn crd_files(dir: &Path) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                serde_saphyr::from_str::<Value>(&text).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn older_servers_get_the_same_crds_without_selectable_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k8s/crds");
    apollo_crdgen::write_with_variants(&dir).unwrap();
    let full = crd_files(&dir);
    let legacy = crd_files(&tmp.path().join("k8s-pre-1.31/crds"));
    assert_eq!(full.len(), 3);
    assert_eq!(
        full.iter().map(|f| &f.0).collect::<Vec<_>>(),
        legacy.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, full), (_, legacy)) in full.iter().zip(&legacy) {
        let mut expected = full.clone();
        for v in expected["spec"]["versions"].as_array_mut().unwrap() {
            v.as_object_mut().unwrap().remove("selectableFields");
        }
        assert_eq!(&expected, legacy, "{name}");
        assert!(!legacy.to_string().contains("selectableFields"), "{name}");
    }
    // The overlay of k8s/ removes exactly those fields.
    let kustomization =
        std::fs::read_to_string(tmp.path().join("k8s-pre-1.31/kustomization.yaml")).unwrap();
    let k: Value = serde_saphyr::from_str(&kustomization).unwrap();
    assert_eq!(k["kind"], "Kustomization");
    assert_eq!(k["resources"], json!(["../k8s"]));
    let patches = k["patches"].as_array().unwrap();
    assert_eq!(patches.len(), 1, "{kustomization}");
    assert_eq!(patches[0]["target"]["name"], "deviceprocesses.azure.com");
    let ops: Vec<Value> = serde_saphyr::from_str(patches[0]["patch"].as_str().unwrap()).unwrap();
    assert_eq!(
        ops,
        [json!({"op": "remove", "path": "/spec/versions/0/selectableFields"})]
    );
    // Without --variants only the CRD directory is written.
    let tmp2 = tempfile::tempdir().unwrap();
    apollo_crdgen::write(&tmp2.path().join("k8s/crds")).unwrap();
    assert!(!tmp2.path().join("k8s-pre-1.31").exists());
}

#[test]
fn check_covers_the_variants() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k8s/crds");
    apollo_crdgen::write_with_variants(&dir).unwrap();
    apollo_crdgen::check_with_variants(&dir).unwrap();
    let legacy = tmp
        .path()
        .join("k8s-pre-1.31/crds/deviceprocesses.azure.com.yaml");
    let text = std::fs::read_to_string(&legacy).unwrap();
    std::fs::write(&legacy, text.replace("observedSpecHash", "observedHash")).unwrap();
    let err = apollo_crdgen::check_with_variants(&dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("k8s-pre-1.31/crds/deviceprocesses.azure.com.yaml"),
        "{err}"
    );
    // The CRD directory alone is still current.
    apollo_crdgen::check(&dir).unwrap();
    std::fs::write(&legacy, text).unwrap();
    let k = tmp.path().join("k8s-pre-1.31/kustomization.yaml");
    std::fs::remove_file(&k).unwrap();
    let err = apollo_crdgen::check_with_variants(&dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("k8s-pre-1.31/kustomization.yaml"), "{err}");
    apollo_crdgen::write_with_variants(&dir).unwrap();
    // A variant no longer generated is stale, and so is an extra file in it.
    std::fs::create_dir_all(tmp.path().join("k8s-pre-1.30")).unwrap();
    std::fs::write(tmp.path().join("k8s-pre-1.31/crds/old.azure.com.yaml"), "x").unwrap();
    let err = apollo_crdgen::check_with_variants(&dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("k8s-pre-1.30/"), "{err}");
    assert!(err.contains("old.azure.com.yaml"), "{err}");
}

/// `value` with every number as a float (YAML renderers differ on `1` and `1.0`).
fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_floats).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `kubectl kustomize k8s-pre-1.31` (what `kubectl apply -k` sends) gives the variant's CRDs
/// and everything else of `kubectl kustomize k8s` unchanged.
#[test]
fn the_overlay_renders_the_variant_with_kubectl() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("kubectl not on PATH: skipped");
        return;
    }
    let render = |dir: &str| -> Vec<Value> {
        let out = std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(repo().join(dir))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        yaml_docs(&String::from_utf8(out.stdout).unwrap())
    };
    let base = render("k8s");
    let overlay = render("k8s-pre-1.31");
    assert_eq!(base.len(), overlay.len());
    let legacy = crd_files(&repo().join("k8s-pre-1.31/crds"));
    let mut crds = 0;
    for (b, o) in base.iter().zip(&overlay) {
        if o["kind"] == "CustomResourceDefinition" {
            crds += 1;
            let (_, want) = legacy
                .iter()
                .find(|(_, l)| l["metadata"]["name"] == o["metadata"]["name"])
                .unwrap();
            assert_eq!(numbers_as_floats(o), numbers_as_floats(want));
        } else {
            assert_eq!(b, o);
        }
    }
    assert_eq!(crds, legacy.len());
}

#[test]
fn check_detects_a_stale_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("crds");
    apollo_crdgen::write(&dir).unwrap();
    apollo_crdgen::check(&dir).unwrap();
    let path = dir.join("deviceprocesses.azure.com.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("observedSpecHash", "observedHash")).unwrap();
    let err = apollo_crdgen::check(&dir).unwrap_err().to_string();
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
            "Available",
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
