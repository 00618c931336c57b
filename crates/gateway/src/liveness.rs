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

    /// Whether a report of `reported` only proves this agent alive: not stale, same instance,
    /// version and observed hashes.
    fn alive_as(&self, reported: &Agent) -> bool {
        !self.stale
            && self.instance_id == reported.instance_id
            && self.version == reported.version
            && self.observed == reported.observed
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
    /// When the last `agent restarted` line was logged, and restarts since then not logged.
    restart_logged: Option<Instant>,
    restarts_unlogged: u32,
}

/// Least time between two `agent restarted` lines of one device (a device key that changes
/// its instance id on every report cannot flood the log; the line carries the count).
pub const RESTART_LOG_INTERVAL: Duration = Duration::from_secs(60);

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
                if old.alive_as(&agent) {
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
                    entry.restarts_unlogged = entry.restarts_unlogged.saturating_add(1);
                    let due = entry
                        .restart_logged
                        .is_none_or(|t| now.saturating_duration_since(t) >= RESTART_LOG_INTERVAL);
                    if due {
                        tracing::info!(
                            device,
                            instance = %agent.instance_id,
                            previous_instance = %old.instance_id,
                            version = %agent.version,
                            restarts = entry.restarts_unlogged,
                            "agent restarted"
                        );
                        entry.restart_logged = Some(now);
                        entry.restarts_unlogged = 0;
                    }
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
                        restart_logged: None,
                        restarts_unlogged: 0,
                    },
                );
                Some(agent)
            }
        }
    }

    /// A report that only proves the agent alive (the agent as recorded, not stale): records
    /// its time, as [`Liveness::report`] would, and returns true. Anything else is left
    /// untouched for `report` (false). With `age` (a report forwarded by a peer, received that
    /// long ago) the time is `now - age`, never moving backwards, as in
    /// [`Liveness::report_forwarded`].
    pub fn heartbeat(
        &self,
        device: &str,
        agent: &Agent,
        now: Instant,
        age: Option<Duration>,
    ) -> bool {
        let mut map = self.lock();
        let Some(entry) = map.get_mut(device) else {
            return false;
        };
        if !entry.agent.alive_as(agent) {
            return false;
        }
        let at = match age {
            Some(age) => now.checked_sub(age).unwrap_or(now).max(entry.last_seen),
            None => now,
        };
        entry.last_seen = at;
        // Seeded entries become "reported" silently: nothing visible changes.
        entry.agent.reported = true;
        true
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
                restart_logged: None,
                restarts_unlogged: 0,
            },
        );
    }

    /// Marks devices silent for longer than the stale window as stale; returns those that
    /// just became stale.
    pub fn sweep(&self, now: Instant) -> Vec<(String, Agent)> {
        self.sweep_owned(now, |_| true)
    }

    /// [`Liveness::sweep`] for the devices this replica owns; entries of other devices
    /// (reports received here and forwarded to their owner) are dropped silently once they
    /// are older than the stale window: their owner decides about staleness.
    pub fn sweep_owned(&self, now: Instant, owns: impl Fn(&str) -> bool) -> Vec<(String, Agent)> {
        let mut out = Vec::new();
        let mut map = self.lock();
        let stale_after = self.stale_after;
        let metrics = &self.metrics;
        map.retain(|device, entry| {
            let old = now.saturating_duration_since(entry.last_seen) > stale_after;
            if !old || owns(device) {
                return true;
            }
            if !entry.agent.stale {
                metrics.connected_devices.dec();
            }
            false
        });
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

    /// This replica became the owner of `device` (membership change). As at a restart, the
    /// device gets a full stale window from now: an entry from a report received here within
    /// the window is kept (it is the latest truth), anything else is replaced by `seed`, the
    /// view rebuilt from status (`None`: the status does not say connected).
    pub fn adopt(&self, device: &str, seed: Option<Agent>, now: Instant) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(device)
            && entry.agent.reported
            && !entry.agent.stale
            && now.saturating_duration_since(entry.last_seen) <= self.stale_after
        {
            entry.last_seen = now;
            return;
        }
        if let Some(old) = map.remove(device)
            && !old.agent.stale
        {
            self.metrics.connected_devices.dec();
        }
        if let Some(agent) = seed {
            self.metrics.connected_devices.inc();
            map.insert(
                device.to_string(),
                Entry {
                    agent,
                    last_seen: now,
                    restart_logged: None,
                    restarts_unlogged: 0,
                },
            );
        }
    }

    /// Records a report that another replica received `age` ago (forwarded): as
    /// [`Liveness::report`], never moving the last report time backwards.
    pub fn report_forwarded(
        &self,
        device: &str,
        agent: Agent,
        now: Instant,
        age: Duration,
    ) -> Option<Agent> {
        let at = now.checked_sub(age).unwrap_or(now);
        let last = self.lock().get(device).map(|e| e.last_seen);
        let at = match last {
            Some(l) if l > at => l,
            _ => at,
        };
        self.report(device, agent, at)
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
    async fn a_heartbeat_is_only_a_report_that_changes_nothing() {
        let l = Liveness::new(Duration::from_secs(30), Metrics::new());
        let t0 = Instant::now();
        let a = agent("i1", vec![obs("a", "1")]);
        assert!(!l.heartbeat("d", &a, t0, None), "unknown device");
        assert!(l.report("d", a.clone(), t0).is_some());
        let t1 = t0 + Duration::from_secs(5);
        assert!(l.heartbeat("d", &a, t1, None));
        assert_eq!(l.lock()["d"].last_seen, t1);
        // A forwarded one never moves the time backwards.
        assert!(l.heartbeat("d", &a, t1, Some(Duration::from_secs(3))));
        assert_eq!(l.lock()["d"].last_seen, t1);
        assert!(!l.heartbeat("d", &agent("i2", vec![obs("a", "1")]), t1, None));
        assert!(!l.heartbeat("d", &agent("i1", vec![obs("a", "2")]), t1, None));
        l.sweep(t1 + Duration::from_secs(31));
        assert!(
            !l.heartbeat("d", &a, t1, None),
            "back from stale is a change"
        );
        assert_eq!(l.lock()["d"].last_seen, t1);
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

    #[tokio::test]
    async fn adoption_and_purge_of_devices_owned_elsewhere() {
        let m = Metrics::new();
        let l = Liveness::new(Duration::from_secs(3), m.clone());
        let t0 = Instant::now();
        // A report received here for a device another replica owns: no stale transition
        // here, dropped silently once old.
        l.report("elsewhere", agent("i1", vec![]), t0);
        l.report("mine", agent("i1", vec![]), t0);
        let stale = l.sweep_owned(t0 + Duration::from_secs(4), |d| d == "mine");
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0, "mine");
        assert!(l.get("elsewhere").is_none());
        assert_eq!(m.connected_devices.get(), 0);
        // Adoption keeps a fresh reported entry and gives it a full window from now.
        l.report("fresh", agent("i7", vec![obs("a", "2")]), t0);
        l.adopt(
            "fresh",
            Some(agent("seed", vec![])),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(l.get("fresh").unwrap().instance_id, "i7");
        assert!(l.sweep(t0 + Duration::from_secs(4)).is_empty());
        // Otherwise the seed from status replaces it; no seed: no entry.
        let seeded = Agent::new("s1".into(), "0.1.0".into(), vec![], false);
        l.adopt("new", Some(seeded.clone()), t0);
        assert_eq!(l.get("new").unwrap().instance_id, "s1");
        l.adopt("new", None, t0);
        assert!(l.get("new").is_none());
        // A forwarded report's age counts, but never moves the time backwards.
        l.report_forwarded(
            "fw",
            agent("i1", vec![]),
            t0 + Duration::from_secs(10),
            Duration::from_secs(2),
        );
        let fw = |v: Vec<(String, Agent)>| v.iter().filter(|(d, _)| d == "fw").count();
        assert_eq!(fw(l.sweep(t0 + Duration::from_secs(11))), 0);
        assert_eq!(fw(l.sweep(t0 + Duration::from_millis(11_100))), 1);
    }

    #[tokio::test]
    async fn restart_lines_are_rate_limited_per_device() {
        let l = Liveness::new(Duration::from_secs(30), Metrics::new());
        let t0 = Instant::now();
        l.report("d", agent("i0", vec![]), t0);
        let unlogged = |l: &Liveness| l.lock().get("d").unwrap().restarts_unlogged;
        // The first restart is logged; the next ones within the interval are only counted.
        for i in 1..=10 {
            let t = t0 + Duration::from_millis(i * 100);
            assert!(l.report("d", agent(&format!("i{i}"), vec![]), t).is_some());
        }
        assert_eq!(unlogged(&l), 9);
        // After the interval the next restart is logged with the count.
        l.report("d", agent("i11", vec![]), t0 + RESTART_LOG_INTERVAL * 2);
        assert_eq!(unlogged(&l), 0);
    }
}
