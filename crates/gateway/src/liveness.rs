//! The liveness table: per device, when its agent last reported, which agent (instance id,
//! version) and what it observed.
//!
//! A report that only proves the agent is alive updates a timestamp and returns `None`; any
//! other change (first report, new instance, new version, other observed hashes, back from
//! stale) returns the new [`Agent`] view so the status module recomputes that device's
//! DeviceProcesses. [`Liveness::sweep`] marks devices silent for longer than the stale window
//! as stale, each exactly once per transition.
//!
//! After a gateway restart the table is seeded from the DeviceProcess status
//! (`AgentConnected=True` objects, [`Liveness::seed`]) with the start time as last report, so a
//! live agent does not flap and a dead one goes stale one window after the restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_protocol::wire::ObservedProcess;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// What the gateway knows about a device's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub instance_id: String,
    pub version: String,
    /// What the agent observed, sorted by name.
    pub observed: Arc<[ObservedProcess]>,
    /// No report within the stale window.
    pub stale: bool,
    /// From a report since this gateway started (not only seeded from status).
    pub reported: bool,
}

impl Agent {
    /// An agent view with `observed` sorted.
    pub fn new(
        instance_id: String,
        version: String,
        mut observed: Vec<ObservedProcess>,
        reported: bool,
    ) -> Agent {
        observed.sort_by(|a, b| a.name.cmp(&b.name));
        observed.dedup_by(|a, b| a.name == b.name);
        Agent {
            instance_id,
            version,
            observed: observed.into(),
            stale: false,
            reported,
        }
    }

    /// What the agent observed of the DeviceProcess `name`.
    pub fn observed(&self, name: &str) -> Option<&ObservedProcess> {
        self.observed
            .binary_search_by(|o| o.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.observed[i])
    }
}

#[derive(Debug)]
struct Entry {
    agent: Agent,
    last_seen: Instant,
}

/// The liveness table.
#[derive(Debug)]
pub struct Liveness {
    map: Mutex<HashMap<String, Entry>>,
    stale_after: Duration,
    metrics: Arc<Metrics>,
}

impl Liveness {
    /// An empty table with the given stale window.
    pub fn new(stale_after: Duration, metrics: Arc<Metrics>) -> Self {
        Liveness {
            map: Mutex::new(HashMap::new()),
            stale_after,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stale window.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// Records a report. `Some(agent)` when anything but the time changed.
    pub fn report(&self, device: &str, agent: Agent, now: Instant) -> Option<Agent> {
        let mut map = self.lock();
        match map.get_mut(device) {
            Some(entry) => {
                entry.last_seen = now;
                let old = &entry.agent;
                let same = !old.stale
                    && old.instance_id == agent.instance_id
                    && old.version == agent.version
                    && old.observed == agent.observed;
                if same {
                    // Seeded entries become "reported" silently: nothing visible changes.
                    entry.agent.reported = true;
                    return None;
                }
                if old.stale {
                    self.metrics.connected_devices.inc();
                    tracing::info!(
                        device,
                        instance = %agent.instance_id,
                        version = %agent.version,
                        "agent reconnected"
                    );
                } else if old.instance_id != agent.instance_id {
                    tracing::info!(
                        device,
                        instance = %agent.instance_id,
                        previous_instance = %old.instance_id,
                        version = %agent.version,
                        "agent restarted"
                    );
                }
                entry.agent = agent.clone();
                Some(agent)
            }
            None => {
                self.metrics.connected_devices.inc();
                tracing::info!(
                    device,
                    instance = %agent.instance_id,
                    version = %agent.version,
                    "agent connected"
                );
                map.insert(
                    device.to_string(),
                    Entry {
                        agent: agent.clone(),
                        last_seen: now,
                    },
                );
                Some(agent)
            }
        }
    }

    /// Seeds a device from status at startup (ignored when the device already has an entry).
    pub fn seed(&self, device: &str, agent: Agent, now: Instant) {
        let mut map = self.lock();
        if map.contains_key(device) {
            return;
        }
        self.metrics.connected_devices.inc();
        map.insert(
            device.to_string(),
            Entry {
                agent,
                last_seen: now,
            },
        );
    }

    /// Marks devices silent for longer than the stale window as stale; returns those that
    /// just became stale.
    pub fn sweep(&self, now: Instant) -> Vec<(String, Agent)> {
        let mut out = Vec::new();
        let mut map = self.lock();
        for (device, entry) in map.iter_mut() {
            if entry.agent.stale {
                continue;
            }
            let silent = now.saturating_duration_since(entry.last_seen);
            if silent > self.stale_after {
                entry.agent.stale = true;
                self.metrics.connected_devices.dec();
                self.metrics.stale_transitions.inc();
                tracing::warn!(
                    device = device.as_str(),
                    instance = %entry.agent.instance_id,
                    silent_ms = silent.as_millis() as u64,
                    "agent stale"
                );
                out.push((device.clone(), entry.agent.clone()));
            }
        }
        out
    }

    /// The current view of a device's agent.
    pub fn get(&self, device: &str) -> Option<Agent> {
        self.lock().get(device).map(|e| e.agent.clone())
    }

    /// Devices whose agent is not stale.
    pub fn connected(&self) -> usize {
        self.lock().values().filter(|e| !e.agent.stale).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(name: &str, hash: &str) -> ObservedProcess {
        ObservedProcess {
            name: name.into(),
            spec_hash: hash.into(),
            generation: None,
        }
    }

    fn agent(instance: &str, observed: Vec<ObservedProcess>) -> Agent {
        Agent::new(instance.into(), "0.1.0".into(), observed, true)
    }

    #[tokio::test]
    async fn transitions_only() {
        let m = Metrics::new();
        let l = Liveness::new(Duration::from_secs(30), m.clone());
        let t0 = Instant::now();
        let first = l.report("d", agent("i1", vec![obs("b", "2"), obs("a", "1")]), t0);
        let first = first.expect("first report is a change");
        assert_eq!(first.observed("a").unwrap().spec_hash, "1");
        assert_eq!(first.observed("b").unwrap().spec_hash, "2");
        assert!(first.observed("c").is_none());
        // Heartbeats with the same content: no change.
        for i in 1..10 {
            let t = t0 + Duration::from_secs(i * 10);
            assert!(
                l.report("d", agent("i1", vec![obs("a", "1"), obs("b", "2")]), t)
                    .is_none()
            );
            assert!(l.sweep(t).is_empty());
        }
        assert_eq!(m.connected_devices.get(), 1);
        // Observed changes are changes.
        let t = t0 + Duration::from_secs(95);
        assert!(l.report("d", agent("i1", vec![obs("a", "9")]), t).is_some());
        // Silence: exactly one stale transition, however often the sweeper runs.
        assert!(l.sweep(t + Duration::from_secs(30)).is_empty());
        let stale = l.sweep(t + Duration::from_secs(31));
        assert_eq!(stale.len(), 1);
        assert!(stale[0].1.stale);
        for i in 0..5 {
            assert!(l.sweep(t + Duration::from_secs(40 + i * 30)).is_empty());
        }
        assert_eq!(m.stale_transitions.get(), 1);
        assert_eq!(m.connected_devices.get(), 0);
        assert_eq!(l.connected(), 0);
        // The next heartbeat, even with nothing else new, is a change back.
        let back = l
            .report(
                "d",
                agent("i1", vec![obs("a", "9")]),
                t + Duration::from_secs(200),
            )
            .unwrap();
        assert!(!back.stale);
        assert_eq!(m.connected_devices.get(), 1);
        // A restarted agent (new instance) is a change.
        assert!(
            l.report(
                "d",
                agent("i2", vec![obs("a", "9")]),
                t + Duration::from_secs(201)
            )
            .is_some()
        );
    }

    #[tokio::test]
    async fn seeded_devices_go_stale_one_window_after_start_unless_they_report() {
        let m = Metrics::new();
        let l = Liveness::new(Duration::from_secs(30), m.clone());
        let t0 = Instant::now();
        let seeded = Agent::new("i1".into(), "0.1.0".into(), vec![obs("a", "1")], false);
        l.seed("live", seeded.clone(), t0);
        l.seed("dead", seeded.clone(), t0);
        assert_eq!(m.connected_devices.get(), 2);
        // The live one reports the same thing: no change, no event.
        assert!(
            l.report(
                "live",
                agent("i1", vec![obs("a", "1")]),
                t0 + Duration::from_secs(10)
            )
            .is_none()
        );
        let stale = l.sweep(t0 + Duration::from_secs(31));
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0, "dead");
        // Seeding never overrides a report.
        l.seed("live", agent("other", vec![]), t0);
        assert_eq!(l.get("live").unwrap().instance_id, "i1");
    }
}
