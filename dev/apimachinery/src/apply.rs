//! Server-side apply with `metadata.managedFields`, as kube-apiserver does it.
//!
//! This is a port of the parts of `sigs.k8s.io/structured-merge-diff` (merge, compare,
//! field sets, removal) and `k8s.io/apimachinery/pkg/util/managedfields` (manager identity,
//! meta stripping, timestamps, capping, encoding) that a single-version API server needs.
//!
//! # Ownership model
//!
//! Every field of an object may be owned by one or more *managers*; ownership is recorded in
//! `metadata.managedFields`, one entry per manager identity:
//! * `Apply` entries are keyed by (manager, subresource),
//! * `Update` entries by (manager, apiVersion, subresource),
//!
//! each with `fieldsType: FieldsV1` and `fieldsV1`, a trie of `f:<field>`, `k:{"key":..}` (list
//! map items), `v:<json>` (set items) and `i:<n>` path elements with `.` marking a node that is
//! itself owned. Entries are sorted by operation, time, manager, apiVersion, subresource.
//!
//! # Apply ([`apply`])
//! * The applied configuration is merged into the live object: maps and structs merge per key;
//!   lists are atomic (replaced) unless the schema says `x-kubernetes-list-type: map` (items
//!   merged per key, in the order structured-merge-diff produces) or `set` (union of values);
//!   scalars are replaced.
//! * The applier's field set becomes exactly the set of fields in its configuration.
//! * Fields the applier owned in its previous apply, left out now and owned by no other
//!   manager, are removed. A map or list emptied this way stays as `{}` / `[]`, as in
//!   Kubernetes 1.36.0-1.36.2 (structured-merge-diff v6.3.2); 1.35 and earlier leave `null`.
//! * Another manager owning a field whose value changes is a conflict (409 with
//!   `Apply failed with 1 conflict: conflict with "ctrl-spec": .spec.command`) unless `force`,
//!   in which case the other manager loses that field. Fields removed from the object are
//!   removed from every manager.
//! * `apiVersion`, `kind`, `metadata` and metadata's `name`, `namespace`, `uid`,
//!   `resourceVersion`, `generation`, `creationTimestamp`, `selfLink`, `managedFields` are
//!   never owned.
//! * An object without managedFields gets a `before-first-apply` Update entry owning all of
//!   its fields before the first apply, as the real server does.
//! * The time of the applier's entry changes only when the object changes.
//!
//! # Update ([`record_update`])
//! Non-apply writes (create, update, patch) give the writing manager (operation `Update`) the
//! fields it added or changed and take them away from everyone else; removed fields leave all
//! managers. An existing object without managedFields is not tracked (as the real server);
//! a request that sets `metadata.managedFields: []` clears them.
//!
//! # Types
//! With a [`Structural`] schema, object properties are struct fields, `additionalProperties`
//! and `x-kubernetes-preserve-unknown-fields` maps are granular maps, arrays are atomic unless
//! `x-kubernetes-list-type` is `set` or `map`, `x-kubernetes-map-type: atomic` objects and
//! `x-kubernetes-int-or-string` are leaves. `metadata` always follows ObjectMeta: `labels` and
//! `annotations` are granular maps, `ownerReferences` a list-map keyed by `uid`, `finalizers`
//! a set. Without a schema (built-in kinds), maps are granular and lists atomic.
//!
//! List-map items are identified by their key fields; a missing key field takes its schema
//! default, or is left out of the key (as structured-merge-diff does); an item with no key
//! field at all, duplicate keys in the applied configuration, or `null` items are rejected.
//!
//! # Not implemented
//! Multiple API versions and conversion, the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation upgrade path, and granular
//! (index-keyed) lists, which CRDs cannot declare.
//!
//! # Layout
//! This module holds the entry points; structured-merge-diff's parts are submodules:
//! `managers` (managedFields bookkeeping), `fieldpath` (path elements and field sets),
//! `types` (how a schema node merges), `fieldset`, `merge`, `compare`, `remove`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::gofmt;
use crate::schema::{Node, Structural};

mod compare;
mod fieldpath;
mod fieldset;
mod managers;
mod merge;
mod remove;
mod types;

use compare::*;
use fieldpath::*;
use fieldset::*;
use managers::*;
use merge::*;
use remove::*;
use types::*;

const TYPED_PATCH_ERROR: &str = "failed to create typed patch object";

/// One apply request.
#[derive(Debug, Clone, Copy)]
pub struct ApplyRequest<'a> {
    /// The live object, `None` to create.
    pub live: Option<&'a serde_json::Value>,
    /// The applied configuration (the request body).
    pub applied: &'a serde_json::Value,
    /// `fieldManager` (required by the server; empty becomes "unknown").
    pub manager: &'a str,
    /// `Some("status")` for `/status`.
    pub subresource: Option<&'a str>,
    /// `force=true`.
    pub force: bool,
    /// The CRD version's schema; `None` for built-in kinds.
    pub schema: Option<&'a Structural>,
    /// RFC3339 time for `managedFields[].time`.
    pub now: &'a str,
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// Fields owned by other managers would change: 409 Conflict (reason `Conflict`), with one
    /// `FieldManagerConflict` cause per conflict (see [`ApplyError::causes`]).
    Conflicts(Vec<Conflict>),
    /// The request is malformed: 400 BadRequest for `metadata.managedFields must be nil` and
    /// a wrong apiVersion; for a configuration that does not fit the schema's list types
    /// (duplicate list-map keys, items without any key field, null set items) the real server
    /// answers 500 with `failed to create typed patch object (ns/name; group/version,
    /// Kind=K): .spec.env: duplicate entries for key [name="a"]`. Use [`ApplyError::code`].
    Invalid(String),
}

impl ApplyError {
    /// The HTTP status code the apiserver answers with.
    pub fn code(&self) -> u16 {
        match self {
            ApplyError::Conflicts(_) => 409,
            ApplyError::Invalid(m) if m.starts_with(TYPED_PATCH_ERROR) => 500,
            ApplyError::Invalid(_) => 400,
        }
    }

    /// `Status.details.causes` for a conflict: `{"reason":"FieldManagerConflict",
    /// "message":"conflict with \"ctrl\"","field":".spec.command"}` per conflict.
    pub fn causes(&self) -> Vec<Value> {
        match self {
            ApplyError::Conflicts(cs) => cs
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "reason": "FieldManagerConflict",
                        "message": format!("conflict with {}", c.manager_display()),
                        "field": c.path,
                    })
                })
                .collect(),
            ApplyError::Invalid(_) => Vec::new(),
        }
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Invalid(m) => f.write_str(m),
            ApplyError::Conflicts(cs) => {
                if cs.len() == 1 {
                    return write!(
                        f,
                        "Apply failed with 1 conflict: conflict with {}: {}",
                        cs[0].manager_display(),
                        cs[0].path
                    );
                }
                // Grouped per manager, managers sorted by their identity.
                let mut groups: Vec<(String, String, Vec<&str>)> = Vec::new();
                for c in cs {
                    let id = c.identity();
                    match groups.iter_mut().find(|g| g.0 == id) {
                        Some(g) => g.2.push(&c.path),
                        None => groups.push((id, c.manager_display(), vec![&c.path])),
                    }
                }
                groups.sort_by(|a, b| a.0.cmp(&b.0));
                let mut lines = Vec::new();
                for (_, who, paths) in groups {
                    lines.push(format!("conflicts with {who}:"));
                    for p in paths {
                        lines.push(format!("- {p}"));
                    }
                }
                write!(
                    f,
                    "Apply failed with {} conflicts: {}",
                    cs.len(),
                    lines.join("\n")
                )
            }
        }
    }
}

impl std::error::Error for ApplyError {}

/// A field owned by another manager with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name.
    pub manager: String,
    /// Its subresource (`Some("status")`).
    pub subresource: Option<String>,
    /// The field, in structured-merge-diff notation: `.spec.command`,
    /// `.status.conditions[type="Ready"].status`.
    pub path: String,
    /// The other manager's operation, `Apply` or `Update`.
    pub operation: String,
    /// The other manager's apiVersion (shown for `Update` managers).
    pub api_version: String,
    /// The other manager's time (shown for `Update` managers).
    pub time: Option<String>,
}

impl Conflict {
    /// How the apiserver names the manager: `"ctrl"`, `"ctrl" with subresource "status"`,
    /// `"kubectl-edit" using v1 at 2024-01-01T00:00:00Z` (Update managers).
    pub fn manager_display(&self) -> String {
        let mut s = gofmt::quote(&self.manager);
        if let Some(sub) = self.subresource.as_deref().filter(|s| !s.is_empty()) {
            s = format!("{s} with subresource {}", gofmt::quote(sub));
        }
        if self.operation == "Update" {
            match &self.time {
                None => s = format!("{s} using {}", self.api_version),
                Some(t) => s = format!("{s} using {} at {}", self.api_version, utc_rfc3339(t)),
            }
        }
        s
    }

    fn identity(&self) -> String {
        ManagerKey {
            manager: self.manager.clone(),
            operation: self.operation.clone(),
            api_version: if self.operation == "Apply" {
                String::new()
            } else {
                self.api_version.clone()
            },
            subresource: self.subresource.clone().unwrap_or_default(),
        }
        .identity()
    }
}

// ---------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------

/// Server-side apply (application/apply-patch+yaml) with managedFields (FieldsV1), as the
/// real server does: create when `live` is None, merge per field ownership, list-maps merged
/// per key, fields owned only by this manager and now absent are removed, conflicts unless
/// force. Returns the new object with `metadata.managedFields` set. When the object does not
/// change, the result equals `live` except possibly for managedFields.
pub fn apply(req: ApplyRequest<'_>) -> Result<Value, ApplyError> {
    let applied = req.applied;
    let Value::Object(applied_map) = applied else {
        return Err(ApplyError::Invalid(
            "the apply configuration must be an object".into(),
        ));
    };
    if applied
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let version = applied_map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(live_version) = req
        .live
        .and_then(|l| l.get("apiVersion"))
        .and_then(Value::as_str)
        && !version.is_empty()
        && version != live_version
    {
        return Err(ApplyError::Invalid(format!(
            "Incorrect version specified in apply patch. Specified patch version: {version}, expected: {live_version}"
        )));
    }
    let root = T::Root(req.schema.map(|s| &s.root));
    let empty = Value::Object(Map::new());
    let live = req.live.unwrap_or(&empty);
    let mut live_clean = live.clone();
    remove_managed_fields(&mut live_clean);
    let mut managed = match req.live {
        Some(l) => Managed::decode(l).map_err(ApplyError::Invalid)?,
        None => Managed::default(),
    };
    let subresource = req.subresource.unwrap_or("").to_string();

    // An existing object without managedFields: its fields belong to "before-first-apply".
    if managed.entries.is_empty() && req.live.is_some() {
        let live_version = live
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or(&version)
            .to_string();
        let key = ManagerKey {
            manager: "before-first-apply".into(),
            operation: "Update".into(),
            api_version: live_version.clone(),
            subresource: subresource.clone(),
        };
        update_managers(
            &empty,
            &live_clean,
            root,
            &mut managed,
            &key,
            &live_version,
            req.now,
        )?;
    }

    let key = ManagerKey {
        manager: if req.manager.is_empty() {
            "unknown".into()
        } else {
            req.manager.to_string()
        },
        operation: "Apply".into(),
        api_version: String::new(),
        subresource,
    };

    // structured-merge-diff Updater.Apply
    let mut config = applied.clone();
    remove_managed_fields(&mut config);
    // The typed conversion of the configuration (structuredMergeManager.Apply).
    let typed_error = |e: ApplyError| match e {
        ApplyError::Invalid(m) => ApplyError::Invalid(format!(
            "{TYPED_PATCH_ERROR} ({}): {m}",
            object_gvknn(applied)
        )),
        other => other,
    };
    let new_set = to_field_set(&config, root).map_err(typed_error)?;
    let merged = merge(Some(&live_clean), Some(&config), root)
        .map_err(typed_error)?
        .unwrap_or(Value::Null);
    let last_set = managed.get(&key).map(|e| e.set.clone());
    managed.set(&key, &version, new_set, true);
    let mut new_obj = match &last_set {
        Some(last) if !last.is_empty() => prune(&merged, &managed, last, root),
        _ => merged,
    };
    let conflicts = update(&live_clean, &new_obj, root, &mut managed, &key, req.force)?;
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    // stripMetaManager
    if let Some(e) = managed.get_mut(&key) {
        e.set = e.set.difference(&strip_set());
    }
    managed.drop_empty();
    // managedFieldsUpdater: the time moves only when the object changed.
    let changed = new_obj != live_clean;
    if changed && let Some(e) = managed.get_mut(&key) {
        e.time = Some(req.now.to_string());
    }
    if !changed {
        new_obj = live_clean;
    } else if let Some(schema) = req.schema {
        schema.apply_defaults(&mut new_obj);
    }
    managed.encode_into(&mut new_obj);
    Ok(new_obj)
}

/// objectGVKNN: `namespace/name; group/version, Kind=Kind`.
fn object_gvknn(obj: &Value) -> String {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
    let api_version = s("/apiVersion");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    format!(
        "{}/{}; {group}/{version}, Kind={}",
        s("/metadata/namespace"),
        s("/metadata/name"),
        s("/kind")
    )
}

/// Bookkeeping for non-apply writes (create/update/patch, operation "Update"): the fields
/// this write changed move to `manager` in `new`'s metadata.managedFields.
pub fn record_update(
    old: Option<&serde_json::Value>,
    new: &mut serde_json::Value,
    manager: &str,
    subresource: Option<&str>,
    schema: Option<&Structural>,
    now: &str,
) {
    let root = T::Root(schema.map(|s| &s.root));
    let empty = Value::Object(Map::new());
    let old_val = old.unwrap_or(&empty);
    let requested = new
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .cloned();
    // decodeLiveOrNew: the request's managedFields win on the main resource, unless absent
    // or undecodable; `[]` resets them.
    let mut managed = if subresource.is_none() {
        match &requested {
            Some(Value::Array(a)) if a.is_empty() => Managed::default(),
            Some(Value::Array(a))
                if a.len() == 1 && a[0].as_object().is_some_and(|o| o.is_empty()) =>
            {
                Managed::default()
            }
            Some(r @ Value::Array(_)) => match Managed::decode_entries(r) {
                Ok(m) if !m.entries.is_empty() => m,
                _ => old
                    .and_then(|o| Managed::decode(o).ok())
                    .unwrap_or_default(),
            },
            _ => old
                .and_then(|o| Managed::decode(o).ok())
                .unwrap_or_default(),
        }
    } else {
        old.and_then(|o| Managed::decode(o).ok())
            .unwrap_or_default()
    };
    remove_managed_fields(new);
    // skipNonAppliedManager: an existing object without managedFields is not tracked.
    let exists = old
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("uid"))
        .is_some_and(|u| u.as_str().is_some_and(|s| !s.is_empty()));
    if managed.entries.is_empty() && exists {
        return;
    }
    let mut old_clean = old_val.clone();
    remove_managed_fields(&mut old_clean);
    let version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let key = ManagerKey {
        manager: if manager.is_empty() {
            "unknown".into()
        } else {
            manager.to_string()
        },
        operation: "Update".into(),
        api_version: version.clone(),
        subresource: subresource.unwrap_or("").to_string(),
    };
    let before = managed.clone();
    if update_managers(&old_clean, new, root, &mut managed, &key, &version, now).is_err() {
        // Never fail a write because of bookkeeping: keep the previous managedFields.
        managed = before;
    }
    cap_update_managers(&mut managed);
    managed.encode_into(new);
}

#[cfg(test)]
mod tests;
