//! The pure status core: what the gateway-owned part of a DeviceProcess's `status` should be
//! ([`compute`]) and which Events a change of it means ([`transitions`]).
//!
//! No I/O and no clock: the caller passes the previous view, the object's facts, the device's
//! [`Agent`] and `now`. A [`View`] is the part of `status` the gateway owns, read from the API
//! form ([`View::from_status`]) and written as a merge patch ([`View::to_patch`]).

use std::time::Duration;

use apollo_api::conditions::{self, reasons, status as cs};
use apollo_api::{AgentInfo, DeviceProcessStatus, Phase};
use apollo_process::duration::format_duration;
use apollo_protocol::wire::ObservedProcess;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::events::{self, EventSpec};
use crate::liveness::Agent;

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

    /// Whether the view waits on the agent: it is connected and has not yet reported the
    /// object's current spec hash (`SpecObserved=False`, `SpecHashMismatch`), as right after
    /// a spec change.
    pub fn awaits_agent(&self) -> bool {
        Self::status_of(&self.connected) == cs::TRUE
            && self
                .spec_observed
                .as_ref()
                .is_some_and(|c| c.status == cs::FALSE && c.reason == reasons::SPEC_HASH_MISMATCH)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixtures::{H1, H2, WINDOW, agent, facts, ts};

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
        assert!(!v1.awaits_agent());
        assert!(
            v2.awaits_agent(),
            "connected, spec changed: waits on the agent"
        );
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
        assert!(!v3.awaits_agent());
        let v4b = compute(&v4, facts(H1), Some(&stale), WINDOW, ts(701));
        assert_eq!(status(&v4b.spec_observed), "False");
        assert!(!v4b.awaits_agent(), "a stale agent is not waited on");
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
}
