//! Keeping targets: objects from the watch, agent changes and ownership rebalances update the
//! object table, recompute the affected targets with [`compute`], emit the Events of each
//! target transition ([`transitions`]) and queue a write where target and live differ.

use std::sync::Arc;

use apollo_api::DeviceProcess;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::StatusController;
use super::compute::{Facts, View, compute, transitions};
use super::table::{Obj, State, older, seed_of, unindex};
use crate::events::Regarding;
use crate::membership::Member;

impl StatusController {
    /// An object from the watch (added, modified, or listed), with its spec hash
    /// ([`apollo_api::spec_hash`], computed once by the caller for every view).
    pub fn observe(&self, dp: &DeviceProcess, spec_hash: String) {
        let name = dp.name_any();
        let rv = dp.resource_version().unwrap_or_default();
        let device = dp.spec.device_ref.name.clone();
        let mut state = self.lock();
        let state = &mut *state;
        match state.objects.get_mut(&name) {
            Some(obj) => {
                if older(&rv, &obj.resource_version) {
                    return;
                }
                if obj.device != device {
                    unindex(&mut state.by_device, &obj.device, &name);
                    state
                        .by_device
                        .entry(device.clone())
                        .or_default()
                        .push(name.clone());
                    obj.device = device;
                }
                obj.uid = dp.uid().unwrap_or_default();
                obj.generation = dp.metadata.generation.unwrap_or(0);
                if spec_hash != obj.spec_hash && state.synced && !self.observe_grace.is_zero() {
                    obj.hold_until = Some(tokio::time::Instant::now() + self.observe_grace);
                }
                obj.spec_hash = spec_hash;
                obj.resource_version = rv;
                obj.set_live(View::from_status(dp.status.as_ref()));
                if !state.synced {
                    obj.pending = None;
                }
            }
            None => {
                let live = View::from_status(dp.status.as_ref());
                let ns = dp.namespace().unwrap_or_default();
                let namespace = match &state.namespace {
                    Some(n) if **n == *ns => n.clone(),
                    _ => {
                        let n: Arc<str> = Arc::from(ns.as_str());
                        state.namespace = Some(n.clone());
                        n
                    }
                };
                state
                    .by_device
                    .entry(device.clone())
                    .or_default()
                    .push(name.clone());
                state.objects.insert(
                    name.clone(),
                    Obj {
                        namespace,
                        uid: dp.uid().unwrap_or_default(),
                        device,
                        generation: dp.metadata.generation.unwrap_or(0),
                        spec_hash,
                        resource_version: rv,
                        pending: None,
                        live,
                        inflight: false,
                        last_write: None,
                        hold_until: None,
                        delayed: None,
                    },
                );
            }
        }
        if state.synced {
            self.recompute(state, &name, Timestamp::now());
        }
    }

    /// An object deleted.
    pub fn forget(&self, name: &str) {
        let mut state = self.lock();
        if let Some(obj) = state.objects.remove(name) {
            unindex(&mut state.by_device, &obj.device, name);
        }
    }

    /// The first complete list: seeds the liveness table from `AgentConnected=True` objects,
    /// then computes every target.
    pub fn initial_sync(&self, now: tokio::time::Instant) {
        let mut state = self.lock();
        let state = &mut *state;
        let mut seeded = 0usize;
        for (device, names) in &state.by_device {
            if let Some(agent) = seed_of(state, names) {
                self.liveness.seed(device, agent, now);
                seeded += 1;
            }
        }
        state.synced = true;
        let names: Vec<String> = state.objects.keys().cloned().collect();
        let ts = Timestamp::now();
        for name in &names {
            self.recompute(state, name, ts);
        }
        tracing::info!(
            objects = names.len(),
            devices = state.by_device.len(),
            live_devices = seeded,
            "status initialised from the cache"
        );
    }

    /// The device's agent changed (report or stale transition): recompute its objects.
    pub fn device_changed(&self, device: &str) {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(names) = state.by_device.get(device) else {
            return;
        };
        if !state.synced {
            return;
        }
        let names: Vec<String> = names.to_vec();
        let now = Timestamp::now();
        for name in &names {
            self.recompute(state, name, now);
        }
    }

    fn recompute(&self, state: &mut State, name: &str, now: Timestamp) {
        self.recompute_with(state, name, now, true);
    }

    /// Recomputes an object's target; `events: false` (a device just taken over from another
    /// replica) writes what changed without emitting Events: the previous owner emitted them
    /// when the transition happened, so a handover never adds one.
    fn recompute_with(&self, state: &mut State, name: &str, now: Timestamp, events: bool) {
        let Some(obj) = state.objects.get_mut(name) else {
            return;
        };
        if !self.ownership.owns(&obj.device) {
            // Another replica's: its target is its live status (nothing to write here).
            obj.pending = None;
            return;
        }
        let agent = self.liveness.get(&obj.device);
        let stale_after = self.liveness.stale_after();
        let next = compute(
            obj.target(),
            Facts {
                name,
                generation: obj.generation,
                spec_hash: &obj.spec_hash,
            },
            agent.as_ref(),
            stale_after,
            now,
        );
        if next != *obj.target() {
            let evs = if events {
                transitions(obj.target(), &next, &obj.device, stale_after)
            } else {
                Vec::new()
            };
            for ev in evs {
                self.recorder.emit(
                    Regarding {
                        namespace: obj.namespace.to_string(),
                        name: name.to_string(),
                        uid: obj.uid.clone(),
                    },
                    &obj.device,
                    ev,
                );
            }
            obj.set_target(next);
        }
        if obj.pending.is_some() && !obj.inflight {
            self.enqueue(obj, name);
        }
    }

    /// The member set changed: objects of devices this replica lost stop being written;
    /// devices it gained get their liveness rebuilt from status exactly as at a restart
    /// ([`Liveness::adopt`](crate::liveness::Liveness::adopt)), so a live agent neither flaps nor causes an Event.
    pub fn rebalance(&self, old: &[Member], new: &[Member]) {
        let mut state = self.lock();
        let state = &mut *state;
        if !state.synced {
            return;
        }
        let now = tokio::time::Instant::now();
        let ts = Timestamp::now();
        let (mut lost, mut gained) = (0usize, 0usize);
        let devices: Vec<String> = state.by_device.keys().cloned().collect();
        for device in devices {
            let was = self.ownership.is_mine(old, &device);
            let is = self.ownership.is_mine(new, &device);
            let names = state.by_device.get(&device).cloned().unwrap_or_default();
            if was && !is {
                lost += 1;
                for name in &names {
                    if let Some(obj) = state.objects.get_mut(name) {
                        obj.pending = None;
                    }
                }
            } else if is && !was {
                gained += 1;
                let seed = seed_of(state, &names);
                self.liveness.adopt(&device, seed, now);
                for name in &names {
                    self.recompute_with(state, name, ts, false);
                }
            }
        }
        tracing::info!(gained, lost, "device ownership rebalanced");
    }
}
