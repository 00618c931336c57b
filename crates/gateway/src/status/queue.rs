//! The write queue: names of objects whose target differs from their live status, each queued
//! at most once (coalesced), and the delay queue holding objects until their write interval
//! (`--status-write-interval`) has passed since their last write landed, or until a connected
//! agent has had `--observe-grace` to report a changed spec (so that a rollout costs one
//! status write per device, not a `SpecObserved=False` write followed by a `True` one).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use tokio::sync::{Notify, watch};

use super::StatusController;
use super::table::{Delay, Tracked};

/// An object's name, shared with the index (a clone is a reference count).
type Name = Arc<str>;

#[derive(Debug, Default)]
pub(super) struct WorkQueue {
    inner: Mutex<(VecDeque<Name>, HashSet<Name>)>,
    pub(super) notify: Notify,
}

impl WorkQueue {
    pub(super) fn push(&self, name: &Arc<str>) {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if q.1.insert(name.clone()) {
            q.0.push_back(name.clone());
            drop(q);
            self.notify.notify_one();
        }
    }

    pub(super) fn try_pop(&self) -> Option<Arc<str>> {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let name = q.0.pop_front()?;
        q.1.remove(&name);
        Some(name)
    }

    pub(super) async fn pop(&self) -> Arc<str> {
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

    pub(super) fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }
}

/// Objects waiting for their write interval to pass, earliest first.
#[derive(Debug, Default)]
pub(super) struct DelayQueue {
    pub(super) heap: Mutex<BinaryHeap<Reverse<(tokio::time::Instant, Name)>>>,
    pub(super) notify: Notify,
}

impl StatusController {
    /// Queues a write of `obj`, or delays it: until its write interval has passed since its
    /// last write, or, for a spec change's mismatch while the agent is connected, until the
    /// agent has reported the new hash or the observe grace is over (whichever comes first).
    pub(super) fn enqueue(&self, obj: &mut Tracked, name: &Arc<str>) {
        let now = tokio::time::Instant::now();
        let flushing = self.flushing.load(Ordering::SeqCst);
        let awaits_agent = obj.target().awaits_agent();
        if !awaits_agent {
            obj.hold_until = None;
        }
        match obj.delayed {
            Some((_, Delay::Interval)) => return,
            Some((_, Delay::Hold)) if awaits_agent && !flushing => return,
            // The agent reported (or went away): the held write goes now; the delay queue's
            // entry finds nothing to release.
            Some((_, Delay::Hold)) => obj.delayed = None,
            None => {}
        }
        let interval = obj.last_write.map(|t| t + self.write_interval);
        let delay = match (interval, obj.hold_until) {
            _ if flushing => None,
            (Some(at), _) if at > now => Some((at, Delay::Interval)),
            (_, Some(at)) if at > now && awaits_agent => Some((at, Delay::Hold)),
            _ => None,
        };
        match delay {
            Some((at, why)) => {
                obj.delayed = Some((at, why));
                let mut heap = self.delayed.heap.lock().unwrap_or_else(|p| p.into_inner());
                heap.push(Reverse((at, name.clone())));
                drop(heap);
                self.delayed.notify.notify_one();
            }
            None => self.queue.push(name),
        }
    }

    /// Moves delayed objects whose time has come (all of them with `all`) on: to the write
    /// queue, or back to the delay queue for a later reason (a hold that outlasts the
    /// interval). An entry whose object is no longer delayed until that time is stale.
    fn release_delayed(&self, now: tokio::time::Instant, all: bool) {
        let due: Vec<(tokio::time::Instant, Arc<str>)> = {
            let mut heap = self.delayed.heap.lock().unwrap_or_else(|p| p.into_inner());
            let mut due = Vec::new();
            while let Some(Reverse((at, _))) = heap.peek() {
                if !all && *at > now {
                    break;
                }
                if let Some(Reverse(entry)) = heap.pop() {
                    due.push(entry);
                }
            }
            due
        };
        if due.is_empty() {
            return;
        }
        for (at, name) in due {
            self.index.with_object(&name, |_, obj| {
                let obj = &mut obj.status;
                if !all && obj.delayed.map(|(until, _)| until) != Some(at) {
                    return;
                }
                obj.delayed = None;
                if obj.pending.is_some() && !obj.inflight {
                    self.enqueue(obj, &name);
                }
            });
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
    pub(super) fn flush_delayed(&self) {
        self.flushing.store(true, Ordering::SeqCst);
        self.release_delayed(tokio::time::Instant::now(), true);
    }
}
