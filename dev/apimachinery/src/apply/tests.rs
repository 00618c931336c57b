//! Server-side apply behaviour pinned against kube-apiserver and structured-merge-diff.

use super::*;
use serde_json::json;

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-01T00:01:00Z";
const T2: &str = "2026-01-01T00:02:00Z";

fn schema() -> Structural {
    Structural::from_json(&json!({
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {
                "deviceRef": {"type": "object", "properties": {"name": {"type": "string"}}},
                "command": {"type": "array", "items": {"type": "string"}},
                "image": {"type": "string"},
                "replicas": {"type": "integer"},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "env": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}},
                "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                             "additionalProperties": {"type": "string"}},
                "params": {"type": "object", "additionalProperties": {"type": "string"}},
                "mode": {"type": "string", "default": "auto"}
            }},
            "status": {"type": "object", "properties": {
                "phase": {"type": "string"},
                "observedGeneration": {"type": "integer"},
                "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                    "items": {"type": "object", "properties": {
                        "type": {"type": "string"}, "status": {"type": "string"}, "reason": {"type": "string"}}}}
            }}
        }
    }))
    .unwrap()
}

fn base(spec: Value) -> Value {
    json!({"apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcess",
           "metadata": {"name": "dp", "namespace": "default"}, "spec": spec})
}

/// What the server does after apply/record_update for a stored object.
fn stored(mut v: Value) -> Value {
    v["metadata"]["uid"] = json!("u-1");
    v["metadata"]["resourceVersion"] = json!("1");
    v
}

fn apply_as(
    s: &Structural,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    sub: Option<&str>,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    apply(ApplyRequest {
        live,
        applied,
        manager,
        subresource: sub,
        force,
        schema: Some(s),
        now,
    })
}

fn entry<'a>(obj: &'a Value, manager: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == manager)
        .unwrap_or_else(|| panic!("no entry for {manager}: {obj}"))
}

fn managers(obj: &Value) -> Vec<(String, String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap().to_string(),
                        e["operation"].as_str().unwrap().to_string(),
                        e["subresource"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn create_by_apply_records_an_apply_entry() {
    let s = schema();
    let mut cfg = base(
        json!({"deviceRef": {"name": "tor1"}, "command": ["a", "b"], "env": [{"name": "A", "value": "1"}]}),
    );
    cfg["metadata"]["labels"] = json!({"app": "x"});
    let out = apply_as(&s, None, &cfg, "kubectl", None, false, T0).unwrap();
    assert_eq!(out["spec"]["command"], json!(["a", "b"]));
    // Defaults are applied to the result.
    assert_eq!(out["spec"]["mode"], "auto");
    let mf = &out["metadata"]["managedFields"];
    assert_eq!(
        mf,
        &json!([{
            "manager": "kubectl", "operation": "Apply", "apiVersion": "azure.com/v1alpha1", "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:command": {},
                    "f:deviceRef": {"f:name": {}},
                    "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}}
                }
            }
        }])
    );
    // Key order inside the entry is the apiserver's.
    let keys: Vec<&String> = mf[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "manager",
            "operation",
            "apiVersion",
            "time",
            "fieldsType",
            "fieldsV1"
        ]
    );
}

#[test]
fn conflict_with_other_applier_and_force() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"command": ["run"]})),
            "ctrl-spec",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    let err = apply_as(
        &s,
        Some(&live),
        &base(json!({"command": ["other"]})),
        "kubectl",
        None,
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "ctrl-spec": .spec.command"#
    );
    assert_eq!(err.code(), 409);
    assert_eq!(
        err.causes(),
        vec![
            json!({"reason": "FieldManagerConflict", "message": "conflict with \"ctrl-spec\"", "field": ".spec.command"})
        ]
    );
    // Same value: no conflict, shared ownership.
    let shared = apply_as(
        &s,
        Some(&live),
        &base(json!({"command": ["run"]})),
        "kubectl",
        None,
        false,
        T1,
    )
    .unwrap();
    assert_eq!(managers(&shared).len(), 2);
    // force=true takes ownership.
    let forced = apply_as(
        &s,
        Some(&live),
        &base(json!({"command": ["other"]})),
        "kubectl",
        None,
        true,
        T1,
    )
    .unwrap();
    assert_eq!(forced["spec"]["command"], json!(["other"]));
    assert_eq!(
        managers(&forced),
        vec![("kubectl".into(), "Apply".into(), String::new())]
    );
}

#[test]
fn status_conflict_names_the_subresource() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"image": "x"})),
            "ctrl-spec",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    let status = json!({"apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcess", "metadata": {"name": "dp"},
                        "status": {"phase": "Running"}});
    let live = stored(
        apply_as(
            &s,
            Some(&live),
            &status,
            "ctrl-status",
            Some("status"),
            false,
            T1,
        )
        .unwrap(),
    );
    assert_eq!(entry(&live, "ctrl-status")["subresource"], "status");
    assert_eq!(live["spec"]["image"], "x");
    assert_eq!(live["status"]["phase"], "Running");
    let mut other = status.clone();
    other["status"]["phase"] = json!("Failed");
    let err = apply_as(&s, Some(&live), &other, "agent", Some("status"), false, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "ctrl-status" with subresource "status": .status.phase"#
    );
}

#[test]
fn conditions_from_two_managers_merge_per_key() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"image": "x"})),
            "ctrl",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    let st = |conds: Value| {
        json!({"apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcess",
                                   "metadata": {"name": "dp"}, "status": {"conditions": conds}})
    };
    let live = stored(
        apply_as(
            &s,
            Some(&live),
            &st(json!([{"type": "Ready", "status": "True"}])),
            "ctrl",
            Some("status"),
            false,
            T1,
        )
        .unwrap(),
    );
    let live = stored(
        apply_as(
            &s,
            Some(&live),
            &st(json!([{"type": "AgentConnected", "status": "False"}])),
            "gateway",
            Some("status"),
            false,
            T1,
        )
        .unwrap(),
    );
    assert_eq!(
        live["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "AgentConnected", "status": "False"}])
    );
    assert_eq!(
        entry(&live, "gateway")["fieldsV1"],
        json!({"f:status": {"f:conditions": {"k:{\"type\":\"AgentConnected\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
    );
    // The gateway updates its own condition without touching Ready.
    let live = stored(
        apply_as(
            &s,
            Some(&live),
            &st(json!([{"type": "AgentConnected", "status": "True"}])),
            "gateway",
            Some("status"),
            false,
            T2,
        )
        .unwrap(),
    );
    assert_eq!(
        live["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "AgentConnected", "status": "True"}])
    );
    // Changing the controller's condition is a conflict that names the key.
    let err = apply_as(
        &s,
        Some(&live),
        &st(json!([{"type": "Ready", "status": "False"}])),
        "gateway",
        Some("status"),
        false,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "ctrl" with subresource "status": .status.conditions[type="Ready"].status"#
    );
}

#[test]
fn field_left_out_is_removed_unless_someone_else_owns_it() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"image": "x", "replicas": 2, "params": {"a": "1", "b": "2"}})),
            "kubectl",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    // Another manager shares params.b (same value).
    let live = stored(
        apply_as(
            &s,
            Some(&live),
            &base(json!({"params": {"b": "2"}})),
            "helper",
            None,
            false,
            T1,
        )
        .unwrap(),
    );
    let out = apply_as(
        &s,
        Some(&live),
        &base(json!({"image": "x"})),
        "kubectl",
        None,
        false,
        T2,
    )
    .unwrap();
    assert_eq!(out["spec"]["image"], "x");
    assert!(out["spec"].get("replicas").is_none(), "{out}");
    assert_eq!(out["spec"]["params"], json!({"b": "2"}));
    assert_eq!(
        entry(&out, "kubectl")["fieldsV1"],
        json!({"f:spec": {"f:image": {}}})
    );
    assert_eq!(entry(&out, "kubectl")["time"], T2);
}

#[test]
fn fields_written_by_updaters_are_not_removed_by_an_applier() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"image": "x", "replicas": 2})),
            "kubectl",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    // An Update manager changes replicas: it takes ownership.
    let mut new = live.clone();
    new["spec"]["replicas"] = json!(3);
    record_update(Some(&live), &mut new, "hpa", None, Some(&s), T1);
    let live = stored(new);
    assert_eq!(
        entry(&live, "hpa")["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );
    assert_eq!(
        entry(&live, "kubectl")["fieldsV1"],
        json!({"f:spec": {"f:image": {}}})
    );
    // The applier dropping replicas does not remove it (it does not own it any more).
    let out = apply_as(
        &s,
        Some(&live),
        &base(json!({"image": "x"})),
        "kubectl",
        None,
        false,
        T2,
    )
    .unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    // Re-applying replicas conflicts with the updater, named with version and time.
    let err = apply_as(
        &s,
        Some(&live),
        &base(json!({"image": "x", "replicas": 5})),
        "kubectl",
        None,
        false,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "hpa" using azure.com/v1alpha1 at 2026-01-01T00:01:00Z: .spec.replicas"#
    );
}

#[test]
fn noop_apply_keeps_object_and_time() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"image": "x"})),
            "kubectl",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    let out = apply_as(
        &s,
        Some(&live),
        &base(json!({"image": "x"})),
        "kubectl",
        None,
        false,
        T1,
    )
    .unwrap();
    assert_eq!(out, live);
    assert_eq!(entry(&out, "kubectl")["time"], T0);
}

#[test]
fn sets_union_and_atomic_lists_replace() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"tags": ["a", "b"], "command": ["x"]})),
            "one",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    let out = apply_as(
        &s,
        Some(&live),
        &base(json!({"tags": ["c"]})),
        "two",
        None,
        false,
        T1,
    )
    .unwrap();
    assert_eq!(out["spec"]["tags"], json!(["a", "b", "c"]));
    assert_eq!(
        entry(&out, "two")["fieldsV1"],
        json!({"f:spec": {"f:tags": {"v:\"c\"": {}}}})
    );
    let out = apply_as(
        &s,
        Some(&live),
        &base(json!({"command": ["y", "z"]})),
        "two",
        None,
        true,
        T1,
    )
    .unwrap();
    assert_eq!(out["spec"]["command"], json!(["y", "z"]));
    assert_eq!(
        entry(&out, "one")["fieldsV1"],
        json!({"f:spec": {"f:tags": {"v:\"a\"": {}, "v:\"b\"": {}}}})
    );
}

#[test]
fn atomic_map_is_one_field() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"selector": {"a": "1", "b": "2"}})),
            "one",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    assert_eq!(
        entry(&live, "one")["fieldsV1"],
        json!({"f:spec": {"f:selector": {}}})
    );
    let err = apply_as(
        &s,
        Some(&live),
        &base(json!({"selector": {"a": "1"}})),
        "two",
        None,
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "one": .spec.selector"#
    );
}

#[test]
fn metadata_labels_finalizers_and_owner_references() {
    let s = schema();
    let mut cfg = base(json!({"image": "x"}));
    cfg["metadata"]["labels"] = json!({"a": "1"});
    cfg["metadata"]["finalizers"] = json!(["azure.com/cleanup"]);
    cfg["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "K", "name": "o", "uid": "u1"}]);
    let live = stored(apply_as(&s, None, &cfg, "ctrl", None, false, T0).unwrap());
    assert_eq!(
        entry(&live, "ctrl")["fieldsV1"]["f:metadata"],
        json!({
            "f:finalizers": {"v:\"azure.com/cleanup\"": {}},
            "f:labels": {"f:a": {}},
            "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}}}
        })
    );
    let mut cfg2 = base(json!({}));
    cfg2["metadata"]["labels"] = json!({"b": "2"});
    cfg2["metadata"]["finalizers"] = json!(["other/f"]);
    cfg2["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "K", "name": "p", "uid": "u2"}]);
    let out = apply_as(&s, Some(&live), &cfg2, "other", None, false, T1).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["azure.com/cleanup", "other/f"])
    );
    assert_eq!(
        out["metadata"]["ownerReferences"].as_array().unwrap().len(),
        2
    );
    assert_eq!(out["metadata"]["uid"], "u-1");
    assert_eq!(out["metadata"]["name"], "dp");
}

#[test]
fn removing_the_last_owned_label_removes_the_labels_field() {
    let s = schema();
    let mut cfg = base(json!({"image": "x"}));
    cfg["metadata"]["labels"] = json!({"a": "1"});
    let live = stored(apply_as(&s, None, &cfg, "ctrl", None, false, T0).unwrap());
    let out = apply_as(
        &s,
        Some(&live),
        &base(json!({"image": "x"})),
        "ctrl",
        None,
        false,
        T1,
    )
    .unwrap();
    // labels is a named ObjectMeta field the applier owned through its entries: it goes.
    assert!(out["metadata"].get("labels").is_none(), "{out}");
    assert_eq!(out["metadata"]["name"], "dp");
    assert_eq!(out["metadata"]["uid"], "u-1");
}

#[test]
fn record_update_tracks_create_and_changes() {
    let s = schema();
    let mut created = base(json!({"image": "x", "replicas": 1}));
    created["metadata"]["labels"] = json!({"app": "a"});
    record_update(None, &mut created, "kubectl-create", None, Some(&s), T0);
    assert_eq!(
        created["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl-create", "operation": "Update", "apiVersion": "azure.com/v1alpha1", "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                         "f:spec": {".": {}, "f:image": {}, "f:replicas": {}}}
        }])
    );
    let live = stored(created);
    let mut new = live.clone();
    new["spec"]["image"] = json!("y");
    record_update(Some(&live), &mut new, "kubectl-edit", None, Some(&s), T1);
    assert_eq!(
        entry(&new, "kubectl-edit")["fieldsV1"],
        json!({"f:spec": {"f:image": {}}})
    );
    assert_eq!(
        entry(&new, "kubectl-create")["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {".": {}, "f:replicas": {}}})
    );
    // A write that changes nothing leaves managedFields (and times) alone.
    let live = stored(new);
    let mut same = live.clone();
    record_update(Some(&live), &mut same, "kubectl-edit", None, Some(&s), T2);
    assert_eq!(
        same["metadata"]["managedFields"],
        live["metadata"]["managedFields"]
    );
    // The same manager through /status is a separate entry.
    let mut st = live.clone();
    st["status"] = json!({"phase": "Running"});
    record_update(
        Some(&live),
        &mut st,
        "kubectl-edit",
        Some("status"),
        Some(&s),
        T2,
    );
    assert_eq!(
        managers(&st),
        vec![
            ("kubectl-create".into(), "Update".into(), String::new()),
            ("kubectl-edit".into(), "Update".into(), String::new()),
            ("kubectl-edit".into(), "Update".into(), "status".into()),
        ]
    );
    assert_eq!(
        entry_sub(&st, "kubectl-edit", "status")["fieldsV1"],
        json!({"f:status": {".": {}, "f:phase": {}}})
    );
}

fn entry_sub<'a>(obj: &'a Value, manager: &str, sub: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == manager && e["subresource"].as_str().unwrap_or("") == sub)
        .unwrap()
}

#[test]
fn removed_fields_leave_all_managers() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"image": "x", "replicas": 1})),
            "kubectl",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    let mut new = live.clone();
    new["spec"].as_object_mut().unwrap().remove("replicas");
    record_update(Some(&live), &mut new, "editor", None, Some(&s), T1);
    assert_eq!(
        entry(&new, "kubectl")["fieldsV1"],
        json!({"f:spec": {"f:image": {}}})
    );
    // The editor changed nothing it can own (only a removal): no entry.
    assert_eq!(
        managers(&new),
        vec![("kubectl".into(), "Apply".into(), String::new())]
    );
}

#[test]
fn existing_object_without_managed_fields_is_not_tracked_by_updates_and_owned_before_first_apply() {
    let s = schema();
    let live = stored(base(json!({"image": "x", "replicas": 1})));
    let mut new = live.clone();
    new["spec"]["image"] = json!("y");
    record_update(Some(&live), &mut new, "editor", None, Some(&s), T1);
    assert!(new["metadata"].get("managedFields").is_none());
    let err = apply_as(
        &s,
        Some(&live),
        &base(json!({"image": "z"})),
        "kubectl",
        None,
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "before-first-apply" using azure.com/v1alpha1 at 2026-01-01T00:01:00Z: .spec.image"#
    );
}

#[test]
fn managed_fields_reset_with_empty_list() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"image": "x"})),
            "kubectl",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    let mut new = live.clone();
    new["metadata"]["managedFields"] = json!([]);
    record_update(Some(&live), &mut new, "editor", None, Some(&s), T1);
    assert!(new["metadata"].get("managedFields").is_none());
}

#[test]
fn bad_requests() {
    let s = schema();
    let mut cfg = base(json!({}));
    cfg["metadata"]["managedFields"] = json!([]);
    let err = apply_as(&s, None, &cfg, "m", None, false, T0).unwrap_err();
    assert_eq!(
        err,
        ApplyError::Invalid("metadata.managedFields must be nil".into())
    );
    assert_eq!(err.code(), 400);
    let live = stored(apply_as(&s, None, &base(json!({})), "m", None, false, T0).unwrap());
    let mut cfg = base(json!({}));
    cfg["apiVersion"] = json!("azure.com/v1");
    let err = apply_as(&s, Some(&live), &cfg, "m", None, false, T0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Incorrect version specified in apply patch. Specified patch version: azure.com/v1, expected: azure.com/v1alpha1"
    );
    let err = apply_as(
        &s,
        None,
        &base(json!({"env": [{"name": "A"}, {"name": "A"}]})),
        "m",
        None,
        false,
        T0,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("duplicate entries for key [name=\"A\"]"),
        "{err}"
    );
    let err = apply_as(
        &s,
        None,
        &base(json!({"env": [{"value": "x"}]})),
        "m",
        None,
        false,
        T0,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(
            r#"omits all key fields ["name"] (and doesn't have default values for any key fields)"#
        ),
        "{err}"
    );
}

#[test]
fn multiple_conflicts_are_grouped_per_manager() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"image": "x", "replicas": 1})),
            "b-mgr",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    let live = stored(
        apply_as(
            &s,
            Some(&live),
            &base(json!({"command": ["c"]})),
            "a-mgr",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    let err = apply_as(
        &s,
        Some(&live),
        &base(json!({"image": "y", "replicas": 2, "command": ["d"]})),
        "me",
        None,
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 3 conflicts: conflicts with \"a-mgr\":\n- .spec.command\nconflicts with \"b-mgr\":\n- .spec.image\n- .spec.replicas"
    );
}

#[test]
fn apply_without_schema_uses_granular_maps_and_atomic_lists() {
    let cm = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
                    "spec": {"holderIdentity": "a", "list": [1, 2]}});
    let live = stored(
        apply(ApplyRequest {
            live: None,
            applied: &cm,
            manager: "m1",
            subresource: None,
            force: false,
            schema: None,
            now: T0,
        })
        .unwrap(),
    );
    assert_eq!(
        entry(&live, "m1")["fieldsV1"],
        json!({"f:spec": {"f:holderIdentity": {}, "f:list": {}}})
    );
    let other = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
                       "spec": {"leaseDurationSeconds": 15}});
    let out = apply(ApplyRequest {
        live: Some(&live),
        applied: &other,
        manager: "m2",
        subresource: None,
        force: false,
        schema: None,
        now: T1,
    })
    .unwrap();
    assert_eq!(
        out["spec"],
        json!({"holderIdentity": "a", "list": [1, 2], "leaseDurationSeconds": 15})
    );
    assert_eq!(
        entry(&out, "m2")["fieldsV1"],
        json!({"f:spec": {"f:leaseDurationSeconds": {}}})
    );
}

#[test]
fn fields_v1_round_trip_and_ordering() {
    let v = json!({
        "f:metadata": {"f:labels": {".": {}, "f:a": {}}},
        "f:spec": {"f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}}}, "f:tags": {"v:\"x\"": {}, "v:1": {}}}
    });
    let set = Set::from_fields_v1(&v).unwrap();
    assert!(set.has(&[PE::Field("metadata".into()), PE::Field("labels".into())]));
    assert!(set.has(&[
        PE::Field("spec".into()),
        PE::Field("tags".into()),
        PE::Value(json!("x"))
    ]));
    let back = set.to_fields_v1();
    // Numbers sort before strings.
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        r#"{"f:metadata":{"f:labels":{".":{},"f:a":{}}},"f:spec":{"f:env":{"k:{\"name\":\"A\"}":{".":{},"f:name":{}}},"f:tags":{"v:1":{},"v:\"x\"":{}}}}"#
    );
    assert!(Set::from_fields_v1(&json!({"x": {}})).is_err());
}

#[test]
fn time_helpers() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_rfc3339("2026-01-01T01:00:00+01:00"),
        parse_rfc3339("2026-01-01T00:00:00Z")
    );
    assert_eq!(
        utc_rfc3339("2026-01-01T01:00:00.5+01:00"),
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(parse_rfc3339("2026-01-01T00:00:0é0000Z"), None);
    assert_eq!(
        utc_rfc3339("not a time at all, really"),
        "not a time at all, really"
    );
}

#[test]
fn cap_update_managers_merges_the_oldest() {
    let s = schema();
    let mut live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"image": "x"})),
            "kubectl",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    for i in 0..12 {
        let mut new = live.clone();
        new["spec"]["params"] = json!({format!("k{i}"): "v"});
        new["spec"]["params"] = {
            let mut p = live["spec"].get("params").cloned().unwrap_or(json!({}));
            p[format!("k{i}")] = json!("v");
            p
        };
        let now = format!("2026-01-01T00:{:02}:00Z", i + 1);
        record_update(
            Some(&live),
            &mut new,
            &format!("u{i:02}"),
            None,
            Some(&s),
            &now,
        );
        live = stored(new);
    }
    let ms = managers(&live);
    let updates = ms.iter().filter(|m| m.1 == "Update").count();
    assert_eq!(updates, 10, "{ms:?}");
    assert!(ms.iter().any(|m| m.0 == "ancient-changes"));
}

#[test]
fn merge_null_and_empty_like_structured_merge_diff() {
    let s = schema();
    let root = T::Root(Some(&s.root));
    let m = |l: Value, r: Value| merge(Some(&l), Some(&r), root).unwrap().unwrap();
    // typed/merge_test.go "null/empty map"
    assert_eq!(m(json!({}), json!({"spec": {}})), json!({"spec": {}}));
    assert_eq!(m(json!({}), json!({"spec": null})), json!({"spec": null}));
    assert_eq!(
        m(json!({"spec": null}), json!({"spec": {}})),
        json!({"spec": {}})
    );
    assert_eq!(
        m(json!({"spec": {}}), json!({"spec": null})),
        json!({"spec": null})
    );
    // An explicit null does not wipe a non-empty map during the merge.
    assert_eq!(
        m(json!({"spec": {"image": "x"}}), json!({"spec": null})),
        json!({"spec": {"image": "x"}})
    );
    // Scalars are replaced, lists atomic unless declared otherwise.
    assert_eq!(
        m(
            json!({"spec": {"image": "x", "command": ["a"]}}),
            json!({"spec": {"image": "y", "command": ["b"]}})
        ),
        json!({"spec": {"image": "y", "command": ["b"]}})
    );
}

#[test]
fn list_map_merge_order_follows_structured_merge_diff() {
    // The "associative list" triplets of structured-merge-diff's typed/merge_test.go.
    let s = Structural::from_json(&json!({"type": "object", "properties": {"list": {
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["key", "id"],
        "items": {"type": "object", "properties": {"key": {"type": "string"}, "id": {"type": "integer"},
                  "value": {"type": "object", "additionalProperties": {"type": "string"}},
                  "bv": {"type": "boolean"}, "nv": {"type": "integer"}}}}}}))
    .unwrap();
    let root = T::Root(Some(&s.root));
    let cases = [
        (
            r#"{"list":[{"key":"a","id":1,"value":{"a":"a"}}]}"#,
            r#"{"list":[{"key":"a","id":2,"value":{"a":"a"}}]}"#,
            r#"{"list":[{"key":"a","id":1,"value":{"a":"a"}},{"key":"a","id":2,"value":{"a":"a"}}]}"#,
        ),
        (
            r#"{"list":[{"key":"a","id":1},{"key":"b","id":1}]}"#,
            r#"{"list":[{"key":"a","id":1},{"key":"a","id":2}]}"#,
            r#"{"list":[{"key":"a","id":1},{"key":"b","id":1},{"key":"a","id":2}]}"#,
        ),
        (
            r#"{"list":[{"key":"b","id":2}]}"#,
            r#"{"list":[{"key":"a","id":1},{"key":"b","id":2},{"key":"c","id":3}]}"#,
            r#"{"list":[{"key":"a","id":1},{"key":"b","id":2},{"key":"c","id":3}]}"#,
        ),
        (
            r#"{"list":[{"key":"a","id":1},{"key":"b","id":2},{"key":"c","id":3}]}"#,
            r#"{"list":[{"key":"c","id":3},{"key":"b","id":2}]}"#,
            r#"{"list":[{"key":"a","id":1},{"key":"c","id":3},{"key":"b","id":2}]}"#,
        ),
        (
            r#"{"list":[{"key":"a","id":1},{"key":"b","id":2},{"key":"c","id":3}]}"#,
            r#"{"list":[{"key":"c","id":3},{"key":"a","id":1}]}"#,
            r#"{"list":[{"key":"b","id":2},{"key":"c","id":3},{"key":"a","id":1}]}"#,
        ),
        (
            r#"{"list":[{"key":"a","id":1,"bv":true},{"key":"b","id":2},{"key":"a","id":1,"bv":false,"nv":2}]}"#,
            r#"{"list":[{"key":"a","id":1,"nv":3},{"key":"c","id":3},{"key":"b","id":2}]}"#,
            r#"{"list":[{"key":"a","id":1,"nv":3},{"key":"c","id":3},{"key":"b","id":2}]}"#,
        ),
        (
            r#"{"list":[{"key":"a","id":1,"nv":1},{"key":"a","id":1,"nv":2}]}"#,
            r#"{"list":[]}"#,
            r#"{"list":[{"key":"a","id":1,"nv":1},{"key":"a","id":1,"nv":2}]}"#,
        ),
        (
            r#"{"list":[{"key":"a","id":1,"nv":1},{"key":"a","id":1,"nv":2}]}"#,
            r#"{}"#,
            r#"{"list":[{"key":"a","id":1,"nv":1},{"key":"a","id":1,"nv":2}]}"#,
        ),
    ];
    for (l, r, want) in cases {
        let l: Value = serde_json::from_str(l).unwrap();
        let r: Value = serde_json::from_str(r).unwrap();
        let want: Value = serde_json::from_str(want).unwrap();
        assert_eq!(
            merge(Some(&l), Some(&r), root).unwrap().unwrap(),
            want,
            "{l} + {r}"
        );
    }
}

#[test]
fn removing_all_owned_list_map_items_removes_the_field() {
    let s = schema();
    let live = stored(
        apply_as(
            &s,
            None,
            &base(json!({"image": "x", "env": [{"name": "A", "value": "1"}]})),
            "ctrl",
            None,
            false,
            T0,
        )
        .unwrap(),
    );
    let out = apply_as(
        &s,
        Some(&live),
        &base(json!({"image": "x"})),
        "ctrl",
        None,
        false,
        T1,
    )
    .unwrap();
    assert!(out["spec"].get("env").is_none(), "{out}");
    assert_eq!(
        entry(&out, "ctrl")["fieldsV1"],
        json!({"f:spec": {"f:image": {}}})
    );
}

#[test]
fn removal_inside_a_map_of_maps_keeps_an_empty_map() {
    // structured-merge-diff v6.3.2 (Kubernetes 1.36.0-1.36.2): mapOfMaps.b stays {}.
    let s = Structural::from_json(&json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "mapOfMaps": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}))
    .unwrap();
    let root = T::Root(Some(&s.root));
    let v = json!({"spec": {"mapOfMaps": {"b": {"a": "x", "c": "z"}}}});
    let mut set = Set::default();
    for k in ["a", "c"] {
        set.insert(&[
            PE::Field("spec".into()),
            PE::Field("mapOfMaps".into()),
            PE::Field("b".into()),
            PE::Field(k.into()),
        ]);
    }
    assert_eq!(
        remove_items(&v, &set, root).unwrap(),
        json!({"spec": {"mapOfMaps": {"b": {}}}})
    );
}

// ---- Scenarios from structured-merge-diff merge/multiple_appliers_test.go ("listOfLists").

fn list_of_lists() -> Structural {
    Structural::from_json(&json!({"type": "object", "properties": {"listOfLists": {
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
        "items": {"type": "object", "properties": {
            "name": {"type": "string"},
            "value": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}}}}))
    .unwrap()
}

enum Op {
    Apply(&'static str, Value),
    Update(&'static str, Value),
}

fn run(s: &Structural, ops: Vec<Op>) -> Value {
    let mut live: Option<Value> = None;
    for (i, op) in ops.into_iter().enumerate() {
        let now = format!("2026-01-01T00:00:{i:02}Z");
        live = Some(match op {
            Op::Apply(m, obj) => apply_as(s, live.as_ref(), &obj, m, None, false, &now).unwrap(),
            Op::Update(m, mut obj) => {
                record_update(live.as_ref(), &mut obj, m, None, Some(s), &now);
                obj
            }
        });
    }
    live.unwrap()
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    remove_managed_fields(&mut v);
    if v["metadata"].as_object().is_some_and(|m| m.is_empty()) {
        v.as_object_mut().unwrap().remove("metadata");
    }
    v
}

fn lol(items: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "K", "listOfLists": items})
}

#[test]
fn smd_remove_one_keep_one_with_two_sub_items() {
    let s = list_of_lists();
    let out = run(
        &s,
        vec![
            Op::Apply(
                "apply-one",
                lol(json!([{"name": "a"}, {"name": "b", "value": ["c"]}])),
            ),
            Op::Apply("apply-two", lol(json!([{"name": "b", "value": ["d"]}]))),
            Op::Apply("apply-one", lol(json!([{"name": "a"}]))),
        ],
    );
    assert_eq!(
        without_managed_fields(&out),
        lol(json!([{"name": "a"}, {"name": "b", "value": ["d"]}]))
    );
    assert_eq!(
        entry(&out, "apply-one")["fieldsV1"],
        json!({"f:listOfLists": {"k:{\"name\":\"a\"}": {".": {}, "f:name": {}}}})
    );
    assert_eq!(
        entry(&out, "apply-two")["fieldsV1"],
        json!({"f:listOfLists": {"k:{\"name\":\"b\"}": {".": {}, "f:name": {}, "f:value": {"v:\"d\"": {}}}}})
    );
}

#[test]
fn smd_remove_one_keep_one_with_dangling_subitem() {
    let s = list_of_lists();
    let out = run(
        &s,
        vec![
            Op::Apply(
                "apply-one",
                lol(json!([{"name": "a"}, {"name": "b", "value": ["c"]}])),
            ),
            Op::Apply("apply-two", lol(json!([{"name": "b", "value": ["d"]}]))),
            Op::Update(
                "controller",
                lol(json!([{"name": "a"}, {"name": "b", "value": ["c", "d", "e"]}])),
            ),
            Op::Apply("apply-one", lol(json!([{"name": "a"}]))),
        ],
    );
    assert_eq!(
        without_managed_fields(&out),
        lol(json!([{"name": "a"}, {"name": "b", "value": ["d", "e"]}]))
    );
    assert_eq!(
        entry(&out, "controller")["fieldsV1"],
        json!({"f:listOfLists": {"k:{\"name\":\"b\"}": {"f:value": {"v:\"e\"": {}}}}})
    );
}

#[test]
fn smd_remove_one_with_dangling_subitem_keep_one() {
    let s = list_of_lists();
    let out = run(
        &s,
        vec![
            Op::Apply(
                "apply-one",
                lol(json!([{"name": "a"}, {"name": "b", "value": ["c"]}])),
            ),
            Op::Apply("apply-two", lol(json!([{"name": "a", "value": ["b"]}]))),
            Op::Update(
                "controller",
                lol(json!([{"name": "a", "value": ["b"]}, {"name": "b", "value": ["c", "d"]}])),
            ),
            Op::Apply("apply-one", lol(json!([{"name": "a"}]))),
        ],
    );
    assert_eq!(
        without_managed_fields(&out),
        lol(json!([{"name": "a", "value": ["b"]}]))
    );
    assert_eq!(managers(&out).len(), 2, "{out}");
}

#[test]
fn smd_unset_scalar_shared_with_updater_is_kept() {
    // merge/multiple_appliers_test.go "unset_scalar_shared_with_updater" (flattened).
    let s = schema();
    let out = run(
        &s,
        vec![
            Op::Apply("default", base(json!({"image": "x", "replicas": 1}))),
            Op::Update(
                "controller",
                base(json!({"image": "x", "replicas": 1, "mode": "auto"})),
            ),
            Op::Apply("default", base(json!({"image": "x"}))),
        ],
    );
    // replicas was owned by the applier alone: removed.
    assert!(out["spec"].get("replicas").is_none());
    assert_eq!(out["spec"]["mode"], "auto");
}

#[test]
fn smd_set_reorder() {
    // merge/set_test.go "apply_twice_reorder" and "apply_update_apply_reorder".
    let s = Structural::from_json(&json!({"type": "object", "properties": {"list": {
        "type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}))
    .unwrap();
    let obj = |l: &[&str]| json!({"apiVersion": "v1", "kind": "K", "list": l});
    let out = run(
        &s,
        vec![
            Op::Apply("default", obj(&["a", "b", "c", "d"])),
            Op::Apply("default", obj(&["a", "d", "c", "b"])),
        ],
    );
    assert_eq!(without_managed_fields(&out), obj(&["a", "d", "c", "b"]));
    let out = run(
        &s,
        vec![
            Op::Apply("default", obj(&["a", "b", "c", "d"])),
            Op::Update("controller", obj(&["a", "d", "c", "b"])),
            Op::Apply("default", obj(&["a", "b", "c", "d"])),
        ],
    );
    assert_eq!(without_managed_fields(&out), obj(&["a", "b", "c", "d"]));
    assert_eq!(
        managers(&out),
        vec![("default".into(), "Apply".into(), String::new())]
    );
    assert_eq!(
        entry(&out, "default")["fieldsV1"],
        json!({"f:list": {"v:\"a\"": {}, "v:\"b\"": {}, "v:\"c\"": {}, "v:\"d\"": {}}})
    );
}

#[test]
fn garbage_inputs_do_not_panic() {
    let s = schema();
    let weird = [
        json!(null),
        json!(1),
        json!("x"),
        json!([1, {"a": null}]),
        json!({"apiVersion": 5, "kind": [], "metadata": "nope", "spec": [1]}),
        json!({"apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcess", "metadata": {"name": "dp", "managedFields": "x"}}),
        json!({"apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcess", "metadata": {"name": "dp",
            "managedFields": [{"manager": "m", "operation": "Apply", "apiVersion": "v", "fieldsType": "FieldsV1",
                               "fieldsV1": {"k:[1]": {}, "q:": {}, "v:{": {}}}]}}),
        json!({"apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcess", "metadata": {"name": "dp", "uid": "u",
            "managedFields": [{"manager": "m", "operation": "Update", "apiVersion": "v", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:spec": {"f:env": {"k:{\"name\":\"a\"}": {".": {}}}}}, "time": "garbage"}]},
            "spec": {"env": [{"value": 1}, "str", null], "tags": [{"a": 1}, [1]], "selector": 5, "params": [1]}}),
        json!({"spec": {"env": null, "tags": null, "deviceRef": {"name": {"deep": [1, 2, {"x": null}]}}}, "status": 7}),
    ];
    for live in &weird {
        for applied in &weird {
            let _ = apply(ApplyRequest {
                live: Some(live),
                applied,
                manager: "m",
                subresource: None,
                force: true,
                schema: Some(&s),
                now: "garbage-time",
            });
            let _ = apply(ApplyRequest {
                live: None,
                applied,
                manager: "",
                subresource: Some("status"),
                force: false,
                schema: None,
                now: T0,
            });
            let mut new = applied.clone();
            record_update(Some(live), &mut new, "m", None, Some(&s), T0);
            let mut new = applied.clone();
            record_update(None, &mut new, "m", Some("status"), None, T0);
        }
        let mut x = live.clone();
        let _ = s.prune(&mut x);
        s.apply_defaults(&mut x);
        let _ = s.validate(&x);
        let _ = s.validate_status(&x);
    }
}

#[test]
fn list_map_key_defaults_and_partial_keys() {
    let s = Structural::from_json(&json!({"type": "object", "properties": {"ports": {
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "protocol"],
        "items": {"type": "object", "properties": {
            "port": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"}, "name": {"type": "string"}}}}}}))
    .unwrap();
    let obj = |ports: Value| json!({"apiVersion": "v1", "kind": "K", "ports": ports});
    let out = apply_as(
        &s,
        None,
        &obj(json!([{"port": 80, "name": "http"}])),
        "m",
        None,
        false,
        T0,
    )
    .unwrap();
    // The missing key takes its default in the path element; the value is defaulted after.
    assert_eq!(
        entry(&out, "m")["fieldsV1"],
        json!({"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}}}})
    );
    assert_eq!(
        out["ports"],
        json!([{"port": 80, "name": "http", "protocol": "TCP"}])
    );
    let err = apply_as(&s, None, &obj(json!([null])), "m", None, false, T0).unwrap_err();
    assert!(
        err.to_string().contains("may not have a null element"),
        "{err}"
    );
}

#[test]
fn typed_patch_errors_are_500_with_the_apiserver_message() {
    let s = schema();
    let mut cfg = base(json!({"env": [{"name": "A"}, {"name": "A"}]}));
    let err = apply_as(&s, None, &cfg, "m", None, false, T0).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"failed to create typed patch object (default/dp; azure.com/v1alpha1, Kind=DeviceProcess): .spec.env: duplicate entries for key [name="A"]"#
    );
    assert_eq!(err.code(), 500);
    cfg["spec"]["env"] = json!([{"value": "x"}]);
    let err = apply_as(&s, None, &cfg, "m", None, false, T0).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"failed to create typed patch object (default/dp; azure.com/v1alpha1, Kind=DeviceProcess): .spec.env: element 0: associative list with keys has an element that omits all key fields ["name"] (and doesn't have default values for any key fields)"#
    );
}
