//! The desired-state index: per device, the serialized desired document and its ETag.
//!
//! Fed by the one DeviceProcess watch ([`crate::sync`]); indexed by `spec.deviceRef.name`. A
//! device's document is re-encoded only when one of *its* objects changes in a way that shows
//! in the document (spec hash, generation, device, presence); status-only updates are a map
//! lookup. A GET is a read-locked map lookup returning an `Arc` of the encoded bytes.
//!
//! Memory per device is the encoded document (the body bytes, which are also the source
//! re-parsed on the rare rebuild), its ETag and revision, and a `tokio::sync::watch` channel
//! that long polls wait on. Per object: its name, device, generation and spec hash.
//! Devices without objects get an empty document computed on the fly, unless a long poll is
//! waiting on them (then a slot exists until the waiter leaves and [`DesiredStore::prune`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use apollo_protocol::wire::{DesiredDocument, DesiredProcess, EncodedDocument};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;

/// One encoded desired document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// Content hash; the ETag is `"<revision>"`.
    pub revision: String,
    /// The strong ETag, quotes included.
    pub etag: String,
    /// The `200` body.
    pub body: Bytes,
}

impl From<EncodedDocument> for Doc {
    fn from(e: EncodedDocument) -> Self {
        Doc {
            revision: e.revision,
            etag: e.etag,
            body: e.body,
        }
    }
}

impl Doc {
    /// The document of a device with nothing assigned.
    pub fn empty(device: &str) -> Doc {
        DesiredDocument::encode(device, Vec::new()).into()
    }
}

/// What the index needs of a DeviceProcess.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInput {
    pub namespace: String,
    pub name: String,
    pub device: String,
    pub generation: i64,
    pub spec_hash: String,
    pub spec: Value,
}

#[derive(Debug)]
struct ObjKey {
    device: String,
    generation: i64,
    spec_hash: String,
}

#[derive(Debug)]
struct Slot {
    tx: watch::Sender<Arc<Doc>>,
    processes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    objects: HashMap<String, ObjKey>,
    devices: HashMap<String, Slot>,
}

/// The per-device desired documents.
#[derive(Debug, Default)]
pub struct DesiredStore {
    inner: RwLock<Inner>,
}

fn decode(doc: &Doc) -> Vec<DesiredProcess> {
    serde_json::from_slice::<DesiredDocument>(&doc.body)
        .map(|d| d.processes)
        .unwrap_or_default()
}

impl Inner {
    /// Re-encodes `device`'s document with `edit` applied to its processes; wakes waiters
    /// when the ETag changes. Creates the slot when missing; drops it when it ends up empty
    /// and nobody waits.
    fn edit(&mut self, device: &str, edit: impl FnOnce(&mut Vec<DesiredProcess>)) {
        let slot = self
            .devices
            .entry(device.to_string())
            .or_insert_with(|| Slot {
                tx: watch::Sender::new(Arc::new(Doc::empty(device))),
                processes: 0,
            });
        let mut processes = decode(&slot.tx.borrow());
        edit(&mut processes);
        slot.processes = processes.len();
        let doc: Doc = DesiredDocument::encode(device, processes).into();
        slot.tx.send_if_modified(|current| {
            if current.etag == doc.etag {
                false
            } else {
                *current = Arc::new(doc);
                true
            }
        });
        if slot.processes == 0 && slot.tx.receiver_count() == 0 {
            self.devices.remove(device);
        }
    }

    fn remove_from(&mut self, device: &str, name: &str) {
        self.edit(device, |ps| ps.retain(|p| p.name != name));
    }
}

impl DesiredStore {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or updates a DeviceProcess. Returns whether any document changed.
    pub fn upsert(&self, p: ProcessInput) -> bool {
        let mut inner = self.write();
        if let Some(old) = inner.objects.get(&p.name)
            && old.device == p.device
            && old.generation == p.generation
            && old.spec_hash == p.spec_hash
        {
            return false;
        }
        let previous = inner.objects.insert(
            p.name.clone(),
            ObjKey {
                device: p.device.clone(),
                generation: p.generation,
                spec_hash: p.spec_hash.clone(),
            },
        );
        if let Some(old) = previous
            && old.device != p.device
        {
            inner.remove_from(&old.device, &p.name);
        }
        let device = p.device.clone();
        let process = DesiredProcess {
            namespace: p.namespace,
            name: p.name,
            generation: p.generation,
            spec_hash: p.spec_hash,
            spec: p.spec,
        };
        inner.edit(&device, move |ps| {
            ps.retain(|q| q.name != process.name);
            ps.push(process);
        });
        true
    }

    /// Removes a DeviceProcess. Returns whether it was known.
    pub fn remove(&self, name: &str) -> bool {
        let mut inner = self.write();
        match inner.objects.remove(name) {
            Some(old) => {
                inner.remove_from(&old.device, name);
                true
            }
            None => false,
        }
    }

    /// Removes every object not in `keep` (after a re-list).
    pub fn retain(&self, keep: &HashSet<String>) {
        let gone: Vec<String> = self
            .read()
            .objects
            .keys()
            .filter(|n| !keep.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name);
        }
    }

    /// The current document of `device` (empty when nothing is assigned).
    pub fn current(&self, device: &str) -> Arc<Doc> {
        if let Some(slot) = self.read().devices.get(device) {
            return slot.tx.borrow().clone();
        }
        Arc::new(Doc::empty(device))
    }

    /// A receiver that sees every new document of `device` (the current one marked seen).
    pub fn subscribe(&self, device: &str) -> watch::Receiver<Arc<Doc>> {
        if let Some(slot) = self.read().devices.get(device) {
            return slot.tx.subscribe();
        }
        let mut inner = self.write();
        inner
            .devices
            .entry(device.to_string())
            .or_insert_with(|| Slot {
                tx: watch::Sender::new(Arc::new(Doc::empty(device))),
                processes: 0,
            })
            .tx
            .subscribe()
    }

    /// Drops slots of devices with no objects and no waiters.
    pub fn prune(&self) {
        let mut inner = self.write();
        inner
            .devices
            .retain(|_, s| s.processes > 0 || s.tx.receiver_count() > 0);
    }

    /// Devices with at least one DeviceProcess.
    pub fn device_count(&self) -> usize {
        self.read()
            .devices
            .values()
            .filter(|s| s.processes > 0)
            .count()
    }

    /// DeviceProcesses indexed.
    pub fn object_count(&self) -> usize {
        self.read().objects.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(name: &str, device: &str, generation: i64, arg: &str) -> ProcessInput {
        ProcessInput {
            namespace: "default".into(),
            name: name.into(),
            device: device.into(),
            generation,
            spec_hash: format!("hash-{arg}"),
            spec: json!({"deviceRef": {"name": device}, "execution": {"args": [arg]}}),
        }
    }

    fn names(doc: &Doc) -> Vec<String> {
        decode(doc).into_iter().map(|p| p.name).collect()
    }

    #[test]
    fn documents_follow_objects() {
        let s = DesiredStore::new();
        let empty = s.current("tor1-01");
        assert_eq!(*empty, Doc::empty("tor1-01"));
        assert!(s.upsert(input("a", "tor1-01", 1, "x")));
        let one = s.current("tor1-01");
        assert_ne!(one.etag, empty.etag);
        assert_eq!(names(&one), ["a"]);
        // The same content again is a no-op (status-only updates).
        assert!(!s.upsert(input("a", "tor1-01", 1, "x")));
        assert_eq!(s.current("tor1-01"), one);
        // A second object; order is by name whatever the arrival order.
        s.upsert(input("0-first", "tor1-01", 1, "y"));
        assert_eq!(names(&s.current("tor1-01")), ["0-first", "a"]);
        // Another device is untouched.
        assert_eq!(*s.current("tor1-02"), Doc::empty("tor1-02"));
        // Moving an object to another device updates both.
        s.upsert(input("a", "tor1-02", 2, "x"));
        assert_eq!(names(&s.current("tor1-01")), ["0-first"]);
        assert_eq!(names(&s.current("tor1-02")), ["a"]);
        assert!(s.remove("a"));
        assert!(!s.remove("a"));
        assert_eq!(*s.current("tor1-02"), Doc::empty("tor1-02"));
        assert_eq!(s.device_count(), 1);
        s.retain(&HashSet::new());
        assert_eq!(s.object_count(), 0);
        assert_eq!(*s.current("tor1-01"), Doc::empty("tor1-01"));
    }

    #[test]
    fn etags_depend_only_on_content() {
        let a = DesiredStore::new();
        a.upsert(input("p1", "d", 1, "x"));
        a.upsert(input("p2", "d", 1, "y"));
        let b = DesiredStore::new();
        b.upsert(input("p2", "d", 1, "y"));
        b.upsert(input("p1", "d", 1, "old"));
        b.upsert(input("p1", "d", 1, "x"));
        assert_eq!(a.current("d"), b.current("d"));
    }

    #[tokio::test]
    async fn waiters_are_woken_by_their_device_only() {
        let s = DesiredStore::new();
        s.upsert(input("a", "d1", 1, "x"));
        let mut rx1 = s.subscribe("d1");
        let mut rx_other = s.subscribe("d2");
        s.upsert(input("b", "d3", 1, "x"));
        assert!(!rx1.has_changed().unwrap());
        assert!(!rx_other.has_changed().unwrap());
        s.upsert(input("a", "d1", 2, "z"));
        assert!(rx1.has_changed().unwrap());
        let doc = rx1.borrow_and_update().clone();
        assert_eq!(doc, s.current("d1"));
        // A waiter on an unassigned device sees its first object.
        s.upsert(input("c", "d2", 1, "x"));
        rx_other.changed().await.unwrap();
        assert_eq!(names(&rx_other.borrow()), ["c"]);
        // Slots of waiters are kept while they wait, pruned afterwards.
        s.remove("c");
        assert!(rx_other.has_changed().unwrap());
        drop(rx_other);
        s.prune();
        assert_eq!(s.read().devices.len(), 2);
    }
}
