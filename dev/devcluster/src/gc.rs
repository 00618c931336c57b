//! Background work a real cluster's controller manager does: ownerReference garbage collection
//! (background, foreground and orphan propagation) and namespace deletion.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::handlers;
use crate::meta;
use crate::server::Shared;
use crate::store::{Store, key_of};

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.opts.gc_interval) => {}
            _ = shutdown.changed() => return,
        }
        let mut store = shared.lock();
        if !store.gc_dirty {
            continue;
        }
        store.gc_dirty = false;
        if pass(&mut store) {
            store.gc_dirty = true;
        }
    }
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn delete(store: &mut Store, storage: &str, obj: &Value, now: &str) -> bool {
    let Some(def) = store.registry.by_storage(storage) else {
        return false;
    };
    let (ns, name) = key_of(obj);
    handlers::delete_object(store, &def, &ns, &name, None, now, false).is_some()
}

/// Removes `finalizer` from the current version of an object; deletes it when none remain.
fn drop_finalizer(store: &mut Store, storage: &str, key: &(String, String), finalizer: &str) {
    let Some(cur) = store.get(storage, &key.0, &key.1) else {
        return;
    };
    let mut obj = (*cur).clone();
    let fins: Vec<String> = meta::finalizers(&obj)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    meta::set_finalizers(&mut obj, &fins);
    if fins.is_empty() && obj.pointer("/metadata/deletionTimestamp").is_some() {
        store.remove(storage, &key.0, &key.1);
    } else {
        store.put(storage, obj);
    }
}

/// One collection pass; returns whether anything changed (so another pass follows).
pub(crate) fn pass(store: &mut Store) -> bool {
    let now = meta::now();
    let mut changed = false;
    let mut deleting: Vec<(String, Arc<Value>)> = Vec::new();
    let mut dependents: HashMap<String, Vec<(String, Arc<Value>)>> = HashMap::new();
    let mut with_owners: Vec<(String, Arc<Value>)> = Vec::new();
    for storage in store.storages() {
        let _ = store.scan(&storage, None, None, None, |_, v| {
            if v.pointer("/metadata/deletionTimestamp").is_some() {
                deleting.push((storage.clone(), v.clone()));
            }
            let owners = owner_uids(v);
            if !owners.is_empty() {
                for o in owners {
                    dependents
                        .entry(o)
                        .or_default()
                        .push((storage.clone(), v.clone()));
                }
                with_owners.push((storage.clone(), v.clone()));
            }
            true
        });
    }
    for (storage, obj) in &deleting {
        let key = key_of(obj);
        let uid = meta::str_at(obj, "/metadata/uid").to_string();
        let fins = meta::finalizers(obj);
        let deps = dependents.get(&uid).cloned().unwrap_or_default();
        if fins.iter().any(|f| f == "orphan") {
            for (dst, dep) in deps {
                let dkey = key_of(&dep);
                let Some(cur) = store.get(&dst, &dkey.0, &dkey.1) else {
                    continue;
                };
                let mut o = (*cur).clone();
                if let Some(refs) = o
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                    if refs.is_empty()
                        && let Some(m) = meta::meta_mut(&mut o)
                    {
                        m.remove("ownerReferences");
                    }
                }
                store.put(&dst, o);
            }
            drop_finalizer(store, storage, &key, "orphan");
            changed = true;
        } else if fins.iter().any(|f| f == "foregroundDeletion") {
            let live: Vec<(String, Arc<Value>)> = deps
                .into_iter()
                .filter(|(dst, d)| {
                    let k = key_of(d);
                    store.get(dst, &k.0, &k.1).is_some()
                })
                .collect();
            if live.is_empty() {
                drop_finalizer(store, storage, &key, "foregroundDeletion");
            } else {
                for (dst, dep) in live {
                    if dep.pointer("/metadata/deletionTimestamp").is_none() {
                        delete(store, &dst, &dep, &now);
                    }
                }
            }
            changed = true;
        }
        if storage == "customresourcedefinitions.apiextensions.k8s.io"
            && fins.iter().any(|f| f == handlers::CRD_CLEANUP_FINALIZER)
        {
            handlers::remove_crd(store, &key.1);
            drop_finalizer(store, storage, &key, handlers::CRD_CLEANUP_FINALIZER);
            changed = true;
        }
        if storage == "namespaces" {
            changed |= finish_namespace(store, &key.1, &now);
        }
    }
    for (storage, obj) in &with_owners {
        // Re-read: this pass may have changed the object (orphaning removes references).
        let k = key_of(obj);
        let Some(cur) = store.get(storage, &k.0, &k.1) else {
            continue;
        };
        if cur.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let owners = owner_uids(&cur);
        if !owners.is_empty() && owners.iter().all(|u| !store.uids.contains_key(u)) {
            delete(store, storage, &cur, &now);
            changed = true;
        }
    }
    changed
}

/// Deletes a terminating namespace's contents; removes the namespace once it is empty.
fn finish_namespace(store: &mut Store, ns: &str, now: &str) -> bool {
    let mut remaining = 0usize;
    let mut changed = false;
    let namespaced: Vec<String> = store
        .registry
        .storage_keys()
        .into_iter()
        .filter(|(_, namespaced)| *namespaced)
        .map(|(s, _)| s)
        .collect();
    for storage in namespaced {
        let mut objs = Vec::new();
        let _ = store.scan(&storage, Some(ns), None, None, |_, v| {
            objs.push(v.clone());
            true
        });
        remaining += objs.len();
        for o in objs {
            if o.pointer("/metadata/deletionTimestamp").is_none() {
                delete(store, &storage, &o, now);
                changed = true;
            }
        }
    }
    let mut left = 0usize;
    for (storage, namespaced) in store.registry.storage_keys() {
        if namespaced {
            left += store.count(&storage, Some(ns));
        }
    }
    if left == 0
        && let Some(cur) = store.get("namespaces", "", ns)
    {
        let mut o = (*cur).clone();
        if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("finalizers");
        }
        if meta::finalizers(&o).is_empty() {
            store.remove("namespaces", "", ns);
        } else {
            store.put("namespaces", o);
        }
        changed = true;
    }
    let _ = remaining;
    changed
}
