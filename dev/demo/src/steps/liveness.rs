//! Steps 7 and 8: a stopped agent goes stale with exactly one Warning, and a restarted one
//! reconnects on its heartbeat without a change of its desired state.

use std::time::Instant;

use anyhow::{Result, anyhow, bail, ensure};
use apollo_api::conditions::AGENT_CONNECTED;
use apollo_testkit::condition_status;
use kube::ResourceExt as _;

use crate::cli::flag_duration;
use crate::cluster::{event_occurrences, event_time};
use crate::report::Step;
use crate::wait::{poll_until, secs};

use super::checks::{status_ok, wait_all};
use super::render::render_events;
use super::{DEPLOYMENT, Demo, gw};

// ---------------------------------------------------------------------------------------------
// Step 7

async fn warning_occurrences(
    demo: &Demo,
    name: &str,
) -> Result<(i64, Vec<k8s_openapi::api::core::v1::Event>)> {
    let events = demo.kube.events_for("DeviceProcess", name).await?;
    let n = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(event_occurrences)
        .sum();
    Ok((n, events))
}

async fn show_events(
    demo: &Demo,
    step: &Step,
    name: &str,
    events: &[k8s_openapi::api::core::v1::Event],
) {
    match demo.kubectl.run(&["describe", "dp", name]).await {
        Some(Ok(text)) => {
            let tail: Vec<&str> = text
                .lines()
                .skip_while(|l| !l.starts_with("Events:"))
                .collect();
            step.shell(
                &format!("kubectl describe dp {name} | sed -n '/Events/,$p'"),
                &tail.join("\n"),
            );
        }
        Some(Err(e)) => step.saw(&format!("{e:#}")),
        None => step.shell(
            &format!(
                "kubectl get events --field-selector involvedObject.name={name}   (client view)"
            ),
            &render_events(events),
        ),
    }
}

pub(super) async fn step7_stale(demo: &mut Demo, step: &Step) -> Result<()> {
    let device = demo.restarted_device()?;
    let name = demo.dp_name(&device);
    let other = demo.dp_name(&demo.devices[0]);
    let (before, _) = warning_occurrences(demo, &name).await?;
    let t = &demo.timings;
    step.expect(&format!(
        "AgentConnected=False on {name} between {} s and {} s after the agent stops (stale window {} \
         = 3 × heartbeat, minus up to one heartbeat already elapsed, plus {} s slack); {other} \
         stays True; exactly one new Warning event on {name}, still one after another window",
        secs(t.stale_min()),
        secs(t.stale_max()),
        flag_duration(t.stale),
        secs(t.stale_slack)
    ));
    // Measured from the stop command: the agent stops heartbeating at SIGTERM, while
    // `docker compose stop` (or our wait) returns only once it has exited.
    let stopped = Instant::now();
    let did = demo.agents.stop(&device).await?;
    step.did(&format!(
        "{did} (returned after {} s)",
        secs(stopped.elapsed())
    ));
    // Poll past the acceptable range so a late transition is measured, not just missed.
    let deadline = t.stale_max() + t.stale;
    let kube = demo.kube.clone();
    let flipped = poll_until(deadline, t.poll, || {
        let api = kube.device_processes();
        let name = name.clone();
        async move {
            let dp = api.get(&name).await.ok()?;
            (condition_status(&dp, AGENT_CONNECTED).as_deref() == Some("False"))
                .then(|| (stopped.elapsed(), dp))
        }
    })
    .await;
    let Some((after, dp)) = flipped else {
        demo.show_dps(step).await;
        bail!(
            "{name} still AgentConnected={} {} s after the agent stopped",
            demo.kube
                .device_processes()
                .get(&name)
                .await
                .ok()
                .and_then(|d| condition_status(&d, AGENT_CONNECTED))
                .unwrap_or_default(),
            secs(deadline)
        );
    };
    step.saw(&format!(
        "{name}: AgentConnected=False {} s after the stop ({})",
        secs(after),
        dp.status
            .as_ref()
            .and_then(|s| s.condition(AGENT_CONNECTED))
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_default()
    ));
    demo.show_dps(step).await;
    if let Ok(m) = demo.scrape().await {
        step.shell(
            &format!(
                "curl -s {}/metrics | grep -E 'connected_devices|stale_transitions'",
                demo.gateway_metrics.base()
            ),
            &m.lines_matching(&[gw::CONNECTED, gw::STALE]).join("\n"),
        );
    }
    let mut problems = Vec::new();
    if after < t.stale_min() {
        problems.push(format!(
            "went stale after {} s, before the {} window could have passed",
            secs(after),
            flag_duration(t.stale)
        ));
    }
    if after > t.stale_max() {
        problems.push(format!(
            "went stale after {} s, later than {} s",
            secs(after),
            secs(t.stale_max())
        ));
    }
    let other_dp = demo.kube.device_processes().get(&other).await?;
    if condition_status(&other_dp, AGENT_CONNECTED).as_deref() != Some("True") {
        problems.push(format!("{other} is not AgentConnected=True any more"));
    }
    // One Warning must be there now...
    let got_one = poll_until(demo.timings.within, demo.timings.poll, || {
        let demo = &*demo;
        let name = name.clone();
        async move {
            let (n, _) = warning_occurrences(demo, &name).await.ok()?;
            (n > before).then_some(())
        }
    })
    .await;
    if got_one.is_none() {
        problems.push(format!("no Warning event on {name}"));
    }
    // ...and still exactly one after another whole window of silence (no repeats).
    let extra = t.stale + t.stale_slack;
    step.did(&format!(
        "waited another stale window ({} s) with the agent still stopped",
        secs(extra)
    ));
    tokio::time::sleep(extra).await;
    let (now, events) = warning_occurrences(demo, &name).await?;
    show_events(demo, step, &name, &events).await;
    let warnings: Vec<String> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| {
            format!(
                "{} ×{} at {}: {}",
                e.reason.clone().unwrap_or_default(),
                event_occurrences(e),
                event_time(e).unwrap_or_default(),
                e.message.clone().unwrap_or_default()
            )
        })
        .collect();
    step.saw(&format!(
        "Warning events on {name}: {} new ({})",
        now - before,
        warnings.join("; ")
    ));
    if now - before != 1 {
        problems.push(format!(
            "{} new Warning events on {name}, expected exactly 1",
            now - before
        ));
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 8

/// The runbook deployment's `metadata.generation` (a desired change would move it).
async fn deployment_generation(demo: &Demo) -> Result<Option<i64>> {
    Ok(demo
        .kube
        .deployments()
        .get(DEPLOYMENT)
        .await?
        .metadata
        .generation)
}

pub(super) async fn step8_reconnect(demo: &mut Demo, step: &Step) -> Result<()> {
    let device = demo.restarted_device()?;
    let name = demo.dp_name(&device);
    let before = demo.kube.device_processes().get(&name).await?;
    let dpd_gen = deployment_generation(demo).await?;
    let hash = apollo_api::spec_hash(&before.spec);
    step.expect(&format!(
        "within {} s of the restart: {name} AgentConnected=True (heartbeat-only reconnect), \
         SpecObserved=True with the same hash {hash}; no desired change (generation {} and \
         deployment generation {} unchanged)",
        demo.timings.within.as_secs(),
        before.metadata.generation.unwrap_or_default(),
        dpd_gen.unwrap_or_default()
    ));
    let did = demo.agents.restart(&device).await?;
    step.did(&did);
    let t0 = Instant::now();
    let dev_name = name.clone();
    let r = wait_all(demo, demo.timings.within, |dp| {
        if dp.name_any() == dev_name {
            status_ok(dp)
        } else {
            Ok(())
        }
    })
    .await;
    demo.show_dps(step).await;
    r.map_err(|e| anyhow!(e))?;
    let took = t0.elapsed();
    let after = demo.kube.device_processes().get(&name).await?;
    let dpd_gen_after = deployment_generation(demo).await?;
    let events = demo.kube.events_for("DeviceProcess", &name).await?;
    show_events(demo, step, &name, &events).await;
    ensure!(
        after.metadata.generation == before.metadata.generation
            && apollo_api::spec_hash(&after.spec) == hash
            && dpd_gen_after == dpd_gen,
        "the desired state changed during the restart (generation {:?} → {:?})",
        before.metadata.generation,
        after.metadata.generation
    );
    let normal = events
        .iter()
        .rev()
        .find(|e| e.type_.as_deref() == Some("Normal"))
        .and_then(|e| e.reason.clone())
        .unwrap_or_else(|| "none".into());
    step.saw(&format!(
        "{name}: AgentConnected=True {} s after the restart; desired unchanged (hash {hash}); \
         latest Normal event: {normal}",
        secs(took)
    ));
    Ok(())
}
