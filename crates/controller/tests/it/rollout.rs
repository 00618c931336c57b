//! Rolling updates against the development API server (issue 16): `maxUnavailable`, pause and
//! resume, offline devices and the progress deadline, `OnDelete`, and the CRD validation of the
//! new fields. The gateway's part is played by [`Agents`]: it writes DeviceProcess status as
//! the gateway does from agent reports (connected or not, which spec hash was observed).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use apollo_api::{DeviceProcess, DeviceProcessDeployment, spec_hash};
use apollo_testkit::TestEnv;
use common::*;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

const REVISION_LABEL: &str = "apollo.azure.com/template-hash";

fn device(i: usize) -> String {
    format!("sw-{i:02}")
}

fn dp_name(i: usize) -> String {
    format!("fleet-{}", device(i))
}

/// `n` switches labelled `role: fleet`.
async fn add_switches(env: &TestEnv, range: std::ops::Range<usize>) {
    for i in range {
        add_switch(env, &device(i), "{role: fleet}").await;
    }
}

/// The `fleet` deployment with `extra` merged into its spec.
async fn create_fleet(env: &TestEnv, extra: serde_json::Value) {
    let mut spec = json!({
        "selector": {"matchLabels": {"role": "fleet"}},
        "template": {
            "metadata": {"labels": {"app": "logger"}},
            "spec": {
                "artifact": {"type": "oci", "url": "alpine:3.19"},
                "execution": {"backend": "container", "args": ["v1"]}
            }
        }
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    let dpd: DeviceProcessDeployment = serde_json::from_value(json!({
        "apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcessDeployment",
        "metadata": {"name": "fleet"}, "spec": spec
    }))
    .unwrap();
    let admin = env.admin().await;
    dpds(env, &admin)
        .create(&PostParams::default(), &dpd)
        .await
        .unwrap();
}

async fn patch_fleet(env: &TestEnv, patch: serde_json::Value) {
    let admin = env.admin().await;
    dpds(env, &admin)
        .patch("fleet", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

async fn set_args(env: &TestEnv, arg: &str) {
    patch_fleet(
        env,
        json!({"spec": {"template": {"spec": {"execution": {"args": [arg]}}}}}),
    )
    .await;
}

/// The simulated agents behind the gateway. Every device is online and observes each new spec
/// as soon as it sees it, except devices marked `offline` (reported disconnected) or `held`
/// (connected, but not yet observing their new spec).
#[derive(Clone)]
struct Agents {
    env_client: kube::Client,
    namespace: String,
    state: Arc<Mutex<AgentState>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct AgentState {
    offline: BTreeSet<String>,
    held: BTreeSet<String>,
    /// Held devices keep reporting this spec hash.
    last_observed: BTreeMap<String, String>,
}

impl Agents {
    async fn start(env: &TestEnv) -> Self {
        let client = env.admin().await;
        let state = Arc::new(Mutex::new(AgentState::default()));
        let api: Api<DeviceProcess> = dps(env, &client);
        let task = {
            let (api, state) = (api.clone(), state.clone());
            tokio::spawn(async move {
                let mut events = watcher(api.clone(), watcher::Config::default())
                    .default_backoff()
                    .applied_objects()
                    .boxed();
                while let Some(Ok(dp)) = events.next().await {
                    report(&api, &state, &dp).await;
                }
            })
        };
        Self {
            env_client: client,
            namespace: env.namespace().to_owned(),
            state,
            task: Arc::new(task),
        }
    }

    fn api(&self) -> Api<DeviceProcess> {
        Api::namespaced(self.env_client.clone(), &self.namespace)
    }

    /// Changes the state of `devices` and reports for them right away.
    async fn update(&self, devices: &[String], change: impl Fn(&mut AgentState, &str)) {
        {
            let mut s = self.state.lock().unwrap();
            for d in devices {
                change(&mut s, d);
            }
        }
        let api = self.api();
        for dp in api.list(&ListParams::default()).await.unwrap() {
            if devices.contains(&dp.spec.device_ref.name) {
                report(&api, &self.state, &dp).await;
            }
        }
    }

    async fn set_offline(&self, devices: &[String]) {
        self.update(devices, |s, d| {
            s.offline.insert(d.to_owned());
        })
        .await;
    }

    async fn set_online(&self, devices: &[String]) {
        self.update(devices, |s, d| {
            s.offline.remove(d);
        })
        .await;
    }

    async fn hold(&self, devices: &[String]) {
        self.update(devices, |s, d| {
            s.held.insert(d.to_owned());
        })
        .await;
    }

    async fn release(&self, devices: &[String]) {
        self.update(devices, |s, d| {
            s.held.remove(d);
        })
        .await;
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

/// Writes what the gateway would for `dp`, when it differs from its status.
async fn report(api: &Api<DeviceProcess>, state: &Mutex<AgentState>, dp: &DeviceProcess) {
    let device = dp.spec.device_ref.name.clone();
    let current = spec_hash(&dp.spec);
    let (connected, observed) = {
        let mut s = state.lock().unwrap();
        let connected = !s.offline.contains(&device);
        let observed = if connected && !s.held.contains(&device) {
            s.last_observed.insert(device.clone(), current.clone());
            Some(current.clone())
        } else {
            s.last_observed.get(&device).cloned()
        };
        (connected, observed)
    };
    let status = dp.status.clone().unwrap_or_default();
    if status.is_true("AgentConnected") == connected && status.observed_spec_hash == observed {
        return;
    }
    let (cstatus, creason) = if connected {
        ("True", "Heartbeat")
    } else {
        ("False", "HeartbeatMissed")
    };
    let matched = observed.as_deref() == Some(current.as_str());
    let patch = json!({"status": {
        "phase": "Pending",
        "observedSpecHash": observed,
        "conditions": [
            {"type": "AgentConnected", "status": cstatus, "reason": creason, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "SpecObserved", "status": if matched {"True"} else {"False"}, "reason": if matched {"SpecHashMatched"} else {"SpecHashMismatch"}, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ],
        "agent": {"version": "0.1.0", "instanceId": format!("i-{device}")}
    }});
    // A DeviceProcess deleted meanwhile is fine.
    let _ = api
        .patch_status(
            &dp.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await;
}

/// Samples the state on every watch event of DeviceProcesses and of the deployment, and records
/// the largest number of DeviceProcesses that were updated-but-unobserved or disconnected
/// during the rollout to `v2`, and every status that contradicts itself.
struct Sampler {
    max_unavailable: Arc<Mutex<usize>>,
    problems: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sampler {
    async fn start(env: &TestEnv) -> Self {
        let client = env.admin().await;
        let max_unavailable = Arc::new(Mutex::new(0));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let (dpd_reader, dpd_writer) = reflector::store::<DeviceProcessDeployment>();
        let dpd_task = {
            let problems = problems.clone();
            let api = dpds(env, &client);
            tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .reflect(dpd_writer)
                    .applied_objects()
                    .boxed();
                while let Some(Ok(dpd)) = events.next().await {
                    if let Some(p) = status_problem(&dpd) {
                        problems.lock().unwrap().push(p);
                    }
                }
            })
        };
        let dp_task = {
            let max = max_unavailable.clone();
            let api = dps(env, &client);
            let (reader, writer) = reflector::store::<DeviceProcess>();
            tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .reflect(writer)
                    .boxed();
                while let Some(Ok(_)) = events.next().await {
                    let Some(dpd) = dpd_reader.find(|d| d.name_any() == "fleet") else {
                        continue;
                    };
                    let revision = apollo_api::template_hash(&dpd.spec.template);
                    let state = reader.state();
                    // Sampling starts with the rollout to v2: once a v2 DeviceProcess is in
                    // the watch's history, so is every status written before it.
                    if !state.iter().any(|dp| dp.spec.execution.args == ["v2"]) {
                        continue;
                    }
                    let n = state
                        .iter()
                        .filter(|dp| {
                            let status = dp.status.clone().unwrap_or_default();
                            let new = dp.labels().get(REVISION_LABEL) == Some(&revision);
                            let observed = status.observed_spec_hash.as_deref()
                                == Some(spec_hash(&dp.spec).as_str());
                            (new && !observed) || !status.is_true("AgentConnected")
                        })
                        .count();
                    let mut max = max.lock().unwrap();
                    *max = (*max).max(n);
                }
            })
        };
        Self {
            max_unavailable,
            problems,
            tasks: vec![dpd_task, dp_task],
        }
    }

    fn max(&self) -> usize {
        *self.max_unavailable.lock().unwrap()
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What is wrong with a deployment's status on its own terms, if anything.
fn status_problem(dpd: &DeviceProcessDeployment) -> Option<String> {
    let s = dpd.status.as_ref()?;
    let c = s.conditions.iter().find(|c| c.type_ == "RolledOut")?;
    let summary = format!(
        "{} of {} updated, {} unavailable",
        s.updated_number_scheduled, s.desired_number_scheduled, s.number_unavailable
    );
    let complete = s.updated_number_scheduled == s.desired_number_scheduled
        && s.current_number_scheduled == s.desired_number_scheduled
        && s.number_spec_observed == s.desired_number_scheduled;
    let bad = if s.number_available + s.number_unavailable != s.desired_number_scheduled {
        "available + unavailable != desired"
    } else if !c.message.starts_with(&summary) {
        "message does not match the counts"
    } else if (c.status == "True") != complete {
        "RolledOut does not match the counts"
    } else if complete && s.current_revision != s.update_revision {
        "complete but currentRevision != updateRevision"
    } else if s.update_revision.as_deref() != Some(&apollo_api::template_hash(&dpd.spec.template))
        && s.observed_generation == dpd.metadata.generation
    {
        "updateRevision is not the template's hash"
    } else {
        return None;
    };
    Some(format!("{bad}: {s:?}"))
}

/// The RolledOut condition as (status, reason, message), once the status describes the
/// current generation.
async fn rolled_out(env: &TestEnv) -> Option<(String, String, String)> {
    let admin = env.admin().await;
    let dpd = dpds(env, &admin).get("fleet").await.ok()?;
    let s = dpd.status?;
    if s.observed_generation != dpd.metadata.generation {
        return None;
    }
    let c = s.conditions.into_iter().find(|c| c.type_ == "RolledOut")?;
    Some((c.status, c.reason, c.message))
}

async fn wait_rolled_out(env: &TestEnv, status: &str, reason: &str, message: &str) {
    eventually(
        &format!("RolledOut={status} {reason} {message:?}"),
        || async {
            let got = rolled_out(env).await;
            match &got {
                Some((s, r, m)) if s == status && r == reason && m.starts_with(message) => Ok(()),
                _ => Err(format!("{got:?}")),
            }
        },
    )
    .await;
}

/// Devices whose DeviceProcess runs `arg`.
async fn devices_at(env: &TestEnv, arg: &str) -> Vec<String> {
    let admin = env.admin().await;
    let mut out: Vec<String> = dps(env, &admin)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|dp| dp.spec.execution.args == [arg])
        .map(|dp| dp.spec.device_ref.name)
        .collect();
    out.sort();
    out
}

async fn rollout_events(env: &TestEnv) -> Vec<(String, String, String)> {
    events_for(env, "fleet")
        .await
        .into_iter()
        .filter(|e| e.1.starts_with("Rollout"))
        .collect()
}

fn count_reason(events: &[(String, String, String)], reason: &str) -> usize {
    events.iter().filter(|e| e.1 == reason).count()
}

fn devices(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(device).collect()
}

/// Ten devices, maxUnavailable 2, online agents that report at once.
async fn fleet_of_ten(env: &TestEnv, extra: serde_json::Value) -> Agents {
    let agents = Agents::start(env).await;
    add_switches(env, 0..10).await;
    create_fleet(env, extra).await;
    wait_rolled_out(
        env,
        "True",
        "RolloutComplete",
        "10 of 10 updated, 0 unavailable",
    )
    .await;
    agents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_devices_two_at_a_time() {
    let env = setup().await;
    let ctl = start(&env, config(&env)).await;
    let sampler = Sampler::start(&env).await;
    let agents = fleet_of_ten(
        &env,
        json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}),
    )
    .await;
    // Defaults filled in by the API server, as for a DaemonSet.
    let admin = env.admin().await;
    let dpd = dpds(&env, &admin).get("fleet").await.unwrap();
    let spec = serde_json::to_value(&dpd.spec).unwrap();
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    let old_revision = dpd.status.unwrap().update_revision.unwrap();

    // Agents hold back: the first two (by name) are updated, and nothing else.
    agents.hold(&devices(0..10)).await;
    set_args(&env, "v2").await;
    wait_rolled_out(
        &env,
        "False",
        "InProgress",
        "2 of 10 updated, 2 unavailable",
    )
    .await;
    assert_eq!(devices_at(&env, "v2").await, ["sw-00", "sw-01"]);

    // One observes: exactly one more, the next by name.
    agents.release(&[device(0)]).await;
    wait_rolled_out(
        &env,
        "False",
        "InProgress",
        "3 of 10 updated, 2 unavailable",
    )
    .await;
    assert_eq!(devices_at(&env, "v2").await, ["sw-00", "sw-01", "sw-02"]);

    // All agents observe as they go: the rollout completes.
    agents.release(&devices(0..10)).await;
    wait_rolled_out(
        &env,
        "True",
        "RolloutComplete",
        "10 of 10 updated, 0 unavailable",
    )
    .await;
    assert_eq!(devices_at(&env, "v2").await, devices(0..10));

    let dpd = dpds(&env, &admin).get("fleet").await.unwrap();
    let status = dpd.status.unwrap();
    let new_revision = apollo_api::template_hash(&dpd.spec.template);
    assert_eq!(
        status.update_revision.as_deref(),
        Some(new_revision.as_str())
    );
    assert_eq!(
        status.current_revision.as_deref(),
        Some(new_revision.as_str())
    );
    assert_ne!(old_revision, new_revision);
    assert_eq!(
        (status.number_available, status.number_unavailable),
        (10, 0)
    );
    // The revision label finds them.
    let labelled = dps(&env, &admin)
        .list(&ListParams::default().labels(&format!("{REVISION_LABEL}={new_revision}")))
        .await
        .unwrap();
    assert_eq!(labelled.items.len(), 10);

    assert_eq!(sampler.max(), 2, "at most 2 unavailable, and 2 were used");
    assert!(sampler.problems().is_empty(), "{:?}", sampler.problems());
    let events = rollout_events(&env).await;
    assert_eq!(count_reason(&events, "RolloutStarted"), 1, "{events:?}");
    assert!(
        events.iter().any(|e| e.1 == "RolloutStarted"
            && e.2
                .contains(&format!("{new_revision} (from {old_revision})"))
            && e.2.contains("at most 2 unavailable")),
        "{events:?}"
    );
    // The initial fan-out completed once too.
    assert_eq!(count_reason(&events, "RolloutComplete"), 2, "{events:?}");
    // `Updated` Events sum a reconcile's updates up: every device counted once, the first
    // two (updated together) in one Event.
    let updated: Vec<usize> = events_for(&env, "fleet")
        .await
        .into_iter()
        .filter(|e| e.1 == "Updated")
        .map(|e| {
            if e.2.starts_with("Updated DeviceProcess ") {
                1
            } else {
                e.2.strip_prefix("Updated ")
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("an Updated note: {}", e.2))
            }
        })
        .collect();
    assert_eq!(updated.iter().sum::<usize>(), 10, "{updated:?}");
    assert!(updated.contains(&2), "{updated:?}");
    drop(agents);
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_rollout_and_new_devices_get_the_current_revision() {
    let env = setup().await;
    let ctl = start(&env, config(&env)).await;
    let sampler = Sampler::start(&env).await;
    let agents = fleet_of_ten(
        &env,
        json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": "20%"}}}),
    )
    .await;
    agents.hold(&devices(0..10)).await;
    set_args(&env, "v2").await;
    wait_rolled_out(
        &env,
        "False",
        "InProgress",
        "2 of 10 updated, 2 unavailable",
    )
    .await;

    patch_fleet(&env, json!({"spec": {"paused": true}})).await;
    wait_rolled_out(
        &env,
        "False",
        "Paused",
        "2 of 10 updated, 2 unavailable; paused",
    )
    .await;
    // The two observe: the status shows it (so a reconcile ran) and nothing else moved.
    agents.release(&devices(0..2)).await;
    wait_rolled_out(
        &env,
        "False",
        "Paused",
        "2 of 10 updated, 0 unavailable; paused",
    )
    .await;
    assert_eq!(devices_at(&env, "v2").await, ["sw-00", "sw-01"]);

    // A device joining while paused gets the current (old) revision.
    add_switches(&env, 10..11).await;
    wait_rolled_out(&env, "False", "Paused", "2 of 11 updated").await;
    let admin = env.admin().await;
    let joined = eventually("the new device's DeviceProcess", || async {
        dps(&env, &admin)
            .get_opt(&dp_name(10))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    assert_eq!(joined.spec.execution.args, ["v1"]);
    let status = dpds(&env, &admin)
        .get("fleet")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        joined.labels().get(REVISION_LABEL),
        status.current_revision.as_ref()
    );
    assert_ne!(status.current_revision, status.update_revision);
    assert_eq!(
        joined.labels().get("app").map(String::as_str),
        Some("logger")
    );

    // Resume: it completes, the new device included.
    agents.release(&devices(0..11)).await;
    patch_fleet(&env, json!({"spec": {"paused": false}})).await;
    wait_rolled_out(
        &env,
        "True",
        "RolloutComplete",
        "11 of 11 updated, 0 unavailable",
    )
    .await;
    assert_eq!(devices_at(&env, "v2").await, devices(0..11));

    // 20% of 10 devices is 2; of 11 it is 3 (rounded up).
    assert!(sampler.max() <= 3, "max unavailable {}", sampler.max());
    assert!(sampler.problems().is_empty(), "{:?}", sampler.problems());
    let events = rollout_events(&env).await;
    for (reason, n) in [
        ("RolloutStarted", 1),
        ("RolloutPaused", 1),
        ("RolloutResumed", 1),
        ("RolloutStalled", 0),
    ] {
        assert_eq!(count_reason(&events, reason), n, "{reason}: {events:?}");
    }
    drop(agents);
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_devices_go_first_count_against_the_budget_and_stall_the_rollout() {
    let env = setup().await;
    let ctl = start(&env, config(&env)).await;
    let sampler = Sampler::start(&env).await;
    let agents = fleet_of_ten(
        &env,
        json!({
            "updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}},
            "progressDeadlineSeconds": 2
        }),
    )
    .await;
    let offline = [device(3), device(7)];
    agents.set_offline(&offline).await;
    wait_rolled_out(
        &env,
        "True",
        "RolloutComplete",
        "10 of 10 updated, 2 unavailable",
    )
    .await;

    set_args(&env, "v2").await;
    // The offline ones are updated first and use the whole budget: nothing else moves.
    wait_rolled_out(&env, "False", "Stalled", "2 of 10 updated, 2 unavailable").await;
    assert_eq!(devices_at(&env, "v2").await, offline);
    let (_, _, message) = rolled_out(&env).await.unwrap();
    assert!(
        message.contains("sw-03 (agent not connected)")
            && message.contains("sw-07 (agent not connected)"),
        "{message}"
    );
    let events = rollout_events(&env).await;
    let stalled: Vec<_> = events.iter().filter(|e| e.1 == "RolloutStalled").collect();
    assert_eq!(stalled.len(), 1, "{events:?}");
    assert_eq!(stalled[0].0, "Warning");
    assert!(
        stalled[0].2.contains("sw-03") && stalled[0].2.contains("sw-07"),
        "{stalled:?}"
    );

    // They come back and observe: the rollout completes.
    agents.set_online(&offline).await;
    wait_rolled_out(
        &env,
        "True",
        "RolloutComplete",
        "10 of 10 updated, 0 unavailable",
    )
    .await;
    assert_eq!(devices_at(&env, "v2").await, devices(0..10));
    assert!(sampler.max() <= 2, "max unavailable {}", sampler.max());
    assert!(sampler.problems().is_empty(), "{:?}", sampler.problems());
    let events = rollout_events(&env).await;
    assert_eq!(count_reason(&events, "RolloutStalled"), 1, "{events:?}");
    drop(agents);
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_updates_only_deleted_device_processes() {
    let env = setup().await;
    let ctl = start(&env, config(&env)).await;
    let agents = Agents::start(&env).await;
    add_switches(&env, 0..3).await;
    create_fleet(&env, json!({"updateStrategy": {"type": "OnDelete"}})).await;
    wait_rolled_out(
        &env,
        "True",
        "RolloutComplete",
        "3 of 3 updated, 0 unavailable",
    )
    .await;

    set_args(&env, "v2").await;
    wait_rolled_out(
        &env,
        "False",
        "InProgress",
        "0 of 3 updated, 0 unavailable; OnDelete",
    )
    .await;
    assert!(devices_at(&env, "v2").await.is_empty());

    let admin = env.admin().await;
    dps(&env, &admin)
        .delete(&dp_name(1), &DeleteParams::default())
        .await
        .unwrap();
    wait_rolled_out(&env, "False", "InProgress", "1 of 3 updated, 0 unavailable").await;
    assert_eq!(devices_at(&env, "v2").await, ["sw-01"]);
    assert_eq!(devices_at(&env, "v1").await, ["sw-00", "sw-02"]);
    drop(agents);
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_validates_the_strategy_like_a_real_one() {
    let env = setup().await;
    let admin = env.admin().await;
    let api: Api<DeviceProcessDeployment> = dpds(&env, &admin);
    let base = |name: &str, extra: serde_json::Value| {
        let mut v = json!({
            "apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcessDeployment",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"role": "fleet"}},
                "template": {"spec": {"artifact": {"type": "oci", "url": "x"}, "execution": {"backend": "container"}}}
            }
        });
        for (k, val) in extra.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        v
    };
    let dynamic = kube::api::Api::<kube::api::DynamicObject>::namespaced_with(
        admin.clone(),
        env.namespace(),
        &kube::api::ApiResource::erase::<DeviceProcessDeployment>(&()),
    );
    let refused = |name: &'static str, extra: serde_json::Value| {
        let dynamic = dynamic.clone();
        let body = base(name, extra);
        async move {
            let obj: kube::api::DynamicObject = serde_json::from_value(body).unwrap();
            match dynamic.create(&PostParams::default(), &obj).await {
                Err(kube::Error::Api(s)) => (s.code, s.message),
                other => panic!("{name}: expected a refusal, got {other:?}"),
            }
        }
    };
    let (code, message) = refused("bad-type", json!({"updateStrategy": {"type": "Surge"}})).await;
    assert_eq!(code, 422);
    assert!(
        message.contains(r#"spec.updateStrategy.type: Unsupported value: "Surge": supported values: "RollingUpdate", "OnDelete""#),
        "{message}"
    );
    let (code, message) = refused(
        "bad-max",
        json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": true}}}),
    )
    .await;
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.updateStrategy.rollingUpdate.maxUnavailable")
            && message.contains("integer,string"),
        "{message}"
    );
    let (code, message) = refused("bad-deadline", json!({"progressDeadlineSeconds": 0})).await;
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.progressDeadlineSeconds")
            && message.contains("should be greater than or equal to 1"),
        "{message}"
    );

    // Accepted: a percentage and a number, with the defaults filled in.
    for (name, max) in [("pct", json!("10%")), ("num", json!(3))] {
        let obj: kube::api::DynamicObject = serde_json::from_value(base(
            name,
            json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": max}}}),
        ))
        .unwrap();
        let created = dynamic.create(&PostParams::default(), &obj).await.unwrap();
        assert_eq!(
            created.data["spec"]["updateStrategy"]["type"],
            "RollingUpdate"
        );
        assert_eq!(
            created.data["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            max
        );
        assert_eq!(created.data["spec"]["progressDeadlineSeconds"], 600);
    }
    let obj: kube::api::DynamicObject =
        serde_json::from_value(base("defaults", json!({}))).unwrap();
    let created = dynamic.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(
        created.data["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}})
    );

    // A string that is not a percentage passes the schema (as for a DaemonSet's CRD-less
    // twin it is the controller's check): the controller reports it.
    let ctl = start(&env, config(&env)).await;
    let obj: kube::api::DynamicObject = serde_json::from_value(base(
        "fleet",
        json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": "two"}}}),
    ))
    .unwrap();
    dynamic.create(&PostParams::default(), &obj).await.unwrap();
    eventually("InvalidSpec for maxUnavailable", || async {
        let dpd = api.get("fleet").await.map_err(|e| e.to_string())?;
        let c = dpd
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "InvalidSpec"));
        match c {
            Some(c)
                if c.status == "True"
                    && c.reason == "InvalidUpdateStrategy"
                    && c.message.contains("maxUnavailable") =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    ctl.stop().await.unwrap();
    env.cleanup().await;
}
