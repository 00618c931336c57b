//! The status controller's part of each object in the [object index](crate::index): its live
//! and target views of the gateway-owned status and its write bookkeeping.

use apollo_api::AgentInfo;
use apollo_api::conditions::status as cs;
use apollo_protocol::wire::ObservedProcess;

use super::compute::View;
use crate::index::Object;
use crate::liveness::Agent;

/// What the status controller keeps of one DeviceProcess (the object's name, device,
/// generation and spec hash are the index's).
#[derive(Debug, Default)]
pub struct Tracked {
    pub(crate) uid: String,
    pub(super) resource_version: String,
    pub(super) live: View,
    /// The target when it differs from `live` (in the steady state it does not, so each
    /// object holds one view).
    pub(super) pending: Option<Box<View>>,
    pub(super) inflight: bool,
    /// When the last write of this object landed.
    pub(super) last_write: Option<tokio::time::Instant>,
    /// Until when a spec change's `SpecObserved=False` waits for the connected agent to
    /// report the new hash (`--observe-grace`).
    pub(super) hold_until: Option<tokio::time::Instant>,
    /// Waiting in the delay queue: until when, and why.
    pub(super) delayed: Option<(tokio::time::Instant, Delay)>,
}

/// Why a write waits in the delay queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delay {
    /// The write interval since the object's last write has not passed.
    Interval,
    /// A spec change's mismatch, held for the agent to report the new hash: cut short as soon
    /// as the target no longer awaits the agent.
    Hold,
}

impl Tracked {
    pub(super) fn target(&self) -> &View {
        self.pending.as_deref().unwrap_or(&self.live)
    }

    pub(super) fn set_target(&mut self, target: View) {
        self.pending = (target != self.live).then(|| Box::new(target));
    }

    /// A new live view; the target stays what it was.
    pub(super) fn set_live(&mut self, live: View) {
        if live == self.live {
            return;
        }
        let old = std::mem::replace(&mut self.live, live);
        let target = self.pending.take().map(|b| *b).unwrap_or(old);
        self.set_target(target);
    }
}

/// Whether resourceVersion `a` is older than `b` (both numeric, as on every real server;
/// otherwise never).
pub(super) fn older(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a < b,
        _ => false,
    }
}

/// The agent view a device's objects' status shows (as at a restart): `None` unless one of
/// them says `AgentConnected=True`.
pub(super) fn seed_of(objects: &[Object]) -> Option<Agent> {
    let mut info: Option<AgentInfo> = None;
    let mut observed = Vec::new();
    for obj in objects {
        let obj_name = &obj.name;
        let obj = &obj.status;
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
                name: obj_name.to_string(),
                spec_hash: hash.clone(),
                generation: obj.live.observed_generation,
            });
        }
    }
    info.map(|i| Agent::new(i.instance_id, i.version, observed, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::compute::compute;
    use crate::status::fixtures::{H1, H2, WINDOW, agent, facts, ts};

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
        let mut obj = Tracked {
            resource_version: "1".into(),
            live: a.clone(),
            ..Tracked::default()
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
