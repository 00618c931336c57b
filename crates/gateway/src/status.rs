//! Transition-based DeviceProcess status.
//!
//! For every DeviceProcess the module keeps two views of the part of `status` the gateway
//! owns: **live** (what the API server last showed, from the watch or a write's answer) and
//! **target** (what it should be, computed by [`compute`] from the previous target, the
//! object's spec hash and generation, and the device's [`Agent`] in the liveness table). The
//! target is stored only while it differs from live, so the steady state holds one view.
//!
//! - A target is recomputed when the object changes (watch) or its device's agent changes
//!   (report with new content, stale transition). A heartbeat that changes nothing recomputes
//!   nothing and writes nothing.
//! - A write is queued when target ≠ live; the queue holds object *names* (coalesced: one
//!   entry per object however often it changes) and the writer sends the target *at write
//!   time* (latest wins) as a merge patch on `/status`. After a write lands, the object's
//!   next write waits until the write interval has passed (`--status-write-interval`), so a
//!   device that changes its report many times a second costs at most one write per interval
//!   per object, and the last state is always written. Conflicts are retried at once, other
//!   failures with exponential backoff; the object stays queued until live = target, so after
//!   an API outage the status converges to the agents' last reports.
//! - Events are emitted when the *target* transitions (see [`transitions`]), so each
//!   transition gives exactly one event however many writes it takes.
//! - `lastTransitionTime` changes only when a condition's status changes.
//!
//! At the initial sync the liveness table is seeded from objects whose status says
//! `AgentConnected=True`, and targets start equal to the live status: after a gateway restart
//! nothing is written and no event is emitted unless something really changed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_api::conditions::{self, reasons, status as cs};
use apollo_api::{AgentInfo, DeviceProcess, DeviceProcessStatus, Phase};
use apollo_backoff::Exponential;
use apollo_process::duration::format_duration;
use apollo_protocol::wire::ObservedProcess;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::events::{self, EventSpec, Recorder, Regarding};
use crate::liveness::{Agent, Liveness};
use crate::membership::{Member, Ownership};
use crate::metrics::Metrics;

/// One condition as the gateway owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub status: String,
    pub reason: String,
    pub message: String,
    /// Whole seconds (the API server's precision).
    pub last_transition: Timestamp,
}

impl Cond {
    fn from_condition(c: &Condition) -> Cond {
        Cond {
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition: truncate(c.last_transition_time.0),
        }
    }

    fn to_json(&self, type_: &str) -> Value {
        json!({
            "type": type_,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": Time(self.last_transition),
        })
    }
}

fn truncate(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The part of `status` the gateway owns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    pub phase: Option<Phase>,
    pub observed_spec_hash: Option<String>,
    pub observed_generation: Option<i64>,
    pub connected: Option<Cond>,
    pub spec_observed: Option<Cond>,
    pub agent: Option<AgentInfo>,
}

impl View {
    /// The view of an object's status.
    pub fn from_status(status: Option<&DeviceProcessStatus>) -> View {
        let Some(s) = status else {
            return View::default();
        };
        View {
            phase: s.phase,
            observed_spec_hash: s.observed_spec_hash.clone(),
            observed_generation: s.observed_generation,
            connected: s
                .condition(conditions::AGENT_CONNECTED)
                .map(Cond::from_condition),
            spec_observed: s
                .condition(conditions::SPEC_OBSERVED)
                .map(Cond::from_condition),
            agent: s.agent.clone(),
        }
    }

    /// The merge patch that makes the live status equal to this view.
    pub fn to_patch(&self) -> Value {
        let mut conds = Vec::new();
        if let Some(c) = &self.connected {
            conds.push(c.to_json(conditions::AGENT_CONNECTED));
        }
        if let Some(c) = &self.spec_observed {
            conds.push(c.to_json(conditions::SPEC_OBSERVED));
        }
        json!({
            "status": {
                "phase": self.phase,
                "observedSpecHash": self.observed_spec_hash,
                "observedGeneration": self.observed_generation,
                "conditions": conds,
                "agent": self.agent,
            }
        })
    }

    fn status_of(c: &Option<Cond>) -> &str {
        c.as_ref().map(|c| c.status.as_str()).unwrap_or("")
    }
}

/// What [`compute`] needs of a DeviceProcess.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub name: &'a str,
    pub generation: i64,
    pub spec_hash: &'a str,
}

fn cond(prev: &Option<Cond>, status: &str, reason: &str, message: String, now: Timestamp) -> Cond {
    let last_transition = match prev {
        Some(p) if p.status == status => p.last_transition,
        _ => truncate(now),
    };
    Cond {
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition,
    }
}

/// The target status of a DeviceProcess.
pub fn compute(
    prev: &View,
    facts: Facts<'_>,
    agent: Option<&Agent>,
    stale_after: Duration,
    now: Timestamp,
) -> View {
    let mut next = prev.clone();
    next.phase = Some(Phase::Pending);
    let observed: Option<&ObservedProcess> = agent.and_then(|a| a.observed(facts.name));
    match agent {
        Some(a) => {
            next.connected = Some(if a.stale {
                cond(
                    &prev.connected,
                    cs::FALSE,
                    reasons::HEARTBEAT_MISSED,
                    format!(
                        "No report from the device's agent for more than {}",
                        format_duration(stale_after)
                    ),
                    now,
                )
            } else {
                cond(
                    &prev.connected,
                    cs::TRUE,
                    reasons::HEARTBEAT,
                    "The device's agent is reporting".to_string(),
                    now,
                )
            });
            next.agent = Some(AgentInfo {
                version: a.version.clone(),
                instance_id: a.instance_id.clone(),
            });
            if let Some(o) = observed {
                let generation = o.generation.or(if o.spec_hash == facts.spec_hash {
                    Some(facts.generation)
                } else if prev.observed_spec_hash.as_deref() == Some(o.spec_hash.as_str()) {
                    prev.observed_generation
                } else {
                    None
                });
                next.observed_spec_hash = Some(o.spec_hash.clone());
                next.observed_generation = generation;
            }
        }
        None => {
            if next.connected.is_none() {
                next.connected = Some(cond(
                    &None,
                    cs::UNKNOWN,
                    reasons::NEVER_CONNECTED,
                    "No agent has reported for this device yet".to_string(),
                    now,
                ));
            }
        }
    }
    let not_listed = agent.is_some_and(|a| a.reported && observed.is_none());
    next.spec_observed = Some(match (&next.observed_spec_hash, agent) {
        (_, Some(_)) if not_listed => cond(
            &prev.spec_observed,
            cs::FALSE,
            reasons::NOT_REPORTED,
            "The agent has not reported this DeviceProcess yet".to_string(),
            now,
        ),
        (Some(h), _) if h == facts.spec_hash => cond(
            &prev.spec_observed,
            cs::TRUE,
            reasons::SPEC_HASH_MATCHED,
            format!("The agent observed the current spec (hash {h})"),
            now,
        ),
        (Some(h), _) => cond(
            &prev.spec_observed,
            cs::FALSE,
            reasons::SPEC_HASH_MISMATCH,
            format!(
                "The agent observed spec hash {h}; the current spec hash is {}",
                facts.spec_hash
            ),
            now,
        ),
        (None, Some(_)) => cond(
            &prev.spec_observed,
            cs::FALSE,
            reasons::NOT_REPORTED,
            "The agent has not reported this DeviceProcess yet".to_string(),
            now,
        ),
        (None, None) => cond(
            &prev.spec_observed,
            cs::UNKNOWN,
            reasons::NOT_REPORTED,
            "No agent has reported for this device yet".to_string(),
            now,
        ),
    });
    next
}

/// The events of a target transition.
pub fn transitions(
    prev: &View,
    next: &View,
    device: &str,
    stale_after: Duration,
) -> Vec<EventSpec> {
    let mut out = Vec::new();
    let was = View::status_of(&prev.connected);
    let is = View::status_of(&next.connected);
    let instance = next
        .agent
        .as_ref()
        .map(|a| a.instance_id.as_str())
        .unwrap_or("");
    let version = next
        .agent
        .as_ref()
        .map(|a| a.version.as_str())
        .unwrap_or("");
    if is == cs::TRUE && was != cs::TRUE {
        out.push(if was == cs::FALSE {
            EventSpec {
                type_: events::NORMAL,
                reason: events::reasons::AGENT_RECONNECTED,
                action: "Heartbeat",
                note: format!(
                    "Agent of device {device} reconnected (instance {instance}, version {version})"
                ),
            }
        } else {
            EventSpec {
                type_: events::NORMAL,
                reason: events::reasons::AGENT_CONNECTED,
                action: "Heartbeat",
                note: format!(
                    "Agent of device {device} connected (instance {instance}, version {version})"
                ),
            }
        });
    } else if is == cs::TRUE
        && was == cs::TRUE
        && prev.agent.as_ref().map(|a| &a.instance_id)
            != next.agent.as_ref().map(|a| &a.instance_id)
    {
        out.push(EventSpec {
            type_: events::NORMAL,
            reason: events::reasons::AGENT_RESTARTED,
            action: "Heartbeat",
            note: format!(
                "Agent of device {device} restarted (instance {instance}, version {version})"
            ),
        });
    }
    if was == cs::TRUE && is == cs::FALSE {
        out.push(EventSpec {
            type_: events::WARNING,
            reason: events::reasons::AGENT_STALE,
            action: "Heartbeat",
            note: format!(
                "No report from the agent of device {device} for more than {}",
                format_duration(stale_after)
            ),
        });
    }
    let observed_now = View::status_of(&next.spec_observed) == cs::TRUE;
    let observed_before = View::status_of(&prev.spec_observed) == cs::TRUE;
    if observed_now && (!observed_before || prev.observed_spec_hash != next.observed_spec_hash) {
        let hash = next.observed_spec_hash.as_deref().unwrap_or("");
        let generation = next
            .observed_generation
            .map(|g| format!(", generation {g}"))
            .unwrap_or_default();
        out.push(EventSpec {
            type_: events::NORMAL,
            reason: events::reasons::SPEC_OBSERVED,
            action: "Observe",
            note: format!("Agent of device {device} observed spec hash {hash}{generation}"),
        });
    }
    out
}

#[derive(Debug)]
struct Obj {
    namespace: Arc<str>,
    uid: String,
    device: String,
    generation: i64,
    spec_hash: String,
    resource_version: String,
    live: View,
    /// The target when it differs from `live` (in the steady state it does not, so each
    /// object holds one view).
    pending: Option<Box<View>>,
    inflight: bool,
    /// When the last write of this object landed.
    last_write: Option<tokio::time::Instant>,
    /// Waiting in the delay queue for its write interval to pass.
    delayed: bool,
}

impl Obj {
    fn target(&self) -> &View {
        self.pending.as_deref().unwrap_or(&self.live)
    }

    fn set_target(&mut self, target: View) {
        self.pending = (target != self.live).then(|| Box::new(target));
    }

    /// A new live view; the target stays what it was.
    fn set_live(&mut self, live: View) {
        if live == self.live {
            return;
        }
        let old = std::mem::replace(&mut self.live, live);
        let target = self.pending.take().map(|b| *b).unwrap_or(old);
        self.set_target(target);
    }
}

#[derive(Debug, Default)]
struct State {
    objects: HashMap<String, Obj>,
    /// Object names per device (usually one: a Vec is smaller than a set).
    by_device: HashMap<String, Vec<String>>,
    synced: bool,
    /// The namespace of the objects, shared by all of them.
    namespace: Option<Arc<str>>,
}

fn unindex(by_device: &mut HashMap<String, Vec<String>>, device: &str, name: &str) {
    if let Some(names) = by_device.get_mut(device) {
        names.retain(|n| n != name);
        if names.is_empty() {
            by_device.remove(device);
        }
    }
}

/// Whether resourceVersion `a` is older than `b` (both numeric, as on every real server;
/// otherwise never).
fn older(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a < b,
        _ => false,
    }
}

/// The agent view a device's objects' status shows (as at a restart): `None` unless one of
/// them says `AgentConnected=True`.
fn seed_of(state: &State, names: &[String]) -> Option<Agent> {
    let mut info: Option<AgentInfo> = None;
    let mut observed = Vec::new();
    for name in names {
        let Some(obj) = state.objects.get(name) else {
            continue;
        };
        let connected = obj
            .live
            .connected
            .as_ref()
            .is_some_and(|c| c.status == cs::TRUE);
        if !connected {
            continue;
        }
        if info.is_none() {
            info = Some(obj.live.agent.clone().unwrap_or_default());
        }
        if let Some(hash) = &obj.live.observed_spec_hash {
            observed.push(ObservedProcess {
                name: name.clone(),
                spec_hash: hash.clone(),
                generation: obj.live.observed_generation,
            });
        }
    }
    info.map(|i| Agent::new(i.instance_id, i.version, observed, false))
}

/// Names of objects waiting for a write, each at most once.
#[derive(Debug, Default)]
struct WorkQueue {
    inner: Mutex<(VecDeque<String>, HashSet<String>)>,
    notify: Notify,
}

impl WorkQueue {
    fn push(&self, name: &str) {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if q.1.insert(name.to_string()) {
            q.0.push_back(name.to_string());
            drop(q);
            self.notify.notify_one();
        }
    }

    fn try_pop(&self) -> Option<String> {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let name = q.0.pop_front()?;
        q.1.remove(&name);
        Some(name)
    }

    async fn pop(&self) -> String {
        loop {
            let notified = self.notify.notified();
            if let Some(name) = self.try_pop() {
                // More work queued: wake another writer (one stored permit covers one waiter).
                if self.len() > 0 {
                    self.notify.notify_one();
                }
                return name;
            }
            notified.await;
        }
    }

    fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }
}

/// Objects waiting for their write interval to pass, earliest first.
#[derive(Debug, Default)]
struct DelayQueue {
    heap: Mutex<BinaryHeap<Reverse<(tokio::time::Instant, String)>>>,
    notify: Notify,
}

/// The status controller.
#[derive(Debug)]
pub struct StatusController {
    state: Mutex<State>,
    queue: WorkQueue,
    delayed: DelayQueue,
    write_interval: Duration,
    /// Set at shutdown: the interval no longer delays writes.
    flushing: std::sync::atomic::AtomicBool,
    liveness: Arc<Liveness>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Which devices this replica owns, and whether it may write now.
    ownership: Arc<Ownership>,
}

/// What a writer does with a queued object.
enum Begin {
    /// Send this patch, within this time.
    Write(String, Value, Option<tokio::time::Instant>),
    /// Nothing to write (done meanwhile, or the device is no longer ours).
    Skip,
    /// Ours, but the own Lease is not valid: wait for a renewal.
    Fenced,
}

/// Least time left on the fence for a status write to be started.
pub const MIN_FENCE_LEFT: Duration = Duration::from_millis(100);

/// Longest wait for one status write (a write normally takes milliseconds).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the writer waits after a failure: 100 ms doubling to 5 s per consecutive failure.
const WRITE_BACKOFF: Exponential =
    Exponential::new(Duration::from_millis(100), Duration::from_secs(5));

impl StatusController {
    /// A controller over the given liveness table, writing each object at most once per
    /// `write_interval`.
    pub fn new(
        liveness: Arc<Liveness>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        write_interval: Duration,
    ) -> Self {
        Self::with_ownership(
            liveness,
            recorder,
            metrics,
            write_interval,
            Ownership::standalone("apollo-gateway"),
        )
    }

    /// [`StatusController::new`] for a replica among others: computes, writes and emits only
    /// for the devices `ownership` assigns to it, and writes only while its Lease is valid.
    pub fn with_ownership(
        liveness: Arc<Liveness>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        write_interval: Duration,
        ownership: Arc<Ownership>,
    ) -> Self {
        StatusController {
            ownership,
            state: Mutex::new(State::default()),
            queue: WorkQueue::default(),
            delayed: DelayQueue::default(),
            write_interval,
            flushing: std::sync::atomic::AtomicBool::new(false),
            liveness,
            recorder,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An object from the watch (added, modified, or listed).
    pub fn observe(&self, dp: &DeviceProcess) {
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
                obj.spec_hash = apollo_api::spec_hash(&dp.spec);
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
                        spec_hash: apollo_api::spec_hash(&dp.spec),
                        resource_version: rv,
                        pending: None,
                        live,
                        inflight: false,
                        last_write: None,
                        delayed: false,
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

    /// Forgets every object not in `keep` (after a re-list).
    pub fn retain(&self, keep: &HashSet<String>) {
        let gone: Vec<String> = self
            .lock()
            .objects
            .keys()
            .filter(|n| !keep.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.forget(&name);
        }
    }

    /// The first complete list: seeds the liveness table from `AgentConnected=True` objects,
    /// then computes every target.
    pub fn initial_sync(&self, now: tokio::time::Instant) {
        let mut state = self.lock();
        let state = &mut *state;
        let mut seeds: HashMap<&str, (AgentInfo, Vec<ObservedProcess>)> = HashMap::new();
        for (name, obj) in &state.objects {
            let connected = obj
                .live
                .connected
                .as_ref()
                .is_some_and(|c| c.status == cs::TRUE);
            if !connected {
                continue;
            }
            let seed = seeds
                .entry(obj.device.as_str())
                .or_insert_with(|| (obj.live.agent.clone().unwrap_or_default(), Vec::new()));
            if let Some(hash) = &obj.live.observed_spec_hash {
                seed.1.push(ObservedProcess {
                    name: name.clone(),
                    spec_hash: hash.clone(),
                    generation: obj.live.observed_generation,
                });
            }
        }
        let seeded = seeds.len();
        for (device, (info, observed)) in seeds {
            self.liveness.seed(
                device,
                Agent::new(info.instance_id, info.version, observed, false),
                now,
            );
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

    /// Queues a write of `obj`, or delays it until its write interval has passed.
    fn enqueue(&self, obj: &mut Obj, name: &str) {
        if obj.delayed {
            return;
        }
        let now = tokio::time::Instant::now();
        match obj.last_write.map(|t| t + self.write_interval) {
            Some(at) if at > now && !self.flushing.load(std::sync::atomic::Ordering::SeqCst) => {
                obj.delayed = true;
                let mut heap = self.delayed.heap.lock().unwrap_or_else(|p| p.into_inner());
                heap.push(Reverse((at, name.to_string())));
                drop(heap);
                self.delayed.notify.notify_one();
            }
            _ => self.queue.push(name),
        }
    }

    /// Moves delayed objects whose interval has passed (all of them with `all`) to the
    /// write queue.
    fn release_delayed(&self, now: tokio::time::Instant, all: bool) {
        let due: Vec<String> = {
            let mut heap = self.delayed.heap.lock().unwrap_or_else(|p| p.into_inner());
            let mut due = Vec::new();
            while let Some(Reverse((at, _))) = heap.peek() {
                if !all && *at > now {
                    break;
                }
                if let Some(Reverse((_, name))) = heap.pop() {
                    due.push(name);
                }
            }
            due
        };
        if due.is_empty() {
            return;
        }
        let mut state = self.lock();
        for name in due {
            if let Some(obj) = state.objects.get_mut(&name) {
                obj.delayed = false;
                if obj.pending.is_some() && !obj.inflight {
                    self.queue.push(&name);
                }
            }
        }
    }

    /// Releases delayed writes when their interval has passed; at shutdown releases all of
    /// them at once (the writers flush them within the grace period).
    pub async fn run_delays(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let notified = self.delayed.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = {
                let heap = self.delayed.heap.lock().unwrap_or_else(|p| p.into_inner());
                heap.peek().map(|Reverse((at, _))| *at)
            };
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => self.release_delayed(tokio::time::Instant::now(), false),
                _ = notified => {}
                _ = crate::stopped(&mut shutdown) => {
                    self.flush_delayed();
                    return;
                }
            }
        }
    }

    /// Stops delaying writes and queues every delayed one (shutdown).
    fn flush_delayed(&self) {
        self.flushing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.release_delayed(tokio::time::Instant::now(), true);
    }

    /// Objects waiting for their write interval (diagnostics and tests).
    pub fn delayed(&self) -> usize {
        self.delayed
            .heap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Objects waiting for a status write.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The target view of an object (for tests and diagnostics).
    pub fn target(&self, name: &str) -> Option<View> {
        self.lock().objects.get(name).map(|o| o.target().clone())
    }

    /// Whether every object's live status equals its target.
    pub fn converged(&self) -> bool {
        let state = self.lock();
        state
            .objects
            .values()
            .all(|o| o.pending.is_none() && !o.inflight)
    }

    fn begin_write(&self, name: &str) -> Begin {
        let mut state = self.lock();
        let Some(obj) = state.objects.get_mut(name) else {
            return Begin::Skip;
        };
        if obj.pending.is_none() || obj.inflight {
            return Begin::Skip;
        }
        if !self.ownership.owns(&obj.device) {
            obj.pending = None;
            return Begin::Skip;
        }
        // A write needs a little fence left to land in (a request cut at the fence is
        // retried after the next renewal).
        let Some(deadline) = self
            .ownership
            .write_deadline()
            .filter(|d| d.saturating_duration_since(tokio::time::Instant::now()) >= MIN_FENCE_LEFT)
        else {
            return Begin::Fenced;
        };
        obj.inflight = true;
        Begin::Write(
            obj.namespace.to_string(),
            obj.target().to_patch(),
            Some(deadline),
        )
    }

    /// The member set changed: objects of devices this replica lost stop being written;
    /// devices it gained get their liveness rebuilt from status exactly as at a restart
    /// ([`Liveness::adopt`]), so a live agent neither flaps nor causes an Event.
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

    /// Devices with DeviceProcesses this replica owns now.
    pub fn owned_devices(&self) -> usize {
        let members = self.ownership.members();
        let state = self.lock();
        state
            .by_device
            .keys()
            .filter(|d| self.ownership.is_mine(&members, d))
            .count()
    }

    /// Whether no status write is queued, delayed or in flight (shutdown).
    pub fn writes_idle(&self) -> bool {
        self.pending() == 0 && self.delayed() == 0 && {
            let state = self.lock();
            state.objects.values().all(|o| !o.inflight)
        }
    }

    fn finish_write(&self, name: &str, answer: Option<&DeviceProcess>) {
        let mut state = self.lock();
        let Some(obj) = state.objects.get_mut(name) else {
            return;
        };
        obj.inflight = false;
        if let Some(dp) = answer {
            obj.last_write = Some(tokio::time::Instant::now());
            let rv = dp.resource_version().unwrap_or_default();
            if !older(&rv, &obj.resource_version) {
                obj.resource_version = rv;
                obj.set_live(View::from_status(dp.status.as_ref()));
            }
        }
        if obj.pending.is_some() {
            self.enqueue(obj, name);
        }
    }

    /// A status writer: runs until shutdown, then keeps writing what is queued for up to
    /// `grace`.
    pub async fn run_writer(
        self: Arc<Self>,
        client: kube::Client,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let mut failures: u32 = 0;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let name = if let Some(d) = deadline {
                match self.queue.try_pop() {
                    Some(n) if tokio::time::Instant::now() < d => n,
                    _ => return,
                }
            } else {
                tokio::select! {
                    n = self.queue.pop() => n,
                    _ = crate::stopped(&mut shutdown) => {
                        deadline = Some(tokio::time::Instant::now() + grace);
                        self.flush_delayed();
                        continue;
                    }
                }
            };
            let (namespace, patch, fence) = match self.begin_write(&name) {
                Begin::Write(ns, patch, fence) => (ns, patch, fence),
                Begin::Skip => continue,
                Begin::Fenced => {
                    if deadline.is_some() {
                        return;
                    }
                    tokio::select! {
                        _ = self.ownership.wait_fence() => {}
                        _ = crate::stopped(&mut shutdown) => {}
                    }
                    self.queue.push(&name);
                    continue;
                }
            };
            // A write must land before the fence ends (peers may own the object after it).
            let limit = fence
                .map(|f| f.saturating_duration_since(tokio::time::Instant::now()))
                .unwrap_or(WRITE_TIMEOUT)
                .min(WRITE_TIMEOUT);
            let api: Api<DeviceProcess> = Api::namespaced(client.clone(), &namespace);
            let result = tokio::time::timeout(
                limit,
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
            .unwrap_or_else(|_| {
                Err(kube::Error::Service(
                    format!("no answer within {}", format_duration(limit)).into(),
                ))
            });
            match result {
                Ok(dp) => {
                    self.metrics.status_write("success");
                    if failures > 0 {
                        tracing::info!("status writes succeed again");
                    }
                    failures = 0;
                    tracing::debug!(object = %name, "status written");
                    self.finish_write(&name, Some(&dp));
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    self.metrics.status_write("gone");
                    self.finish_write(&name, None);
                    self.drop_pending(&name);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.metrics.status_write("conflict");
                    self.finish_write(&name, None);
                }
                Err(e) => {
                    self.metrics.status_write("error");
                    if failures == 0 {
                        tracing::warn!(object = %name, error = %e, "status write failed; retrying with backoff");
                    }
                    self.finish_write(&name, None);
                    let delay = WRITE_BACKOFF.delay(failures);
                    failures = failures.saturating_add(1);
                    if deadline.is_none() {
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = crate::stopped(&mut shutdown) => {}
                        }
                    } else {
                        return;
                    }
                }
            }
        }
    }

    /// A 404 means the object is gone (its deletion arrives by the watch): stop writing it.
    fn drop_pending(&self, name: &str) {
        let mut state = self.lock();
        if let Some(obj) = state.objects.get_mut(name)
            && let Some(target) = obj.pending.take()
        {
            obj.live = *target;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "1111111111111111";

    #[test]
    fn write_backoff_is_100ms_doubling_to_5s() {
        let delays: Vec<_> = [0, 1, 2, 3, 4, 5, 6, 7, u32::MAX]
            .map(|n| WRITE_BACKOFF.delay(n).as_millis())
            .to_vec();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
    const H2: &str = "2222222222222222";

    fn facts(hash: &str) -> Facts<'_> {
        Facts {
            name: "dp",
            generation: 3,
            spec_hash: hash,
        }
    }

    fn agent(instance: &str, hash: Option<&str>) -> Agent {
        let observed = hash
            .map(|h| {
                vec![ObservedProcess {
                    name: "dp".into(),
                    spec_hash: h.into(),
                    generation: None,
                }]
            })
            .unwrap_or_default();
        Agent::new(instance.into(), "0.1.0".into(), observed, true)
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_764_115_200 + s).unwrap()
    }

    const WINDOW: Duration = Duration::from_secs(30);

    fn status(c: &Option<Cond>) -> &str {
        View::status_of(c)
    }

    #[test]
    fn lifecycle() {
        // Never connected.
        let v0 = compute(&View::default(), facts(H1), None, WINDOW, ts(0));
        assert_eq!(v0.phase, Some(Phase::Pending));
        assert_eq!(status(&v0.connected), "Unknown");
        assert_eq!(status(&v0.spec_observed), "Unknown");
        assert!(transitions(&View::default(), &v0, "d", WINDOW).is_empty());
        // Connects and observes.
        let a = agent("i1", Some(H1));
        let v1 = compute(&v0, facts(H1), Some(&a), WINDOW, ts(5));
        assert_eq!(status(&v1.connected), "True");
        assert_eq!(status(&v1.spec_observed), "True");
        assert_eq!(v1.observed_spec_hash.as_deref(), Some(H1));
        assert_eq!(v1.observed_generation, Some(3));
        assert_eq!(v1.agent.as_ref().unwrap().instance_id, "i1");
        let evs = transitions(&v0, &v1, "d", WINDOW);
        let reasons: Vec<_> = evs.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["AgentConnected", "SpecObserved"]);
        // The same again (heartbeat): identical target, no event — even much later.
        let v1b = compute(&v1, facts(H1), Some(&a), WINDOW, ts(500));
        assert_eq!(v1b, v1);
        // Spec changes: mismatch until the agent reports the new hash.
        let v2 = compute(&v1, facts(H2), Some(&a), WINDOW, ts(600));
        assert_eq!(status(&v2.spec_observed), "False");
        assert_eq!(
            v2.spec_observed.as_ref().unwrap().reason,
            "SpecHashMismatch"
        );
        assert!(transitions(&v1, &v2, "d", WINDOW).is_empty());
        let a2 = agent("i1", Some(H2));
        let v3 = compute(&v2, facts(H2), Some(&a2), WINDOW, ts(601));
        assert_eq!(status(&v3.spec_observed), "True");
        assert_eq!(v3.observed_spec_hash.as_deref(), Some(H2));
        let evs = transitions(&v2, &v3, "d", WINDOW);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].reason, "SpecObserved");
        // Stale: False with one Warning; lastTransitionTime moves, observed hash kept.
        let mut stale = a2.clone();
        stale.stale = true;
        let v4 = compute(&v3, facts(H2), Some(&stale), WINDOW, ts(700));
        assert_eq!(status(&v4.connected), "False");
        assert_eq!(v4.connected.as_ref().unwrap().reason, "HeartbeatMissed");
        assert_eq!(v4.connected.as_ref().unwrap().last_transition, ts(700));
        assert_eq!(status(&v4.spec_observed), "True");
        let evs = transitions(&v3, &v4, "d", WINDOW);
        assert_eq!(evs.len(), 1);
        assert_eq!((evs[0].type_, evs[0].reason), ("Warning", "AgentStale"));
        assert!(
            transitions(
                &v4,
                &compute(&v4, facts(H2), Some(&stale), WINDOW, ts(800)),
                "d",
                WINDOW
            )
            .is_empty()
        );
        // Back: reconnected.
        let v5 = compute(&v4, facts(H2), Some(&a2), WINDOW, ts(900));
        let evs = transitions(&v4, &v5, "d", WINDOW);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].reason, "AgentReconnected");
        assert_eq!(v5.spec_observed, v4.spec_observed, "SpecObserved untouched");
        // Restart without going stale.
        let b = agent("i2", Some(H2));
        let v6 = compute(&v5, facts(H2), Some(&b), WINDOW, ts(901));
        let evs = transitions(&v5, &v6, "d", WINDOW);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].reason, "AgentRestarted");
        assert_eq!(v6.connected.as_ref().unwrap().last_transition, ts(900));
    }

    #[test]
    fn status_round_trips_through_the_api_form() {
        let a = agent("i1", Some(H1));
        let v = compute(&View::default(), facts(H1), Some(&a), WINDOW, ts(5));
        let patch = v.to_patch();
        let status: DeviceProcessStatus = serde_json::from_value(patch["status"].clone()).unwrap();
        assert_eq!(View::from_status(Some(&status)), v);
        assert_eq!(patch["status"]["phase"], "Pending");
        assert_eq!(patch["status"]["observedSpecHash"], H1);
        assert_eq!(patch["status"]["agent"]["instanceId"], "i1");
        // Absent fields are removed explicitly (merge patch null).
        let empty = View::default().to_patch();
        assert!(empty["status"]["observedSpecHash"].is_null());
    }

    #[test]
    fn not_listed_and_seeded() {
        let v1 = compute(
            &View::default(),
            facts(H1),
            Some(&agent("i1", Some(H1))),
            WINDOW,
            ts(0),
        );
        // A reporting agent that does not list the object: NotReported, hash kept.
        let v2 = compute(&v1, facts(H1), Some(&agent("i1", None)), WINDOW, ts(1));
        assert_eq!(v2.spec_observed.as_ref().unwrap().reason, "NotReported");
        assert_eq!(v2.observed_spec_hash.as_deref(), Some(H1));
        // A seeded agent (no report yet) that does not list it keeps the previous state.
        let seeded = Agent::new("i1".into(), "0.1.0".into(), vec![], false);
        let v3 = compute(&v1, facts(H1), Some(&seeded), WINDOW, ts(1));
        assert_eq!(v3, v1);
    }

    #[test]
    fn target_survives_live_updates() {
        let a = compute(
            &View::default(),
            facts(H1),
            Some(&agent("i1", Some(H1))),
            WINDOW,
            ts(0),
        );
        let b = compute(&a, facts(H2), Some(&agent("i1", Some(H1))), WINDOW, ts(1));
        let mut obj = Obj {
            namespace: Arc::from("default"),
            uid: String::new(),
            device: "d".into(),
            generation: 1,
            spec_hash: H1.into(),
            resource_version: "1".into(),
            live: a.clone(),
            pending: None,
            inflight: false,
            last_write: None,
            delayed: false,
        };
        assert_eq!(obj.target(), &a);
        // Someone else changes the live status: our target (= the old live) stays.
        obj.set_live(View::default());
        assert_eq!(obj.target(), &a);
        assert!(obj.pending.is_some());
        // Our write lands: one view again.
        obj.set_live(a.clone());
        assert!(obj.pending.is_none());
        obj.set_target(b.clone());
        assert_eq!(obj.target(), &b);
        obj.set_live(a.clone());
        assert_eq!(
            obj.target(),
            &b,
            "an older echo does not replace the target"
        );
        obj.set_live(b.clone());
        assert!(obj.pending.is_none());
    }

    #[test]
    fn resource_versions() {
        assert!(older("5", "10"));
        assert!(!older("10", "5"));
        assert!(!older("abc", "5"));
    }
}
