//! `coordination.k8s.io/v1` Lease: the registry strategy and validation of a real API server
//! (Kubernetes 1.33, `pkg/registry/coordination/lease` and `pkg/apis/coordination/validation`).
//!
//! - `spec.leaseDurationSeconds`, when set, must be greater than 0 (422 `Invalid value: 0: must
//!   be greater than 0`); `spec.leaseTransitions`, when set, at least 0.
//! - `spec.strategy` and `spec.preferredHolder` belong to the `CoordinatedLeaderElection`
//!   feature gate, off by default in 1.33: the strategy drops both on create, and on update
//!   unless the stored object already uses them (as `dropDisabledSpecFields` does).
//!
//! Everything else (names, optimistic concurrency, label selectors, watch) is the generic
//! storage's; Leases have no `generation` and no status subresource.

use apollo_apimachinery::schema::FieldError;
use serde_json::Value;

pub(crate) fn is_lease(group: &str, kind: &str) -> bool {
    group == "coordination.k8s.io" && kind == "Lease"
}

fn uses_gated_fields(obj: &Value) -> bool {
    ["/spec/strategy", "/spec/preferredHolder"]
        .iter()
        .any(|p| obj.pointer(p).is_some_and(|v| !v.is_null()))
}

/// The strategy's PrepareForCreate/PrepareForUpdate, then ValidateLease(Update).
pub(crate) fn prepare(obj: &mut Value, old: Option<&Value>) -> Result<(), Vec<FieldError>> {
    if old.is_none_or(|o| !uses_gated_fields(o))
        && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("strategy");
        spec.remove("preferredHolder");
    }
    let mut errs = Vec::new();
    if let Some(d) = obj
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        && d <= 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            Value::from(d),
            "must be greater than 0",
        ));
    }
    if let Some(t) = obj
        .pointer("/spec/leaseTransitions")
        .and_then(Value::as_i64)
        && t < 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseTransitions",
            Value::from(t),
            "must be greater than or equal to 0",
        ));
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}
