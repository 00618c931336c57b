//! CustomResourceDefinitions: serving their resources and setting their status as the
//! apiextensions controllers do, and removing them.

use super::*;

/// Serves a CRD's resources and sets its status as the apiextensions controllers do.
pub(crate) fn sync_crd(store: &mut Store, crd: &Value, now: &str) {
    let name = str_at(crd, "/metadata/name").to_string();
    let Ok(defs) = registry::crd_defs(crd) else {
        return;
    };
    let group = str_at(crd, "/spec/group").to_string();
    let kind = str_at(crd, "/spec/names/kind").to_string();
    // Names conflict: another CRD of the group already serves this kind.
    let conflict = store.registry.all().any(|d| {
        d.flavor == Flavor::Custom && d.group == group && d.kind == kind && d.storage != name
    });
    let old_conditions = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let cond = |t: &str, status: &str, reason: &str, message: &str| {
        let prev = old_conditions
            .iter()
            .find(|c| str_at(c, "/type") == t && str_at(c, "/status") == status);
        let ltt = prev
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        json!({"type": t, "status": status, "lastTransitionTime": ltt, "reason": reason, "message": message})
    };
    let mut status = crd.get("status").cloned().unwrap_or(json!({}));
    let conditions = if conflict {
        vec![
            cond(
                "NamesAccepted",
                "False",
                "KindConflict",
                &format!("\"{kind}\" is already in use"),
            ),
            cond(
                "Established",
                "False",
                "NotAccepted",
                "not all names are accepted",
            ),
        ]
    } else {
        store.registry.set_crd(&name, defs);
        let mut accepted = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
        if let Some(a) = accepted.as_object_mut() {
            a.retain(|_, v| !v.is_null());
        }
        status["acceptedNames"] = accepted;
        vec![
            cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            cond(
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ),
        ]
    };
    status["conditions"] = json!(conditions);
    let mut stored_versions: Vec<Value> = status
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(vs) = crd.pointer("/spec/versions").and_then(Value::as_array) {
        for v in vs {
            if v.get("storage").and_then(Value::as_bool) == Some(true)
                && let Some(n) = v.get("name")
                && !stored_versions.contains(n)
            {
                stored_versions.push(n.clone());
            }
        }
    }
    status["storedVersions"] = json!(stored_versions);
    if crd.get("status") != Some(&status) {
        let mut updated = crd.clone();
        updated["status"] = status;
        store.put("customresourcedefinitions.apiextensions.k8s.io", updated);
    }
}

pub(crate) const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Stops serving a CRD's resources and deletes its objects.
pub(crate) fn remove_crd(store: &mut Store, name: &str) {
    let storage = store
        .registry
        .crd_defs(name)
        .and_then(|d| d.first().map(|d| d.storage.clone()));
    if let Some(storage) = storage {
        let mut keys = Vec::new();
        let _ = store.scan(&storage, None, None, None, |k, _| {
            keys.push(k.clone());
            true
        });
        for (ns, n) in keys {
            store.remove(&storage, &ns, &n);
        }
    }
    store.registry.set_crd(name, Vec::new());
}
