//! Transition-based DeviceProcess status.
//!
//! For every DeviceProcess the module keeps two views of the part of `status` the gateway
//! owns: **live** (what the API server last showed, from the watch or a write's answer) and
//! **target** (what it should be, computed by [`compute()`] from the previous target, the
//! object's spec hash and generation, and the device's [`Agent`](crate::liveness::Agent) in the liveness table). The
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
//!
//! The objects themselves are the [object index](crate::index)'s, fed once from the watch;
//! the module keeps its part of each ([`Tracked`]) in them. The module's parts:
//!
//! - [`compute`](mod@compute): the pure core ([`compute()`] and [`transitions`]: no I/O, no clock);
//! - `table`: what is kept per object (live and target views, write bookkeeping);
//! - `targets`: watch events, agent changes and rebalances applied to the table;
//! - `queue`: the coalescing write queue and the write-interval delay queue;
//! - `writer`: the writer tasks that patch `/status` within the replica's write fence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::events::Recorder;
use crate::index::ObjectIndex;
use crate::liveness::Liveness;
use crate::membership::Ownership;
use crate::metrics::Metrics;

pub mod compute;
#[cfg(test)]
mod fixtures;
mod queue;
mod table;
mod targets;
mod writer;

pub use compute::{Cond, Facts, View, compute, transitions};
pub use table::Tracked;
pub use writer::{MIN_FENCE_LEFT, WRITE_TIMEOUT};

use queue::{DelayQueue, WorkQueue};

/// The status controller: its write queues and the writers' shared state over the objects of
/// the index.
#[derive(Debug)]
pub struct StatusController {
    index: Arc<ObjectIndex>,
    /// Set by the first complete list: targets are computed from then on.
    synced: AtomicBool,
    queue: WorkQueue,
    delayed: DelayQueue,
    write_interval: Duration,
    /// How long a spec change's mismatch waits for a connected agent (`--observe-grace`).
    observe_grace: Duration,
    /// Set at shutdown: the interval no longer delays writes.
    flushing: AtomicBool,
    liveness: Arc<Liveness>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Which devices this replica owns, and whether it may write now.
    ownership: Arc<Ownership>,
}

impl StatusController {
    /// A controller over the objects of `index` and the given liveness table, writing each
    /// object at most once per `write_interval`.
    pub fn new(
        index: Arc<ObjectIndex>,
        liveness: Arc<Liveness>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        write_interval: Duration,
    ) -> Self {
        Self::with_ownership(
            index,
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
        index: Arc<ObjectIndex>,
        liveness: Arc<Liveness>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        write_interval: Duration,
        ownership: Arc<Ownership>,
    ) -> Self {
        StatusController {
            ownership,
            index,
            synced: AtomicBool::new(false),
            queue: WorkQueue::default(),
            delayed: DelayQueue::default(),
            write_interval,
            observe_grace: Duration::ZERO,
            flushing: AtomicBool::new(false),
            liveness,
            recorder,
            metrics,
        }
    }

    /// Holds the `SpecObserved=False` of a spec change for up to `grace` while the device's
    /// agent is connected: an agent that reports the new hash within it costs one status
    /// write instead of two (zero: written at once, the default here).
    pub fn with_observe_grace(mut self, grace: Duration) -> Self {
        self.observe_grace = grace;
        self
    }

    /// The index now holds `objects` DeviceProcesses: the Event table is sized for them
    /// ([`Recorder::fit_fleet`]).
    pub fn fleet_resized(&self, objects: usize) {
        self.recorder.fit_fleet(objects);
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Entries of the delay queue: objects waiting for their write interval or an observe
    /// hold (diagnostics and tests; a hold cut short by the agent's report stays counted until
    /// its time, when the entry is dropped).
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
        self.index
            .with_object(name, |_, o| o.status.target().clone())
    }

    /// Whether every object's live status equals its target.
    pub fn converged(&self) -> bool {
        self.index
            .all_objects(|o| o.status.pending.is_none() && !o.status.inflight)
    }

    /// Devices with DeviceProcesses this replica owns now.
    pub fn owned_devices(&self) -> usize {
        let members = self.ownership.members();
        self.index
            .count_devices(|d| self.ownership.is_mine(&members, d))
    }

    /// Whether no status write is queued, delayed or in flight (shutdown).
    pub fn writes_idle(&self) -> bool {
        self.pending() == 0 && self.delayed() == 0 && self.index.all_objects(|o| !o.status.inflight)
    }
}
