//! Strategic merge patch (`application/strategic-merge-patch+json`) for built-in kinds.
//!
//! A JSON merge patch in which lists that have a *patch merge key* merge element by element
//! (a container by `name`, a Service port by `port`, a CRD version by `name`) instead of being
//! replaced, primitive lists with the merge strategy (`metadata.finalizers`) are unions, and
//! the directives that `kubectl apply` (its three-way patch) and `kubectl patch --type
//! strategic` send are honoured: `$patch: replace|merge|delete` (on a map, or as a list
//! element), `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.
//! Ported from `k8s.io/apimachinery/pkg/util/strategicpatch` (`StrategicMergeMapPatch`);
//! the merge keys are those of the Go types' `patchStrategy`/`patchMergeKey` tags, in one
//! table, [`PATCH_MERGE_KEYS`]. Lists not in the table are replaced whole (atomic).
//!
//! Known differences: `$setElementOrder` puts the listed elements first in the given order and
//! the server-only elements after them in their previous order (the Go code interleaves
//! server-only elements by their old index); `$patch: replace` on a list element replaces the
//! list with the remaining patch elements.

use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced whole by the patch's list (no patch strategy).
    Replace,
    /// Elements merge by this key (`patchStrategy:"merge" patchMergeKey:"<key>"`).
    MergeByKey(&'static str),
    /// A list of primitives with `patchStrategy:"merge"`: the union, in order.
    MergePrimitives,
}

/// The patch merge keys of the built-in kinds the project and kubectl touch: `(group, kind,
/// path, strategy)`. A path names fields from the object root with list elements implied
/// (`spec.template.spec.containers.env` is the `env` of every container).
pub const PATCH_MERGE_KEYS: &[(&str, &str, &str, ListStrategy)] = {
    use ListStrategy::{MergeByKey, MergePrimitives};
    &[
        // ObjectMeta, every kind.
        ("*", "*", "metadata.finalizers", MergePrimitives),
        ("*", "*", "metadata.ownerReferences", MergeByKey("uid")),
        // CustomResourceDefinition: versions by name and, within a version, the printer
        // columns by name (a v1.36 server keeps a column that a client-side `kubectl apply`
        // never named; kube-apiserver-behaviour.md, "Found on v1.36.2").
        (
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "spec.versions",
            MergeByKey("name"),
        ),
        (
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "spec.versions.additionalPrinterColumns",
            MergeByKey("name"),
        ),
        // Deployment's pod template (core/v1 PodSpec and Container tags).
        (
            "apps",
            "Deployment",
            "spec.template.spec.containers",
            MergeByKey("name"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.initContainers",
            MergeByKey("name"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.ephemeralContainers",
            MergeByKey("name"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.volumes",
            MergeByKey("name"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.imagePullSecrets",
            MergeByKey("name"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.hostAliases",
            MergeByKey("ip"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.topologySpreadConstraints",
            MergeByKey("topologyKey"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.containers.env",
            MergeByKey("name"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.containers.ports",
            MergeByKey("containerPort"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.containers.volumeMounts",
            MergeByKey("mountPath"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.containers.volumeDevices",
            MergeByKey("devicePath"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.initContainers.env",
            MergeByKey("name"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.initContainers.ports",
            MergeByKey("containerPort"),
        ),
        (
            "apps",
            "Deployment",
            "spec.template.spec.initContainers.volumeMounts",
            MergeByKey("mountPath"),
        ),
        (
            "apps",
            "Deployment",
            "status.conditions",
            MergeByKey("type"),
        ),
        // Service.
        ("", "Service", "spec.ports", MergeByKey("port")),
        // ServiceAccount.
        ("", "ServiceAccount", "secrets", MergeByKey("name")),
        // Namespace.
        ("", "Namespace", "status.conditions", MergeByKey("type")),
    ]
};

/// The strategy of the list at `path` (field names from the root) of a `group`/`kind`.
pub fn list_strategy(group: &str, kind: &str, path: &[&str]) -> ListStrategy {
    PATCH_MERGE_KEYS
        .iter()
        .find(|(g, k, p, _)| {
            (*g == "*" || *g == group)
                && (*k == "*" || *k == kind)
                && p.split('.').eq(path.iter().copied())
        })
        .map(|(_, _, _, s)| *s)
        .unwrap_or(ListStrategy::Replace)
}

/// A strategic merge patch that cannot be applied; the apiserver answers 422 (invalid
/// directive) or 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

struct Ctx<'a> {
    group: &'a str,
    kind: &'a str,
}

/// Applies the strategic merge patch `patch` to `original`, an object of `group`/`kind`
/// (`""` for the core group).
pub fn strategic_merge(
    group: &str,
    kind: &str,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError(
            "patch must be a JSON object (map[string]interface{})".into(),
        ));
    };
    let ctx = Ctx { group, kind };
    let mut out = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut path = Vec::new();
    match merge_map(&ctx, &mut out, p, &mut path)? {
        MapOutcome::Deleted => Ok(Value::Object(Map::new())),
        MapOutcome::Kept => Ok(Value::Object(out)),
    }
}

enum MapOutcome {
    Kept,
    Deleted,
}

fn directive(p: &Map<String, Value>) -> Result<Option<&str>, PatchError> {
    match p.get(PATCH) {
        None => Ok(None),
        Some(Value::String(s)) if matches!(s.as_str(), "replace" | "merge" | "delete") => {
            Ok(Some(s.as_str()))
        }
        Some(other) => Err(PatchError(format!(
            "Unknown patch type: {}, Expected one of: replace, merge, delete",
            other
                .as_str()
                .map(str::to_string)
                .unwrap_or(other.to_string())
        ))),
    }
}

/// Whether `v` is an object whose `$patch` is `which`.
fn is_directive(v: &Value, which: &str) -> bool {
    v.as_object()
        .is_some_and(|m| m.get(PATCH).and_then(Value::as_str) == Some(which))
}

/// The patch value with every directive removed (for a value inserted as a whole).
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| !is_directive(e, "delete"))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_map<'p>(
    ctx: &Ctx<'_>,
    original: &mut Map<String, Value>,
    patch: &'p Map<String, Value>,
    path: &mut Vec<&'p str>,
) -> Result<MapOutcome, PatchError> {
    match directive(patch)? {
        Some("delete") => return Ok(MapOutcome::Deleted),
        Some("replace") => {
            if let Value::Object(m) = strip_directives(&Value::Object(patch.clone())) {
                *original = m;
            }
            return Ok(MapOutcome::Kept);
        }
        _ => {}
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Some(keys) = retain.as_array() else {
            return Err(PatchError(format!(
                "invalid patch: {RETAIN_KEYS} must be a list of field names"
            )));
        };
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        original.retain(|k, _| keys.contains(&k.as_str()));
    }
    // Primitive deletions first, as the Go code does before merging.
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            let Some(del) = v.as_array() else {
                return Err(PatchError(format!("invalid patch: {k} must be a list")));
            };
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|x| !del.contains(x));
            }
        }
    }
    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        path.push(k.as_str());
        match v {
            Value::Null => {
                original.remove(k);
            }
            Value::Object(pm) => match original.get_mut(k) {
                Some(Value::Object(om)) => {
                    if let MapOutcome::Deleted = merge_map(ctx, om, pm, path)? {
                        original.remove(k);
                    }
                }
                _ => {
                    if directive(pm)? == Some("delete") {
                        original.remove(k);
                    } else {
                        original.insert(k.clone(), strip_directives(v));
                    }
                }
            },
            Value::Array(pl) => {
                let strategy = list_strategy(ctx.group, ctx.kind, path);
                let current = match original.remove(k) {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                let merged = merge_list(ctx, current, pl, strategy, path)?;
                original.insert(k.clone(), Value::Array(merged));
            }
            other => {
                original.insert(k.clone(), other.clone());
            }
        }
        path.pop();
    }
    // Element order last, over the merged lists.
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(SET_ORDER) {
            let Some(order) = v.as_array() else {
                return Err(PatchError(format!("invalid patch: {k} must be a list")));
            };
            path.push(field);
            let strategy = list_strategy(ctx.group, ctx.kind, path);
            path.pop();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                reorder(list, order, strategy);
            }
        }
    }
    Ok(MapOutcome::Kept)
}

fn key_of<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    v.as_object().and_then(|m| m.get(key))
}

fn merge_list<'p>(
    ctx: &Ctx<'_>,
    mut current: Vec<Value>,
    patch: &'p [Value],
    strategy: ListStrategy,
    path: &mut Vec<&'p str>,
) -> Result<Vec<Value>, PatchError> {
    // `{"$patch": "replace"}` as an element: the list becomes the other elements.
    let replace = patch.iter().any(|e| is_directive(e, "replace"));
    match strategy {
        ListStrategy::Replace => Ok(patch.iter().map(strip_directives).collect()),
        _ if replace => Ok(patch
            .iter()
            .filter(|e| !is_directive(e, "replace"))
            .map(strip_directives)
            .collect()),
        ListStrategy::MergePrimitives => {
            for e in patch {
                if e.is_object() || e.is_array() {
                    return Err(PatchError(format!(
                        "invalid patch: {} merges primitives, got {e}",
                        path.join(".")
                    )));
                }
                if !current.contains(e) {
                    current.push(e.clone());
                }
            }
            Ok(current)
        }
        ListStrategy::MergeByKey(key) => {
            for e in patch {
                let Some(pm) = e.as_object() else {
                    return Err(PatchError(format!(
                        "invalid patch: elements of {} must be objects with the merge key {key:?}",
                        path.join(".")
                    )));
                };
                let Some(kv) = pm.get(key) else {
                    return Err(PatchError(format!(
                        "map: {e} does not contain declared merge key: {key}"
                    )));
                };
                let pos = current.iter().position(|c| key_of(c, key) == Some(kv));
                match (directive(pm)?, pos) {
                    (Some("delete"), Some(_)) => current.retain(|c| key_of(c, key) != Some(kv)),
                    (Some("delete"), None) => {}
                    (_, Some(i)) => {
                        let mut merged = current[i].as_object().cloned().unwrap_or_default();
                        if let MapOutcome::Deleted = merge_map(ctx, &mut merged, pm, path)? {
                            current.remove(i);
                        } else {
                            current[i] = Value::Object(merged);
                        }
                    }
                    (_, None) => current.push(strip_directives(e)),
                }
            }
            Ok(current)
        }
    }
}

/// `$setElementOrder/<list>`: the listed elements first, in that order, then the rest in
/// their previous order.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let same = |item: &Value, wanted: &Value| match strategy {
        ListStrategy::MergeByKey(key) => {
            key_of(item, key).is_some() && key_of(item, key) == key_of(wanted, key)
        }
        _ => item == wanted,
    };
    let mut rest: Vec<Value> = std::mem::take(list);
    for wanted in order {
        if let Some(i) = rest.iter().position(|item| same(item, wanted)) {
            list.push(rest.remove(i));
        }
    }
    list.extend(rest);
}

#[cfg(test)]
mod tests;
