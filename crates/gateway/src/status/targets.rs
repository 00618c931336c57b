//! Keeping targets: objects from the watch, agent changes and ownership rebalances update the
//! status part of the index's objects, recompute the affected targets with [`compute`], emit
//! the Events of each target transition ([`transitions`]) and queue a write where target and
//! live differ.

use std::sync::atomic::Ordering;
use std::time::Duration;

use apollo_api::DeviceProcess;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::StatusController;
use super::compute::{Facts, View, compute, transitions};
use super::table::{older, seed_of};
use crate::events::Regarding;
use crate::index::{Change, Object};
use crate::liveness::Agent;
use crate::membership::Member;

impl StatusController {
    /// An object from the watch (added, modified, or listed), as the index holds it after
    /// the event (its spec hash computed once, for every view): takes the object's status.
    /// Called by [`ObjectIndex::upsert`](crate::index::ObjectIndex::upsert), under the
    /// device's lock.
    pub fn observe(&self, device: &str, obj: &mut Object, change: Change, dp: &DeviceProcess) {
        let rv = dp.resource_version().unwrap_or_default();
        let synced = self.synced();
        let t = &mut obj.status;
        if change.new {
            t.uid = dp.uid().unwrap_or_default();
            t.resource_version = rv;
            t.live = View::from_status(dp.status.as_ref());
        } else {
            if older(&rv, &t.resource_version) {
                return;
            }
            t.uid = dp.uid().unwrap_or_default();
            if change.spec_changed && synced && !self.observe_grace.is_zero() {
                t.hold_until = Some(tokio::time::Instant::now() + self.observe_grace);
            }
            t.resource_version = rv;
            t.set_live(View::from_status(dp.status.as_ref()));
            if !synced {
                t.pending = None;
            }
        }
        if synced {
            let agent = self.liveness.get(device);
            self.recompute(
                device,
                std::slice::from_mut(obj),
                agent.as_ref(),
                Timestamp::now(),
                true,
            );
        }
    }

    /// The first complete list: seeds the liveness table from `AgentConnected=True` objects,
    /// then computes every target.
    pub fn initial_sync(&self, now: tokio::time::Instant) {
        let (mut seeded, mut devices, mut objects) = (0usize, 0usize, 0usize);
        self.index.for_each_device(|device, objs| {
            devices += 1;
            objects += objs.len();
            if let Some(agent) = seed_of(objs) {
                self.liveness.seed(device, agent, now);
                seeded += 1;
            }
        });
        self.synced.store(true, Ordering::SeqCst);
        let ts = Timestamp::now();
        self.index.for_each_device(|device, objs| {
            let agent = self.liveness.get(device);
            self.recompute(device, objs, agent.as_ref(), ts, true);
        });
        tracing::info!(
            objects,
            devices,
            live_devices = seeded,
            "status initialised from the cache"
        );
    }

    /// The device's agent changed (a stale transition): recompute its objects from the
    /// liveness table as it is now (read under the device's lock: a report that overtook the
    /// sweeper is not undone).
    pub fn device_changed(&self, device: &str) {
        if !self.synced() {
            return;
        }
        self.index.with_device(device, |device, objs| {
            let agent = self.liveness.get(device);
            self.recompute(device, objs, agent.as_ref(), Timestamp::now(), true);
        });
    }

    /// A report of `device`'s agent, received here or (`age`: that long ago) by a peer that
    /// forwarded it. A report that only proves the agent alive updates the liveness table's
    /// time and nothing else (no lock of the index: the heartbeat path stays as cheap as the
    /// table). Any other report is entered in the table and, with `recompute` (this replica
    /// owns the device), the device's objects are recomputed from the agent the table
    /// returned, as it is, not re-read; both under the device's shard lock, so two changes,
    /// or a change and the sweeper, reach the targets in the order they reached the table.
    /// Returns whether the agent changed.
    pub fn agent_reported(
        &self,
        device: &str,
        agent: Agent,
        now: tokio::time::Instant,
        age: Option<Duration>,
        recompute: bool,
    ) -> bool {
        if self.liveness.heartbeat(device, &agent, now, age) {
            return false;
        }
        self.index.lock_device(device, |objs| {
            let changed = match age {
                Some(age) => self.liveness.report_forwarded(device, agent, now, age),
                None => self.liveness.report(device, agent, now),
            };
            let Some(agent) = changed else {
                return false;
            };
            if let Some((device, objs)) = objs
                && recompute
                && self.synced()
            {
                self.recompute(device, objs, Some(&agent), Timestamp::now(), true);
            }
            true
        })
    }

    /// Recomputes the targets of `device`'s objects from its `agent`; `events: false` (a
    /// device just taken over from another replica) writes what changed without emitting
    /// Events: the previous owner emitted them when the transition happened, so a handover
    /// never adds one.
    fn recompute(
        &self,
        device: &str,
        objs: &mut [Object],
        agent: Option<&Agent>,
        now: Timestamp,
        events: bool,
    ) {
        if !self.ownership.owns(device) {
            // Another replica's: its target is its live status (nothing to write here).
            for obj in objs {
                obj.status.pending = None;
            }
            return;
        }
        let stale_after = self.liveness.stale_after();
        for obj in objs {
            let t = &mut obj.status;
            let next = compute(
                t.target(),
                Facts {
                    name: &obj.name,
                    generation: obj.generation,
                    spec_hash: &obj.spec_hash,
                },
                agent,
                stale_after,
                now,
            );
            if next != *t.target() {
                let evs = if events {
                    transitions(t.target(), &next, device, stale_after)
                } else {
                    Vec::new()
                };
                for ev in evs {
                    self.recorder.emit(
                        Regarding {
                            namespace: obj.namespace.to_string(),
                            name: obj.name.to_string(),
                            uid: t.uid.clone(),
                        },
                        device,
                        ev,
                    );
                }
                t.set_target(next);
            }
            if t.pending.is_some() && !t.inflight {
                self.enqueue(t, &obj.name);
            }
        }
    }

    /// The member set changed: objects of devices this replica lost stop being written;
    /// devices it gained get their liveness rebuilt from status exactly as at a restart
    /// ([`Liveness::adopt`](crate::liveness::Liveness::adopt)), so a live agent neither flaps nor causes an Event.
    pub fn rebalance(&self, old: &[Member], new: &[Member]) {
        if !self.synced() {
            return;
        }
        let now = tokio::time::Instant::now();
        let ts = Timestamp::now();
        let (mut lost, mut gained) = (0usize, 0usize);
        self.index.for_each_device(|device, objs| {
            let was = self.ownership.is_mine(old, device);
            let is = self.ownership.is_mine(new, device);
            if was && !is {
                lost += 1;
                for obj in objs {
                    obj.status.pending = None;
                }
            } else if is && !was {
                gained += 1;
                let seed = seed_of(objs);
                self.liveness.adopt(device, seed, now);
                let agent = self.liveness.get(device);
                self.recompute(device, objs, agent.as_ref(), ts, false);
            }
        });
        tracing::info!(gained, lost, "device ownership rebalanced");
    }
}
