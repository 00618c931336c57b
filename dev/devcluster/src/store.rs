//! In-memory storage: one table per resource, one increasing resourceVersion, a bounded history
//! of changes per table for watches and consistent (Exact / continue) lists, and the watchers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::registry::Registry;

/// Table key: (namespace, name); namespace is empty for cluster-scoped objects.
pub(crate) type Key = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed change. `obj` carries the change's resourceVersion (also for deletions).
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub typ: ChangeType,
    pub key: Key,
    pub obj: Arc<Value>,
    pub prev: Option<Arc<Value>>,
    /// The watch event line `{"type":..,"object":obj}\n`, encoded once for all watchers
    /// that send the stored object unchanged.
    pub encoded: std::sync::OnceLock<bytes::Bytes>,
}

struct WatcherTx {
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Arc<Change>>,
}

#[derive(Default)]
pub(crate) struct Table {
    pub objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Arc<Change>>,
    /// Watching or listing at a resourceVersion below this is 410 Expired.
    floor: u64,
    watchers: Vec<WatcherTx>,
}

/// History needed for a request is gone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expired {
    pub oldest: u64,
}

pub(crate) struct Store {
    pub rv: u64,
    tables: HashMap<String, Table>,
    /// uid → (storage, namespace, name), for garbage collection.
    pub uids: HashMap<String, (String, String, String)>,
    pub history_limit: usize,
    pub registry: Registry,
    /// Bumped on every RBAC object write, so the policy is rebuilt lazily.
    pub rbac_gen: u64,
    /// Set when something happened that the garbage collector should look at.
    pub gc_dirty: bool,
}

const RBAC_STORAGE: [&str; 4] = [
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
];

pub(crate) fn key_of(obj: &Value) -> Key {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Store {
            rv: 1,
            tables: HashMap::new(),
            uids: HashMap::new(),
            history_limit: history_limit.max(1),
            registry: Registry::new(),
            rbac_gen: 0,
            gc_dirty: false,
        }
    }

    pub fn get(&self, storage: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.tables
            .get(storage)?
            .objects
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Number of objects of a table in a namespace (or all).
    pub fn count(&self, storage: &str, ns: Option<&str>) -> usize {
        match (self.tables.get(storage), ns) {
            (None, _) => 0,
            (Some(t), None) => t.objects.len(),
            (Some(t), Some(ns)) => range(&t.objects, ns, None).count(),
        }
    }

    /// Creates or replaces an object, assigning the next resourceVersion.
    pub fn put(&mut self, storage: &str, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        set_rv(&mut obj, rv);
        let key = key_of(&obj);
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
            self.uids.insert(
                uid.to_string(),
                (storage.to_string(), key.0.clone(), key.1.clone()),
            );
        }
        // The collector only needs to look when something is being deleted or an owner is
        // already missing (dependents created after their owner is gone).
        let orphaned = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|refs| {
                refs.iter().any(|r| {
                    r.get("uid")
                        .and_then(Value::as_str)
                        .is_some_and(|u| !self.uids.contains_key(u))
                })
            });
        if orphaned || obj.pointer("/metadata/deletionTimestamp").is_some() {
            self.gc_dirty = true;
        }
        if RBAC_STORAGE.contains(&storage) {
            self.rbac_gen += 1;
        }
        let obj = Arc::new(obj);
        let table = self.tables.entry(storage.to_string()).or_default();
        let prev = table.objects.insert(key.clone(), obj.clone());
        let typ = if prev.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        let change = Arc::new(Change {
            rv,
            typ,
            key,
            obj: obj.clone(),
            prev,
            encoded: std::sync::OnceLock::new(),
        });
        record(table, change, self.history_limit);
        obj
    }

    /// Deletes an object; the DELETED event carries a new resourceVersion.
    pub fn remove(&mut self, storage: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let key = (ns.to_string(), name.to_string());
        let table = self.tables.get_mut(storage)?;
        let prev = table.objects.remove(&key)?;
        self.rv += 1;
        let rv = self.rv;
        if let Some(uid) = prev.pointer("/metadata/uid").and_then(Value::as_str) {
            self.uids.remove(uid);
        }
        if RBAC_STORAGE.contains(&storage) {
            self.rbac_gen += 1;
        }
        self.gc_dirty = true;
        let mut deleted = (*prev).clone();
        set_rv(&mut deleted, rv);
        let deleted = Arc::new(deleted);
        let change = Arc::new(Change {
            rv,
            typ: ChangeType::Deleted,
            key,
            obj: deleted.clone(),
            prev: Some(prev),
            encoded: std::sync::OnceLock::new(),
        });
        record(table, change, self.history_limit);
        Some(deleted)
    }

    /// Registers a watcher; events committed after this call are delivered to it.
    pub fn subscribe(
        &mut self,
        storage: &str,
        namespace: Option<&str>,
    ) -> mpsc::UnboundedReceiver<Arc<Change>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let table = self.tables.entry(storage.to_string()).or_default();
        table.watchers.retain(|w| !w.tx.is_closed());
        table.watchers.push(WatcherTx {
            namespace: namespace.map(str::to_string),
            tx,
        });
        rx
    }

    /// Changes after `rv` (exclusive), or Expired when history before them is gone.
    pub fn changes_since(
        &self,
        storage: &str,
        rv: u64,
        namespace: Option<&str>,
    ) -> Result<Vec<Arc<Change>>, Expired> {
        let Some(table) = self.tables.get(storage) else {
            return Ok(Vec::new());
        };
        if rv < table.floor {
            return Err(Expired {
                oldest: table.floor,
            });
        }
        let start = table.history.partition_point(|c| c.rv <= rv);
        Ok(table
            .history
            .range(start..)
            .filter(|c| namespace.is_none_or(|ns| c.key.0 == ns))
            .cloned()
            .collect())
    }

    /// Whether a list or watch at `rv` can still be served.
    pub fn check_rv(&self, storage: &str, rv: u64) -> Result<(), Expired> {
        match self.tables.get(storage) {
            Some(t) if rv < t.floor => Err(Expired { oldest: t.floor }),
            _ => Ok(()),
        }
    }

    /// Visits objects in key order as they were at `at` (None: now), starting after `after`.
    /// `visit` returns false to stop.
    pub fn scan(
        &self,
        storage: &str,
        namespace: Option<&str>,
        at: Option<u64>,
        after: Option<&Key>,
        mut visit: impl FnMut(&Key, &Arc<Value>) -> bool,
    ) -> Result<(), Expired> {
        let Some(table) = self.tables.get(storage) else {
            return Ok(());
        };
        // Overrides: objects as they were at `at` for keys changed since.
        let mut overrides: BTreeMap<Key, Option<Arc<Value>>> = BTreeMap::new();
        if let Some(at) = at {
            if at < table.floor {
                return Err(Expired {
                    oldest: table.floor,
                });
            }
            let start = table.history.partition_point(|c| c.rv <= at);
            for c in table.history.range(start..).rev() {
                overrides.insert(c.key.clone(), c.prev.clone());
            }
        }
        let in_scope =
            |k: &Key| namespace.is_none_or(|ns| k.0 == ns) && after.is_none_or(|a| k > a);
        type It<'a> = Box<dyn Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a>;
        let base: It<'_> = match (namespace, after) {
            (Some(ns), _) => Box::new(range(&table.objects, ns, after)),
            (None, Some(a)) => Box::new(
                table
                    .objects
                    .range((Bound::Excluded(a.clone()), Bound::Unbounded)),
            ),
            (None, None) => Box::new(table.objects.iter()),
        };
        let mut live = base.filter(|(k, _)| !overrides.contains_key(*k)).peekable();
        let mut old = overrides
            .iter()
            .filter(|(k, v)| v.is_some() && in_scope(k))
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
            .peekable();
        loop {
            let take_live = match (live.peek(), old.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((a, _)), Some((b, _))) => a < b,
            };
            let next = if take_live { live.next() } else { old.next() };
            let Some((k, v)) = next else { break };
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    /// Drops all history and advances the revision: every resourceVersion handed out so far is
    /// now 410 Expired for watches, Exact lists and continue tokens (as after an etcd
    /// compaction past a client's last-seen revision); new lists report the new revision.
    pub fn compact(&mut self) {
        self.rv += 1;
        let rv = self.rv;
        for t in self.tables.values_mut() {
            t.history.clear();
            t.floor = rv;
        }
    }

    /// Storage keys with at least one object.
    pub fn storages(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|(_, t)| !t.objects.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

fn range<'a>(
    objects: &'a BTreeMap<Key, Arc<Value>>,
    ns: &'a str,
    after: Option<&Key>,
) -> impl Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a {
    let start = match after {
        Some(a) if a.0 == ns => Bound::Excluded(a.clone()),
        Some(a) if a.0.as_str() > ns => Bound::Excluded((ns.to_string(), char::MAX.to_string())),
        _ => Bound::Included((ns.to_string(), String::new())),
    };
    objects
        .range((start, Bound::Unbounded))
        .take_while(move |(k, _)| k.0 == ns)
}

fn record(table: &mut Table, change: Arc<Change>, limit: usize) {
    table.watchers.retain(|w| {
        if w.namespace.as_deref().is_some_and(|ns| ns != change.key.0) {
            return !w.tx.is_closed();
        }
        w.tx.send(change.clone()).is_ok()
    });
    table.history.push_back(change);
    while table.history.len() > limit {
        if let Some(old) = table.history.pop_front() {
            table.floor = old.rv;
        }
    }
}
