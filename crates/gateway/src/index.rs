//! The object index: every DeviceProcess of the namespace, held once, grouped by device.
//!
//! Fed once per watch event ([`crate::sync`]: the spec hash computed once), it is what both
//! views of the gateway read: per device the encoded desired document and its ETag
//! ([`crate::desired`]), per object its name, namespace, generation and spec hash, and the
//! status controller's bookkeeping ([`crate::status`]: live and target views, write state).
//!
//! The index is sharded by a hash of the device name into [`SHARDS`] shards, each a
//! read-mostly lock over its devices and a `Notify` for its long polls. A GET is one shard's
//! read lock, a map lookup and an `Arc` clone; a status change write-locks only its device's
//! shard. Long polls wait on their shard's `Notify` rather than on a channel per device: a
//! change wakes the few waiters of its shard (about devices / 1024), who re-check their own
//! document with a lookup. Changes are rare next to polls, and this keeps a 100,000-device
//! fleet free of 100,000 channels.
//!
//! A device's name is stored once (the shard's key, shared as an `Arc<str>` with the name
//! index), an object's name once (shared by the name index and the write queues). The name
//! index (object name → device) is touched only by the watch and by the status writers' look
//! ups, never on the GET path. Devices without objects hold nothing: their (empty) document
//! is computed on the fly, so an unassigned name is indistinguishable from an unknown one.
//!
//! Lock order: name index, then a shard, then (inside the status controller) the liveness
//! table and the write queues; nothing takes them the other way round.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use apollo_protocol::wire::DesiredProcess;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::desired::Doc;
use crate::status::Tracked;

/// Number of shards (and so of long-poll wake-up groups).
pub const SHARDS: usize = 1024;

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

/// One DeviceProcess: what both views read, and the status controller's bookkeeping.
#[derive(Debug)]
pub struct Object {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub generation: i64,
    pub spec_hash: Box<str>,
    /// The status controller's views and write state.
    pub(crate) status: Tracked,
}

/// What a watch event changed of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The object was not indexed before.
    pub new: bool,
    /// Its spec hash differs from the one indexed before (false for a new object).
    pub spec_changed: bool,
}

/// A device with at least one DeviceProcess.
#[derive(Debug)]
struct Device {
    doc: Arc<Doc>,
    /// Sorted by name; usually one.
    objects: Vec<Object>,
}

impl Device {
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.objects.binary_search_by(|o| (*o.name).cmp(name))
    }
}

type Devices = HashMap<Arc<str>, Device>;

#[derive(Debug, Default)]
struct Names {
    /// Object name → its device (the same `Arc`s as the objects and the shards' keys).
    devices: HashMap<Arc<str>, Arc<str>>,
    /// The namespace of the objects, shared by all of them.
    namespace: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Shard {
    devices: RwLock<Devices>,
    wake: Notify,
}

/// The object index.
#[derive(Debug)]
pub struct ObjectIndex {
    shards: Box<[Shard]>,
    names: Mutex<Names>,
    hasher: RandomState,
}

impl Default for ObjectIndex {
    fn default() -> Self {
        ObjectIndex {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            names: Mutex::new(Names::default()),
            hasher: RandomState::new(),
        }
    }
}

/// `device`'s document with its processes edited; `None` when none are left.
fn edited(
    device: &str,
    doc: Option<&Doc>,
    edit: impl FnOnce(&mut Vec<DesiredProcess>),
) -> Option<Doc> {
    let mut processes = doc.map(Doc::processes).unwrap_or_default();
    edit(&mut processes);
    (!processes.is_empty()).then(|| Doc::encode(device, processes))
}

impl ObjectIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, device: &str) -> &Shard {
        let i = (self.hasher.hash_one(device) as usize) % self.shards.len();
        &self.shards[i]
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Names> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(shard: &Shard) -> RwLockReadGuard<'_, Devices> {
        shard.devices.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(shard: &Shard) -> RwLockWriteGuard<'_, Devices> {
        shard.devices.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or updates a DeviceProcess, re-encoding its device's document when the document
    /// shows the change (spec hash, generation, device, presence), then calls `observe` with
    /// the device and the object, under the device's lock. Returns whether any document
    /// changed.
    pub fn upsert(&self, p: ProcessInput, observe: impl FnOnce(&str, &mut Object, Change)) -> bool {
        // Held throughout: a writer looking the object up waits for a move to complete.
        let mut names = self.names();
        let namespace = match &names.namespace {
            Some(n) if **n == *p.namespace => n.clone(),
            _ => {
                let n: Arc<str> = Arc::from(p.namespace.as_str());
                names.namespace = Some(n.clone());
                n
            }
        };
        let (name, old_device) = match names.devices.get_key_value(p.name.as_str()) {
            Some((name, device)) => (name.clone(), Some(device.clone())),
            None => (Arc::from(p.name.as_str()), None),
        };
        // Moved to another device: taken out of the old one, bookkeeping included.
        let mut carried = None;
        let mut changed = false;
        if let Some(old) = old_device.as_ref().filter(|d| ***d != *p.device) {
            carried = self.take(old, &name);
            changed = true;
        }
        let shard = self.shard(&p.device);
        let mut devices = Self::write(shard);
        let device_key = match devices.get_key_value(p.device.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(p.device.as_str()),
        };
        let device = devices.entry(device_key.clone()).or_insert_with(|| Device {
            doc: Arc::new(Doc::empty(&p.device)),
            objects: Vec::new(),
        });
        let (index, change, shows) = match device.position(&name) {
            Ok(i) => {
                let o = &device.objects[i];
                let spec_changed = *o.spec_hash != *p.spec_hash;
                let shows = spec_changed || o.generation != p.generation;
                (
                    i,
                    Change {
                        new: false,
                        spec_changed,
                    },
                    shows,
                )
            }
            Err(i) => {
                let (change, status) = match carried {
                    Some(o) => {
                        let spec_changed = *o.spec_hash != *p.spec_hash;
                        (
                            Change {
                                new: false,
                                spec_changed,
                            },
                            o.status,
                        )
                    }
                    None => (
                        Change {
                            new: true,
                            spec_changed: false,
                        },
                        Tracked::default(),
                    ),
                };
                // Exactly one more: an object is a few hundred bytes, and a Vec's first
                // allocation would otherwise hold four.
                device.objects.reserve_exact(1);
                device.objects.insert(
                    i,
                    Object {
                        name: name.clone(),
                        namespace: namespace.clone(),
                        generation: p.generation,
                        spec_hash: p.spec_hash.as_str().into(),
                        status,
                    },
                );
                (i, change, true)
            }
        };
        if shows {
            let obj = &mut device.objects[index];
            obj.generation = p.generation;
            obj.spec_hash = p.spec_hash.as_str().into();
            obj.namespace = namespace;
            let process = DesiredProcess {
                namespace: p.namespace,
                name: p.name,
                generation: p.generation,
                spec_hash: p.spec_hash,
                spec: p.spec,
            };
            if let Some(doc) = edited(&p.device, Some(&device.doc), move |ps| {
                ps.retain(|q| q.name != process.name);
                ps.push(process);
            }) && doc.etag != device.doc.etag
            {
                device.doc = Arc::new(doc);
                changed = true;
            }
        }
        observe(&p.device, &mut device.objects[index], change);
        drop(devices);
        if changed {
            shard.wake.notify_waiters();
        }
        if old_device.as_deref() != Some(&*device_key) {
            names.devices.insert(name, device_key);
        }
        changed
    }

    /// Takes object `name` out of `device`, re-encoding the device's document; wakes its
    /// waiters.
    fn take(&self, device: &str, name: &str) -> Option<Object> {
        let shard = self.shard(device);
        let mut devices = Self::write(shard);
        let entry = devices.get_mut(device)?;
        let i = entry.position(name).ok()?;
        let obj = entry.objects.remove(i);
        match edited(device, Some(&entry.doc), |ps| ps.retain(|p| p.name != name)) {
            Some(doc) => entry.doc = Arc::new(doc),
            None => {
                devices.remove(device);
            }
        }
        drop(devices);
        shard.wake.notify_waiters();
        Some(obj)
    }

    /// Removes a DeviceProcess. Returns whether it was known.
    pub fn remove(&self, name: &str) -> bool {
        let mut names = self.names();
        match names.devices.remove(name) {
            Some(device) => {
                self.take(&device, name);
                true
            }
            None => false,
        }
    }

    /// The names of the objects held that are not in `listed` (gone while the watch was
    /// re-listing).
    pub fn names_not_in(&self, listed: &HashSet<String>) -> Vec<String> {
        self.names()
            .devices
            .keys()
            .filter(|n| !listed.contains(&***n))
            .map(|n| n.to_string())
            .collect()
    }

    /// The current document of `device` (empty when nothing is assigned).
    pub fn current(&self, device: &str) -> Arc<Doc> {
        if let Some(d) = Self::read(self.shard(device)).get(device) {
            return d.doc.clone();
        }
        Arc::new(Doc::empty(device))
    }

    /// A future that completes at the next change of `device`'s document (and possibly at a
    /// change of another device of the same shard: re-check with [`ObjectIndex::current`]).
    /// Call `enable()` on it (pinned) *before* checking the current document, so a change
    /// between the check and the wait is not missed.
    pub fn changed(&self, device: &str) -> Notified<'_> {
        self.shard(device).wake.notified()
    }

    /// Devices with at least one DeviceProcess.
    pub fn device_count(&self) -> usize {
        self.shards.iter().map(|s| Self::read(s).len()).sum()
    }

    /// DeviceProcesses indexed.
    pub fn object_count(&self) -> usize {
        self.names().devices.len()
    }

    /// Calls `f` under `device`'s shard write lock, with the device and its objects (`None`:
    /// the device has none).
    pub(crate) fn lock_device<R>(
        &self,
        device: &str,
        f: impl FnOnce(Option<(&str, &mut [Object])>) -> R,
    ) -> R {
        let mut devices = Self::write(self.shard(device));
        match devices.get_key_value(device).map(|(k, _)| k.clone()) {
            Some(key) => {
                let objects = devices
                    .get_mut(device)
                    .map(|d| &mut d.objects[..])
                    .unwrap_or_default();
                f(Some((&key, objects)))
            }
            None => f(None),
        }
    }

    /// Calls `f` with `device`'s objects, under its shard's write lock (`None`: the device
    /// has none).
    pub(crate) fn with_device<R>(
        &self,
        device: &str,
        f: impl FnOnce(&str, &mut [Object]) -> R,
    ) -> Option<R> {
        self.lock_device(device, |d| d.map(|(device, objects)| f(device, objects)))
    }

    /// Calls `f` with the device and the object `name`, under the device's shard write lock.
    pub(crate) fn with_object<R>(
        &self,
        name: &str,
        f: impl FnOnce(&str, &mut Object) -> R,
    ) -> Option<R> {
        let mut device = self.names().devices.get(name)?.clone();
        loop {
            let mut devices = Self::write(self.shard(&device));
            if let Some(entry) = devices.get_mut(&*device)
                && let Ok(i) = entry.position(name)
            {
                return Some(f(&device, &mut entry.objects[i]));
            }
            drop(devices);
            // Moved meanwhile (the watch holds the name index until a move is complete).
            let now = self.names().devices.get(name)?.clone();
            if now == device {
                return None;
            }
            device = now;
        }
    }

    /// Calls `f` with every device and its objects, one shard (write-locked) at a time.
    pub(crate) fn for_each_device(&self, mut f: impl FnMut(&str, &mut [Object])) {
        for shard in &self.shards {
            let mut devices = Self::write(shard);
            for (device, entry) in devices.iter_mut() {
                f(device, &mut entry.objects);
            }
        }
    }

    /// Whether `f` holds for every object (read locks, one shard at a time).
    pub(crate) fn all_objects(&self, f: impl Fn(&Object) -> bool) -> bool {
        self.shards
            .iter()
            .all(|s| Self::read(s).values().all(|d| d.objects.iter().all(&f)))
    }

    /// Devices for which `f` holds (read locks, one shard at a time).
    pub(crate) fn count_devices(&self, f: impl Fn(&str) -> bool) -> usize {
        self.shards
            .iter()
            .map(|s| Self::read(s).keys().filter(|d| f(d)).count())
            .sum()
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

    fn upsert(s: &ObjectIndex, p: ProcessInput) -> bool {
        s.upsert(p, |_, _, _| {})
    }

    fn names(doc: &Doc) -> Vec<String> {
        doc.processes().into_iter().map(|p| p.name).collect()
    }

    #[test]
    fn documents_follow_objects() {
        let s = ObjectIndex::new();
        let empty = s.current("tor1-01");
        assert_eq!(*empty, Doc::empty("tor1-01"));
        assert_eq!(empty.revision().len(), 32);
        assert!(upsert(&s, input("a", "tor1-01", 1, "x")));
        let one = s.current("tor1-01");
        assert_ne!(one.etag, empty.etag);
        assert_eq!(names(&one), ["a"]);
        // The same content again is a no-op (status-only updates).
        assert!(!upsert(&s, input("a", "tor1-01", 1, "x")));
        assert_eq!(s.current("tor1-01"), one);
        // A second object; order is by name whatever the arrival order.
        upsert(&s, input("0-first", "tor1-01", 1, "y"));
        assert_eq!(names(&s.current("tor1-01")), ["0-first", "a"]);
        // Another device is untouched.
        assert_eq!(*s.current("tor1-02"), Doc::empty("tor1-02"));
        // Moving an object to another device updates both.
        upsert(&s, input("a", "tor1-02", 2, "x"));
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
    fn a_device_holds_exactly_its_objects() {
        let s = ObjectIndex::new();
        upsert(&s, input("a", "d", 1, "x"));
        let shard = ObjectIndex::read(s.shard("d"));
        // An object is a few hundred bytes; a Vec's first allocation would hold four.
        assert_eq!(shard["d"].objects.capacity(), 1);
    }

    #[test]
    fn etags_depend_only_on_content() {
        let a = ObjectIndex::new();
        upsert(&a, input("p1", "d", 1, "x"));
        upsert(&a, input("p2", "d", 1, "y"));
        let b = ObjectIndex::new();
        upsert(&b, input("p2", "d", 1, "y"));
        upsert(&b, input("p1", "d", 1, "old"));
        upsert(&b, input("p1", "d", 1, "x"));
        assert_eq!(a.current("d"), b.current("d"));
    }

    #[test]
    fn observe_sees_each_change_once_and_moves_keep_the_bookkeeping() {
        let s = ObjectIndex::new();
        let mut seen = Vec::new();
        s.upsert(input("a", "d1", 1, "x"), |d, o, c| {
            o.status.uid = "u1".into();
            seen.push((d.to_string(), c));
        });
        s.upsert(input("a", "d1", 1, "x"), |d, _, c| {
            seen.push((d.to_string(), c))
        });
        s.upsert(input("a", "d1", 2, "y"), |d, _, c| {
            seen.push((d.to_string(), c))
        });
        s.upsert(input("a", "d2", 2, "y"), |d, o, c| {
            assert_eq!(o.status.uid, "u1");
            seen.push((d.to_string(), c));
        });
        let c = |new, spec_changed| Change { new, spec_changed };
        assert_eq!(
            seen,
            [
                ("d1".to_string(), c(true, false)),
                ("d1".to_string(), c(false, false)),
                ("d1".to_string(), c(false, true)),
                ("d2".to_string(), c(false, false)),
            ]
        );
        assert_eq!(
            s.with_object("a", |d, o| (d.to_string(), o.generation)),
            Some(("d2".into(), 2))
        );
        assert_eq!(s.with_device("d1", |_, os| os.len()), None);
    }

    async fn woken(n: std::pin::Pin<&mut Notified<'_>>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), n)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn waiters_are_woken_by_changes() {
        let s = ObjectIndex::new();
        upsert(&s, input("a", "d1", 1, "x"));
        // A change of the device wakes its waiter.
        let n = s.changed("d1");
        tokio::pin!(n);
        n.as_mut().enable();
        upsert(&s, input("a", "d1", 2, "z"));
        assert!(woken(n).await);
        // A no-op does not.
        let n = s.changed("d1");
        tokio::pin!(n);
        n.as_mut().enable();
        upsert(&s, input("a", "d1", 2, "z"));
        assert!(!woken(n).await);
        // A waiter on an unassigned device sees its first object, and its removal.
        let n = s.changed("d2");
        tokio::pin!(n);
        n.as_mut().enable();
        upsert(&s, input("c", "d2", 1, "x"));
        assert!(woken(n).await);
        assert_eq!(names(&s.current("d2")), ["c"]);
        let n = s.changed("d2");
        tokio::pin!(n);
        n.as_mut().enable();
        s.remove("c");
        assert!(woken(n).await);
    }
}
