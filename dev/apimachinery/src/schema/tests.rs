//! Behaviour pinned against kube-apiserver (messages copied from the apiserver's sources and
//! from observed responses in /work/shared/kube-apiserver-behaviour.md).

use super::*;
use serde_json::json;

fn dp_schema() -> Structural {
    Structural::from_json(&json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["deviceRef", "artifact"],
                "properties": {
                    "deviceRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 63,
                                                 "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}}
                    },
                    "artifact": {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string", "enum": ["oci", "http"]},
                            "url": {"type": "string", "minLength": 1}
                        }
                    },
                    "execution": {
                        "type": "object",
                        "properties": {
                            "backend": {"type": "string", "enum": ["container", "systemd"], "default": "container"},
                            "command": {"type": "array", "items": {"type": "string"}},
                            "restartPolicy": {"type": "string", "default": "Always"},
                            "env": {
                                "type": "array",
                                "x-kubernetes-list-type": "map",
                                "x-kubernetes-list-map-keys": ["name"],
                                "items": {"type": "object", "required": ["name"], "properties": {
                                    "name": {"type": "string"}, "value": {"type": "string", "default": ""}}}
                            }
                        }
                    },
                    "replicas": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 10},
                    "ratio": {"type": "number", "maximum": 1.5, "multipleOf": 0.5},
                    "port": {"x-kubernetes-int-or-string": true},
                    "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"},
                             "x-kubernetes-list-type": "set"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                               "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}},
                    "template": {
                        "type": "object",
                        "x-kubernetes-embedded-resource": true,
                        "properties": {"spec": {"type": "object", "properties": {"x": {"type": "string"}}}}
                    },
                    "when": {"type": "string", "format": "date-time"},
                    "nullableNote": {"type": "string", "nullable": true},
                    "note": {"type": "string"},
                    "limits": {"type": "object", "default": {}, "properties": {
                        "cpu": {"type": "string", "default": "100m"}}}
                }
            },
            "status": {
                "type": "object",
                "properties": {
                    "observedGeneration": {"type": "integer", "format": "int64"},
                    "phase": {"type": "string", "enum": ["Pending", "Running", "Failed"]},
                    "conditions": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["type"],
                        "items": {"type": "object", "required": ["type", "status"], "properties": {
                            "type": {"type": "string"},
                            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                            "reason": {"type": "string"}
                        }}
                    }
                }
            }
        }
    }))
    .unwrap()
}

fn msgs(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(|e| e.to_string()).collect()
}

fn valid_obj() -> Value {
    json!({
        "apiVersion": "azure.com/v1alpha1",
        "kind": "DeviceProcess",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {"deviceRef": {"name": "tor1-01"}, "artifact": {"type": "oci", "url": "r/x:1"}}
    })
}

#[test]
fn prune_reports_unknown_fields_with_dotted_paths() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["spec"]["bogusField"] = json!(1);
    o["spec"]["deviceRef"]["extra"] = json!({"deep": true});
    o["spec"]["execution"] = json!({"env": [{"name": "A", "junk": 1}]});
    o["topLevel"] = json!("x");
    let removed = s.prune(&mut o);
    assert_eq!(
        removed,
        vec![
            "spec.bogusField",
            "spec.deviceRef.extra",
            "spec.execution.env[0].junk",
            "topLevel"
        ]
    );
    assert!(o["spec"].get("bogusField").is_none());
    assert!(o.get("topLevel").is_none());
    assert_eq!(o["spec"]["execution"]["env"][0], json!({"name": "A"}));
    // apiVersion/kind/metadata are kept at the root.
    assert_eq!(o["metadata"]["name"], "x");
    assert_eq!(o["kind"], "DeviceProcess");
    assert_eq!(
        strict_decoding_message(&removed[..1]),
        r#"strict decoding error: unknown field "spec.bogusField""#
    );
    assert_eq!(
        unknown_field_warning("spec.bogusField"),
        r#"unknown field "spec.bogusField""#
    );
}

#[test]
fn prune_without_root_meta_in_schema_keeps_them() {
    let s = Structural::from_json(
        &json!({"type": "object", "properties": {"spec": {"type": "object"}}}),
    )
    .unwrap();
    let mut o = json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "n"}, "spec": {"a": 1}, "x": 1});
    let removed = s.prune(&mut o);
    assert_eq!(removed, vec!["spec.a", "x"]);
    assert_eq!(
        o,
        json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "n"}, "spec": {}})
    );
}

#[test]
fn prune_unknown_metadata_fields() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["metadata"]["bogus"] = json!(1);
    o["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "K", "name": "n", "uid": "u", "zzz": 1}]);
    let removed = s.prune(&mut o);
    assert_eq!(
        removed,
        vec!["metadata.bogus", "metadata.ownerReferences[0].zzz"]
    );
    assert!(o["metadata"].get("bogus").is_none());
}

#[test]
fn prune_honours_preserve_unknown_fields_and_additional_properties() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["spec"]["config"] = json!({"anything": {"goes": [1, 2]}, "known": {"a": "x", "b": "pruned"}});
    o["spec"]["labels"] = json!({"a": "b", "c": "d"});
    let removed = s.prune(&mut o);
    assert_eq!(removed, vec!["spec.config.known.b"]);
    assert_eq!(
        o["spec"]["config"],
        json!({"anything": {"goes": [1, 2]}, "known": {"a": "x"}})
    );
    assert_eq!(o["spec"]["labels"], json!({"a": "b", "c": "d"}));
}

#[test]
fn prune_embedded_resource_keeps_type_meta_and_prunes_unknown_metadata() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["spec"]["template"] = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"}, "weird": 1},
        "spec": {"x": "y", "z": 1},
        "other": 1
    });
    let removed = s.prune(&mut o);
    assert_eq!(
        removed,
        vec![
            "spec.template.other",
            "spec.template.spec.z",
            "spec.template.metadata.weird"
        ]
    );
    assert_eq!(
        o["spec"]["template"],
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"x": "y"}})
    );
}

#[test]
fn prune_drops_non_nullable_nulls_without_default() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["spec"]["note"] = Value::Null;
    o["spec"]["nullableNote"] = Value::Null;
    o["spec"]["execution"] = json!({"backend": null});
    let removed = s.prune(&mut o);
    assert!(removed.is_empty());
    assert!(o["spec"].get("note").is_none());
    assert_eq!(o["spec"]["nullableNote"], Value::Null);
    // A null with a default stays for defaulting.
    assert_eq!(o["spec"]["execution"]["backend"], Value::Null);
    s.apply_defaults(&mut o);
    assert_eq!(o["spec"]["execution"]["backend"], "container");
}

#[test]
fn defaults_apply_only_where_the_parent_exists() {
    let s = dp_schema();
    let mut o = valid_obj();
    s.apply_defaults(&mut o);
    // execution is absent: its children are not defaulted.
    assert!(o["spec"].get("execution").is_none());
    // limits has default {} and its child cpu a default: both apply (parent first).
    assert_eq!(o["spec"]["limits"], json!({"cpu": "100m"}));
    let mut o = valid_obj();
    o["spec"]["execution"] = json!({"env": [{"name": "A"}, {"name": "B", "value": "v"}]});
    s.apply_defaults(&mut o);
    assert_eq!(o["spec"]["execution"]["backend"], "container");
    assert_eq!(o["spec"]["execution"]["restartPolicy"], "Always");
    assert_eq!(
        o["spec"]["execution"]["env"],
        json!([{"name": "A", "value": ""}, {"name": "B", "value": "v"}])
    );
    // Explicit values are kept.
    let mut o = valid_obj();
    o["spec"]["execution"] = json!({"backend": "systemd"});
    s.apply_defaults(&mut o);
    assert_eq!(o["spec"]["execution"]["backend"], "systemd");
}

#[test]
fn defaults_are_pruned_against_their_schema() {
    let s = Structural::from_json(&json!({"type": "object", "properties": {"spec": {
        "type": "object", "default": {"a": "x", "unknown": 1},
        "properties": {"a": {"type": "string"}}}}}))
    .unwrap();
    let mut o = json!({});
    s.apply_defaults(&mut o);
    assert_eq!(o, json!({"spec": {"a": "x"}}));
}

#[test]
fn type_error_message_matches_the_real_server() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["status"] = json!({"observedGeneration": "string"});
    let errs = s.validate_status(&o);
    assert_eq!(
        msgs(&errs),
        vec![
            r#"status.observedGeneration: Invalid value: "string": observedGeneration in body must be of type integer: "string""#
        ]
    );
    assert_eq!(errs[0].reason(), "FieldValueTypeInvalid");
    // On the main resource the message names the full path.
    let errs = s.validate(&o);
    assert_eq!(
        msgs(&errs),
        vec![
            r#"status.observedGeneration: Invalid value: "string": status.observedGeneration in body must be of type integer: "string""#
        ]
    );
}

#[test]
fn enum_and_required_messages() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["spec"]["execution"] = json!({"backend": "x"});
    o["spec"].as_object_mut().unwrap().remove("deviceRef");
    let errs = s.validate(&o);
    assert_eq!(
        msgs(&errs),
        vec![
            r#"spec.execution.backend: Unsupported value: "x": supported values: "container", "systemd""#,
            "spec.deviceRef: Required value",
        ]
    );
    assert_eq!(errs[0].reason(), "FieldValueNotSupported");
    assert_eq!(errs[1].reason(), "FieldValueRequired");
    assert_eq!(
        errs[1].cause(),
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.deviceRef"})
    );
    assert_eq!(
        invalid_message("DeviceProcess", "azure.com", "x", &errs),
        r#"DeviceProcess.azure.com "x" is invalid: [spec.execution.backend: Unsupported value: "x": supported values: "container", "systemd", spec.deviceRef: Required value]"#
    );
    assert_eq!(
        invalid_message("DeviceProcess", "azure.com", "x", &errs[1..]),
        r#"DeviceProcess.azure.com "x" is invalid: spec.deviceRef: Required value"#
    );
}

#[test]
fn valid_object_has_no_errors() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["spec"]["replicas"] = json!(3);
    o["spec"]["ratio"] = json!(1.0);
    o["spec"]["port"] = json!("http");
    o["spec"]["when"] = json!("2024-01-01T00:00:00Z");
    o["status"] =
        json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]});
    assert_eq!(msgs(&s.validate(&o)), Vec::<String>::new());
    o["spec"]["port"] = json!(8080);
    o["spec"]["replicas"] = json!(3.0); // a whole float is an integer
    assert_eq!(msgs(&s.validate(&o)), Vec::<String>::new());
}

#[test]
fn string_number_and_list_constraints() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["spec"]["deviceRef"]["name"] = json!("Bad_Name");
    o["spec"]["artifact"]["url"] = json!("");
    o["spec"]["replicas"] = json!(11);
    o["spec"]["ratio"] = json!(1.2);
    o["spec"]["tags"] = json!(["a", "b", "a"]);
    o["spec"]["when"] = json!("yesterday");
    let errs = s.validate(&o);
    assert_eq!(
        msgs(&errs),
        vec![
            r#"spec.deviceRef.name: Invalid value: "Bad_Name": spec.deviceRef.name in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'"#,
            r#"spec.artifact.url: Invalid value: "": spec.artifact.url in body should be at least 1 chars long"#,
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
            "spec.ratio: Invalid value: 1.2: spec.ratio in body should be a multiple of 0.5",
            "spec.tags: Too many: 3: must have at most 2 items",
            r#"spec.when: Invalid value: "yesterday": spec.when in body must be of type date-time: "yesterday""#,
            r#"spec.tags[2]: Duplicate value: "a""#,
        ]
    );
    let mut o = valid_obj();
    o["spec"]["deviceRef"]["name"] = json!("a".repeat(64));
    o["spec"]["replicas"] = json!(-1);
    o["spec"]["ratio"] = json!(2.0);
    let errs = s.validate(&o);
    assert_eq!(
        msgs(&errs),
        vec![
            "spec.deviceRef.name: Too long: may not be more than 63 bytes",
            "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
            "spec.ratio: Invalid value: 2: spec.ratio in body should be less than or equal to 1.5",
        ]
    );
    assert_eq!(errs[0].reason(), "FieldValueTooLong");
}

#[test]
fn type_errors_for_each_json_type() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["spec"]["deviceRef"] = json!("tor1");
    o["spec"]["execution"] = json!({"command": "ls"});
    o["spec"]["replicas"] = json!(1.5);
    o["spec"]["port"] = json!(true);
    o["spec"]["labels"] = json!({"a": 1});
    let errs = s.validate(&o);
    assert_eq!(
        msgs(&errs),
        vec![
            r#"spec.deviceRef: Invalid value: "string": spec.deviceRef in body must be of type object: "string""#,
            r#"spec.execution.command: Invalid value: "string": spec.execution.command in body must be of type array: "string""#,
            // integer+int32 with a fraction: kube-openapi reports the format mismatch first.
            r#"spec.replicas: Invalid value: "float64": spec.replicas in body must be of type int32: "float64""#,
            r#"<nil>: Invalid value: "": Checked value must be of type integer with format int32 in spec.replicas"#,
            r#"spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean""#,
            r#"spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer""#,
        ]
    );
}

#[test]
fn null_in_non_nullable_list_item_is_a_type_error() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["spec"]["execution"] = json!({"command": ["a", null]});
    let errs = s.validate(&o);
    assert_eq!(
        msgs(&errs),
        vec![
            r#"spec.execution.command[1]: Invalid value: "null": spec.execution.command[1] in body must be of type string: "null""#
        ]
    );
}

#[test]
fn list_map_duplicates_and_required_in_items() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["status"] = json!({"conditions": [
        {"type": "Ready", "status": "True"},
        {"type": "Ready", "status": "Maybe"},
        {"status": "True"}
    ]});
    let errs = s.validate_status(&o);
    assert_eq!(
        msgs(&errs),
        vec![
            r#"status.conditions[1].status: Unsupported value: "Maybe": supported values: "True", "False", "Unknown""#,
            "status.conditions[2].type: Required value",
            r#"status.conditions[1]: Duplicate value: {"type":"Ready"}"#,
        ]
    );
}

#[test]
fn embedded_resource_requires_api_version_and_kind() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["spec"]["template"] = json!({"spec": {"x": "y"}});
    let errs = s.validate(&o);
    assert_eq!(
        msgs(&errs),
        vec![
            "spec.template.apiVersion: Required value",
            "spec.template.kind: Required value"
        ]
    );
}

#[test]
fn list_map_keys_lookup() {
    let s = dp_schema();
    assert_eq!(
        s.list_map_keys(&["status", "conditions"]),
        Some(vec!["type".to_string()])
    );
    assert_eq!(
        s.list_map_keys(&["spec", "execution", "env"]),
        Some(vec!["name".to_string()])
    );
    assert_eq!(s.list_map_keys(&["spec", "tags"]), None);
    assert_eq!(s.list_map_keys(&["spec", "nope"]), None);
    assert_eq!(s.list_type(&["spec", "tags"]).as_deref(), Some("set"));
    assert_eq!(
        s.list_type(&["spec", "execution", "command"]).as_deref(),
        Some("atomic")
    );
}

#[test]
fn composite_keywords() {
    let s = Structural::from_json(&json!({"type": "object", "properties": {"spec": {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}]
    }}}))
    .unwrap();
    assert!(s.validate(&json!({"spec": {"a": "x"}})).is_empty());
    let errs = s.validate(&json!({"spec": {"a": "x", "b": "y"}}));
    assert_eq!(
        msgs(&errs),
        vec![
            r#"<nil>: Invalid value: "": "spec" must validate one and only one schema (oneOf). Found 2 valid alternatives"#
        ]
    );
    let errs = s.validate(&json!({"spec": {}}));
    assert_eq!(
        msgs(&errs),
        vec![
            r#"<nil>: Invalid value: "": "spec" must validate one and only one schema (oneOf). Found none valid"#,
            "spec.a: Required value",
        ]
    );
}

#[test]
fn enum_with_numbers_and_null() {
    let s = Structural::from_json(&json!({"type": "object", "properties": {
        "n": {"type": "integer", "enum": [1, 2]},
        "s": {"type": "string", "nullable": true, "enum": ["a"]}
    }}))
    .unwrap();
    assert!(s.validate(&json!({"n": 2})).is_empty());
    assert_eq!(
        msgs(&s.validate(&json!({"n": 3}))),
        vec![r#"n: Unsupported value: 3: supported values: "1", "2""#]
    );
    // Like kube-openapi, null never satisfies an enum.
    assert_eq!(
        msgs(&s.validate(&json!({"s": null}))),
        vec![r#"s: Unsupported value: null: supported values: "a""#]
    );
}

#[test]
fn schema_errors() {
    assert!(Structural::from_json(&json!({"type": "blob"})).is_err());
    assert!(Structural::from_json(&json!({"type": "string", "pattern": "(unclosed"})).is_err());
    assert!(
        Structural::from_json(&json!({"type": "array", "x-kubernetes-list-type": "map"})).is_err()
    );
    assert!(Structural::from_json(&json!("nope")).is_err());
}

#[test]
fn field_error_rendering() {
    let e = FieldError::not_supported("spec.x", json!("x"), &["a".into(), "b".into()]);
    assert_eq!(
        e.to_string(),
        r#"spec.x: Unsupported value: "x": supported values: "a", "b""#
    );
    let e = FieldError::invalid(
        "metadata.name",
        json!("A"),
        "a lowercase RFC 1123 subdomain",
    );
    assert_eq!(
        e.body(),
        r#"Invalid value: "A": a lowercase RFC 1123 subdomain"#
    );
    assert_eq!(
        FieldError::required("fieldManager", "").to_string(),
        "fieldManager: Required value"
    );
    assert_eq!(
        FieldError::forbidden("spec", "nope").to_string(),
        "spec: Forbidden: nope"
    );
}

#[test]
fn prune_normalizes_object_meta_like_the_go_round_trip() {
    let s = dp_schema();
    let mut o = valid_obj();
    o["metadata"]["labels"] = json!({});
    o["metadata"]["annotations"] = Value::Null;
    o["metadata"]["finalizers"] = json!([]);
    o["metadata"]["generateName"] = json!("");
    o["metadata"]["creationTimestamp"] = Value::Null;
    assert!(s.prune(&mut o).is_empty());
    assert_eq!(
        o["metadata"],
        json!({"name": "x", "namespace": "default", "creationTimestamp": null})
    );
    o["spec"]["template"] = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"creationTimestamp": null, "labels": {}}});
    s.prune(&mut o);
    assert_eq!(o["spec"]["template"]["metadata"], json!({}));
}

#[test]
fn number_validator_quirks() {
    let s = Structural::from_json(&json!({"type": "object", "properties": {
        "ratio": {"type": "number", "multipleOf": 0.5},
        "big": {"type": "integer", "format": "int32"},
        "n": {"type": "integer", "minimum": 1, "exclusiveMinimum": true, "maximum": 5, "exclusiveMaximum": true}
    }}))
    .unwrap();
    assert!(s.validate(&json!({"ratio": 2.5})).is_empty());
    // An integer value against a fractional multipleOf: kube-openapi truncates the factor.
    assert_eq!(
        msgs(&s.validate(&json!({"ratio": 2}))),
        vec!["ratio: Invalid value: 0: factor MultipleOf declared for ratio must be positive: 0"]
    );
    assert_eq!(
        msgs(&s.validate(&json!({"big": 3000000000i64}))),
        vec![
            r#"<nil>: Invalid value: "": Checked value must be of type integer with format int32 in big"#
        ]
    );
    assert_eq!(
        msgs(&s.validate(&json!({"n": 1}))),
        vec!["n: Invalid value: 1: n in body should be greater than 1"]
    );
    assert_eq!(
        msgs(&s.validate(&json!({"n": 5}))),
        vec!["n: Invalid value: 5: n in body should be less than 5"]
    );
    assert!(s.validate(&json!({"n": 3})).is_empty());
}

#[test]
fn ratcheting_keeps_unchanged_invalid_values() {
    let s = dp_schema();
    // Stored before the schema became stricter: an unsupported backend and a long name.
    let mut old = valid_obj();
    old["spec"]["execution"] = json!({"backend": "legacy"});
    old["status"] = json!({"conditions": [{"type": "Ready", "status": "Maybe"}]});
    assert_eq!(s.validate(&old).len(), 2);
    // Unchanged object: valid.
    assert!(s.validate_update(&old, &old).is_empty());
    // Other fields change: the old invalid values ratchet.
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(2);
    new["status"]["conditions"] =
        json!([{"type": "Other", "status": "True"}, {"type": "Ready", "status": "Maybe"}]);
    assert_eq!(msgs(&s.validate_update(&old, &new)), Vec::<String>::new());
    // Changing the invalid value itself is validated.
    let mut new2 = old.clone();
    new2["spec"]["execution"]["backend"] = json!("other");
    assert_eq!(
        msgs(&s.validate_update(&old, &new2)),
        vec![
            r#"spec.execution.backend: Unsupported value: "other": supported values: "container", "systemd""#
        ]
    );
    // New invalid values are reported.
    let mut new3 = old.clone();
    new3["spec"]["replicas"] = json!("x");
    assert_eq!(
        msgs(&s.validate_update(&old, &new3)),
        vec![
            r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#
        ]
    );
    // Status writes ratchet too.
    // Ratcheting is per value: a changed item keeps its unchanged invalid field.
    let mut st = old.clone();
    st["status"]["conditions"][0]["reason"] = json!("R");
    assert!(s.validate_status_update(&old, &st).is_empty());
    st["status"]["conditions"][0]["status"] = json!("Nope");
    assert_eq!(
        msgs(&s.validate_status_update(&old, &st)),
        vec![
            r#"status.conditions[0].status: Unsupported value: "Nope": supported values: "True", "False", "Unknown""#
        ]
    );
    let mut st2 = old.clone();
    st2["status"]["conditions"] =
        json!([{"type": "X", "status": "True"}, {"type": "Ready", "status": "Maybe"}]);
    assert!(s.validate_status_update(&old, &st2).is_empty());
}

#[test]
fn null_default_is_no_default() {
    // A JSON null default decodes to a nil Default.Object in the apiserver: nothing happens.
    let s = Structural::from_json(&json!({"type": "object", "properties": {
        "a": {"type": "string", "nullable": true, "default": null}}}))
    .unwrap();
    let mut o = json!({});
    s.apply_defaults(&mut o);
    assert_eq!(o, json!({}));
}
