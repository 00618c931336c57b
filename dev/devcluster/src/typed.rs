//! Field validation of built-in kinds by decoding into the typed Kubernetes structs
//! (k8s-openapi), as the real server decodes them: fields the type does not have are
//! "unknown fields" (400 under Strict, a Warning under Warn, dropped either way) and values of
//! the wrong JSON type are 400 BadRequest. Custom resources get the same check for `metadata`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, Namespace, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event as V1Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The outcome of decoding: Err(message) for a type error, else the unknown field paths.
fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    match serde_json::from_value::<T>(v.clone()) {
        Ok(typed) => serde_json::to_value(typed).map_err(|e| e.to_string()),
        // Go's decoder never requires fields (validation reports them later, if at all):
        // an object the typed struct cannot hold without a field is not checked here.
        Err(e) if e.to_string().starts_with("missing field") => Ok(v.clone()),
        Err(e) => Err(e.to_string()),
    }
}

fn typed_form(kind: &str, group: &str, v: &Value) -> Option<Result<Value, String>> {
    Some(match (group, kind) {
        ("", "ConfigMap") => roundtrip::<ConfigMap>(v),
        ("", "Secret") => roundtrip::<Secret>(v),
        ("", "ServiceAccount") => roundtrip::<ServiceAccount>(v),
        ("", "Service") => roundtrip::<Service>(v),
        ("apps", "Deployment") => roundtrip::<Deployment>(v),
        ("", "Namespace") => roundtrip::<Namespace>(v),
        ("", "Event") => roundtrip::<CoreEvent>(v),
        ("events.k8s.io", "Event") => roundtrip::<V1Event>(v),
        ("coordination.k8s.io", "Lease") => roundtrip::<Lease>(v),
        ("policy", "PodDisruptionBudget") => roundtrip::<PodDisruptionBudget>(v),
        ("rbac.authorization.k8s.io", "Role") => roundtrip::<Role>(v),
        ("rbac.authorization.k8s.io", "ClusterRole") => roundtrip::<ClusterRole>(v),
        ("rbac.authorization.k8s.io", "RoleBinding") => roundtrip::<RoleBinding>(v),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => roundtrip::<ClusterRoleBinding>(v),
        _ => return None,
    })
}

/// Removes from `input` what `typed` (its decoded-and-encoded form) does not have; returns the
/// removed paths in the apiserver's notation (`spec.rules[0].verb`).
fn strip_unknown(input: &mut Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            let mut unknown = Vec::new();
            for (k, v) in a.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(tv) => strip_unknown(v, tv, &p, out),
                    None if v.is_null() => {}
                    None => {
                        // Maps of the typed structs (labels, data…) keep every key; a missing
                        // key is a field the type does not have.
                        unknown.push(k.clone());
                        out.push(p);
                    }
                }
            }
            for k in unknown {
                a.remove(&k);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, tv)) in a.iter_mut().zip(b.iter()).enumerate() {
                strip_unknown(v, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Unknown fields of a built-in object (removed from `obj`), or a decoding error message.
pub(crate) fn check_builtin(
    kind: &str,
    group: &str,
    obj: &mut Value,
) -> Result<Vec<String>, String> {
    let Some(typed) = typed_form(kind, group, obj) else {
        return Ok(Vec::new());
    };
    let typed = typed?;
    let mut out = Vec::new();
    strip_unknown(obj, &typed, "", &mut out);
    Ok(out)
}

/// Unknown fields of `metadata` (any kind), removed from `obj`.
pub(crate) fn check_metadata(obj: &mut Value) -> Result<Vec<String>, String> {
    let Some(meta) = obj.get_mut("metadata") else {
        return Ok(Vec::new());
    };
    let typed = roundtrip::<ObjectMeta>(meta)?;
    let mut out = Vec::new();
    strip_unknown(meta, &typed, "metadata", &mut out);
    Ok(out)
}
