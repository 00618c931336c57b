//! The one DeviceProcess watch of the gateway's namespace, feeding the object index (the
//! desired documents and the status controller's views both derive from it), and the
//! staleness sweeper.
//!
//! `kube::runtime::watcher` lists once, then watches from the list's resourceVersion,
//! resuming after disconnects and re-listing only when the server answers 410 Gone; errors
//! are retried with kube's default backoff. After each complete (re-)list, objects that
//! vanished meanwhile are dropped. Readiness is set after the first complete list.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use apollo_api::DeviceProcess;
use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

use crate::index::{ObjectIndex, ProcessInput};
use crate::liveness::Liveness;
use crate::membership::{Ownership, ReadyParts};
use crate::status::StatusController;
use apollo_api::lean::LeanProcess;

/// The index entry of a DeviceProcess.
pub fn process_input(dp: &DeviceProcess) -> Option<ProcessInput> {
    let name = dp.metadata.name.clone()?;
    // Encoded once: the hash is `apollo_api::spec_hash` of the same value.
    let spec = serde_json::to_value(&dp.spec).ok()?;
    Some(ProcessInput {
        namespace: dp.namespace().unwrap_or_default(),
        name,
        device: dp.spec.device_ref.name.clone(),
        generation: dp.metadata.generation.unwrap_or(0),
        spec_hash: apollo_api::spec_hash::hash_value(&spec),
        spec,
    })
}

/// Runs the watch until shutdown.
pub async fn run_watch(
    api: Api<LeanProcess>,
    index: Arc<ObjectIndex>,
    status: Arc<StatusController>,
    readiness: Arc<ReadyParts>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listing: Option<HashSet<String>> = None;
    let mut synced = false;
    let mut failing = false;
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = crate::stopped(&mut shutdown) => return,
        };
        let Some(event) = next else { return };
        let event = match event {
            Ok(e) => {
                if failing {
                    tracing::info!("DeviceProcess watch recovered");
                    failing = false;
                }
                e
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "DeviceProcess watch failed; retrying with backoff (serving from cache)");
                    failing = true;
                }
                continue;
            }
        };
        match event {
            Event::Init => listing = Some(HashSet::new()),
            Event::InitApply(dp) => {
                let dp = DeviceProcess::from(dp);
                if let Some(seen) = listing.as_mut() {
                    seen.insert(dp.name_any());
                }
                apply(&index, &status, &dp);
            }
            Event::InitDone => {
                if let Some(seen) = listing.take() {
                    for name in index.names_not_in(&seen) {
                        remove(&index, &status, &name);
                    }
                }
                if !synced {
                    synced = true;
                    status.initial_sync(tokio::time::Instant::now());
                    readiness.cache_synced();
                    tracing::info!(
                        objects = index.object_count(),
                        devices = index.device_count(),
                        "cache synced; ready"
                    );
                }
            }
            Event::Apply(dp) => {
                apply(&index, &status, &DeviceProcess::from(dp));
            }
            Event::Delete(dp) => {
                remove(&index, &status, &dp.name_any());
            }
        }
    }
}

/// A DeviceProcess from the watch (added, modified or listed) into the index, once: its
/// device's document and its status views; a new one resizes the Event table for the
/// fleet. Returns whether a document changed.
pub fn apply(index: &ObjectIndex, status: &StatusController, dp: &DeviceProcess) -> bool {
    let Some(input) = process_input(dp) else {
        return false;
    };
    let mut new = false;
    let changed = index.upsert(input, |device, obj, change| {
        new = change.new;
        status.observe(device, obj, change, dp)
    });
    if new {
        status.fleet_resized(index.object_count());
    }
    changed
}

/// A DeviceProcess gone from the watch (deleted, or missing from a re-list) out of the
/// index; the Event table follows the fleet's size. Returns whether it was indexed.
pub fn remove(index: &ObjectIndex, status: &StatusController, name: &str) -> bool {
    let known = index.remove(name);
    if known {
        status.fleet_resized(index.object_count());
    }
    known
}

/// The sweep period for a stale window: a tenth of it, between 20 ms and 1 s.
pub fn sweep_interval(stale_after: Duration) -> Duration {
    (stale_after / 10).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// Marks silent devices this replica owns stale (and recomputes their status) until
/// shutdown.
pub async fn run_sweeper(
    liveness: Arc<Liveness>,
    status: Arc<StatusController>,
    ownership: Arc<Ownership>,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = sweep_interval(liveness.stale_after());
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        let now = tokio::time::Instant::now();
        let members = ownership.members();
        for (device, _) in liveness.sweep_owned(now, |d| ownership.is_mine(&members, d)) {
            status.device_changed(&device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_indexed_hash_is_the_spec_hash_of_the_indexed_spec() {
        let mut dp = DeviceProcess::new(
            "demo-logger-tor1-01",
            apollo_api::samples::shell_process("tor1-01", "echo hi"),
        );
        dp.metadata.generation = Some(4);
        let input = process_input(&dp).unwrap();
        assert_eq!(input.spec_hash, apollo_api::spec_hash(&dp.spec));
        assert_eq!(input.spec, serde_json::to_value(&dp.spec).unwrap());
        assert_eq!((input.device.as_str(), input.generation), ("tor1-01", 4));
    }
}
