//! Events: core/v1 is the storage form; events.k8s.io/v1 is a second view of the same objects.
//! Field mapping as the apiserver's conversion: regarding≡involvedObject, note≡message,
//! reportingController≡reportingComponent, deprecatedSource≡source,
//! deprecatedFirstTimestamp/LastTimestamp/Count ≡ firstTimestamp/lastTimestamp/count.

use apollo_apimachinery::schema::FieldError;
use apollo_names::messages::{self, LenUnit};
use serde_json::{Map, Value, json};

const PAIRS: [(&str, &str); 8] = [
    // (core, events.k8s.io/v1)
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingInstance", "reportingInstance"),
];
const SAME: [&str; 7] = [
    "metadata",
    "eventTime",
    "series",
    "action",
    "reason",
    "related",
    "type",
];

fn convert(obj: &Value, to_v1: bool) -> Value {
    let Some(src) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    out.insert(
        "apiVersion".into(),
        json!(if to_v1 { "events.k8s.io/v1" } else { "v1" }),
    );
    out.insert("kind".into(), json!("Event"));
    for k in SAME {
        if let Some(v) = src.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    for (core, v1) in PAIRS {
        let (from, to) = if to_v1 { (core, v1) } else { (v1, core) };
        if let Some(v) = src.get(from) {
            out.insert(to.into(), v.clone());
        }
    }
    if to_v1 {
        // Zero values the typed v1 object drops.
        for k in [
            "deprecatedSource",
            "reportingController",
            "reportingInstance",
            "note",
        ] {
            let empty = match out.get(k) {
                Some(Value::String(s)) => s.is_empty(),
                Some(Value::Object(m)) => m.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                out.remove(k);
            }
        }
        for k in [
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
        ] {
            let zero = matches!(out.get(k), Some(Value::Null))
                || out.get(k).and_then(Value::as_i64) == Some(0);
            if zero {
                out.remove(k);
            }
        }
        out.entry("eventTime").or_insert(Value::Null);
    } else {
        normalize_core_map(&mut out);
    }
    Value::Object(out)
}

/// core/v1 → events.k8s.io/v1.
pub(crate) fn core_to_v1(obj: &Value) -> Value {
    convert(obj, true)
}

/// events.k8s.io/v1 → core/v1 (storage form).
pub(crate) fn v1_to_core(obj: &Value) -> Value {
    convert(obj, false)
}

fn normalize_core_map(m: &mut Map<String, Value>) {
    m.entry("involvedObject").or_insert_with(|| json!({}));
    m.entry("source").or_insert_with(|| json!({}));
    m.entry("firstTimestamp").or_insert(Value::Null);
    m.entry("lastTimestamp").or_insert(Value::Null);
    m.entry("eventTime").or_insert(Value::Null);
    m.entry("reportingComponent").or_insert_with(|| json!(""));
    m.entry("reportingInstance").or_insert_with(|| json!(""));
}

/// The zero values a core/v1 Event always serializes.
pub(crate) fn normalize_core(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        normalize_core_map(m);
    }
}

fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn is_set(obj: &Value, key: &str) -> bool {
    match obj.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(n)) => n.as_i64() != Some(0),
        Some(_) => true,
    }
}

fn required(field: &str) -> FieldError {
    FieldError::required(field, "")
}

fn invalid(field: &str, value: &str, detail: &str) -> FieldError {
    FieldError::invalid(field, Value::String(value.to_string()), detail)
}

/// `reportingController` as this server checks it: at most one message for the name part,
/// then at most one for the prefix (not the full `IsQualifiedName` list of
/// `apollo_names::messages::qualified_name_errors`).
fn reporting_controller_errors(v: &str) -> Vec<String> {
    let (prefix, name) = match v.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, v),
    };
    let mut out = Vec::new();
    if !apollo_names::is_qualified_name_part(name) {
        out.push(format!("name part {}", messages::qualified_name_message()));
    }
    if let Some(p) = prefix
        && !apollo_names::is_dns1123_subdomain(p)
    {
        out.push(format!(
            "prefix part {}",
            messages::dns1123_subdomain_message()
        ));
    }
    out
}

/// Event validation as the apiserver's: `strict` for events.k8s.io/v1 creates and updates,
/// legacy rules for core/v1. `core` is the storage (core/v1) form.
pub(crate) fn validate(core: &Value, strict: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = s(core, "/metadata/namespace");
    let involved_ns = s(core, "/involvedObject/namespace");
    let rc_field = if strict {
        "reportingController"
    } else {
        "reportingComponent"
    };
    if !is_set(core, "eventTime") {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(invalid(
                    "involvedObject.namespace",
                    involved_ns,
                    "does not match event.namespace",
                ));
            }
        } else if ns != involved_ns {
            errs.push(invalid(
                "involvedObject.namespace",
                involved_ns,
                "does not match event.namespace",
            ));
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(invalid(
                "involvedObject.namespace",
                involved_ns,
                "does not match event.namespace",
            ));
        }
        let rc = s(core, "/reportingComponent");
        if rc.is_empty() {
            errs.push(required(rc_field));
        }
        for m in reporting_controller_errors(rc) {
            if !rc.is_empty() {
                errs.push(invalid(rc_field, rc, &m));
            }
        }
        let limits = [("reportingInstance", 128), ("action", 128), ("reason", 128)];
        for (f, limit) in limits {
            let v = s(core, &format!("/{f}"));
            if v.is_empty() {
                errs.push(required(f));
            } else if v.len() > limit {
                errs.push(invalid(
                    f,
                    "",
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
        if s(core, "/message").len() > 1024 {
            errs.push(invalid("message", "", "can have at most 1024 characters"));
        }
    }
    for m in messages::dns1123_subdomain_errors(ns, LenUnit::Characters) {
        errs.push(invalid("namespace", ns, &m));
    }
    if strict {
        let name = s(core, "/metadata/name");
        for m in messages::dns1123_subdomain_errors(name, LenUnit::Characters) {
            errs.push(invalid("metadata.name", name, &m));
        }
        let gen_name = s(core, "/metadata/generateName");
        if !gen_name.is_empty() {
            for m in crate::meta::generate_name_errors(gen_name, false) {
                errs.push(invalid("metadata.generateName", gen_name, &m));
            }
        }
        if let Some(series) = core.get("series").filter(|v| !v.is_null()) {
            if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
                errs.push(invalid("series.count", "", "should be at least 2"));
            }
            if !is_set(series, "lastObservedTime") {
                errs.push(required("series.lastObservedTime"));
            }
        }
        if !is_set(core, "eventTime") {
            errs.push(required("eventTime"));
        }
        let t = s(core, "/type");
        if t != "Normal" && t != "Warning" {
            errs.push(invalid("type", "", &format!("has invalid value: {t}")));
        }
        if is_set(core, "firstTimestamp") {
            errs.push(invalid("firstTimestamp", "", "needs to be unset"));
        }
        if is_set(core, "lastTimestamp") {
            errs.push(invalid("lastTimestamp", "", "needs to be unset"));
        }
        if is_set(core, "count") {
            errs.push(invalid("count", "", "needs to be unset"));
        }
        if !s(core, "/source/component").is_empty() || !s(core, "/source/host").is_empty() {
            errs.push(invalid("source", "", "needs to be unset"));
        }
    }
    errs
}

/// Update validation: the legacy rules, plus for events.k8s.io/v1 the immutable fields.
pub(crate) fn validate_update(new: &Value, old: &Value, strict: bool) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> = validate(new, false);
    if !strict {
        return errs;
    }
    if new.get("series") != old.get("series")
        && let Some(series) = new.get("series").filter(|v| !v.is_null())
    {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errs.push(invalid("series.count", "", "should be at least 2"));
        }
        if !is_set(series, "lastObservedTime") {
            errs.push(required("series.lastObservedTime"));
        }
    }
    let immutable = [
        ("involvedObject", "involvedObject"),
        ("reason", "reason"),
        ("message", "message"),
        ("source", "source"),
        ("firstTimestamp", "firstTimestamp"),
        ("lastTimestamp", "lastTimestamp"),
        ("count", "count"),
        ("type", "type"),
        ("eventTime", "eventTime"),
        ("action", "action"),
        ("related", "related"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
    ];
    for (key, field) in immutable {
        let norm = |v: Option<&Value>| match v {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(s)) if s.is_empty() => Value::Null,
            Some(Value::Object(m)) if m.is_empty() => Value::Null,
            Some(v) => v.clone(),
        };
        if norm(new.get(key)) != norm(old.get(key)) {
            let shown = new.get(key).cloned().unwrap_or(Value::Null);
            errs.push(FieldError::invalid(field, shown, "field is immutable"));
        }
    }
    errs
}
