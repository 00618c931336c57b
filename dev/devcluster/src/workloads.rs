//! Stored workload kinds: `apps/v1` Deployments and core `v1` Services.
//!
//! As on a cluster without kube-controller-manager, nothing acts on them (no ReplicaSets, Pods
//! or Endpoints appear); the apiserver's own part is done: the registry strategies' create
//! defaults (Deployment: `replicas`, `strategy`, `revisionHistoryLimit`,
//! `progressDeadlineSeconds`, empty status; Service: `type`, `sessionAffinity`, port
//! `protocol`/`targetPort`, IP family fields, `internalTrafficPolicy`, a cluster IP from
//! `10.96.0.0/12`, node ports from 30000-32767 for NodePort/LoadBalancer, `status.loadBalancer`),
//! allocated values kept across updates that leave them out, node port conflicts (422), and a
//! Deployment's `metadata.generation` (bumped by changes of `spec` or of annotations, as the
//! apps/v1 strategy does). Pod template defaults are not applied.

use std::collections::BTreeSet;

use apollo_apimachinery::schema::FieldError;
use rand::Rng;
use serde_json::{Value, json};

use crate::store::Store;

pub(crate) fn is_deployment(group: &str, kind: &str) -> bool {
    group == "apps" && kind == "Deployment"
}

pub(crate) fn is_service(group: &str, kind: &str) -> bool {
    group.is_empty() && kind == "Service"
}

/// Whether a Deployment update bumps `metadata.generation`: spec or annotations changed.
pub(crate) fn deployment_generation_changes(old: &Value, new: &Value) -> bool {
    let annotations = |v: &Value| {
        v.pointer("/metadata/annotations")
            .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
            .cloned()
    };
    old.get("spec") != new.get("spec") || annotations(old) != annotations(new)
}

/// Create-time defaults and allocation; `store` is read for allocated IPs and node ports.
pub(crate) fn create_defaults(
    group: &str,
    kind: &str,
    obj: &mut Value,
    store: &Store,
) -> Result<(), Vec<FieldError>> {
    if is_deployment(group, kind) {
        deployment_defaults(obj);
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), json!({}));
        }
    } else if crate::leases::is_lease(group, kind) {
        crate::leases::prepare(obj, None)?;
    } else if crate::pdb::is_pdb(group, kind) {
        crate::pdb::create(obj)?;
    } else if is_service(group, kind) {
        service_defaults(obj, None, store)?;
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), json!({"loadBalancer": {}}));
        }
    }
    Ok(())
}

/// Update-time defaults: a Service keeps its allocated cluster IP and node ports.
pub(crate) fn update_defaults(
    group: &str,
    kind: &str,
    old: &Value,
    new: &mut Value,
    store: &Store,
) -> Result<(), Vec<FieldError>> {
    if is_deployment(group, kind) {
        deployment_defaults(new);
    } else if crate::leases::is_lease(group, kind) {
        crate::leases::prepare(new, Some(old))?;
    } else if crate::pdb::is_pdb(group, kind) {
        let errs = crate::pdb::validate(new);
        if !errs.is_empty() {
            return Err(errs);
        }
    } else if is_service(group, kind) {
        service_defaults(new, Some(old), store)?;
    }
    Ok(())
}

fn entry<'a>(m: &'a mut serde_json::Map<String, Value>, k: &str, v: Value) -> &'a mut Value {
    let e = m.entry(k.to_string()).or_insert(Value::Null);
    if e.is_null() {
        *e = v;
    }
    e
}

fn deployment_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    entry(spec, "replicas", json!(1));
    entry(spec, "revisionHistoryLimit", json!(10));
    entry(spec, "progressDeadlineSeconds", json!(600));
    let strategy = entry(spec, "strategy", json!({}));
    if let Some(s) = strategy.as_object_mut() {
        let t = entry(s, "type", json!("RollingUpdate")).clone();
        if t == "RollingUpdate" {
            let ru = entry(s, "rollingUpdate", json!({}));
            if let Some(ru) = ru.as_object_mut() {
                entry(ru, "maxUnavailable", json!("25%"));
                entry(ru, "maxSurge", json!("25%"));
            }
        }
    }
}

/// Cluster IPs and node ports in use by other Services.
fn allocated(store: &Store, except_uid: Option<&str>) -> (BTreeSet<String>, BTreeSet<i64>) {
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let _ = store.scan("services", None, None, None, |_, s| {
        if except_uid.is_some() && s.pointer("/metadata/uid").and_then(Value::as_str) == except_uid
        {
            return true;
        }
        if let Some(ip) = s.pointer("/spec/clusterIP").and_then(Value::as_str) {
            ips.insert(ip.to_string());
        }
        for p in s
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                ports.insert(n);
            }
        }
        true
    });
    (ips, ports)
}

fn service_defaults(
    obj: &mut Value,
    old: Option<&Value>,
    store: &Store,
) -> Result<(), Vec<FieldError>> {
    let uid = old
        .and_then(|o| o.pointer("/metadata/uid"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (used_ips, used_ports) = allocated(store, uid.as_deref());
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let old_spec = old.and_then(|o| o.get("spec"));
    let ty = entry(spec, "type", json!("ClusterIP"))
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    entry(spec, "sessionAffinity", json!("None"));
    let mut errs = Vec::new();
    if ty != "ExternalName" {
        // Allocated values are kept when an update leaves them out.
        for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old_spec.and_then(|s| s.get(k)) {
                entry(spec, k, v.clone());
            }
        }
        if spec.get("clusterIP").and_then(Value::as_str).is_none() {
            let mut rng = rand::rng();
            let ip = loop {
                // 10.96.0.0/12 without the network address and 10.96.0.1 (`kubernetes`).
                let n: u32 = rng.random_range(2..(1 << 20) - 1);
                let ip = format!("10.{}.{}.{}", 96 + (n >> 16), (n >> 8) & 0xff, n & 0xff);
                if !used_ips.contains(&ip) {
                    break ip;
                }
            };
            spec.insert("clusterIP".into(), json!(ip));
        }
        let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
        entry(spec, "clusterIPs", json!([ip]));
        entry(spec, "ipFamilies", json!(["IPv4"]));
        entry(spec, "ipFamilyPolicy", json!("SingleStack"));
        entry(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    let node_ports = ty == "NodePort" || ty == "LoadBalancer";
    if node_ports {
        entry(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    let old_ports: Vec<Value> = old_spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut taken = used_ports;
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(pm) = p.as_object_mut() else {
                continue;
            };
            entry(pm, "protocol", json!("TCP"));
            if let Some(port) = pm.get("port").cloned() {
                entry(pm, "targetPort", port);
            }
            if !node_ports {
                continue;
            }
            let requested = pm.get("nodePort").and_then(Value::as_i64);
            match requested {
                Some(n) if taken.contains(&n) => errs.push(FieldError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    json!(n),
                    "provided port is already allocated",
                )),
                Some(n) if !(30000..=32767).contains(&n) => errs.push(FieldError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    json!(n),
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                )),
                Some(n) => {
                    taken.insert(n);
                }
                None if taken.len() >= 2768 => errs.push(FieldError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    json!(0),
                    "range is full",
                )),
                None => {
                    // Kept from the same port of the stored object, else allocated.
                    let kept = old_ports
                        .iter()
                        .find(|o| o.get("port") == pm.get("port"))
                        .and_then(|o| o.get("nodePort"))
                        .and_then(Value::as_i64)
                        .filter(|n| !taken.contains(n));
                    let n = kept.unwrap_or_else(|| {
                        let mut rng = rand::rng();
                        loop {
                            let n = rng.random_range(30000..=32767);
                            if !taken.contains(&n) {
                                break n;
                            }
                        }
                    });
                    taken.insert(n);
                    pm.insert("nodePort".into(), json!(n));
                }
            }
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}
