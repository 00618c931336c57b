//! The status writers: each takes an object name from the write queue and sends the object's
//! target *at write time* as a merge patch on `/status`, within the replica's write fence.
//! Conflicts are retried at once, other failures with exponential backoff; at shutdown the
//! writers keep writing what is queued for the grace period.

use std::sync::Arc;
use std::time::Duration;

use apollo_backoff::Exponential;
use apollo_process::duration::format_duration;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::Value;
use tokio::sync::watch;

use super::StatusController;
use super::compute::View;
use super::table::{Tracked, older};
use crate::index::Object;
use apollo_api::lean::LeanProcess;

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
    fn begin_write(&self, name: &str) -> Begin {
        self.index
            .with_object(name, |device, obj| self.begin_object(device, obj))
            .unwrap_or(Begin::Skip)
    }

    fn begin_object(&self, device: &str, obj: &mut Object) -> Begin {
        let namespace = &obj.namespace;
        let obj = &mut obj.status;
        if obj.pending.is_none() || obj.inflight {
            return Begin::Skip;
        }
        if !self.ownership.owns(device) {
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
            namespace.to_string(),
            obj.target().to_patch(),
            Some(deadline),
        )
    }

    fn finish_write(&self, name: &Arc<str>, answer: Option<&LeanProcess>) {
        self.index.with_object(name, |_, obj| {
            self.finish_object(&mut obj.status, name, answer)
        });
    }

    fn finish_object(&self, obj: &mut Tracked, name: &Arc<str>, answer: Option<&LeanProcess>) {
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
            // The answer is read for its resourceVersion and status only.
            let api: Api<LeanProcess> = Api::namespaced(client.clone(), &namespace);
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
        self.index.with_object(name, |_, obj| {
            if let Some(target) = obj.status.pending.take() {
                obj.status.live = *target;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_backoff_is_100ms_doubling_to_5s() {
        let delays: Vec<_> = [0, 1, 2, 3, 4, 5, 6, 7, u32::MAX]
            .map(|n| WRITE_BACKOFF.delay(n).as_millis())
            .to_vec();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
}
