//! The optional rollout step (`apollo-demo local --rollout-devices N`, docs/DEMO.md): roll a
//! template change to N switches two at a time, pause half-way, resume, and check on every watch
//! event that no more than two DeviceProcesses were updated-but-unobserved or disconnected.
//!
//! It runs after the runbook's nine steps with its own switches (`rollout-01` …), deployment
//! (`rollout-demo`) and agents (real agent processes, keys derived from the demo's master
//! key), and removes them at the end, so the runbook's objects are untouched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use apollo_api::conditions::{AGENT_CONNECTED, ROLLED_OUT};
use apollo_api::{DeviceProcess, DeviceProcessDeployment, NetworkSwitch, spec_hash};
use futures::StreamExt as _;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};

use crate::app::Shared;
use crate::cluster::FIELD_MANAGER;
use crate::report::Step;
use crate::steps::Demo;
use crate::wait::{poll_until, secs};

/// Title of the step in the report.
pub const TITLE: &str = "Rollout: 2 at a time, pause, resume";
/// The step's deployment.
const DEPLOYMENT: &str = "rollout-demo";
/// The inventory label that selects the step's switches.
const ROLE: &str = "rollout";
const MAX_UNAVAILABLE: usize = 2;
const REVISION_LABEL: &str = apollo_api::labels::TEMPLATE_HASH;

fn device(i: usize) -> String {
    format!("rollout-{i:02}")
}

/// Runs the step as step `n` of the report.
pub async fn run_step(shared: &Shared, demo: &mut Demo, n: usize, devices: usize) {
    let step = Step::begin_extra(n, TITLE, &shared.out);
    let devs: Vec<String> = (1..=devices).map(device).collect();
    let r = run(demo, &step, &devs).await;
    let cleanup = clean_up(demo, &devs).await;
    let r = r.and(cleanup).map_err(|e| crate::app::concise(&e));
    shared.push(step.finish(r));
}

async fn run(demo: &mut Demo, step: &Step, devs: &[String]) -> Result<()> {
    ensure!(
        devs.len() > MAX_UNAVAILABLE,
        "--rollout-devices must be more than {MAX_UNAVAILABLE}"
    );
    let Some(local) = demo.local.clone() else {
        bail!("the rollout step runs in local mode only");
    };
    demo.kube
        .apply_switches(devs, &[("site", "sfo"), ("role", ROLE)], "rollout")
        .await?;
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let mf = local.master_key.display().to_string();
    for d in devs {
        let key = crate::app::capture(
            &local.gateway_bin,
            &["keys", "derive", "--master-key-file", &mf, "--device", d],
        )
        .await?;
        crate::app::write_secret(&crate::agents::key_path(&demo.keys_dir, d), &key)?;
        demo.agents.start(d).await?;
    }
    let template = serde_json::json!({
        "metadata": {"labels": {"app": "rollout-demo"}},
        "spec": {
            "artifact": {"type": "oci", "url": "alpine:3.19"},
            "execution": {"backend": "container", "command": ["/bin/sh", "-c"],
                          "args": ["echo v1 on ${APOLLO_DEVICE_NAME}; sleep 3600"]}
        }
    });
    let dpd = serde_json::json!({
        "apiVersion": apollo_api::API_VERSION, "kind": "DeviceProcessDeployment",
        "metadata": {"name": DEPLOYMENT},
        "spec": {
            "selector": {"matchLabels": {"role": ROLE}},
            "template": template,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": MAX_UNAVAILABLE}}
        }
    });
    let deployments = demo.kube.deployments();
    deployments
        .patch(DEPLOYMENT, &apply, &Patch::Apply(&dpd))
        .await
        .context("applying the rollout-demo deployment")?;
    step.did(&format!(
        "{n} switches {first} … {last} (role={ROLE}), one agent each (keys derived from the demo's master key), \
         and deployment {DEPLOYMENT} selecting them with updateStrategy.rollingUpdate.maxUnavailable: {MAX_UNAVAILABLE}",
        n = devs.len(),
        first = devs[0],
        last = devs[devs.len() - 1]
    ));
    let settle = demo.timings.within * 4;
    wait_condition(demo, settle, "True", None).await?;
    step.saw(&format!(
        "RolledOut=True: {}",
        rolled_out(&deployments).await?.2
    ));

    let sampler = Sampler::start(demo.kube.device_processes());
    let started = Instant::now();
    let patch = serde_json::json!({"spec": {"template": {"spec": {"execution": {"args": ["echo v2 on ${APOLLO_DEVICE_NAME}; sleep 3600"]}}}}});
    deployments
        .patch(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    step.did(&format!(
        "$ kubectl patch dpd {DEPLOYMENT} --type merge -p '{patch}'"
    ));
    step.expect(&format!(
        "DeviceProcesses updated {MAX_UNAVAILABLE} at a time in name order, never more than \
         {MAX_UNAVAILABLE} updated-but-unobserved or disconnected (checked on every watch event); \
         paused once {MAX_UNAVAILABLE} are updated: nothing more changes; resumed: RolledOut=True"
    ));
    // Pause as soon as the first ones are through.
    poll_until(settle, Duration::from_millis(20), || {
        let deployments = deployments.clone();
        async move {
            let s = deployments.get(DEPLOYMENT).await.ok()?.status?;
            (s.updated_number_scheduled >= MAX_UNAVAILABLE as i32).then_some(())
        }
    })
    .await
    .ok_or_else(|| anyhow!("the first {MAX_UNAVAILABLE} DeviceProcesses were not updated"))?;
    deployments
        .patch(
            DEPLOYMENT,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"paused": true}})),
        )
        .await?;
    step.did(&format!(
        "$ kubectl patch dpd {DEPLOYMENT} --type merge -p '{{\"spec\":{{\"paused\":true}}}}'"
    ));
    // Paused, and every updated agent has observed its spec: a reconcile ran after the last
    // observation and let nothing more through.
    wait_condition(
        demo,
        settle,
        "False",
        Some(("Paused", "0 unavailable; paused")),
    )
    .await
    .map_err(|e| anyhow!("{e:#} (did the rollout finish before the pause landed?)"))?;
    let (_, _, message) = rolled_out(&deployments).await?;
    let updated = at_revision(demo, &deployments).await?;
    ensure!(
        !updated.is_empty() && updated.len() < devs.len(),
        "paused with {} of {} updated",
        updated.len(),
        devs.len()
    );
    ensure!(
        updated[..] == devs[..updated.len()],
        "updated out of name order: {updated:?}"
    );
    step.saw(&format!(
        "paused at {message:?}; updated, in name order: {}",
        updated.join(", ")
    ));
    let revision = deployments
        .get(DEPLOYMENT)
        .await?
        .status
        .and_then(|s| s.update_revision)
        .unwrap_or_default();
    let selector = format!("{REVISION_LABEL}={revision}");
    demo.show(step, &["get", "dpd", DEPLOYMENT], || message.clone())
        .await;
    demo.show(step, &["get", "dp", "-l", &selector], || updated.join("\n"))
        .await;

    deployments
        .patch(
            DEPLOYMENT,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"paused": false}})),
        )
        .await?;
    step.did(&format!(
        "$ kubectl patch dpd {DEPLOYMENT} --type merge -p '{{\"spec\":{{\"paused\":false}}}}'"
    ));
    let timeout = format!("--timeout={}s", settle.as_secs().max(1));
    let wait_args = [
        "wait",
        &format!("dpd/{DEPLOYMENT}"),
        "--for=condition=RolledOut",
        &timeout,
    ]
    .map(String::from);
    let wait_args: Vec<&str> = wait_args.iter().map(String::as_str).collect();
    match demo.kubectl.run(&wait_args).await {
        Some(Ok(text)) => step.shell(&crate::kubectl::Kubectl::display(&wait_args), &text),
        Some(Err(e)) => return Err(e),
        None => wait_condition(demo, settle, "True", None).await?,
    }
    wait_condition(demo, settle, "True", None).await?;
    let took = started.elapsed();
    let max = sampler.max();
    let samples = sampler.samples();
    drop(sampler);
    ensure!(
        max <= MAX_UNAVAILABLE,
        "{max} DeviceProcesses were unavailable at once (maxUnavailable {MAX_UNAVAILABLE})"
    );
    ensure!(
        at_revision(demo, &deployments).await?.len() == devs.len(),
        "not every DeviceProcess has the new revision"
    );
    let events = demo
        .kube
        .events_for("DeviceProcessDeployment", DEPLOYMENT)
        .await?;
    let reasons: Vec<String> = events
        .iter()
        .filter_map(|e| e.reason.clone())
        .filter(|r| r.starts_with("Rollout"))
        .collect();
    for want in [
        "RolloutStarted",
        "RolloutPaused",
        "RolloutResumed",
        "RolloutComplete",
    ] {
        ensure!(
            reasons.iter().any(|r| r == want),
            "no {want} event (saw {reasons:?})"
        );
    }
    demo.show(step, &["get", "dpd", DEPLOYMENT], || {
        format!("{DEPLOYMENT}: RolledOut=True")
    })
    .await;
    step.saw(&format!(
        "rolled out to {} devices in {} s; at most {max} unavailable over {samples} watch events; \
         events: {}",
        devs.len(),
        secs(took),
        reasons.join(", ")
    ));
    Ok(())
}

/// Devices whose DeviceProcess has the deployment's update revision, sorted.
async fn at_revision(
    demo: &Demo,
    deployments: &Api<DeviceProcessDeployment>,
) -> Result<Vec<String>> {
    let dpd = deployments.get(DEPLOYMENT).await?;
    let revision = apollo_api::template_hash(&dpd.spec.template);
    let mut out: Vec<String> = demo
        .kube
        .processes_of(DEPLOYMENT)
        .await?
        .into_iter()
        .filter(|dp| dp.labels().get(REVISION_LABEL) == Some(&revision))
        .map(|dp| dp.spec.device_ref.name)
        .collect();
    out.sort();
    Ok(out)
}

/// The RolledOut condition (status, reason, message) of the current generation.
async fn rolled_out(
    deployments: &Api<DeviceProcessDeployment>,
) -> Result<(String, String, String)> {
    let dpd = deployments.get(DEPLOYMENT).await?;
    let current = dpd.metadata.generation;
    let c = dpd
        .status
        .filter(|s| s.observed_generation == current)
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == ROLLED_OUT));
    Ok(c.map(|c| (c.status, c.reason, c.message))
        .unwrap_or_default())
}

/// Waits for RolledOut=`status` (and, when given, the reason and a message ending like `tail`).
async fn wait_condition(
    demo: &Demo,
    deadline: Duration,
    status: &str,
    reason: Option<(&str, &str)>,
) -> Result<()> {
    let deployments = demo.kube.deployments();
    let ok = poll_until(deadline, Duration::from_millis(50), || {
        let deployments = deployments.clone();
        async move {
            let (s, r, m) = rolled_out(&deployments).await.ok()?;
            let matches =
                s == status && reason.is_none_or(|(want_r, tail)| r == want_r && m.ends_with(tail));
            matches.then_some(())
        }
    })
    .await;
    match ok {
        Some(()) => Ok(()),
        None => {
            let now = rolled_out(&deployments).await.unwrap_or_default();
            bail!(
                "RolledOut={status}{} not reached within {} s (now {now:?})",
                reason
                    .map(|(r, t)| format!(" {r} …{t}"))
                    .unwrap_or_default(),
                secs(deadline)
            )
        }
    }
}

/// Counts, on every watch event of the step's DeviceProcesses, those updated-but-unobserved
/// or disconnected, from the first event that shows the new template onwards.
struct Sampler {
    max: Arc<Mutex<(usize, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(api: Api<DeviceProcess>) -> Self {
        let max = Arc::new(Mutex::new((0usize, 0u64)));
        let out = max.clone();
        let task = tokio::spawn(async move {
            let label = format!(
                "{}={}",
                apollo_api::labels::DEPLOYMENT,
                apollo_api::naming::label_value(DEPLOYMENT)
            );
            let (reader, writer) = reflector::store::<DeviceProcess>();
            let mut events = watcher(api, watcher::Config::default().labels(&label))
                .default_backoff()
                .reflect(writer)
                .boxed();
            while let Some(Ok(_)) = events.next().await {
                let state = reader.state();
                // The revisions present; the newest template is the one with "v2" in it.
                let revisions: BTreeMap<&str, bool> = state
                    .iter()
                    .filter_map(|dp| {
                        let rev = dp.labels().get(REVISION_LABEL)?;
                        Some((
                            rev.as_str(),
                            dp.spec.execution.args.iter().any(|a| a.contains("v2")),
                        ))
                    })
                    .collect();
                let Some(new) = revisions.iter().find(|(_, v2)| **v2).map(|(r, _)| *r) else {
                    continue;
                };
                let n = state
                    .iter()
                    .filter(|dp| {
                        let s = dp.status.clone().unwrap_or_default();
                        let updated =
                            dp.labels().get(REVISION_LABEL).map(String::as_str) == Some(new);
                        let observed =
                            s.observed_spec_hash.as_deref() == Some(spec_hash(&dp.spec).as_str());
                        (updated && !observed) || !s.is_true(AGENT_CONNECTED)
                    })
                    .count();
                if let Ok(mut m) = out.lock() {
                    m.0 = m.0.max(n);
                    m.1 += 1;
                }
            }
        });
        Sampler { max, task }
    }

    fn max(&self) -> usize {
        self.max.lock().map(|m| m.0).unwrap_or(usize::MAX)
    }

    fn samples(&self) -> u64 {
        self.max.lock().map(|m| m.1).unwrap_or(0)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Stops the step's agents and deletes its deployment and switches.
async fn clean_up(demo: &Demo, devs: &[String]) -> Result<()> {
    for d in devs {
        // An agent that never started is fine.
        let _ = demo.agents.stop(d).await;
    }
    let dp = DeleteParams::default();
    if let Err(e) = demo.kube.deployments().delete(DEPLOYMENT, &dp).await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        return Err(e.into());
    }
    let switches: Api<NetworkSwitch> =
        Api::namespaced(demo.kube.client.clone(), &demo.kube.namespace);
    for d in devs {
        if let Err(e) = switches.delete(d, &dp).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404)
        {
            return Err(e.into());
        }
    }
    Ok(())
}
