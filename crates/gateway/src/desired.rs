//! The desired-state index: per device, the serialized desired document and its ETag.
//!
//! Fed by the one DeviceProcess watch ([`crate::sync`]); indexed by `spec.deviceRef.name`. A
//! device's document is re-encoded only when one of *its* objects changes in a way that shows
//! in the document (spec hash, generation, device, presence); status-only updates are a map
//! lookup. A GET is a read-locked map lookup returning an `Arc` of the encoded bytes.
//!
//! Memory per device is the encoded document (the body bytes, which are also the source
//! re-parsed on the rare rebuild) and its ETag; per object its name, device, generation and
//! spec hash. Devices without objects hold nothing: their (empty) document is computed on
//! the fly, so an unassigned name is indistinguishable from an unknown one.
//!
//! Long polls wait on one of [`WAKE_SHARDS`] `Notify`s chosen by a hash of the device name
//! rather than on a channel per device: a change wakes the few waiters of its shard (about
//! devices / 1024), who re-check their own document with a lookup. Changes are rare next to
//! polls, and this keeps a 100,000-device fleet free of 100,000 channels.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use apollo_protocol::wire::{DesiredDocument, DesiredProcess, EncodedDocument};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// Number of long-poll wake-up shards.
pub const WAKE_SHARDS: usize = 1024;

/// One encoded desired document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// The strong ETag, quotes included: `"<revision>"`.
    pub etag: String,
    /// The `200` body.
    pub body: Bytes,
}

impl From<EncodedDocument> for Doc {
    fn from(e: EncodedDocument) -> Self {
        Doc {
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

    /// The revision (the ETag without its quotes).
    pub fn revision(&self) -> &str {
        self.etag.trim_matches('"')
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

#[derive(Debug, Default)]
struct Inner {
    objects: HashMap<String, ObjKey>,
    /// Devices with at least one DeviceProcess.
    devices: HashMap<String, Arc<Doc>>,
}

/// The per-device desired documents.
#[derive(Debug)]
pub struct DesiredStore {
    inner: RwLock<Inner>,
    wake: Box<[Notify]>,
    hasher: RandomState,
}

impl Default for DesiredStore {
    fn default() -> Self {
        DesiredStore {
            inner: RwLock::new(Inner::default()),
            wake: (0..WAKE_SHARDS).map(|_| Notify::new()).collect(),
            hasher: RandomState::new(),
        }
    }
}

fn decode(doc: &Doc) -> Vec<DesiredProcess> {
    serde_json::from_slice::<DesiredDocument>(&doc.body)
        .map(|d| d.processes)
        .unwrap_or_default()
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

    fn shard(&self, device: &str) -> &Notify {
        let i = (self.hasher.hash_one(device) as usize) % self.wake.len();
        &self.wake[i]
    }

    /// Re-encodes `device`'s document with `edit` applied to its processes; wakes its
    /// waiters when the ETag changes.
    fn edit(&self, inner: &mut Inner, device: &str, edit: impl FnOnce(&mut Vec<DesiredProcess>)) {
        let mut processes = inner
            .devices
            .get(device)
            .map(|d| decode(d))
            .unwrap_or_default();
        edit(&mut processes);
        let changed = if processes.is_empty() {
            inner.devices.remove(device).is_some()
        } else {
            let doc: Doc = DesiredDocument::encode(device, processes).into();
            match inner.devices.get_mut(device) {
                Some(current) if current.etag == doc.etag => false,
                Some(current) => {
                    *current = Arc::new(doc);
                    true
                }
                None => {
                    inner.devices.insert(device.to_string(), Arc::new(doc));
                    true
                }
            }
        };
        if changed {
            self.shard(device).notify_waiters();
        }
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
            self.edit(&mut inner, &old.device, |ps| {
                ps.retain(|q| q.name != p.name)
            });
        }
        let device = p.device.clone();
        let process = DesiredProcess {
            namespace: p.namespace,
            name: p.name,
            generation: p.generation,
            spec_hash: p.spec_hash,
            spec: p.spec,
        };
        self.edit(&mut inner, &device, move |ps| {
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
                self.edit(&mut inner, &old.device, |ps| ps.retain(|p| p.name != name));
                true
            }
            None => false,
        }
    }

    /// The names of the objects held that are not in `listed` (gone while the watch was
    /// re-listing).
    pub fn names_not_in(&self, listed: &HashSet<String>) -> Vec<String> {
        self.read()
            .objects
            .keys()
            .filter(|n| !listed.contains(*n))
            .cloned()
            .collect()
    }

    /// The current document of `device` (empty when nothing is assigned).
    pub fn current(&self, device: &str) -> Arc<Doc> {
        if let Some(doc) = self.read().devices.get(device) {
            return doc.clone();
        }
        Arc::new(Doc::empty(device))
    }

    /// A future that completes at the next change of `device`'s document (and possibly at a
    /// change of another device of the same shard: re-check with [`DesiredStore::current`]).
    /// Call `enable()` on it (pinned) *before* checking the current document, so a change
    /// between the check and the wait is not missed.
    pub fn changed(&self, device: &str) -> Notified<'_> {
        self.shard(device).notified()
    }

    /// Devices with at least one DeviceProcess.
    pub fn device_count(&self) -> usize {
        self.read().devices.len()
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
    use std::time::Duration;

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
        assert_eq!(empty.revision().len(), 32);
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
        for name in s.names_not_in(&HashSet::from(["a".to_string()])) {
            s.remove(&name);
        }
        assert_eq!(s.object_count(), 0);
        assert_eq!(s.device_count(), 0);
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

    async fn woken(n: std::pin::Pin<&mut Notified<'_>>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), n)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn waiters_are_woken_by_changes() {
        let s = DesiredStore::new();
        s.upsert(input("a", "d1", 1, "x"));
        // A change of the device wakes its waiter.
        let n = s.changed("d1");
        tokio::pin!(n);
        n.as_mut().enable();
        s.upsert(input("a", "d1", 2, "z"));
        assert!(woken(n).await);
        // A no-op does not.
        let n = s.changed("d1");
        tokio::pin!(n);
        n.as_mut().enable();
        s.upsert(input("a", "d1", 2, "z"));
        assert!(!woken(n).await);
        // A waiter on an unassigned device sees its first object, and its removal.
        let n = s.changed("d2");
        tokio::pin!(n);
        n.as_mut().enable();
        s.upsert(input("c", "d2", 1, "x"));
        assert!(woken(n).await);
        assert_eq!(names(&s.current("d2")), ["c"]);
        let n = s.changed("d2");
        tokio::pin!(n);
        n.as_mut().enable();
        s.remove("c");
        assert!(woken(n).await);
    }
}
