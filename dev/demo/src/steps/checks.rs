//! Checks several steps share: a DeviceProcess's status as step 3 expects it, the spec hash
//! each device must have, and waiting until every DeviceProcess of the deployment passes.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use apollo_api::conditions::{AGENT_CONNECTED, SPEC_OBSERVED};
use apollo_api::{DeviceProcess, Phase};
use apollo_testkit::condition_status;
use kube::ResourceExt as _;

use crate::wait::{poll_until, secs};

use super::{DEPLOYMENT, Demo};

/// Checks one DeviceProcess's status against step 3's expectation; `Err` says what is off.
pub(super) fn status_ok(dp: &DeviceProcess) -> Result<(), String> {
    let st = dp
        .status
        .as_ref()
        .ok_or_else(|| format!("{}: no status yet", dp.name_any()))?;
    let want = apollo_api::spec_hash(&dp.spec);
    let mut off = Vec::new();
    if st.phase != Some(Phase::Pending) {
        off.push(format!("phase={:?}", st.phase));
    }
    if !st.is_true(AGENT_CONNECTED) {
        off.push(format!(
            "AgentConnected={}",
            condition_status(dp, AGENT_CONNECTED).unwrap_or_else(|| "absent".into())
        ));
    }
    if !st.is_true(SPEC_OBSERVED) {
        off.push(format!(
            "SpecObserved={}",
            condition_status(dp, SPEC_OBSERVED).unwrap_or_else(|| "absent".into())
        ));
    }
    if st.observed_spec_hash.as_deref() != Some(want.as_str()) {
        off.push(format!(
            "observedSpecHash={} (spec hash {want})",
            st.observed_spec_hash.as_deref().unwrap_or("unset")
        ));
    }
    if off.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", dp.name_any(), off.join(", ")))
    }
}

/// The spec hash each device's DeviceProcess must have for the deployment's current template.
pub(super) fn expected_hashes(
    dpd: &apollo_api::DeviceProcessDeployment,
    devices: &[String],
) -> BTreeMap<String, String> {
    devices
        .iter()
        .map(|d| {
            (
                d.clone(),
                apollo_api::spec_hash(&dpd.spec.template.spec.for_device(d)),
            )
        })
        .collect()
}

/// Polls until every DeviceProcess of the deployment passes `ok`; returns the time each first
/// did, or the last complaint.
pub(super) async fn wait_all(
    demo: &Demo,
    deadline: Duration,
    ok: impl Fn(&DeviceProcess) -> Result<(), String>,
) -> Result<BTreeMap<String, Duration>, String> {
    let t0 = Instant::now();
    let first: RefCell<BTreeMap<String, Duration>> = RefCell::default();
    let last = RefCell::new(String::from("nothing checked"));
    let expected = demo.devices.len();
    let done = poll_until(deadline, demo.timings.poll, || {
        let kube = demo.kube.clone();
        let first = &first;
        let last = &last;
        let ok = &ok;
        async move {
            let dps = match kube.processes_of(DEPLOYMENT).await {
                Ok(d) => d,
                Err(e) => {
                    *last.borrow_mut() = format!("{e:#}");
                    return None;
                }
            };
            let mut bad = Vec::new();
            for dp in &dps {
                match ok(dp) {
                    Ok(()) => {
                        first
                            .borrow_mut()
                            .entry(dp.name_any())
                            .or_insert_with(|| t0.elapsed());
                    }
                    Err(e) => bad.push(e),
                }
            }
            if dps.len() != expected {
                bad.push(format!(
                    "{} DeviceProcesses, expected {expected}",
                    dps.len()
                ));
            }
            if bad.is_empty() {
                Some(())
            } else {
                *last.borrow_mut() = bad.join("; ");
                None
            }
        }
    })
    .await;
    match done {
        Some(()) => Ok(first.into_inner()),
        None => Err(format!("after {} s: {}", secs(deadline), last.borrow())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_check_names_what_is_off() {
        let mut dp = DeviceProcess::new(
            "demo-logger-tor1-01",
            serde_json::from_value(serde_json::json!({
                "deviceRef": {"name": "tor1-01"},
                "artifact": {"type": "oci", "url": "alpine:3.19"},
                "execution": {"backend": "container", "command": ["/bin/sh"], "args": [], "env": []}
            }))
            .unwrap(),
        );
        assert!(status_ok(&dp).unwrap_err().contains("no status"));
        let hash = apollo_api::spec_hash(&dp.spec);
        dp.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Pending",
                "observedSpecHash": hash,
                "conditions": [
                    {"type": "AgentConnected", "status": "True", "reason": "Heartbeat", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "SpecObserved", "status": "False", "reason": "SpecHashMismatch", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                ]
            }))
            .unwrap(),
        );
        let e = status_ok(&dp).unwrap_err();
        assert!(
            e.contains("SpecObserved=False") && !e.contains("AgentConnected"),
            "{e}"
        );
    }
}
