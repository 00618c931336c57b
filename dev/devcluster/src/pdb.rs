//! `policy/v1` PodDisruptionBudget: the registry strategy and spec validation of a real API
//! server (Kubernetes 1.33, `pkg/registry/policy/poddisruptionbudget` and
//! `pkg/apis/policy/validation`), as the project's manifests need it (stored; no disruption
//! controller computes its status, as on a cluster without kube-controller-manager).
//!
//! - Create: `status` reset to the zero status (the four counters 0), `metadata.generation`
//!   1 (bumped on spec changes, as for Deployments); updates of the main resource keep the
//!   status.
//! - `spec.minAvailable` and `spec.maxUnavailable` cannot both be set; each, an integer at
//!   least 0 or a percentage (`^[0-9]+%$`) of at most 100%;
//!   `spec.unhealthyPodEvictionPolicy` one of `AlwaysAllow`, `IfHealthyBudget`.
//!
//! Not modelled: label-selector syntax checks beyond the typed decode.

use apollo_apimachinery::schema::FieldError;
use serde_json::{Value, json};

pub(crate) fn is_pdb(group: &str, kind: &str) -> bool {
    group == "policy" && kind == "PodDisruptionBudget"
}

fn int_or_percent(field: &str, v: &Value, errs: &mut Vec<FieldError>) {
    match v {
        Value::Number(n) if n.as_i64().is_some_and(|i| i < 0) => {
            errs.push(FieldError::invalid(
                field,
                v.clone(),
                "must be greater than or equal to 0",
            ));
        }
        Value::String(s) => {
            let digits = s.strip_suffix('%').unwrap_or("");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                errs.push(FieldError::invalid(
                    field,
                    v.clone(),
                    "must be an integer or percentage (e.g '5%')",
                ));
            } else if digits.parse::<u64>().map_or(true, |p| p > 100) {
                errs.push(FieldError::invalid(
                    field,
                    v.clone(),
                    "must not be greater than 100%",
                ));
            }
        }
        _ => {}
    }
}

/// Validation of the spec (create and update).
pub(crate) fn validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = obj.get("spec") else {
        return errs;
    };
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        errs.push(FieldError::invalid(
            "spec",
            spec.clone(),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    if let Some(v) = min {
        int_or_percent("spec.minAvailable", v, &mut errs);
    }
    if let Some(v) = max {
        int_or_percent("spec.maxUnavailable", v, &mut errs);
    }
    if let Some(p) = spec
        .get("unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
        && !["AlwaysAllow", "IfHealthyBudget"].contains(&p)
    {
        errs.push(FieldError::not_supported(
            "spec.unhealthyPodEvictionPolicy",
            Value::String(p.to_string()),
            &["AlwaysAllow".to_string(), "IfHealthyBudget".to_string()],
        ));
    }
    errs
}

/// PrepareForCreate + Validate.
pub(crate) fn create(obj: &mut Value) -> Result<(), Vec<FieldError>> {
    if let Some(m) = obj.as_object_mut() {
        m.insert(
            "status".into(),
            json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0}),
        );
    }
    let errs = validate(obj);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}
