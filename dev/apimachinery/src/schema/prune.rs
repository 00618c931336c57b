//! Pruning: unknown fields removed as the apiserver prunes them (embedded resources, ObjectMeta
//! normalisation, preserve-unknown-fields).

use super::*;

pub(crate) const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

pub(crate) fn append_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

pub(crate) fn record(path: &str, key: &str, out: &mut Vec<String>) {
    if path.is_empty() {
        out.push(key.to_string());
    } else {
        out.push(format!("{path}.{key}"));
    }
}

/// Structural pruning; `as_embedded` treats `s` as an embedded resource (the root is).
pub(crate) fn prune_value(
    x: &mut Value,
    s: Option<&Node>,
    path: &mut String,
    out: &mut Vec<String>,
    as_embedded: bool,
) {
    if let Some(s) = s
        && s.preserve_unknown
    {
        skip_prune(x, s, path, out, as_embedded);
        return;
    }
    let orig = path.len();
    match x {
        Value::Object(m) => {
            let Some(s) = s else {
                for k in m.keys() {
                    record(path, k, out);
                }
                m.clear();
                return;
            };
            let embedded = s.embedded || as_embedded;
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(prop) = s.prop(&k) {
                    append_key(path, &k);
                    if let Some(v) = m.get_mut(&k) {
                        prune_value(v, Some(prop), path, out, false);
                    }
                    path.truncate(orig);
                } else if let Some(add) = s.additional.as_deref() {
                    append_key(path, &k);
                    if let Some(v) = m.get_mut(&k) {
                        prune_value(v, Some(add), path, out, false);
                    }
                    path.truncate(orig);
                } else {
                    if !(META_FIELDS.contains(&k.as_str()) && path.is_empty()) {
                        record(path, &k, out);
                    }
                    m.remove(&k);
                }
            }
        }
        Value::Array(a) => {
            let items = s.and_then(|s| s.items.as_deref());
            for (i, v) in a.iter_mut().enumerate() {
                path.push_str(&format!("[{i}]"));
                prune_value(v, items, path, out, false);
                path.truncate(orig);
            }
        }
        _ => {}
    }
}

pub(crate) fn skip_prune(
    x: &mut Value,
    s: &Node,
    path: &mut String,
    out: &mut Vec<String>,
    as_embedded: bool,
) {
    let orig = path.len();
    match x {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if (s.embedded || as_embedded) && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(prop) = s.prop(k) {
                    append_key(path, k);
                    prune_value(v, Some(prop), path, out, false);
                    path.truncate(orig);
                } else if let Some(add) = s.additional.as_deref() {
                    append_key(path, k);
                    prune_value(v, Some(add), path, out, false);
                    path.truncate(orig);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for (i, v) in a.iter_mut().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    skip_prune(v, items, path, out, false);
                    path.truncate(orig);
                }
            }
        }
        _ => {}
    }
}

/// Removes `null`s of non-nullable fields without a default (they would be dropped by a Go
/// struct decode; non-nullable nulls with a default are defaulted later).
pub(crate) fn prune_nulls(x: &mut Value, s: Option<&Node>) {
    match x {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let schema = s.and_then(|s| s.field(&k));
                let drop = matches!(m.get(&k), Some(Value::Null))
                    && schema.is_some_and(|sc| !sc.nullable && sc.default.is_none());
                if drop {
                    m.remove(&k);
                } else if let Some(v) = m.get_mut(&k) {
                    prune_nulls(v, schema);
                }
            }
        }
        Value::Array(a) => {
            let items = s.and_then(|s| s.items.as_deref());
            for v in a.iter_mut() {
                prune_nulls(v, items);
            }
        }
        _ => {}
    }
}

pub(crate) const OBJECT_META_FIELDS: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];
pub(crate) const OWNER_REFERENCE_FIELDS: [&str; 6] = [
    "apiVersion",
    "kind",
    "name",
    "uid",
    "controller",
    "blockOwnerDeletion",
];
pub(crate) const MANAGED_FIELDS_ENTRY_FIELDS: [&str; 7] = [
    "manager",
    "operation",
    "apiVersion",
    "time",
    "fieldsType",
    "fieldsV1",
    "subresource",
];

/// Drops ObjectMeta fields a strict Go decode would not know, recording `prefix.field`.
pub(crate) fn prune_object_meta(meta: &mut Value, prefix: &str, out: &mut Vec<String>) {
    let Value::Object(m) = meta else { return };
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if !OBJECT_META_FIELDS.contains(&k.as_str()) {
            out.push(format!("{prefix}.{k}"));
            m.remove(&k);
        }
    }
    for (list, known) in [
        ("ownerReferences", &OWNER_REFERENCE_FIELDS[..]),
        ("managedFields", &MANAGED_FIELDS_ENTRY_FIELDS[..]),
    ] {
        if let Some(Value::Array(items)) = m.get_mut(list) {
            for (i, item) in items.iter_mut().enumerate() {
                if let Value::Object(im) = item {
                    let keys: Vec<String> = im.keys().cloned().collect();
                    for k in keys {
                        if !known.contains(&k.as_str()) {
                            out.push(format!("{prefix}.{list}[{i}].{k}"));
                            im.remove(&k);
                        }
                    }
                }
            }
        }
    }
}

/// The ObjectMeta round trip of the apiserver's decoder (Go struct, `omitempty`): empty
/// strings, zero generation, empty or null maps and lists and null pointers disappear. For
/// embedded resources a null `creationTimestamp` is dropped too.
pub(crate) fn normalize_object_meta(meta: &mut Value, embedded: bool) {
    let Value::Object(m) = meta else { return };
    m.retain(|k, v| match k.as_str() {
        "name" | "generateName" | "namespace" | "selfLink" | "uid" | "resourceVersion" => {
            !(v.is_null() || v.as_str() == Some(""))
        }
        "generation" => !(v.is_null() || v.as_i64() == Some(0)),
        "labels" | "annotations" => !(v.is_null() || v.as_object().is_some_and(Map::is_empty)),
        "ownerReferences" | "finalizers" | "managedFields" => {
            !(v.is_null() || v.as_array().is_some_and(Vec::is_empty))
        }
        "deletionTimestamp" | "deletionGracePeriodSeconds" => !v.is_null(),
        "creationTimestamp" => !(embedded && v.is_null()),
        _ => true,
    });
}

pub(crate) fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `field.Path.Key`: `parent[key]`.
pub(crate) fn key_path(parent: &str, key: &str) -> String {
    format!("{parent}[{key}]")
}

/// Prunes unknown ObjectMeta fields of embedded resources (not the root).
pub(crate) fn coerce_embedded(x: &mut Value, s: Option<&Node>, path: &str, out: &mut Vec<String>) {
    let Some(s) = s else { return };
    match x {
        Value::Object(m) => {
            if s.embedded
                && !path.is_empty()
                && let Some(meta) = m.get_mut("metadata")
            {
                prune_object_meta(meta, &child_path(path, "metadata"), out);
                normalize_object_meta(meta, true);
            }
            for (k, v) in m.iter_mut() {
                if let Some(prop) = s.prop(k) {
                    coerce_embedded(v, Some(prop), &child_path(path, k), out);
                } else if let Some(add) = s.additional.as_deref() {
                    coerce_embedded(v, Some(add), &key_path(path, k), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                coerce_embedded(v, s.items.as_deref(), &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
