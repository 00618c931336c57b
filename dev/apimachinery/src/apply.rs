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

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::gofmt;
use crate::schema::{Node, Structural};

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

// ---------------------------------------------------------------------------------------
// Manager bookkeeping
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct ManagerKey {
    manager: String,
    operation: String,
    /// Empty for Apply entries (their identity ignores the version).
    api_version: String,
    subresource: String,
}

impl ManagerKey {
    /// BuildManagerIdentifier: the JSON of the entry without fields and time.
    fn identity(&self) -> String {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        if !self.api_version.is_empty() {
            m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        }
        if !self.subresource.is_empty() {
            m.insert(
                "subresource".into(),
                Value::String(self.subresource.clone()),
            );
        }
        Value::Object(m).to_string()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    key: ManagerKey,
    api_version: String,
    set: Set,
    time: Option<String>,
    applied: bool,
}

#[derive(Debug, Clone, Default)]
struct Managed {
    entries: Vec<Entry>,
}

impl Managed {
    fn decode(obj: &Value) -> Result<Managed, String> {
        match obj.get("metadata").and_then(|m| m.get("managedFields")) {
            None | Some(Value::Null) => Ok(Managed::default()),
            Some(v) => Managed::decode_entries(v),
        }
    }

    fn decode_entries(v: &Value) -> Result<Managed, String> {
        let Value::Array(items) = v else {
            return Err("failed to decode managed fields: managedFields must be a list".into());
        };
        let mut out = Managed::default();
        for (i, e) in items.iter().enumerate() {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let operation = s("operation");
            if operation != "Apply" && operation != "Update" {
                return Err(
                    "failed to decode managed fields: operation must be `Apply` or `Update`".into(),
                );
            }
            let api_version = s("apiVersion");
            if api_version.is_empty() {
                return Err("failed to decode managed fields: apiVersion must not be empty".into());
            }
            match s("fieldsType").as_str() {
                "FieldsV1" => {}
                "" => {
                    return Err(format!(
                        "failed to decode managed fields: missing fieldsType in managed fields entry {i}"
                    ));
                }
                other => {
                    return Err(format!(
                        "failed to decode managed fields: invalid fieldsType {other:?} in managed fields entry {i}"
                    ));
                }
            }
            let set = match e.get("fieldsV1") {
                None | Some(Value::Null) => Set::default(),
                Some(f) => Set::from_fields_v1(f)
                    .map_err(|m| format!("failed to decode managed fields: {m}"))?,
            };
            let key = ManagerKey {
                manager: s("manager"),
                api_version: if operation == "Apply" {
                    String::new()
                } else {
                    api_version.clone()
                },
                operation,
                subresource: s("subresource"),
            };
            let time = e.get("time").and_then(Value::as_str).map(str::to_string);
            let applied = key.operation == "Apply";
            // Later duplicates replace earlier ones, as a Go map would.
            out.entries.retain(|x| x.key != key);
            out.entries.push(Entry {
                key,
                api_version,
                set,
                time,
                applied,
            });
        }
        Ok(out)
    }

    fn get(&self, key: &ManagerKey) -> Option<&Entry> {
        self.entries.iter().find(|e| &e.key == key)
    }

    fn get_mut(&mut self, key: &ManagerKey) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| &e.key == key)
    }

    fn set(&mut self, key: &ManagerKey, api_version: &str, set: Set, applied: bool) {
        match self.get_mut(key) {
            Some(e) => {
                e.set = set;
                e.api_version = api_version.to_string();
                e.applied = applied;
            }
            None => self.entries.push(Entry {
                key: key.clone(),
                api_version: api_version.to_string(),
                set,
                time: None,
                applied,
            }),
        }
    }

    fn drop_empty(&mut self) {
        self.entries.retain(|e| !e.set.is_empty());
    }

    fn union_all(&self) -> Set {
        let mut u = Set::default();
        for e in &self.entries {
            u = u.union(&e.set);
        }
        u
    }

    fn encode_into(&self, obj: &mut Value) {
        let mut entries: Vec<&Entry> = self.entries.iter().filter(|e| !e.set.is_empty()).collect();
        entries.sort_by(|a, b| {
            let op = |e: &Entry| if e.applied { "Apply" } else { "Update" };
            op(a)
                .cmp(op(b))
                .then_with(|| unix_seconds(a.time.as_deref()).cmp(&unix_seconds(b.time.as_deref())))
                .then_with(|| a.key.manager.cmp(&b.key.manager))
                .then_with(|| a.api_version.cmp(&b.api_version))
                .then_with(|| a.key.subresource.cmp(&b.key.subresource))
        });
        let list: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("manager".into(), Value::String(e.key.manager.clone()));
                m.insert(
                    "operation".into(),
                    Value::String(if e.applied { "Apply" } else { "Update" }.into()),
                );
                m.insert("apiVersion".into(), Value::String(e.api_version.clone()));
                if let Some(t) = &e.time {
                    m.insert("time".into(), Value::String(t.clone()));
                }
                m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
                m.insert("fieldsV1".into(), e.set.to_fields_v1());
                if !e.key.subresource.is_empty() {
                    m.insert(
                        "subresource".into(),
                        Value::String(e.key.subresource.clone()),
                    );
                }
                Value::Object(m)
            })
            .collect();
        if let Value::Object(o) = obj {
            let meta = o
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(mm) = meta {
                if list.is_empty() {
                    mm.remove("managedFields");
                } else {
                    mm.insert("managedFields".into(), Value::Array(list));
                }
            }
        }
    }
}

/// The fields never owned by anyone (stripMetaManager).
fn strip_set() -> Set {
    let mut s = Set::default();
    for p in [
        vec!["apiVersion"],
        vec!["kind"],
        vec!["metadata"],
        vec!["metadata", "name"],
        vec!["metadata", "namespace"],
        vec!["metadata", "creationTimestamp"],
        vec!["metadata", "selfLink"],
        vec!["metadata", "uid"],
        vec!["metadata", "clusterName"],
        vec!["metadata", "generation"],
        vec!["metadata", "managedFields"],
        vec!["metadata", "resourceVersion"],
    ] {
        let path: Vec<PE> = p.iter().map(|s| PE::Field((*s).to_string())).collect();
        s.insert(&path);
    }
    s
}

fn remove_managed_fields(obj: &mut Value) {
    if let Some(Value::Object(m)) = obj.get_mut("metadata") {
        m.remove("managedFields");
    }
}

/// The Update path (managedFieldsUpdater + stripMeta + structured merge Update): `key` gets the
/// fields changed between `old` and `new`; others lose them.
fn update_managers(
    old: &Value,
    new: &Value,
    root: T<'_>,
    managed: &mut Managed,
    key: &ManagerKey,
    version: &str,
    now: &str,
) -> Result<(), ApplyError> {
    let current = ManagerKey {
        manager: "current-operation".into(),
        operation: "Update".into(),
        api_version: String::new(),
        subresource: String::new(),
    };
    let cmp = compare(Some(old), Some(new), root)?;
    // update(..., force=true) with workflow = current-operation
    apply_comparison_to_others(managed, &current, &cmp, true);
    let mut set = cmp.modified.union(&cmp.added);
    set = set.difference(&strip_set());
    if set.is_empty() {
        managed.drop_empty();
        return Ok(());
    }
    let previous = managed.get(key).map(|e| e.set.clone()).unwrap_or_default();
    managed.set(key, version, set.union(&previous), false);
    if let Some(e) = managed.get_mut(key) {
        e.time = Some(now.to_string());
    }
    managed.drop_empty();
    Ok(())
}

struct Comparison {
    added: Set,
    modified: Set,
    removed: Set,
}

/// Updater.update: conflicts with (or, forced, removal from) other managers of the fields the
/// change touches; removed fields leave everyone.
fn apply_comparison_to_others(
    managed: &mut Managed,
    workflow: &ManagerKey,
    cmp: &Comparison,
    force: bool,
) -> Vec<Conflict> {
    let changed = cmp.modified.union(&cmp.added);
    let mut conflicts = Vec::new();
    for e in &managed.entries {
        if &e.key == workflow {
            continue;
        }
        let c = e.set.intersection(&changed);
        if !c.is_empty() {
            for p in c.paths() {
                conflicts.push(Conflict {
                    manager: e.key.manager.clone(),
                    subresource: (!e.key.subresource.is_empty()).then(|| e.key.subresource.clone()),
                    path: path_string(&p),
                    operation: e.key.operation.clone(),
                    api_version: e.api_version.clone(),
                    time: e.time.clone(),
                });
            }
        }
    }
    if !force && !conflicts.is_empty() {
        conflicts.sort_by_key(Conflict::identity);
        return conflicts;
    }
    for e in managed.entries.iter_mut() {
        if &e.key == workflow {
            continue;
        }
        e.set = e.set.difference(&changed).difference(&cmp.removed);
    }
    managed.drop_empty_except(workflow);
    Vec::new()
}

impl Managed {
    fn drop_empty_except(&mut self, keep: &ManagerKey) {
        self.entries.retain(|e| &e.key == keep || !e.set.is_empty());
    }
}

fn update(
    live: &Value,
    new: &Value,
    root: T<'_>,
    managed: &mut Managed,
    key: &ManagerKey,
    force: bool,
) -> Result<Vec<Conflict>, ApplyError> {
    let cmp = compare(Some(live), Some(new), root)?;
    Ok(apply_comparison_to_others(managed, key, &cmp, force))
}

/// Updater.prune: remove what the applier owned last time, does not own now, and nobody else
/// owns.
fn prune(merged: &Value, managed: &Managed, last: &Set, root: T<'_>) -> Value {
    let last_e = ensure_named(last, root);
    let p1 = remove_items(merged, &last_e, root).unwrap_or(Value::Null);
    let merged_set = ensure_named(&to_field_set_lenient(merged, root), root);
    let p1_set = ensure_named(&to_field_set_lenient(&p1, root), root);
    let managed_set = ensure_named(&managed.union_all(), root);
    let p2 = remove_items(
        merged,
        &merged_set.difference(&p1_set.union(&managed_set)),
        root,
    )
    .unwrap_or(Value::Null);
    let p2_set = ensure_named(&to_field_set_lenient(&p2, root), root);
    remove_items(
        merged,
        &merged_set.difference(&p2_set).intersection(&last_e),
        root,
    )
    .unwrap_or(Value::Null)
}

/// capManagersManager: at most 10 Update entries; the oldest are merged into
/// "ancient-changes" per apiVersion.
fn cap_update_managers(managed: &mut Managed) {
    const MAX: usize = 10;
    let mut updaters: Vec<usize> = (0..managed.entries.len())
        .filter(|&i| !managed.entries[i].applied)
        .collect();
    if updaters.len() <= MAX {
        return;
    }
    updaters.sort_by(|&a, &b| {
        let (ea, eb) = (&managed.entries[a], &managed.entries[b]);
        unix_seconds(ea.time.as_deref())
            .cmp(&unix_seconds(eb.time.as_deref()))
            .then_with(|| ea.key.identity().cmp(&eb.key.identity()))
    });
    let keys: Vec<ManagerKey> = updaters
        .iter()
        .map(|&i| managed.entries[i].key.clone())
        .collect();
    let mut first_for_version: BTreeMap<String, ManagerKey> = BTreeMap::new();
    let mut length = keys.len();
    for k in keys {
        if length <= MAX {
            break;
        }
        let Some(e) = managed.get(&k).cloned() else {
            continue;
        };
        let bucket = ManagerKey {
            manager: "ancient-changes".into(),
            operation: "Update".into(),
            api_version: e.api_version.clone(),
            subresource: String::new(),
        };
        if let Some(first) = first_for_version.get(&e.api_version).cloned() {
            if managed.get(&bucket).is_none()
                && let Some(f) = managed.get(&first).cloned()
            {
                managed.entries.retain(|x| x.key != first);
                managed.entries.push(Entry {
                    key: bucket.clone(),
                    ..f
                });
            }
            let existing = managed
                .get(&bucket)
                .map(|b| b.set.clone())
                .unwrap_or_default();
            managed.set(&bucket, &e.api_version, e.set.union(&existing), false);
            if let Some(b) = managed.get_mut(&bucket) {
                b.time = e.time.clone();
            }
            managed.entries.retain(|x| x.key != k);
            length -= 1;
        } else {
            first_for_version.insert(e.api_version.clone(), k);
        }
    }
}

/// Seconds since the epoch of an RFC3339 time (0 when absent or unparsable), for sorting.
fn unix_seconds(t: Option<&str>) -> i64 {
    let Some(t) = t else { return 0 };
    parse_rfc3339(t).unwrap_or(0)
}

fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { t.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = t.get(19..)?;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        rest = &r[n..];
    }
    let offset = if rest == "Z" || rest == "z" {
        0
    } else if rest.len() == 6 {
        let sign = if rest.starts_with('-') { -1 } else { 1 };
        let oh: i64 = rest.get(1..3)?.parse().ok()?;
        let om: i64 = rest.get(4..6)?.parse().ok()?;
        sign * (oh * 3600 + om * 60)
    } else {
        return None;
    };
    // days from civil (Howard Hinnant's algorithm)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + s - offset)
}

/// metav1.Time's format: RFC3339 in UTC, second precision.
fn utc_rfc3339(t: &str) -> String {
    let Some(secs) = parse_rfc3339(t) else {
        return t.to_string();
    };
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // civil from days
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------
// Field paths and sets
// ---------------------------------------------------------------------------------------

/// A path element: `f:name`, `k:{"type":"Ready"}`, `v:"value"`, `i:0`.
#[derive(Debug, Clone)]
enum PE {
    Field(String),
    Key(Vec<(String, Value)>),
    Value(Value),
    Index(usize),
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

/// structured-merge-diff's total order of values.
fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) if !x.is_f64() && !y.is_f64() => i.cmp(&j),
            _ => x
                .as_f64()
                .unwrap_or(0.0)
                .partial_cmp(&y.as_f64().unwrap_or(0.0))
                .unwrap_or(Ordering::Equal),
        },
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let c = compare_values(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => {
                        let c = compare_values(p, q);
                        if c != Ordering::Equal {
                            return c;
                        }
                    }
                    (None, Some(_)) => return Ordering::Greater,
                    (Some(_), None) => return Ordering::Less,
                    (None, None) => {}
                }
            }
            Ordering::Equal
        }
        (Value::Null, Value::Null) => Ordering::Equal,
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

impl Ord for PE {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PE::Field(a), PE::Field(b)) => a.as_bytes().cmp(b.as_bytes()),
            (PE::Field(_), _) => Ordering::Less,
            (_, PE::Field(_)) => Ordering::Greater,
            (PE::Key(a), PE::Key(b)) => {
                for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                    let c = ka
                        .as_bytes()
                        .cmp(kb.as_bytes())
                        .then_with(|| compare_values(va, vb));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PE::Key(_), _) => Ordering::Less,
            (_, PE::Key(_)) => Ordering::Greater,
            (PE::Value(a), PE::Value(b)) => compare_values(a, b),
            (PE::Value(_), _) => Ordering::Less,
            (_, PE::Value(_)) => Ordering::Greater,
            (PE::Index(a), PE::Index(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for PE {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PE {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PE {}

/// value.ToString of structured-merge-diff.
fn smd_to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Number(n) => gofmt::number(n),
        Value::String(s) => gofmt::quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(smd_to_string).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", smd_to_string(v)))
            .collect::<Vec<_>>()
            .join(""),
    }
}

impl PE {
    /// The `String()` form used in conflict messages.
    fn display(&self) -> String {
        match self {
            PE::Field(f) => format!(".{f}"),
            PE::Key(k) => {
                let parts: Vec<String> = k
                    .iter()
                    .map(|(n, v)| format!("{n}={}", smd_to_string(v)))
                    .collect();
                format!("[{}]", parts.join(","))
            }
            PE::Value(v) => format!("[={}]", smd_to_string(v)),
            PE::Index(i) => format!("[{i}]"),
        }
    }

    /// The FieldsV1 key form.
    fn serialize(&self) -> String {
        match self {
            PE::Field(f) => format!("f:{f}"),
            PE::Key(k) => {
                let parts: Vec<String> = k
                    .iter()
                    .map(|(n, v)| {
                        format!(
                            "{}:{}",
                            gofmt::json(&Value::String(n.clone())),
                            gofmt::json(v)
                        )
                    })
                    .collect();
                format!("k:{{{}}}", parts.join(","))
            }
            PE::Value(v) => format!("v:{}", gofmt::json(v)),
            PE::Index(i) => format!("i:{i}"),
        }
    }

    fn deserialize(s: &str) -> Result<Option<PE>, String> {
        if s.len() < 2 {
            return Err("key must be 2 characters long".into());
        }
        let (kind, rest) = s.split_at(2);
        Ok(Some(match kind {
            "f:" => PE::Field(rest.to_string()),
            "v:" => PE::Value(
                serde_json::from_str(rest)
                    .map_err(|e| format!("parsing key as path element: {e}"))?,
            ),
            "k:" => {
                let v: Value = serde_json::from_str(rest)
                    .map_err(|e| format!("parsing key as path element: {e}"))?;
                let Value::Object(m) = v else {
                    return Err("parsing key as path element: key must be an object".into());
                };
                let mut fields: Vec<(String, Value)> = m.into_iter().collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                PE::Key(fields)
            }
            "i:" => PE::Index(
                rest.parse()
                    .map_err(|e| format!("parsing key as path element: {e}"))?,
            ),
            _ if kind.ends_with(':') => return Ok(None),
            _ => return Err(format!("missing colon: {s}")),
        }))
    }
}

fn path_string(p: &[PE]) -> String {
    p.iter().map(PE::display).collect()
}

/// A set of field paths (structured-merge-diff `fieldpath.Set`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Set {
    members: BTreeSet<PE>,
    children: BTreeMap<PE, Set>,
}

impl Set {
    fn insert(&mut self, path: &[PE]) {
        match path {
            [] => {}
            [pe] => {
                self.members.insert(pe.clone());
            }
            [pe, rest @ ..] => self.children.entry(pe.clone()).or_default().insert(rest),
        }
    }

    #[cfg(test)]
    fn has(&self, path: &[PE]) -> bool {
        match path {
            [] => false,
            [pe] => self.members.contains(pe),
            [pe, rest @ ..] => self.children.get(pe).is_some_and(|c| c.has(rest)),
        }
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(Set::is_empty)
    }

    fn child(&self, pe: &PE) -> Option<&Set> {
        self.children.get(pe).filter(|c| !c.is_empty())
    }

    fn union(&self, o: &Set) -> Set {
        let mut out = self.clone();
        out.members.extend(o.members.iter().cloned());
        for (pe, c) in &o.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out.children.retain(|_, c| !c.is_empty());
        out
    }

    fn intersection(&self, o: &Set) -> Set {
        let mut out = Set {
            members: self.members.intersection(&o.members).cloned().collect(),
            ..Set::default()
        };
        for (pe, c) in &self.children {
            if let Some(oc) = o.children.get(pe) {
                let i = c.intersection(oc);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Non-recursive difference: a member of `o` does not remove children of `self`.
    fn difference(&self, o: &Set) -> Set {
        let mut out = Set {
            members: self.members.difference(&o.members).cloned().collect(),
            ..Set::default()
        };
        for (pe, c) in &self.children {
            let d = match o.children.get(pe) {
                Some(oc) => c.difference(oc),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// All member paths: members first, then children, each in order.
    fn paths(&self) -> Vec<Vec<PE>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PE>, out: &mut Vec<Vec<PE>>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    fn to_fields_v1(&self) -> Value {
        Value::Object(self.emit(false))
    }

    fn emit(&self, include_self: bool) -> Map<String, Value> {
        let mut m = Map::new();
        if include_self && !(self.members.is_empty() && self.children.is_empty()) {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        let mut keys: BTreeSet<&PE> = self.members.iter().collect();
        keys.extend(self.children.keys().filter(|k| self.child(k).is_some()));
        for pe in keys {
            let is_member = self.members.contains(pe);
            let v = match self.child(pe) {
                Some(c) => Value::Object(c.emit(is_member)),
                None => Value::Object(Map::new()),
            };
            m.insert(pe.serialize(), v);
        }
        m
    }

    fn from_fields_v1(v: &Value) -> Result<Set, String> {
        let (set, _) = Set::read(v)?;
        Ok(set.unwrap_or_default())
    }

    /// readIterV1: returns the children set (if any) and whether the node is a member.
    fn read(v: &Value) -> Result<(Option<Set>, bool), String> {
        let Value::Object(m) = v else {
            return Err("fieldsV1 must be an object".into());
        };
        let mut children: Option<Set> = None;
        let mut is_member = false;
        for (k, sub) in m {
            if k == "." {
                is_member = true;
                continue;
            }
            let Some(pe) = PE::deserialize(k)? else {
                continue;
            };
            let (grand, child_member) = Set::read(sub)?;
            if child_member {
                children
                    .get_or_insert_with(Set::default)
                    .members
                    .insert(pe.clone());
            }
            if let Some(g) = grand {
                children
                    .get_or_insert_with(Set::default)
                    .children
                    .insert(pe, g);
            }
        }
        if children.is_none() {
            is_member = true;
        }
        Ok((children, is_member))
    }
}

// ---------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------

/// The structured-merge-diff type of a position in the object.
#[derive(Debug, Clone, Copy)]
enum T<'a> {
    /// The object root (apiVersion, kind, metadata, and the schema's properties).
    Root(Option<&'a Node>),
    Node(&'a Node),
    Meta,
    StrMap,
    OwnerRefs,
    OwnerRef,
    StrSet,
    Atomic,
    Scalar,
    Deduced,
}

#[derive(Debug, Clone, Copy)]
enum ListKind<'a> {
    Set,
    /// Key fields and the item schema (for key defaults).
    Map(&'a [String], Option<&'a Node>),
    OwnerRefs,
}

#[derive(Debug, Clone, Copy)]
enum Kind<'a> {
    Leaf,
    Map,
    List(ListKind<'a>),
}

const OBJECT_META: [&str; 15] = [
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];
const OWNER_REF: [&str; 6] = [
    "apiVersion",
    "blockOwnerDeletion",
    "controller",
    "kind",
    "name",
    "uid",
];

impl<'a> T<'a> {
    /// The declared shape, before looking at values (Deduced is decided by the value).
    fn kind(self, v: Option<&Value>) -> Kind<'a> {
        match self {
            T::Root(_) | T::Meta | T::StrMap | T::OwnerRef => Kind::Map,
            T::OwnerRefs => Kind::List(ListKind::OwnerRefs),
            T::StrSet => Kind::List(ListKind::Set),
            T::Atomic | T::Scalar => Kind::Leaf,
            T::Deduced => match v {
                Some(Value::Object(_)) => Kind::Map,
                _ => Kind::Leaf,
            },
            T::Node(n) => {
                if n.int_or_string {
                    return Kind::Leaf;
                }
                let is_object = n.ty.as_deref() == Some("object")
                    || (n.ty.is_none()
                        && (!n.properties.is_empty() || n.additional.is_some() || n.embedded));
                let is_array =
                    n.ty.as_deref() == Some("array") || (n.ty.is_none() && n.items.is_some());
                if is_object {
                    if n.map_type.as_deref() == Some("atomic") {
                        Kind::Leaf
                    } else {
                        Kind::Map
                    }
                } else if is_array {
                    match n.list_type.as_deref() {
                        Some("set") => Kind::List(ListKind::Set),
                        Some("map") => {
                            Kind::List(ListKind::Map(&n.list_map_keys, n.items.as_deref()))
                        }
                        _ => Kind::Leaf,
                    }
                } else if n.ty.is_none() && n.preserve_unknown {
                    match v {
                        Some(Value::Object(_)) => Kind::Map,
                        _ => Kind::Leaf,
                    }
                } else {
                    Kind::Leaf
                }
            }
        }
    }

    /// The effective shape for the given values: structured only if every present value fits
    /// (`null` counts as an empty map or list, as in structured-merge-diff).
    fn kind_for(self, a: Option<&Value>, b: Option<&Value>) -> Kind<'a> {
        let k = self.kind(a.or(b));
        let fits = |v: Option<&Value>| {
            matches!(
                (k, v),
                (_, None)
                    | (Kind::Map, Some(Value::Object(_) | Value::Null))
                    | (Kind::List(_), Some(Value::Array(_) | Value::Null))
                    | (Kind::Leaf, _)
            )
        };
        if fits(a) && fits(b) { k } else { Kind::Leaf }
    }

    /// The type of map entry `key`.
    fn child(self, key: &str) -> T<'a> {
        match self {
            T::Root(schema) => match key {
                "apiVersion" | "kind" => T::Scalar,
                "metadata" => T::Meta,
                _ => match schema {
                    Some(n) => n.field(key).map(T::Node).unwrap_or(T::Deduced),
                    None => T::Deduced,
                },
            },
            T::Node(n) => {
                if n.embedded {
                    match key {
                        "apiVersion" | "kind" => return T::Scalar,
                        "metadata" => return T::Meta,
                        _ => {}
                    }
                }
                n.field(key).map(T::Node).unwrap_or(T::Deduced)
            }
            T::Meta => match key {
                "labels" | "annotations" => T::StrMap,
                "ownerReferences" => T::OwnerRefs,
                "finalizers" => T::StrSet,
                "managedFields" => T::Atomic,
                _ => T::Scalar,
            },
            T::StrMap | T::OwnerRef => T::Scalar,
            T::Deduced => T::Deduced,
            _ => T::Deduced,
        }
    }

    /// Whether `key` is a declared struct field (not a map entry).
    fn is_field(self, key: &str) -> bool {
        match self {
            // Without a schema (built-in kinds) every top-level field is taken as a declared
            // struct field, as the built-in types' OpenAPI schemas declare them.
            T::Root(schema) => {
                matches!(key, "apiVersion" | "kind" | "metadata")
                    || schema.is_none_or(|n| n.prop(key).is_some())
            }
            T::Node(n) => {
                (n.embedded && matches!(key, "apiVersion" | "kind" | "metadata"))
                    || n.prop(key).is_some()
            }
            T::Meta => OBJECT_META.contains(&key),
            T::OwnerRef => OWNER_REF.contains(&key),
            _ => false,
        }
    }

    /// The type of list items.
    fn elem(self) -> T<'a> {
        match self {
            T::Node(n) => n.items.as_deref().map(T::Node).unwrap_or(T::Deduced),
            T::OwnerRefs => T::OwnerRef,
            T::StrSet => T::Scalar,
            _ => T::Deduced,
        }
    }

    /// The type under path element `pe`.
    fn under(self, pe: &PE) -> T<'a> {
        match pe {
            PE::Field(f) => self.child(f),
            _ => self.elem(),
        }
    }
}

/// The path element of a list item (structured-merge-diff's listItemToPathElement): set
/// items are their value; list-map items their key fields, a missing key field taking the
/// schema default or being left out of the key.
fn item_pe(lk: ListKind<'_>, item: &Value) -> Result<PE, String> {
    let (keys, elem): (Vec<&str>, Option<&Node>) = match lk {
        ListKind::Set => {
            return match item {
                Value::Object(_) => {
                    Err("associative list without keys has an element that's a map type".into())
                }
                Value::Array(_) => {
                    Err("not supported: associative list with lists as elements".into())
                }
                Value::Null => Err(
                    "associative list without keys has an element that's an explicit null".into(),
                ),
                v => Ok(PE::Value(v.clone())),
            };
        }
        ListKind::OwnerRefs => (vec!["uid"], None),
        ListKind::Map(k, elem) => (k.iter().map(String::as_str).collect(), elem),
    };
    let m = match item {
        Value::Null => return Err("associative list with keys may not have a null element".into()),
        Value::Object(m) => m,
        _ => return Err("associative list with keys may not have non-map elements".into()),
    };
    let mut fields = Vec::new();
    for k in &keys {
        if let Some(v) = m.get(*k) {
            fields.push((k.to_string(), v.clone()));
        } else if let Some(d) = elem
            .and_then(|e| e.prop(k))
            .and_then(|p| p.default.as_ref())
        {
            fields.push((k.to_string(), d.clone()));
        }
    }
    if !keys.is_empty() && fields.is_empty() {
        let quoted: Vec<String> = keys.iter().map(|k| gofmt::quote(k)).collect();
        return Err(format!(
            "associative list with keys has an element that omits all key fields [{}] (and doesn't have default values for any key fields)",
            quoted.join(" ")
        ));
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(PE::Key(fields))
}

/// Item path elements, tolerating items without keys (as for live objects).
fn item_pe_lenient(lk: ListKind<'_>, item: &Value, index: usize) -> PE {
    item_pe(lk, item).unwrap_or(PE::Index(index))
}

// ---------------------------------------------------------------------------------------
// ToFieldSet
// ---------------------------------------------------------------------------------------

fn to_field_set(v: &Value, t: T<'_>) -> Result<Set, ApplyError> {
    let mut set = Set::default();
    walk_field_set(v, t, &mut Vec::new(), &mut set, true).map_err(ApplyError::Invalid)?;
    Ok(set)
}

fn to_field_set_lenient(v: &Value, t: T<'_>) -> Set {
    let mut set = Set::default();
    let _ = walk_field_set(v, t, &mut Vec::new(), &mut set, false);
    set
}

fn walk_field_set(
    v: &Value,
    t: T<'_>,
    path: &mut Vec<PE>,
    set: &mut Set,
    strict: bool,
) -> Result<(), String> {
    match (t.kind_for(Some(v), None), v) {
        (Kind::Map, Value::Object(m)) => {
            for (k, child) in m {
                let pe = PE::Field(k.clone());
                path.push(pe);
                walk_field_set(child, t.child(k), path, set, strict)?;
                let empty_map = matches!(child, Value::Object(o) if o.is_empty());
                if child.is_null() || empty_map || !t.is_field(k) {
                    set.insert(path);
                }
                path.pop();
            }
        }
        (Kind::List(lk), Value::Array(items)) => {
            let mut pes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let pe = if strict {
                    item_pe(lk, item)
                        .map_err(|e| format!("{}: element {i}: {e}", path_string(path)))?
                } else {
                    item_pe_lenient(lk, item, i)
                };
                pes.push(pe);
            }
            let mut dups: BTreeSet<PE> = BTreeSet::new();
            for (i, pe) in pes.iter().enumerate() {
                if pes[..i].contains(pe) && dups.insert(pe.clone()) {
                    if strict {
                        return Err(format!(
                            "{}: duplicate entries for key {}",
                            path_string(path),
                            pe.display()
                        ));
                    }
                    path.push(pe.clone());
                    set.insert(path);
                    path.pop();
                }
            }
            for (item, pe) in items.iter().zip(&pes) {
                if dups.contains(pe) {
                    continue;
                }
                path.push(pe.clone());
                walk_field_set(item, t.elem(), path, set, strict)?;
                set.insert(path);
                path.pop();
            }
        }
        _ => set.insert(path),
    }
    Ok(())
}

/// EnsureNamedFieldsAreMembers: struct fields with owned children become members too.
fn ensure_named(s: &Set, t: T<'_>) -> Set {
    let mut out = Set {
        members: s.members.clone(),
        ..Set::default()
    };
    for (pe, c) in &s.children {
        if let PE::Field(f) = pe
            && t.is_field(f)
        {
            out.members.insert(pe.clone());
        }
        out.children
            .insert(pe.clone(), ensure_named(c, t.under(pe)));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Merge
// ---------------------------------------------------------------------------------------

fn merge(lhs: Option<&Value>, rhs: Option<&Value>, t: T<'_>) -> Result<Option<Value>, ApplyError> {
    let mut path = Vec::new();
    merge_at(lhs, rhs, t, &mut path).map_err(ApplyError::Invalid)
}

fn merge_at(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    t: T<'_>,
    path: &mut Vec<PE>,
) -> Result<Option<Value>, String> {
    let kind = t.kind_for(lhs, rhs);
    let empty_promote = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    match kind {
        Kind::Leaf => Ok(rhs.or(lhs).cloned()),
        _ if empty_promote(lhs) && empty_promote(rhs) => Ok(rhs.or(lhs).cloned()),
        Kind::Map => {
            let empty = Map::new();
            let lm = lhs.and_then(Value::as_object).unwrap_or(&empty);
            let rm = rhs.and_then(Value::as_object).unwrap_or(&empty);
            let mut out = Map::new();
            for (k, lv) in lm {
                path.push(PE::Field(k.clone()));
                if let Some(v) = merge_at(Some(lv), rm.get(k), t.child(k), path)? {
                    out.insert(k.clone(), v);
                }
                path.pop();
            }
            for (k, rv) in rm {
                if lm.contains_key(k) {
                    continue;
                }
                path.push(PE::Field(k.clone()));
                if let Some(v) = merge_at(None, Some(rv), t.child(k), path)? {
                    out.insert(k.clone(), v);
                }
                path.pop();
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        Kind::List(lk) => merge_list(lhs, rhs, lk, t, path),
    }
}

fn merge_list(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    lk: ListKind<'_>,
    t: T<'_>,
    path: &mut Vec<PE>,
) -> Result<Option<Value>, String> {
    let empty = Vec::new();
    let l = lhs.and_then(Value::as_array).unwrap_or(&empty);
    let r = rhs.and_then(Value::as_array).unwrap_or(&empty);
    // rhs: no duplicates allowed
    let mut rhs_pes: Vec<PE> = Vec::new();
    let mut observed_rhs: Vec<(PE, &Value)> = Vec::new();
    for (i, item) in r.iter().enumerate() {
        let pe =
            item_pe(lk, item).map_err(|e| format!("{}: element {i}: {e}", path_string(path)))?;
        if observed_rhs.iter().any(|(p, _)| *p == pe) {
            return Err(format!(
                "{}: duplicate entries for key {}",
                path_string(path),
                pe.display()
            ));
        }
        observed_rhs.push((pe.clone(), item));
        rhs_pes.push(pe);
    }
    // lhs: duplicates tolerated; a duplicated key is observed as null (so an applied item
    // with that key replaces all of them), as in structured-merge-diff.
    let null = Value::Null;
    let mut lhs_pes: Vec<PE> = Vec::new();
    let mut observed_lhs: Vec<(PE, &Value)> = Vec::new();
    for (i, item) in l.iter().enumerate() {
        let pe = item_pe_lenient(lk, item, i);
        match observed_lhs.iter_mut().find(|(p, _)| *p == pe) {
            Some(e) => e.1 = &null,
            None => observed_lhs.push((pe.clone(), item)),
        }
        lhs_pes.push(pe);
    }
    let get = |obs: &Vec<(PE, &Value)>, pe: &PE| -> Option<Value> {
        obs.iter().find(|(p, _)| p == pe).map(|(_, v)| (*v).clone())
    };
    let mut shared: std::collections::VecDeque<PE> = rhs_pes
        .iter()
        .filter(|pe| observed_lhs.iter().any(|(p, _)| p == *pe))
        .cloned()
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: Vec<PE> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    let elem = t.elem();
    let (l_len, r_len) = (lhs_pes.len(), rhs_pes.len());
    let (mut li, mut ri) = (0usize, 0usize);
    let mut guard = 0usize;
    while li < l_len || ri < r_len {
        guard += 1;
        if guard > 4 * (l_len + r_len) + 8 {
            break;
        }
        if li < l_len && ri < r_len {
            let pe = lhs_pes[li].clone();
            if pe == rhs_pes[ri] {
                merged_rhs.push(pe.clone());
                path.push(pe.clone());
                let m = merge_at(
                    get(&observed_lhs, &pe).as_ref(),
                    get(&observed_rhs, &pe).as_ref(),
                    elem,
                    path,
                )?;
                path.pop();
                out.push(m.unwrap_or(Value::Null));
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            let in_rhs = observed_rhs.iter().any(|(p, _)| *p == pe);
            if in_rhs && next_shared.as_ref().is_some_and(|n| *n != pe) {
                li += 1;
                continue;
            }
        }
        if li < l_len {
            let pe = lhs_pes[li].clone();
            if !observed_rhs.iter().any(|(p, _)| *p == pe) {
                path.push(pe.clone());
                let m = merge_at(Some(&l[li]), None, elem, path)?;
                path.pop();
                out.push(m.unwrap_or(Value::Null));
                li += 1;
                continue;
            } else if merged_rhs.contains(&pe) {
                li += 1;
            }
        }
        if ri < r_len {
            let pe = rhs_pes[ri].clone();
            merged_rhs.push(pe.clone());
            path.push(pe.clone());
            let m = merge_at(
                get(&observed_lhs, &pe).as_ref(),
                get(&observed_rhs, &pe).as_ref(),
                elem,
                path,
            )?;
            path.pop();
            out.push(m.unwrap_or(Value::Null));
            ri += 1;
            if next_shared.as_ref() == Some(&pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

// ---------------------------------------------------------------------------------------
// Compare
// ---------------------------------------------------------------------------------------

fn compare(lhs: Option<&Value>, rhs: Option<&Value>, t: T<'_>) -> Result<Comparison, ApplyError> {
    let mut c = Comparison {
        added: Set::default(),
        modified: Set::default(),
        removed: Set::default(),
    };
    compare_at(lhs, rhs, t, &mut Vec::new(), &mut c);
    Ok(c)
}

fn compare_at(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    t: T<'_>,
    path: &mut Vec<PE>,
    c: &mut Comparison,
) {
    let kind = t.kind_for(lhs, rhs);
    let empty_promote = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    let leaf = matches!(kind, Kind::Leaf) || (empty_promote(lhs) && empty_promote(rhs));
    if leaf {
        match (lhs, rhs) {
            (None, Some(_)) => c.added.insert(path),
            (Some(_), None) => c.removed.insert(path),
            (Some(a), Some(b)) if a != b => c.modified.insert(path),
            _ => {}
        }
        return;
    }
    match kind {
        Kind::Map => {
            let empty = Map::new();
            let lm = lhs.and_then(Value::as_object).unwrap_or(&empty);
            let rm = rhs.and_then(Value::as_object).unwrap_or(&empty);
            for (k, lv) in lm {
                path.push(PE::Field(k.clone()));
                compare_at(Some(lv), rm.get(k), t.child(k), path, c);
                path.pop();
            }
            for (k, rv) in rm {
                if !lm.contains_key(k) {
                    path.push(PE::Field(k.clone()));
                    compare_at(None, Some(rv), t.child(k), path, c);
                    path.pop();
                }
            }
        }
        Kind::List(lk) => {
            let empty = Vec::new();
            let l = lhs.and_then(Value::as_array).unwrap_or(&empty);
            let r = rhs.and_then(Value::as_array).unwrap_or(&empty);
            let mut all: Vec<PE> = Vec::new();
            let mut lv: Vec<(PE, Vec<&Value>)> = Vec::new();
            for (i, item) in l.iter().enumerate() {
                let pe = item_pe_lenient(lk, item, i);
                match lv.iter_mut().find(|(p, _)| *p == pe) {
                    Some(e) => e.1.push(item),
                    None => {
                        lv.push((pe.clone(), vec![item]));
                        all.push(pe);
                    }
                }
            }
            let mut rv: Vec<(PE, Vec<&Value>)> = Vec::new();
            for (i, item) in r.iter().enumerate() {
                let pe = item_pe_lenient(lk, item, i);
                match rv.iter_mut().find(|(p, _)| *p == pe) {
                    Some(e) => e.1.push(item),
                    None => {
                        if !lv.iter().any(|(p, _)| *p == pe) {
                            all.push(pe.clone());
                        }
                        rv.push((pe, vec![item]));
                    }
                }
            }
            let elem = t.elem();
            for pe in all {
                let ll = lv
                    .iter()
                    .find(|(p, _)| *p == pe)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let rl = rv
                    .iter()
                    .find(|(p, _)| *p == pe)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                path.push(pe);
                match (ll.len(), rl.len()) {
                    (a, b) if a <= 1 && b <= 1 => {
                        compare_at(ll.first().copied(), rl.first().copied(), elem, path, c)
                    }
                    (a, b) if a >= 2 && b >= 2 => {
                        if ll != rl {
                            c.modified.insert(path);
                        }
                    }
                    (a, _) if a >= 2 => {
                        if let Some(r0) = rl.first() {
                            compare_at(None, Some(r0), elem, path, c);
                        }
                        c.removed.insert(path);
                    }
                    _ => {
                        if let Some(l0) = ll.first() {
                            compare_at(Some(l0), None, elem, path, c);
                        }
                        c.added.insert(path);
                    }
                }
                path.pop();
            }
        }
        Kind::Leaf => {}
    }
    // A node present on one side only is itself added/removed.
    match (lhs, rhs) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// RemoveItems
// ---------------------------------------------------------------------------------------

/// Removes the paths in `set` (members remove the whole subtree), as structured-merge-diff
/// v6.3.2 (Kubernetes 1.36.0-1.36.2) does: a map or list that removal empties stays as `{}` /
/// `[]` (Kubernetes 1.35 and earlier, and SMD v6.3.3+/v6.4.2+, leave `null` there instead).
/// Returns `None` where the result is `null`.
fn remove_items(v: &Value, set: &Set, t: T<'_>) -> Option<Value> {
    // A container visited by removal keeps its kind even when emptied.
    let keep_kind = |orig: &Value, removed: Option<Value>| match removed {
        Some(x) => x,
        None => match orig {
            Value::Object(_) => Value::Object(Map::new()),
            Value::Array(_) => Value::Array(Vec::new()),
            _ => Value::Null,
        },
    };
    match (t.kind_for(Some(v), None), v) {
        (Kind::Map, Value::Object(m)) => {
            if m.is_empty() {
                return None;
            }
            let mut out = Map::new();
            let mut had_matches = false;
            for (k, child) in m {
                let pe = PE::Field(k.clone());
                if set.members.contains(&pe) {
                    continue;
                }
                let nv = match set.child(&pe) {
                    Some(sub) => {
                        had_matches = true;
                        keep_kind(child, remove_items(child, sub, t.child(k)))
                    }
                    None => child.clone(),
                };
                out.insert(k.clone(), nv);
            }
            (!out.is_empty() || had_matches).then_some(Value::Object(out))
        }
        (Kind::List(lk), Value::Array(items)) => {
            if items.is_empty() {
                return None;
            }
            let mut out = Vec::new();
            let mut had_matches = false;
            for (i, item) in items.iter().enumerate() {
                let pe = item_pe_lenient(lk, item, i);
                if set.members.contains(&pe) {
                    continue;
                }
                let nv = match set.child(&pe) {
                    Some(sub) => {
                        had_matches = true;
                        keep_kind(item, remove_items(item, sub, t.elem()))
                    }
                    None => item.clone(),
                };
                out.push(nv);
            }
            (!out.is_empty() || had_matches).then_some(Value::Array(out))
        }
        (Kind::Map | Kind::List(_), _) => None,
        (Kind::Leaf, _) => Some(v.clone()),
    }
}

#[cfg(test)]
mod tests;
