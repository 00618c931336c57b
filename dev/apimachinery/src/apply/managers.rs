//! Manager bookkeeping: managedFields entries keyed by manager identity, meta stripping,
//! timestamps, the before-first-apply entry, capping of update managers, and their encoding.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManagerKey {
    pub(crate) manager: String,
    pub(crate) operation: String,
    /// Empty for Apply entries (their identity ignores the version).
    pub(crate) api_version: String,
    pub(crate) subresource: String,
}

impl ManagerKey {
    /// BuildManagerIdentifier: the JSON of the entry without fields and time.
    pub(crate) fn identity(&self) -> String {
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
pub(crate) struct Entry {
    pub(crate) key: ManagerKey,
    pub(crate) api_version: String,
    pub(crate) set: Set,
    pub(crate) time: Option<String>,
    pub(crate) applied: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Managed {
    pub(crate) entries: Vec<Entry>,
}

impl Managed {
    pub(crate) fn decode(obj: &Value) -> Result<Managed, String> {
        match obj.get("metadata").and_then(|m| m.get("managedFields")) {
            None | Some(Value::Null) => Ok(Managed::default()),
            Some(v) => Managed::decode_entries(v),
        }
    }

    pub(crate) fn decode_entries(v: &Value) -> Result<Managed, String> {
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

    pub(crate) fn get(&self, key: &ManagerKey) -> Option<&Entry> {
        self.entries.iter().find(|e| &e.key == key)
    }

    pub(crate) fn get_mut(&mut self, key: &ManagerKey) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| &e.key == key)
    }

    pub(crate) fn set(&mut self, key: &ManagerKey, api_version: &str, set: Set, applied: bool) {
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

    pub(crate) fn drop_empty(&mut self) {
        self.entries.retain(|e| !e.set.is_empty());
    }

    pub(crate) fn union_all(&self) -> Set {
        let mut u = Set::default();
        for e in &self.entries {
            u = u.union(&e.set);
        }
        u
    }

    pub(crate) fn encode_into(&self, obj: &mut Value) {
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
pub(crate) fn strip_set() -> Set {
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

pub(crate) fn remove_managed_fields(obj: &mut Value) {
    if let Some(Value::Object(m)) = obj.get_mut("metadata") {
        m.remove("managedFields");
    }
}

/// The Update path (managedFieldsUpdater + stripMeta + structured merge Update): `key` gets the
/// fields changed between `old` and `new`; others lose them.
pub(crate) fn update_managers(
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

pub(crate) struct Comparison {
    pub(crate) added: Set,
    pub(crate) modified: Set,
    pub(crate) removed: Set,
}

/// Updater.update: conflicts with (or, forced, removal from) other managers of the fields the
/// change touches; removed fields leave everyone.
pub(crate) fn apply_comparison_to_others(
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
    pub(crate) fn drop_empty_except(&mut self, keep: &ManagerKey) {
        self.entries.retain(|e| &e.key == keep || !e.set.is_empty());
    }
}

pub(crate) fn update(
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
pub(crate) fn prune(merged: &Value, managed: &Managed, last: &Set, root: T<'_>) -> Value {
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
pub(crate) fn cap_update_managers(managed: &mut Managed) {
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
pub(crate) fn unix_seconds(t: Option<&str>) -> i64 {
    let Some(t) = t else { return 0 };
    parse_rfc3339(t).unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 time with any offset and fraction (`None` when it
/// is not one).
pub(crate) fn parse_rfc3339(t: &str) -> Option<i64> {
    t.parse::<jiff::Timestamp>().ok().map(|ts| ts.as_second())
}

/// metav1.Time's format: RFC 3339 in UTC, second precision (`t` unchanged when it is not a
/// time).
pub(crate) fn utc_rfc3339(t: &str) -> String {
    match t.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => t.to_string(),
    }
}
