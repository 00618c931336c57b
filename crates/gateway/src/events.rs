//! Kubernetes Events (events.k8s.io/v1) about DeviceProcesses, emitted only on transitions.
//!
//! The status module decides *when* (see [`crate::status`]); this module posts them in the
//! background so a slow or unavailable API server never blocks a device request. Each event is
//! retried with backoff for up to [`EVENT_RETRY_FOR`], then dropped and counted as failed.
//! Events are named `<object>.<hex nanoseconds>` like the Kubernetes recorders, carry
//! `reportingController: azure.com/apollo-gateway` and the pod name as `reportingInstance`,
//! and show up in `kubectl describe deviceprocess` and `kubectl get events`. The Event object
//! and its writes are the kube layer's ([`apollo_kube::events`], shared with the controller);
//! the queue, coalescing, rate limits and fencing here are the gateway's policy on top.
//!
//! Spam control, modelled on Kubernetes' event correlator (client-go `EventCorrelator`): events
//! are keyed by object and reason. The first of a key is posted at once; repeats within the
//! event interval (`--event-interval`) are counted, not posted, and at most once per interval
//! the key's Event is updated with `series.count` / `series.lastObservedTime` (the
//! events.k8s.io form of an aggregated event), so a flapping device costs one Event per
//! object and reason plus one update per interval. The queue is fair: each device has its own
//! queue of keys (at most [`PER_DEVICE_KEYS`]) and the worker serves devices round robin, so a
//! noisy device cannot starve others' events.
//!
//! Fencing, as for status writes ([`crate::status`]): with several replicas an Event is posted
//! only while its device is in this replica's assignment and the replica's own Lease is valid
//! ([`Ownership`]). A post waits while the Lease cannot be renewed (up to the retry time), is
//! dropped (counted as `fenced`) once the device belongs to another replica, and is cut at the
//! fence's end, so a replica that lost a device, or was cut off from the API server, does not
//! post Events about it after its successor may have taken over.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_backoff::Backoff;
use apollo_kube::events::{EventType, Occurrence, Poster, Reporter};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::membership::Ownership;
use crate::metrics::Metrics;

/// `reportingController` of every event.
pub const REPORTING_CONTROLLER: &str = "azure.com/apollo-gateway";
/// How long one event is retried before it is dropped.
pub const EVENT_RETRY_FOR: Duration = Duration::from_secs(120);
/// How long queued events are still posted at shutdown.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);
/// Event keys (object and reason) known at once, at least: the table grows to
/// [`KEYS_PER_OBJECT`] per indexed DeviceProcess for larger fleets ([`Recorder::fit_fleet`]).
/// A key stays known after its post (for its series and rate limit) until
/// [`SERIES_WINDOW`] passed or room is needed: a new key then makes the least recently
/// posted keys be forgotten (their next Event starts a new one). Only when every known key
/// still waits to be posted is a new key dropped (and counted). About 450 bytes per key:
/// 22 MiB when this many are known.
pub const EVENT_QUEUE: usize = 50_000;
/// Keys the table has room for per indexed DeviceProcess: a fleet's first connection queues
/// two per device (`AgentConnected`, `SpecObserved`), all at once, faster than the API
/// server takes their posts.
pub const KEYS_PER_OBJECT: usize = 2;
/// Events posted at once: a fleet's first connection emits an Event per device, which must
/// stream at the API server's speed rather than one round trip at a time.
pub const POSTS_IN_FLIGHT: usize = 8;
/// How often keys whose series window passed are forgotten while the worker is idle.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Event keys one device may have waiting; beyond this its new keys are dropped (and counted).
pub const PER_DEVICE_KEYS: usize = 64;
/// Repeats of a key within this time since its Event was created update that Event's series;
/// later ones start a new Event (client-go's aggregation window).
pub const SERIES_WINDOW: Duration = Duration::from_secs(600);

/// Event types.
pub const NORMAL: &str = EventType::Normal.as_str();
/// Event types.
pub const WARNING: &str = EventType::Warning.as_str();

/// Event reasons (the `reason` column of `kubectl get events`).
pub mod reasons {
    /// First report of the device's agent (for this object).
    pub const AGENT_CONNECTED: &str = "AgentConnected";
    /// A report after the device was stale.
    pub const AGENT_RECONNECTED: &str = "AgentReconnected";
    /// The agent's instance id changed while it stayed connected.
    pub const AGENT_RESTARTED: &str = "AgentRestarted";
    /// No report within the stale window (Warning).
    pub const AGENT_STALE: &str = "AgentStale";
    /// The agent reported the current spec hash.
    pub const SPEC_OBSERVED: &str = "SpecObserved";
}

/// One event to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    pub type_: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

type Key = (String, &'static str);

/// What the recorder knows of one object and reason.
#[derive(Debug)]
struct Entry {
    regarding: Regarding,
    device: String,
    /// The first occurrence since the last post (its note is what gets posted).
    spec: EventSpec,
    /// Occurrences not posted yet.
    unposted: u32,
    /// In a device queue or the delay heap, or parked behind a post in flight.
    queued: bool,
    /// A post of this key is in flight: the next one waits for its outcome (the created
    /// Event's name, so that a repeat counts into its series rather than creating another).
    posting: bool,
    /// Came up while a post was in flight: queued again when that post ends.
    parked: bool,
    last_posted: Option<Instant>,
    /// The Event posted for this key, its creation time and how many occurrences it counts.
    series: Option<(String, Instant, u32)>,
}

#[derive(Debug)]
struct Queues {
    /// Keys known at most ([`EVENT_QUEUE`], or more for a large fleet).
    capacity: usize,
    entries: HashMap<Key, Entry>,
    /// Per device, keys ready to post.
    devices: HashMap<String, VecDeque<Key>>,
    /// Devices with ready keys, served round robin.
    ring: VecDeque<String>,
    /// Keys waiting for their interval.
    delayed: BinaryHeap<Reverse<(Instant, String, &'static str)>>,
    /// When keys past their series window were last forgotten.
    pruned: Option<Instant>,
}

impl Default for Queues {
    fn default() -> Self {
        Self {
            capacity: EVENT_QUEUE,
            entries: HashMap::new(),
            devices: HashMap::new(),
            ring: VecDeque::new(),
            delayed: BinaryHeap::new(),
            pruned: None,
        }
    }
}

#[derive(Debug)]
struct Shared {
    queues: Mutex<Queues>,
    notify: Notify,
    interval: Duration,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Queue side of the recorder (cheap to clone).
#[derive(Debug, Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

/// Worker side of the recorder.
#[derive(Debug)]
pub struct EventWorker {
    shared: Arc<Shared>,
    instance: String,
    /// Which devices this replica owns, and whether its Lease is valid: Events are posted
    /// only for owned devices within the fence.
    ownership: Arc<Ownership>,
}

/// A recorder and its worker for a gateway alone (it owns every device and its fence never
/// ends); repeats of an object and reason are posted at most once per `interval`.
pub fn recorder(
    metrics: Arc<Metrics>,
    instance: String,
    interval: Duration,
) -> (Recorder, EventWorker) {
    recorder_with_ownership(
        metrics,
        instance.clone(),
        interval,
        Ownership::standalone(&instance),
    )
}

/// [`recorder`] for a replica among others: the worker posts an Event only while
/// `ownership` assigns its device to this replica and the replica's Lease is valid.
pub fn recorder_with_ownership(
    metrics: Arc<Metrics>,
    instance: String,
    interval: Duration,
    ownership: Arc<Ownership>,
) -> (Recorder, EventWorker) {
    let shared = Arc::new(Shared {
        queues: Mutex::new(Queues::default()),
        notify: Notify::new(),
        interval,
        metrics,
    });
    (
        Recorder {
            shared: shared.clone(),
        },
        EventWorker {
            shared,
            instance,
            ownership,
        },
    )
}

/// One post to make: create a new Event, or update the series of an existing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Post {
    Create {
        regarding: Regarding,
        /// The device the object belongs to (the unit of ownership).
        device: String,
        spec: EventSpec,
        /// Occurrences this Event stands for (more than 1: created with a series).
        count: u32,
    },
    Series {
        regarding: Regarding,
        /// The device the object belongs to (the unit of ownership).
        device: String,
        spec: EventSpec,
        /// The Event's name.
        name: String,
        count: u32,
    },
}

impl Post {
    /// The object and reason posted for.
    fn key(&self) -> Key {
        let (Post::Create {
            regarding, spec, ..
        }
        | Post::Series {
            regarding, spec, ..
        }) = self;
        (regarding.name.clone(), spec.reason)
    }
}

impl Recorder {
    /// Sizes the table for a fleet of `objects` indexed DeviceProcesses: room for
    /// [`KEYS_PER_OBJECT`] keys each, never less than [`EVENT_QUEUE`]. A smaller fleet's
    /// surplus keys go at the next new key, least recently posted first.
    pub fn fit_fleet(&self, objects: usize) {
        self.shared.lock().capacity = objects.saturating_mul(KEYS_PER_OBJECT).max(EVENT_QUEUE);
    }

    /// The Event keys the table has room for ([`Recorder::fit_fleet`]).
    pub fn capacity(&self) -> usize {
        self.shared.lock().capacity
    }

    /// Records an event of `device`'s object (never blocks; posted by the worker).
    pub fn emit(&self, regarding: Regarding, device: &str, spec: EventSpec) {
        let shared = &self.shared;
        let mut q = shared.lock();
        let key: Key = (regarding.name.clone(), spec.reason);
        if q.entries.len() >= q.capacity && !q.entries.contains_key(&key) {
            q.make_room(Instant::now());
        }
        let known = q.entries.len();
        let entry = match q.entries.get_mut(&key) {
            Some(e) => e,
            None => {
                if known >= q.capacity {
                    drop(q);
                    shared.metrics.event(spec.type_, "failed");
                    tracing::warn!(object = %regarding.name, reason = spec.reason, "event queue full; event dropped");
                    return;
                }
                q.entries.entry(key.clone()).or_insert(Entry {
                    regarding: regarding.clone(),
                    device: device.to_string(),
                    spec: spec.clone(),
                    unposted: 0,
                    queued: false,
                    posting: false,
                    parked: false,
                    last_posted: None,
                    series: None,
                })
            }
        };
        if entry.unposted == 0 {
            // The first occurrence since the last post is the one logged and posted.
            tracing::info!(
                object = %regarding.name,
                reason = spec.reason,
                kind = spec.type_,
                "event: {}",
                spec.note
            );
            entry.spec = spec;
            entry.regarding = regarding;
        }
        entry.unposted = entry.unposted.saturating_add(1);
        if entry.queued {
            return;
        }
        let device = entry.device.clone();
        let ready_at = entry.last_posted.map(|t| t + shared.interval);
        let queued_for_device = q.devices.get(&device).map_or(0, VecDeque::len);
        if queued_for_device >= PER_DEVICE_KEYS {
            let mut type_ = NORMAL;
            if let Some(e) = q.entries.get_mut(&key) {
                e.unposted = e.unposted.saturating_sub(1);
                type_ = e.spec.type_;
            }
            drop(q);
            shared.metrics.event(type_, "failed");
            tracing::warn!(
                device,
                "too many events queued for this device; event dropped"
            );
            return;
        }
        if let Some(e) = q.entries.get_mut(&key) {
            e.queued = true;
        }
        match ready_at {
            Some(at) if at > Instant::now() => q.delayed.push(Reverse((at, key.0, key.1))),
            _ => push_ready(&mut q, &device, key),
        }
        drop(q);
        shared.notify.notify_one();
    }
}

fn push_ready(q: &mut Queues, device: &str, key: Key) {
    let queue = q.devices.entry(device.to_string()).or_default();
    if queue.is_empty() {
        q.ring.push_back(device.to_string());
    }
    queue.push_back(key);
}

impl Queues {
    /// Moves delayed keys whose interval has passed to their device queues.
    fn release(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.delayed.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, name, reason))) = self.delayed.pop() else {
                break;
            };
            let key: Key = (name, reason);
            if let Some(device) = self.entries.get(&key).map(|e| e.device.clone()) {
                push_ready(self, &device, key);
            }
        }
    }

    /// The next post, round robin over devices; `Err(Some(t))`: nothing ready before `t`.
    fn next(&mut self, now: Instant) -> Result<Post, Option<Instant>> {
        self.release(now);
        while let Some(device) = self.ring.pop_front() {
            let Some(queue) = self.devices.get_mut(&device) else {
                continue;
            };
            let key = queue.pop_front();
            if queue.is_empty() {
                self.devices.remove(&device);
            } else {
                self.ring.push_back(device);
            }
            let Some(key) = key else { continue };
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            if e.posting {
                e.parked = true;
                continue;
            }
            e.queued = false;
            e.posting = true;
            let count = std::mem::take(&mut e.unposted);
            e.last_posted = Some(now);
            let post = match &mut e.series {
                Some((name, created, total)) if now.duration_since(*created) < SERIES_WINDOW => {
                    *total = total.saturating_add(count);
                    Post::Series {
                        regarding: e.regarding.clone(),
                        device: e.device.clone(),
                        spec: e.spec.clone(),
                        name: name.clone(),
                        count: *total,
                    }
                }
                _ => {
                    e.series = None;
                    Post::Create {
                        regarding: e.regarding.clone(),
                        device: e.device.clone(),
                        spec: e.spec.clone(),
                        count,
                    }
                }
            };
            return Ok(post);
        }
        if self.entries.len() > self.capacity / 2
            && self
                .pruned
                .is_none_or(|t| now.saturating_duration_since(t) >= PRUNE_EVERY)
        {
            self.prune(now);
        }
        Err(self.delayed.peek().map(|Reverse((at, _, _))| *at))
    }

    /// The post of `key` ended (created, updated, dropped or fenced): an occurrence that
    /// came up meanwhile is queued again, after the interval since that post.
    fn posted(&mut self, key: &Key, now: Instant, interval: Duration) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.posting = false;
        if !std::mem::take(&mut e.parked) {
            return;
        }
        let device = e.device.clone();
        match e.last_posted.map(|t| t + interval) {
            Some(at) if at > now => self.delayed.push(Reverse((at, key.0.clone(), key.1))),
            _ => push_ready(self, &device, key.clone()),
        }
    }

    /// Forgets keys that are not queued and were not posted within a series window (bounded
    /// memory; such a key starts over with a new Event).
    fn prune(&mut self, now: Instant) {
        self.pruned = Some(now);
        self.entries.retain(|_, e| {
            e.queued
                || e.posting
                || e.last_posted
                    .is_some_and(|t| now.saturating_duration_since(t) < SERIES_WINDOW)
        });
    }

    /// Room for a new key when the capacity is reached: forgets the keys past their series
    /// window, then, if that is not enough, the least recently posted keys that are not
    /// queued, down to three quarters of the capacity. One such pass costs a scan of the keys
    /// and frees at least a quarter of them, so it runs at most once per `capacity / 4` new
    /// keys (more keys than the capacity keep being posted instead of dropped while the first
    /// ones are remembered).
    fn make_room(&mut self, now: Instant) {
        self.prune(now);
        let keep = self.capacity * 3 / 4;
        let excess = self.entries.len().saturating_sub(keep);
        if excess == 0 {
            return;
        }
        let mut idle: Vec<(Option<Instant>, Key)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.queued && !e.posting)
            .map(|(k, e)| (e.last_posted, k.clone()))
            .collect();
        let excess = excess.min(idle.len());
        if excess < idle.len() {
            // Least recently posted first (a key not queued and never posted sorts first).
            idle.select_nth_unstable_by_key(excess, |(t, _)| *t);
        }
        for (_, key) in idle.into_iter().take(excess) {
            self.entries.remove(&key);
        }
    }
}

/// The events.k8s.io/v1 object for an event standing for `count` occurrences (more than one:
/// with `series`), built by the kube layer ([`apollo_kube::events::build_event`]).
pub fn build_event(regarding: &Regarding, spec: &EventSpec, instance: &str, count: u32) -> Event {
    let reporter = Reporter {
        controller: REPORTING_CONTROLLER,
        instance: instance.to_string(),
    };
    apollo_kube::events::build_event(
        &reporter,
        &reference(regarding),
        None,
        &occurrence(spec),
        count,
    )
}

/// The DeviceProcess an event is about, as an Event's `regarding`.
fn reference(regarding: &Regarding) -> ObjectReference {
    ObjectReference {
        api_version: Some(apollo_api::API_VERSION.to_string()),
        kind: Some("DeviceProcess".to_string()),
        name: Some(regarding.name.clone()),
        namespace: Some(regarding.namespace.clone()),
        uid: (!regarding.uid.is_empty()).then(|| regarding.uid.clone()),
        ..ObjectReference::default()
    }
}

fn occurrence(spec: &EventSpec) -> Occurrence<'_> {
    Occurrence {
        type_: if spec.type_ == WARNING {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: spec.reason,
        action: spec.action,
        note: &spec.note,
    }
}

fn permanent(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if matches!(s.code, 400 | 403 | 404 | 422))
}

impl EventWorker {
    /// Posts events until shutdown, [`POSTS_IN_FLIGHT`] at a time (then what is in flight,
    /// queued or delayed, one attempt each, for up to [`SHUTDOWN_DRAIN`]).
    pub async fn run(self, client: kube::Client, mut shutdown: watch::Receiver<bool>) {
        use futures::StreamExt as _;
        let poster = Poster::new(client, REPORTING_CONTROLLER, self.instance.clone());
        let mut in_flight = futures::stream::FuturesUnordered::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let full = in_flight.len() >= POSTS_IN_FLIGHT;
            let mut wake_at = None;
            if !full {
                match self.shared.lock().next(Instant::now()) {
                    Ok(post) => {
                        let mut stop = shutdown.clone();
                        let (worker, poster) = (&self, &poster);
                        in_flight.push(async move {
                            let key = post.key();
                            worker.post(poster, post, Some(&mut stop)).await;
                            worker.posted(&key);
                        });
                        continue;
                    }
                    Err(at) => wake_at = at,
                }
            }
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = notified, if !full => {}
                _ = sleep, if !full => {}
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                _ = crate::stopped(&mut shutdown) => break,
            }
        }
        let drain = async {
            // Posts in flight see the shutdown: their current attempt is their last.
            while in_flight.next().await.is_some() {}
            loop {
                let next = {
                    let mut q = self.shared.lock();
                    let far = Instant::now() + SERIES_WINDOW;
                    q.release(far);
                    q.next(Instant::now())
                };
                let Ok(post) = next else { break };
                let key = post.key();
                self.post(&poster, post, None).await;
                self.posted(&key);
            }
        };
        if tokio::time::timeout(SHUTDOWN_DRAIN, drain).await.is_err() {
            tracing::warn!("events still queued at shutdown were dropped");
        }
    }

    /// Ends the post of `key` ([`Queues::posted`]) and wakes the loop for what it queued.
    fn posted(&self, key: &Key) {
        self.shared
            .lock()
            .posted(key, Instant::now(), self.shared.interval);
        self.shared.notify.notify_one();
    }

    /// Until when an Event about `device` may be posted: while the device is this replica's
    /// and its own Lease is valid (with at least [`crate::status::MIN_FENCE_LEFT`] to go).
    /// While the Lease cannot be renewed it waits for a renewal, up to [`EVENT_RETRY_FOR`]
    /// after `started`; without `shutdown` (the drain at shutdown) it does not wait. `None`:
    /// the Event must not be posted.
    async fn fence(
        &self,
        device: &str,
        started: Instant,
        mut shutdown: Option<&mut watch::Receiver<bool>>,
    ) -> Option<Instant> {
        let give_up = started + EVENT_RETRY_FOR;
        loop {
            if !self.ownership.owns(device) {
                return None;
            }
            let now = Instant::now();
            if let Some(deadline) = self
                .ownership
                .write_deadline()
                .filter(|d| d.saturating_duration_since(now) >= crate::status::MIN_FENCE_LEFT)
            {
                return Some(deadline);
            }
            let s = shutdown.as_deref_mut()?;
            if *s.borrow() || now >= give_up {
                return None;
            }
            tokio::select! {
                _ = self.ownership.wait_fence() => {}
                _ = tokio::time::sleep_until(give_up) => {}
                _ = crate::stopped(s) => return None,
            }
        }
    }

    /// Counts and logs an Event not posted because of the fence.
    fn fenced(&self, regarding: &Regarding, spec: &EventSpec) {
        self.shared.metrics.event(spec.type_, "fenced");
        tracing::info!(
            object = %regarding.name,
            reason = spec.reason,
            "event not posted: the device is no longer this replica's, or its Lease lapsed"
        );
    }

    /// Posts one event within the fence: retried with backoff until [`EVENT_RETRY_FOR`] (one
    /// attempt without `shutdown`); each attempt is cut at the end of the fence.
    async fn post(
        &self,
        poster: &Poster,
        post: Post,
        mut shutdown: Option<&mut watch::Receiver<bool>>,
    ) {
        let metrics = &self.shared.metrics;
        let started = Instant::now();
        if let Post::Series {
            regarding,
            device,
            spec,
            name,
            count,
        } = &post
        {
            let Some(fence) = self.fence(device, started, shutdown.as_deref_mut()).await else {
                self.fenced(regarding, spec);
                return;
            };
            let patched = tokio::time::timeout_at(
                fence,
                poster.update_series(&regarding.namespace, name, *count),
            )
            .await;
            match patched {
                Ok(Ok(_)) => {
                    metrics.event(spec.type_, "updated");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(object = %regarding.name, event = %name, error = %e, "event series not updated; creating a new event");
                }
                Err(_) => {
                    tracing::debug!(object = %regarding.name, event = %name, "event series not updated before the fence ended; creating a new event");
                }
            }
        }
        let (regarding, device, spec, count) = match post {
            Post::Create {
                regarding,
                device,
                spec,
                count,
            }
            | Post::Series {
                regarding,
                device,
                spec,
                count,
                ..
            } => (regarding, device, spec, count),
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        // Built once: every attempt creates the same name, so an attempt whose answer was
        // lost (cut at the fence, connection reset) but that landed makes the retry answer
        // 409 instead of posting the Event twice.
        let ev = build_event(&regarding, &spec, &self.instance, count);
        let mut outcome_unknown = false;
        loop {
            let Some(fence) = self.fence(&device, started, shutdown.as_deref_mut()).await else {
                self.fenced(&regarding, &spec);
                return;
            };
            // A post must land before the fence ends (a peer may own the device after it).
            let created = tokio::time::timeout_at(fence, poster.create(&ev))
                .await
                .unwrap_or_else(|_| {
                    Err(kube::Error::Service(
                        "no answer before the fence ended".into(),
                    ))
                });
            let created = match created {
                Err(kube::Error::Api(s)) if s.code == 409 && outcome_unknown => Ok(ev.clone()),
                other => other,
            };
            match created {
                Ok(created) => {
                    metrics.event(spec.type_, "created");
                    if let Some(name) = created.metadata.name {
                        let mut q = self.shared.lock();
                        if let Some(e) = q.entries.get_mut(&(regarding.name.clone(), spec.reason)) {
                            e.series = Some((name, Instant::now(), count.max(1)));
                        }
                    }
                    return;
                }
                Err(e) => {
                    // An API server's answer says the Event was not created; anything else
                    // (no answer, a cut connection) may have been after it was.
                    outcome_unknown |= !matches!(e, kube::Error::Api(_));
                    let stop = match shutdown.as_deref() {
                        Some(s) => *s.borrow(),
                        None => true,
                    };
                    if permanent(&e) || started.elapsed() > EVENT_RETRY_FOR || stop {
                        metrics.event(spec.type_, "failed");
                        tracing::warn!(object = %regarding.name, reason = spec.reason, error = %e, "event dropped");
                        return;
                    }
                    tracing::debug!(object = %regarding.name, error = %e, "event not posted yet; retrying");
                    let delay = backoff.next_delay();
                    if let Some(s) = shutdown.as_deref_mut() {
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = crate::stopped(s) => {}
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_k8s_io_fields() {
        let r = Regarding {
            namespace: "default".into(),
            name: "demo-logger-tor1-01".into(),
            uid: "u1".into(),
        };
        let spec = EventSpec {
            type_: WARNING,
            reason: reasons::AGENT_STALE,
            action: "Heartbeat",
            note: "no report".into(),
        };
        let a = build_event(&r, &spec, "gw-0", 1);
        let b = build_event(&r, &spec, "gw-0", 1);
        let name = a.metadata.name.clone().unwrap();
        assert!(name.starts_with("demo-logger-tor1-01."), "{name}");
        assert_ne!(a.metadata.name, b.metadata.name);
        let v = serde_json::to_value(&a).unwrap();
        for field in [
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
            "type",
            "note",
        ] {
            assert!(v.get(field).is_some(), "{field} in {v}");
        }
        assert_eq!(v["regarding"]["kind"], "DeviceProcess");
        assert_eq!(v["regarding"]["apiVersion"], "azure.com/v1alpha1");
        assert_eq!(v["type"], "Warning");
        assert!(v.get("series").is_none());
        let c = serde_json::to_value(build_event(&r, &spec, "gw-0", 7)).unwrap();
        assert_eq!(c["series"]["count"], 7);
        assert!(c["series"]["lastObservedTime"].is_string());
    }

    fn spec(reason: &'static str, note: &str) -> EventSpec {
        EventSpec {
            type_: NORMAL,
            reason,
            action: "Heartbeat",
            note: note.into(),
        }
    }

    fn regarding(name: &str) -> Regarding {
        Regarding {
            namespace: "default".into(),
            name: name.into(),
            uid: String::new(),
        }
    }

    #[tokio::test]
    async fn repeats_are_aggregated_and_rate_limited() {
        let (rec, worker) = recorder(Metrics::new(), "gw".into(), Duration::from_secs(60));
        let next = |at: Instant| worker.shared.lock().next(at);
        for i in 0..100 {
            rec.emit(
                regarding("dp-a"),
                "dev-a",
                spec(reasons::AGENT_RESTARTED, &format!("restart {i}")),
            );
        }
        let t0 = Instant::now();
        // One post now, standing for all hundred, with the first note.
        let Ok(Post::Create {
            count, spec: first, ..
        }) = next(t0)
        else {
            panic!("a create")
        };
        assert_eq!((count, first.note.as_str()), (100, "restart 0"));
        // Remember the created Event and end the post, as the worker does.
        {
            let key = ("dp-a".to_string(), reasons::AGENT_RESTARTED);
            let mut q = worker.shared.lock();
            q.entries.get_mut(&key).unwrap().series = Some(("dp-a.1".into(), t0, 100));
            q.posted(&key, t0, Duration::from_secs(60));
        }
        // More repeats: nothing until the interval has passed, then one series update.
        for _ in 0..50 {
            rec.emit(
                regarding("dp-a"),
                "dev-a",
                spec(reasons::AGENT_RESTARTED, "again"),
            );
        }
        assert_eq!(
            next(t0 + Duration::from_secs(1)),
            Err(Some(t0 + Duration::from_secs(60)))
        );
        let Ok(Post::Series { name, count, .. }) = next(t0 + Duration::from_secs(60)) else {
            panic!("a series update")
        };
        assert_eq!((name.as_str(), count), ("dp-a.1", 150));
        // Another reason of the same object is its own key.
        rec.emit(
            regarding("dp-a"),
            "dev-a",
            spec(reasons::SPEC_OBSERVED, "x"),
        );
        assert!(matches!(
            next(t0 + Duration::from_secs(61)),
            Ok(Post::Create { count: 1, .. })
        ));
    }

    #[tokio::test]
    async fn a_repeat_while_its_create_is_in_flight_counts_into_that_event() {
        let interval = Duration::from_secs(1);
        let (rec, worker) = recorder(Metrics::new(), "gw".into(), interval);
        let next = |at: Instant| worker.shared.lock().next(at);
        let key = ("dp-a".to_string(), reasons::AGENT_RESTARTED);
        rec.emit(
            regarding("dp-a"),
            "dev-a",
            spec(reasons::AGENT_RESTARTED, "first"),
        );
        let t0 = Instant::now();
        assert!(matches!(next(t0), Ok(Post::Create { count: 1, .. })));
        // The create is slow to answer; a repeat comes up and its interval passes.
        rec.emit(
            regarding("dp-a"),
            "dev-a",
            spec(reasons::AGENT_RESTARTED, "again"),
        );
        let later = t0 + 5 * interval;
        assert_eq!(
            next(later),
            Err(None),
            "no second post while one is in flight"
        );
        // The create lands: the repeat goes out as that Event's series, not a new Event.
        {
            let mut q = worker.shared.lock();
            q.entries.get_mut(&key).unwrap().series = Some(("dp-a.1".into(), t0, 1));
            q.posted(&key, later, interval);
        }
        let Ok(Post::Series { name, count, .. }) = next(later) else {
            panic!("a series update")
        };
        assert_eq!((name.as_str(), count), ("dp-a.1", 2));
        // A post that ends with nothing parked queues nothing.
        worker.shared.lock().posted(&key, later, interval);
        assert_eq!(next(later + interval), Err(None));
    }

    /// A stand-in API server for the worker: answers every request 201 with the body it got
    /// (a created Event), recording each request's method, path, Event reason and object, and
    /// arrival time.
    #[derive(Clone, Default)]
    struct FakeApi {
        seen: Arc<Mutex<Vec<(String, String, std::time::Instant)>>>,
        /// Names of the Events created: a second create of one answers `409`, as a real API
        /// server does.
        created: Arc<Mutex<std::collections::HashSet<String>>>,
        /// Creates the next Event but never answers (an answer lost on the way back).
        lose_next_answer: Arc<std::sync::atomic::AtomicBool>,
    }

    impl FakeApi {
        fn requests(&self) -> Vec<(String, String, std::time::Instant)> {
            self.seen.lock().unwrap().clone()
        }

        fn client(&self) -> kube::Client {
            kube::Client::new(self.clone(), "default")
        }
    }

    impl tower::Service<http::Request<kube::client::Body>> for FakeApi {
        type Response = http::Response<kube::client::Body>;
        type Error = std::convert::Infallible;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
        >;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
            use http_body_util::BodyExt as _;
            let seen = self.seen.clone();
            let created = self.created.clone();
            let lose = self.lose_next_answer.clone();
            Box::pin(async move {
                let at = std::time::Instant::now();
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let name = v["metadata"]["name"].as_str().unwrap_or("").to_owned();
                seen.lock().unwrap().push((
                    format!("{} {}", parts.method, parts.uri.path()),
                    format!(
                        "{} {}",
                        v["reason"].as_str().unwrap_or(""),
                        v["regarding"]["name"].as_str().unwrap_or("")
                    ),
                    at,
                ));
                if parts.method == http::Method::POST && !created.lock().unwrap().insert(name) {
                    let status = serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "AlreadyExists", "code": 409,
                        "message": "events.events.k8s.io already exists",
                    });
                    return Ok(http::Response::builder()
                        .status(409)
                        .header("content-type", "application/json")
                        .body(kube::client::Body::from(status.to_string().into_bytes()))
                        .unwrap());
                }
                if lose.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                Ok(http::Response::builder()
                    .status(201)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(body.to_vec()))
                    .unwrap())
            })
        }
    }

    /// The recorder and worker of replica gw-a (events of one object and reason at most once
    /// a minute).
    fn gw_a_recorder(
        metrics: &Arc<Metrics>,
        ownership: &Arc<Ownership>,
    ) -> (Recorder, EventWorker) {
        recorder_with_ownership(
            metrics.clone(),
            "gw-a".into(),
            Duration::from_secs(60),
            ownership.clone(),
        )
    }

    fn member(id: &str) -> crate::membership::Member {
        crate::membership::Member {
            id: id.into(),
            url: format!("http://{id}:8080"),
        }
    }

    /// A device that `members` assign to `id`.
    fn device_of(members: &[crate::membership::Member], id: &str) -> String {
        (0..)
            .map(|i| format!("dev-{i}"))
            .find(|d| crate::membership::owner(members, d).is_some_and(|m| m.id == id))
            .unwrap()
    }

    async fn wait_for(what: &str, f: impl Fn() -> bool) {
        wait_within(what, Duration::from_secs(10), f).await;
    }

    async fn wait_within(what: &str, limit: Duration, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + limit;
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_event_is_not_posted_once_its_device_belongs_to_another_replica() {
        let metrics = Metrics::new();
        let ownership = Ownership::new("gw-a");
        ownership.set_members(vec![member("gw-a")]);
        ownership.extend_fence(Instant::now() + Duration::from_secs(600));
        let both = [member("gw-a"), member("gw-b")];
        let (kept, lost) = (device_of(&both, "gw-a"), device_of(&both, "gw-b"));
        let (rec, worker) = gw_a_recorder(&metrics, &ownership);
        // Both transitions happen while gw-a owns every device ...
        for d in [&kept, &lost] {
            rec.emit(
                regarding(&format!("dp-{d}")),
                d,
                spec(reasons::AGENT_CONNECTED, "c"),
            );
        }
        // ... then gw-b joins and takes `lost` before the worker got to post.
        ownership.set_members(both.to_vec());
        let api = FakeApi::default();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(worker.run(api.client(), shutdown));
        wait_for("one Event created and one fenced", || {
            let text = metrics.encode();
            text.contains("apollo_gateway_events_total{type=\"Normal\",result=\"created\"} 1")
                && text.contains("apollo_gateway_events_total{type=\"Normal\",result=\"fenced\"} 1")
        })
        .await;
        let posted: Vec<String> = api
            .requests()
            .into_iter()
            .map(|(_, what, _)| what)
            .collect();
        assert_eq!(posted, vec![format!("AgentConnected dp-{kept}")]);
        stop.send_replace(true);
        task.await.unwrap();
        assert_eq!(api.requests().len(), 1, "nothing more at shutdown");
    }

    #[tokio::test]
    async fn a_large_fleet_connecting_at_once_loses_no_event() {
        // 30,000 devices connect before a single Event could be posted: 60,000 keys queued
        // at once, more than the table's minimum. Sized for the fleet, nothing is dropped.
        const DEVICES: usize = 30_000;
        let failed = "apollo_gateway_events_total{type=\"Normal\",result=\"failed\"}";
        let emit_all = |rec: &Recorder| {
            for reason in [reasons::AGENT_CONNECTED, reasons::SPEC_OBSERVED] {
                for i in 0..DEVICES {
                    let device = format!("dev-{i}");
                    rec.emit(regarding(&format!("dp-{i}")), &device, spec(reason, "n"));
                }
            }
        };
        // Not sized: what does not fit is dropped and counted.
        let metrics = Metrics::new();
        let (rec, worker) = recorder(metrics.clone(), "gw".into(), Duration::from_secs(60));
        emit_all(&rec);
        assert_eq!(worker.shared.lock().entries.len(), EVENT_QUEUE);
        let dropped = 2 * DEVICES - EVENT_QUEUE;
        assert!(metrics.encode().contains(&format!("{failed} {dropped}")));

        let metrics = Metrics::new();
        let (rec, worker) = recorder(metrics.clone(), "gw".into(), Duration::from_secs(60));
        rec.fit_fleet(DEVICES);
        emit_all(&rec);
        assert_eq!(worker.shared.lock().entries.len(), 2 * DEVICES);
        assert!(!metrics.encode().contains(failed), "nothing dropped");
        let api = FakeApi::default();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(worker.run(api.client(), shutdown));
        let line = format!(
            "apollo_gateway_events_total{{type=\"Normal\",result=\"created\"}} {}",
            2 * DEVICES
        );
        wait_within("every Event created", Duration::from_secs(60), || {
            metrics.encode().lines().any(|l| l == line)
        })
        .await;
        stop.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_fleet_larger_than_the_key_capacity_loses_no_event() {
        // Every device posts a first Event, then a second reason: twice the keys the queue
        // remembers, all within one series window.
        let metrics = Metrics::new();
        let (rec, worker) = recorder(metrics.clone(), "gw".into(), Duration::from_secs(60));
        let shared = worker.shared.clone();
        let api = FakeApi::default();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(worker.run(api.client(), shutdown));
        let created = |n: usize| {
            let line =
                format!("apollo_gateway_events_total{{type=\"Normal\",result=\"created\"}} {n}");
            let metrics = metrics.clone();
            move || metrics.encode().lines().any(|l| l == line)
        };
        // The second reason comes once the first Events are posted (as in a rollout after
        // the fleet connected): the first keys are remembered, not queued.
        for (round, reason) in [reasons::AGENT_CONNECTED, reasons::SPEC_OBSERVED]
            .into_iter()
            .enumerate()
        {
            for i in 0..EVENT_QUEUE {
                let device = format!("dev-{i}");
                rec.emit(regarding(&format!("dp-{i}")), &device, spec(reason, "n"));
            }
            let what = format!("every {reason} Event created");
            wait_within(
                &what,
                Duration::from_secs(60),
                created((round + 1) * EVENT_QUEUE),
            )
            .await;
        }
        assert!(
            !metrics.encode().contains("result=\"failed\""),
            "events dropped: {}",
            metrics.encode()
        );
        assert!(shared.lock().entries.len() <= EVENT_QUEUE);
        assert_eq!(api.created.lock().unwrap().len(), 2 * EVENT_QUEUE);
        stop.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_create_whose_answer_was_lost_is_not_posted_twice() {
        let metrics = Metrics::new();
        let ownership = Ownership::new("gw-a");
        ownership.set_members(vec![member("gw-a")]);
        // A fence that ends while the first create waits for its answer.
        let fence_end = Instant::now() + crate::status::MIN_FENCE_LEFT + Duration::from_millis(300);
        ownership.extend_fence(fence_end);
        let (rec, worker) = gw_a_recorder(&metrics, &ownership);
        rec.emit(
            regarding("dp-a"),
            "dev-a",
            spec(reasons::AGENT_CONNECTED, "c"),
        );
        let api = FakeApi::default();
        api.lose_next_answer
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(worker.run(api.client(), shutdown));
        wait_for("the first create", || api.requests().len() == 1).await;
        // The attempt is cut at the fence's end; the Lease is renewed after it.
        tokio::time::sleep_until(fence_end).await;
        ownership.extend_fence(Instant::now() + Duration::from_secs(600));
        wait_for("the Event counted as created", || {
            metrics
                .encode()
                .contains("apollo_gateway_events_total{type=\"Normal\",result=\"created\"} 1")
        })
        .await;
        let requests = api.requests();
        assert_eq!(requests.len(), 2, "one retry: {requests:?}");
        assert_eq!(api.created.lock().unwrap().len(), 1, "one Event in the API");
        assert!(
            !metrics.encode().contains("result=\"failed\""),
            "{}",
            metrics.encode()
        );
        stop.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn events_wait_for_the_own_lease_and_are_cut_at_its_end() {
        let metrics = Metrics::new();
        let ownership = Ownership::new("gw-a");
        ownership.set_members(vec![member("gw-a"), member("gw-b")]);
        let members = ownership.members();
        let mine = device_of(&members, "gw-a");
        let (rec, worker) = gw_a_recorder(&metrics, &ownership);
        // The device is gw-a's but its Lease is not valid (never renewed, or lapsed).
        rec.emit(
            regarding(&format!("dp-{mine}")),
            &mine,
            spec(reasons::AGENT_STALE, "s"),
        );
        let api = FakeApi::default();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(worker.run(api.client(), shutdown));
        // Time for an unfenced worker to post (it would, at once).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(api.requests().is_empty(), "posted without a valid Lease");
        // A renewal: the Event goes out then, and only then.
        let renewed = std::time::Instant::now();
        ownership.extend_fence(Instant::now() + Duration::from_secs(600));
        wait_for("the Event posted after the renewal", || {
            !api.requests().is_empty()
        })
        .await;
        let (call, what, at) = api.requests()[0].clone();
        assert_eq!(
            call,
            "POST /apis/events.k8s.io/v1/namespaces/default/events"
        );
        assert_eq!(what, format!("AgentStale dp-{mine}"));
        assert!(at >= renewed, "posted before the renewal");
        // The Lease lapses, a transition is recorded, the replica shuts down: the Event is
        // dropped (counted as fenced), never posted.
        ownership.revoke_fence();
        rec.emit(
            regarding(&format!("dp-{mine}")),
            &mine,
            spec(reasons::AGENT_RECONNECTED, "r"),
        );
        stop.send_replace(true);
        task.await.unwrap();
        assert!(
            metrics
                .encode()
                .contains("apollo_gateway_events_total{type=\"Normal\",result=\"fenced\"} 1"),
            "{}",
            metrics.encode()
        );
        let posted: Vec<String> = api
            .requests()
            .into_iter()
            .map(|(_, what, _)| what)
            .collect();
        assert!(
            !posted.contains(&format!("AgentReconnected dp-{mine}")),
            "posted after the fence was revoked: {posted:?}"
        );
    }

    #[tokio::test]
    async fn devices_are_served_round_robin() {
        let (rec, worker) = recorder(Metrics::new(), "gw".into(), Duration::from_secs(60));
        // A noisy device fills its queue (and more: dropped), then a quiet one emits once.
        for i in 0..(PER_DEVICE_KEYS + 10) {
            rec.emit(
                regarding(&format!("noisy-{i}")),
                "noisy",
                spec(reasons::AGENT_CONNECTED, "n"),
            );
        }
        rec.emit(
            regarding("quiet-0"),
            "quiet",
            spec(reasons::AGENT_CONNECTED, "q"),
        );
        let now = Instant::now();
        let mut order = Vec::new();
        while let Ok(post) = worker.shared.lock().next(now) {
            let Post::Create { regarding, .. } = post else {
                panic!("creates only")
            };
            order.push(regarding.name);
        }
        assert_eq!(
            order.len(),
            PER_DEVICE_KEYS + 1,
            "the noisy device's overflow is dropped"
        );
        let quiet = order.iter().position(|n| n == "quiet-0").unwrap();
        assert!(
            quiet <= 1,
            "the quiet device is served second at the latest: {order:?}"
        );
    }
}
