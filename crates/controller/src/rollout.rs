//! Rolling out a template change, with DaemonSet semantics (pure: no I/O, unit-tested).
//!
//! - The **revision** of a template is [`apollo_api::template_hash`]; every DeviceProcess
//!   carries the revision it was written from in the `apollo.azure.com/template-hash` label.
//! - A DeviceProcess is **available** when its agent is connected and observed its current
//!   spec; a matching device without one is unavailable.
//! - [`gate`] decides which of a plan's writes go ahead now. Creations always do (a missing
//!   DeviceProcess is already unavailable); writes that leave the spec alone (labels, owner)
//!   do unless paused or `OnDelete`; spec changes under `RollingUpdate` go first to
//!   DeviceProcesses that are already unavailable (an offline device costs no availability),
//!   then in device-name order while fewer than `maxUnavailable` are unavailable. Paused: no
//!   existing DeviceProcess is written and new devices get the current revision.
//! - [`progress`] computes the revisions, the progress time and the `RolledOut` condition;
//!   [`transitions`] the Events due when the status moves from one state to the next.

use std::collections::BTreeMap;
use std::sync::Arc;

use apollo_api::conditions::{self, reasons, status as cstatus};
use apollo_api::naming::label_value;
use apollo_api::{
    DeviceProcess, DeviceProcessDeployment, DeviceProcessDeploymentStatus, ProcessTemplateSpec,
    UpdateStrategyType, labels, template_hash,
};
use foldhash::HashMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::events::EventType;
use crate::plan::{self, ApplyItem, Candidate, Counts, SpecError, WantedCondition};
use crate::spec_hashes::SpecHashes;

/// Devices named at most in a condition message or Event.
const MAX_NAMED: usize = 10;

/// How a deployment's rollout may proceed, from its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `updateStrategy.type` is `OnDelete`.
    pub on_delete: bool,
    /// `spec.paused`.
    pub paused: bool,
    /// Absolute `maxUnavailable` for the current number of matching devices.
    pub max_unavailable: usize,
    /// `progressDeadlineSeconds`.
    pub deadline_seconds: i64,
}

impl Settings {
    /// The settings of `dpd` with `desired` matching devices.
    pub fn of(dpd: &DeviceProcessDeployment, desired: usize) -> Result<Self, SpecError> {
        let strategy = dpd.spec.strategy();
        let max_unavailable = apollo_api::deployment::max_unavailable(
            strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.max_unavailable.as_ref()),
            desired,
        )
        .map_err(|e| SpecError::Strategy(e.to_string()))?;
        let deadline = dpd.spec.progress_deadline_seconds();
        if deadline < 1 {
            return Err(SpecError::Strategy(format!(
                "spec.progressDeadlineSeconds: Invalid value: {deadline}: must be greater than 0"
            )));
        }
        Ok(Self {
            on_delete: strategy.type_ == UpdateStrategyType::OnDelete,
            paused: dpd.spec.is_paused(),
            max_unavailable,
            deadline_seconds: i64::from(deadline),
        })
    }
}

/// A revision's template as found on a DeviceProcess written from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// The revision (template hash).
    pub hash: String,
    /// Its spec.
    pub spec: ProcessTemplateSpec,
    /// The labels the controller applied with it (the device label is replaced per device).
    pub labels: BTreeMap<String, String>,
}

/// The template of `revision` taken from one of `owned` (the deployment's DeviceProcesses)
/// that carries it, or `None` when none does.
pub fn revision_template(owned: &[&DeviceProcess], revision: &str) -> Option<Revision> {
    let dp = owned
        .iter()
        .filter(|dp| dp.metadata.deletion_timestamp.is_none())
        .find(|dp| dp.labels().get(labels::TEMPLATE_HASH).map(String::as_str) == Some(revision))?;
    let managed = plan::managed_label_keys(dp);
    let labels = dp
        .labels()
        .iter()
        .filter(|(k, _)| managed.is_empty() || managed.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(Revision {
        hash: revision.to_owned(),
        spec: dp.spec.template(),
        labels,
    })
}

/// The writes of a plan that go ahead now, and the DeviceProcesses left as they are.
#[derive(Debug, Default)]
pub struct Gated {
    /// Writes to make now.
    pub apply: Vec<ApplyItem>,
    /// Existing DeviceProcesses held back at their revision, by device.
    pub held: Vec<(String, Arc<DeviceProcess>)>,
}

/// A deployment's fleet as its plan found it: what the gate counts availability over.
#[derive(Debug, Clone, Copy)]
pub struct Fleet<'a> {
    /// Matching devices (each should have a DeviceProcess).
    pub matching: usize,
    /// DeviceProcesses that need no write, by device.
    pub unchanged: &'a [(String, Arc<DeviceProcess>)],
    /// The spec hashes of cached DeviceProcesses (availability compares them).
    pub hashes: &'a SpecHashes,
}

/// Chooses which of `candidates` (the plan's writes, in device-name order) go ahead in
/// `fleet`, and builds the objects of those that go ahead from `want` — or, for new devices
/// while paused mid-rollout, from the `current` revision instead of the update.
pub fn gate(
    settings: &Settings,
    want: &plan::Desired<'_>,
    current: Option<&Revision>,
    fleet: Fleet<'_>,
    candidates: Vec<Candidate>,
) -> Gated {
    let Fleet {
        matching,
        unchanged,
        hashes,
    } = fleet;
    // Each DeviceProcess's availability is worked out once: at fleet size the spec-hash
    // lookups behind it are a large share of the gate's cost.
    let candidates: Vec<(Candidate, bool)> = candidates
        .into_iter()
        .map(|c| {
            let available = c
                .live
                .as_deref()
                .is_some_and(|dp| plan::is_available(dp, hashes));
            (c, available)
        })
        .collect();
    let available_now = unchanged
        .iter()
        .filter(|(_, dp)| plan::is_available(dp, hashes))
        .count()
        + candidates
            .iter()
            .filter(|(_, available)| *available)
            .count();
    let mut unavailable = matching.saturating_sub(available_now);
    let mut out = Gated::default();
    // The object is built only for a write that goes ahead, at `rev` when one is given.
    let mut go = |c: Candidate, rev: Option<&Revision>| {
        let mut object = want.object(&c.name, &c.device);
        if let Some(rev) = rev {
            object = at_revision(object, &c.device, rev);
        }
        out.apply.push(ApplyItem {
            device: c.device,
            object,
            live: c.live,
        });
    };
    let mut held = Vec::new();
    // Already-unavailable DeviceProcesses first: updating them costs no availability.
    let (first, rest): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|(_, available)| !available);
    for (c, available) in first.into_iter().chain(rest) {
        let Some(live) = c.live.clone() else {
            go(c, current.filter(|_| settings.paused));
            continue;
        };
        if settings.paused || settings.on_delete {
            held.push((c.device, live));
        } else if !c.changes_spec || !available {
            go(c, None);
        } else if unavailable < settings.max_unavailable {
            unavailable += 1;
            go(c, None);
        } else {
            held.push((c.device, live));
        }
    }
    out.held = held;
    out
}

/// `object` with the spec and labels of `rev` instead of the update revision's.
fn at_revision(mut object: DeviceProcess, device: &str, rev: &Revision) -> DeviceProcess {
    object.spec = rev.spec.for_device(device);
    let mut labels = rev.labels.clone();
    labels.insert(labels::DEVICE.into(), label_value(device));
    labels.insert(labels::TEMPLATE_HASH.into(), rev.hash.clone());
    for (k, v) in object.labels() {
        // The controller's own identity labels always come from the current deployment.
        if k == labels::DEPLOYMENT || k == labels::MANAGED_BY {
            labels.insert(k.clone(), v.clone());
        }
    }
    object.metadata.labels = Some(labels);
    object
}

/// Why a matching device counts as unavailable.
pub fn unavailable_devices(
    devices: &[String],
    current: &[(String, &DeviceProcess)],
    hashes: &SpecHashes,
) -> Vec<(String, &'static str)> {
    let by_device: HashMap<&str, &DeviceProcess> =
        current.iter().map(|(d, dp)| (d.as_str(), *dp)).collect();
    devices
        .iter()
        .filter_map(|device| {
            let why = match by_device.get(device.as_str()) {
                None => "no DeviceProcess",
                Some(dp) if !plan::agent_connected(dp) => "agent not connected",
                Some(dp) if !plan::observed_current_spec(dp, hashes) => "spec not observed",
                Some(_) => return None,
            };
            Some((device.clone(), why))
        })
        .collect()
}

/// The rollout part of a deployment's status.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Hash of the current template.
    pub update_revision: String,
    /// Revision of the last completed rollout.
    pub current_revision: Option<String>,
    /// When the rollout last made progress.
    pub last_progress_time: Option<Time>,
    /// The `RolledOut` condition.
    pub rolled_out: WantedCondition,
    /// How long until the rollout would stall, when it is running and has not stalled yet
    /// (the reconcile is requeued then, with nothing else changing).
    pub stalls_in: Option<std::time::Duration>,
}

fn rolled_out_reason(status: Option<&DeviceProcessDeploymentStatus>) -> Option<(&str, &str)> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::ROLLED_OUT)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// Names up to [`MAX_NAMED`] devices with why each is unavailable.
fn name_devices(devices: &[(String, &'static str)]) -> String {
    let mut out: Vec<String> = devices
        .iter()
        .take(MAX_NAMED)
        .map(|(d, why)| format!("{d} ({why})"))
        .collect();
    if devices.len() > MAX_NAMED {
        out.push(format!("and {} more", devices.len() - MAX_NAMED));
    }
    out.join(", ")
}

/// The rollout status of `dpd` after this reconcile: `counts` and the `unavailable` devices as
/// they are now, `settings` when the spec is valid.
pub fn progress(
    dpd: &DeviceProcessDeployment,
    settings: Option<&Settings>,
    counts: Counts,
    unavailable: &[(String, &'static str)],
    invalid: Option<&SpecError>,
    now: &Time,
) -> Progress {
    let prior = dpd.status.as_ref();
    let update = template_hash(&dpd.spec.template);
    let summary = format!(
        "{} of {} updated, {} unavailable",
        counts.updated,
        counts.desired,
        counts.unavailable()
    );
    let prior_reason = rolled_out_reason(prior).map(|(_, r)| r);
    let complete = invalid.is_none() && counts.rolled_out();
    let paused = settings.is_some_and(|s| s.paused);
    let new_rollout = prior.and_then(|p| p.update_revision.as_deref()) != Some(update.as_str());
    let resumed = prior_reason == Some(reasons::PAUSED) && !paused;
    let advanced = prior.is_some_and(|p| {
        counts.updated > p.updated_number_scheduled
            || counts.observed > p.number_spec_observed
            || counts.available > p.number_available
    });
    let prior_progress = prior.and_then(|p| p.last_progress_time.clone());
    let last_progress = match prior_progress {
        Some(t) if !(new_rollout || resumed || advanced) => t,
        _ => now.clone(),
    };
    let current_revision = if complete {
        Some(update.clone())
    } else {
        Some(
            prior
                .and_then(|p| p.current_revision.clone())
                .unwrap_or_else(|| update.clone()),
        )
    };
    let elapsed = now.0.as_second() - last_progress.0.as_second();
    let mut stalls_in = None;
    let rolled_out = match (invalid, settings) {
        (Some(_), _) | (None, None) => {
            let reason = invalid.map_or(reasons::INVALID_SELECTOR, SpecError::reason);
            (
                conditions::ROLLED_OUT,
                cstatus::FALSE,
                reason,
                format!("{summary}; the spec is invalid"),
            )
        }
        (None, Some(_)) if complete => (
            conditions::ROLLED_OUT,
            cstatus::TRUE,
            reasons::ROLLOUT_COMPLETE,
            summary,
        ),
        (None, Some(s)) if s.paused => (
            conditions::ROLLED_OUT,
            cstatus::FALSE,
            reasons::PAUSED,
            format!("{summary}; paused"),
        ),
        (None, Some(s)) if s.on_delete => (
            conditions::ROLLED_OUT,
            cstatus::FALSE,
            reasons::IN_PROGRESS,
            format!(
                "{summary}; OnDelete: a DeviceProcess gets the new template when it is deleted"
            ),
        ),
        (None, Some(s)) if elapsed >= s.deadline_seconds => (
            conditions::ROLLED_OUT,
            cstatus::FALSE,
            reasons::STALLED,
            format!(
                "{summary}; no progress for {}s, held up by {}",
                s.deadline_seconds,
                name_devices(unavailable)
            ),
        ),
        (None, Some(s)) => {
            let left = u64::try_from(s.deadline_seconds - elapsed).unwrap_or(1);
            stalls_in = Some(std::time::Duration::from_secs(left.max(1)));
            (
                conditions::ROLLED_OUT,
                cstatus::FALSE,
                reasons::IN_PROGRESS,
                summary,
            )
        }
    };
    Progress {
        update_revision: update,
        current_revision,
        last_progress_time: Some(last_progress),
        rolled_out,
        stalls_in,
    }
}

/// An Event due on the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Normal or Warning.
    pub type_: EventType,
    /// `RolloutStarted`, `RolloutPaused`, `RolloutResumed`, `RolloutStalled` or
    /// `RolloutComplete`.
    pub reason: &'static str,
    /// What happened.
    pub note: String,
}

/// The Events due when the status moves from `prior` to `next` (each once per transition:
/// the caller publishes them only after `next` was written).
pub fn transitions(
    prior: Option<&DeviceProcessDeploymentStatus>,
    next: &DeviceProcessDeploymentStatus,
    settings: Option<&Settings>,
) -> Vec<Due> {
    let mut out = Vec::new();
    let Some(prior) = prior else {
        return out;
    };
    let update = next.update_revision.as_deref().unwrap_or_default();
    let before = rolled_out_reason(Some(prior));
    let after = rolled_out_reason(Some(next));
    let message = next
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::ROLLED_OUT)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    if let Some(old) = prior.update_revision.as_deref()
        && old != update
    {
        let how = match settings {
            Some(s) if s.on_delete => {
                "OnDelete: each DeviceProcess gets it when it is deleted".to_owned()
            }
            Some(s) => format!("at most {} unavailable at a time", s.max_unavailable),
            None => String::new(),
        };
        out.push(Due {
            type_: EventType::Normal,
            reason: "RolloutStarted",
            note: format!(
                "Rolling out revision {update} (from {old}) to {} devices, {how}",
                next.desired_number_scheduled
            ),
        });
    }
    let was = |reason: &str| before.is_some_and(|(_, r)| r == reason);
    let is = |reason: &str| after.is_some_and(|(_, r)| r == reason);
    if is(reasons::PAUSED) && !was(reasons::PAUSED) {
        out.push(Due {
            type_: EventType::Normal,
            reason: "RolloutPaused",
            note: format!("Rollout of revision {update} paused: {message}"),
        });
    }
    if was(reasons::PAUSED) && !is(reasons::PAUSED) {
        out.push(Due {
            type_: EventType::Normal,
            reason: "RolloutResumed",
            note: format!("Rollout of revision {update} resumed: {message}"),
        });
    }
    if is(reasons::STALLED) && !was(reasons::STALLED) {
        out.push(Due {
            type_: EventType::Warning,
            reason: "RolloutStalled",
            note: format!("Rollout of revision {update} stalled: {message}"),
        });
    }
    let done = |s: Option<(&str, &str)>| s.is_some_and(|(st, _)| st == cstatus::TRUE);
    if done(after) && before.is_some() && !done(before) {
        out.push(Due {
            type_: EventType::Normal,
            reason: "RolloutComplete",
            note: format!(
                "Revision {update} rolled out to {} devices",
                next.desired_number_scheduled
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests;
