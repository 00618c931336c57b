//! Steps 1, 2 and 6: the CRDs installed with kubectl's UX, the DeviceProcessDeployment fanning
//! out to one DeviceProcess per device, and a template change reaching both devices.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use apollo_api::DeviceProcess;
use kube::ResourceExt as _;
use kube::api::{Patch, PatchParams};

use crate::report::Step;
use crate::wait::{poll_until, secs};

use super::checks::{expected_hashes, status_ok, wait_all};
use super::{DEPLOYMENT, Demo};

// ---------------------------------------------------------------------------------------------
// Step 1

pub(super) async fn step1_crds(demo: &mut Demo, step: &Step) -> Result<()> {
    let crds_dir = demo.kube.crd_dir(&demo.repo).await?;
    let applied = demo.kube.apply_path(&crds_dir).await?;
    step.did(&format!(
        "$ kubectl apply --server-side -f {}\n{}",
        crds_dir.display(),
        applied.join("\n")
    ));
    let rbac_dir = demo.repo.join("k8s/rbac");
    if rbac_dir.is_dir() {
        let applied = demo.kube.apply_path(&rbac_dir).await?;
        step.did(&format!(
            "$ kubectl apply --server-side -f {}\n{}",
            rbac_dir.display(),
            applied.join("\n")
        ));
    } else if demo.local.is_some() {
        step.did(&format!(
            "{} does not exist: the components' RBAC cannot be installed",
            rbac_dir.display()
        ));
    }
    let names: Vec<String> = applied
        .iter()
        .filter_map(|a| a.strip_prefix("customresourcedefinition/"))
        .map(str::to_string)
        .collect();
    step.expect(&format!(
        "within 10 s: {} CRDs Established; short names nsw, dpd, dp; category apollo; printer \
         columns Device/Phase/Connected/Observed on dp and Desired/Current/Up-To-Date/Connected/Observed on dpd",
        names.len()
    ));
    demo.kube
        .wait_established(&names, Duration::from_secs(10))
        .await?;
    let mut problems = Vec::new();
    let mut table = format!(
        "{:<38} {:<10} {:<10} {}\n",
        "NAME", "SHORTNAMES", "CATEGORIES", "PRINTER COLUMNS"
    );
    let want: [(&str, &str, &[&str]); 3] = [
        ("networkswitches.azure.com", "nsw", &[]),
        (
            "deviceprocessdeployments.azure.com",
            "dpd",
            &["Desired", "Current", "Up-To-Date", "Connected", "Observed"],
        ),
        (
            "deviceprocesses.azure.com",
            "dp",
            &["Device", "Phase", "Connected", "Observed"],
        ),
    ];
    for (name, short, columns) in want {
        let crd = match demo.kube.crd(name).await {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{name}: {e:#}"));
                continue;
            }
        };
        let shorts = crd.spec.names.short_names.clone().unwrap_or_default();
        let cats = crd.spec.names.categories.clone().unwrap_or_default();
        let cols: Vec<String> = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == apollo_api::VERSION)
            .and_then(|v| v.additional_printer_columns.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        table.push_str(&format!(
            "{:<38} {:<10} {:<10} {}\n",
            name,
            shorts.join(","),
            cats.join(","),
            cols.join(",")
        ));
        if !shorts.iter().any(|s| s == short) {
            problems.push(format!("{name}: short name {short} missing"));
        }
        if !cats.iter().any(|c| c == apollo_api::CATEGORY) {
            problems.push(format!("{name}: category apollo missing"));
        }
        for c in columns {
            if !cols.iter().any(|x| x.eq_ignore_ascii_case(c)) {
                problems.push(format!("{name}: printer column {c} missing"));
            }
        }
    }
    demo.show(step, &["get", "crd"], || {
        names
            .iter()
            .map(|n| format!("{n}   Established=True"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    demo.show(
        step,
        &["api-resources", "--api-group=azure.com", "-o", "wide"],
        || table.trim_end().to_string(),
    )
    .await;
    if demo.kubectl.available() {
        // The category works end to end (empty for now).
        match demo.kubectl.run(&["get", "apollo"]).await {
            Some(Ok(t)) => step.shell("kubectl get apollo", &t),
            Some(Err(e)) => problems.push(format!("kubectl get apollo: {e:#}")),
            None => {}
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    step.saw("CRDs Established with the expected short names, category and printer columns");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 2

pub(super) async fn step2_fanout(demo: &mut Demo, step: &Step) -> Result<()> {
    // Components that do not come up are reported, and the step still applies the samples:
    // what the controller did (or not) is the check.
    let mut startup_problem = None;
    let started = if let Some(local) = demo.local.clone() {
        Some(
            crate::app::start_components(&demo.sup, &local, &demo.kube.namespace, &demo.timings)
                .await,
        )
    } else if let Some(c) = demo.containers.clone() {
        Some(c.stack.start_components(&c.master_key, &demo.timings).await)
    } else {
        None
    };
    if let Some(started) = started {
        match started {
            Ok(did) => {
                for d in did {
                    step.did(&d);
                }
            }
            Err(e) => {
                step.saw(&format!("{e:#}"));
                startup_problem = Some(e);
            }
        }
    }
    let samples = demo.repo.join("k8s/samples");
    let mut applied = Vec::new();
    for f in ["networkswitches.yaml", "demo-logger.yaml"] {
        let path = samples.join(f);
        applied.extend(demo.kube.apply_path(&path).await?);
        step.did(&format!(
            "$ kubectl apply --server-side -f {}",
            path.display()
        ));
    }
    step.did(&format!("applied {}", applied.join(", ")));
    let t0 = Instant::now();
    let names: Vec<String> = demo.devices.iter().map(|d| demo.dp_name(d)).collect();
    step.expect(&format!(
        "within {} s: exactly {} DeviceProcesses {} (one per device), labels app=logger, \
         {}={DEPLOYMENT}, {}=<device>, owned by deployment {DEPLOYMENT} (controller: true), \
         spec.deviceRef.name = device",
        demo.timings.within.as_secs() * 2,
        names.len(),
        names.join(", "),
        apollo_api::labels::DEPLOYMENT,
        apollo_api::labels::DEVICE,
    ));
    let dpd = demo.kube.deployments().get(DEPLOYMENT).await?;
    let dpd_uid = dpd.metadata.uid.clone().unwrap_or_default();
    // Up to date: each spec is the template plus its device (a DeviceProcess left over from an
    // earlier run with another template does not count until the controller updated it).
    let want = expected_hashes(&dpd, &demo.devices);
    let last = RefCell::new(String::from("no DeviceProcess yet"));
    let deadline = demo.timings.within * 2;
    let got = poll_until(deadline, demo.timings.poll, || {
        let kube = demo.kube.clone();
        let names = names.clone();
        let devices = demo.devices.clone();
        let dpd_uid = dpd_uid.clone();
        let want = &want;
        let last = &last;
        async move {
            let dps = match kube.processes_of(DEPLOYMENT).await {
                Ok(d) => d,
                Err(e) => {
                    *last.borrow_mut() = format!("{e:#}");
                    return None;
                }
            };
            match check_fanout(&dps, &names, &devices, &dpd_uid, want) {
                Ok(()) => Some(dps),
                Err(e) => {
                    *last.borrow_mut() = e;
                    None
                }
            }
        }
    })
    .await;
    demo.show(step, &["get", "networkswitches", "--show-labels"], || {
        "tor1-01  rack=r1,role=tor,site=sfo\ntor1-02  rack=r1,role=tor,site=sfo".into()
    })
    .await;
    let dps = match (got, startup_problem) {
        (Some(dps), None) => dps,
        (Some(_), Some(e)) => return Err(e),
        (None, Some(e)) => {
            return Err(e.context(format!("after {} s: {}", secs(deadline), last.borrow())));
        }
        (None, None) => bail!("after {} s: {}", secs(deadline), last.borrow()),
    };
    let took = t0.elapsed();
    for dp in &dps {
        demo.memo
            .uids
            .insert(dp.name_any(), dp.metadata.uid.clone().unwrap_or_default());
        demo.memo
            .hashes
            .insert(dp.name_any(), apollo_api::spec_hash(&dp.spec));
        demo.memo
            .generations
            .insert(dp.name_any(), dp.metadata.generation.unwrap_or_default());
    }
    let fallback_labels = dps
        .iter()
        .map(|d| {
            let labels: Vec<String> = d.labels().iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}  {}", d.name_any(), labels.join(","))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dpd = demo.kube.deployments().get(DEPLOYMENT).await.ok();
    demo.show(step, &["get", "deviceprocessdeployments"], || {
        let st = dpd.and_then(|d| d.status).unwrap_or_default();
        format!(
            "{:<12} {:<8} {:<8} {:<11} {:<10} {}\n{:<12} {:<8} {:<8} {:<11} {:<10} {}",
            "NAME",
            "DESIRED",
            "CURRENT",
            "UP-TO-DATE",
            "CONNECTED",
            "OBSERVED",
            DEPLOYMENT,
            st.desired_number_scheduled,
            st.current_number_scheduled,
            st.updated_number_scheduled,
            st.number_agent_connected,
            st.number_spec_observed
        )
    })
    .await;
    demo.show(step, &["get", "dp", "--show-labels"], || fallback_labels)
        .await;
    step.saw(&format!(
        "{} created {} s after the deployment was applied; spec hashes {}",
        names.join(", "),
        secs(took),
        demo.memo
            .hashes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

fn check_fanout(
    dps: &[DeviceProcess],
    names: &[String],
    devices: &[String],
    dpd_uid: &str,
    want_hash: &BTreeMap<String, String>,
) -> Result<(), String> {
    let got: Vec<String> = dps.iter().map(|d| d.name_any()).collect();
    if got != names {
        return Err(format!("DeviceProcesses are [{}]", got.join(", ")));
    }
    for (dp, device) in dps.iter().zip(devices) {
        let labels = dp.labels();
        let want = [
            ("app", "logger".to_string()),
            (
                apollo_api::labels::DEPLOYMENT,
                apollo_api::naming::label_value(DEPLOYMENT),
            ),
            (
                apollo_api::labels::DEVICE,
                apollo_api::naming::label_value(device),
            ),
        ];
        for (k, v) in want {
            if labels.get(k) != Some(&v) {
                return Err(format!(
                    "{}: label {k}={:?}, expected {v}",
                    dp.name_any(),
                    labels.get(k)
                ));
            }
        }
        let hash = apollo_api::spec_hash(&dp.spec);
        if want_hash.get(device) != Some(&hash) {
            return Err(format!(
                "{}: spec hash {hash}, the template gives {}",
                dp.name_any(),
                want_hash.get(device).map(String::as_str).unwrap_or("?")
            ));
        }
        if dp.spec.device_ref.name != *device {
            return Err(format!(
                "{}: spec.deviceRef.name={}",
                dp.name_any(),
                dp.spec.device_ref.name
            ));
        }
        let owned = dp.owner_references().iter().any(|o| {
            o.kind == "DeviceProcessDeployment"
                && o.name == DEPLOYMENT
                && o.uid == dpd_uid
                && o.controller == Some(true)
        });
        if !owned {
            return Err(format!(
                "{}: no controller ownerReference to {DEPLOYMENT}",
                dp.name_any()
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 6

pub(super) async fn step6_template_change(demo: &mut Demo, step: &Step) -> Result<()> {
    let patch =
        serde_json::json!({"spec":{"template":{"spec":{"execution":{"args":["echo","updated"]}}}}});
    demo.kube
        .deployments()
        .patch(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("patching the deployment")?;
    step.did(&format!(
        "$ kubectl patch deviceprocessdeployment {DEPLOYMENT} --type merge -p '{patch}'"
    ));
    let old = demo.memo.hashes.clone();
    let uids = demo.memo.uids.clone();
    let patched = demo.kube.deployments().get(DEPLOYMENT).await?;
    let want: BTreeMap<String, String> = expected_hashes(&patched, &demo.devices)
        .into_iter()
        .map(|(d, h)| (apollo_api::naming::device_process_name(DEPLOYMENT, &d), h))
        .collect();
    step.expect(&format!(
        "within {} s on both DeviceProcesses: a new spec hash (≠ {}), observedSpecHash = it, \
         SpecObserved=True; same objects (uid unchanged)",
        demo.timings.within.as_secs(),
        old.values().cloned().collect::<Vec<_>>().join(", ")
    ));
    let r = wait_all(demo, demo.timings.within, |dp| {
        let name = dp.name_any();
        let hash = apollo_api::spec_hash(&dp.spec);
        if want.get(&name) != Some(&hash) {
            return Err(format!("{name}: spec not updated yet"));
        }
        if old.get(&name) == Some(&hash) {
            return Err(format!(
                "{name}: the template change did not change the spec"
            ));
        }
        if uids.get(&name) != dp.metadata.uid.as_ref() {
            return Err(format!("{name}: recreated (uid changed)"));
        }
        status_ok(dp)
    })
    .await;
    demo.show_dps(step).await;
    let took = r.map_err(|e| anyhow!(e))?;
    let dps = demo.kube.processes_of(DEPLOYMENT).await?;
    let mut changes = Vec::new();
    for dp in &dps {
        let name = dp.name_any();
        let new = apollo_api::spec_hash(&dp.spec);
        changes.push(format!(
            "{name}: {} → {new} (observed after {} s, generation {} → {})",
            old.get(&name).map(String::as_str).unwrap_or("?"),
            took.get(&name).map(|d| secs(*d)).unwrap_or_default(),
            demo.memo
                .generations
                .get(&name)
                .copied()
                .unwrap_or_default(),
            dp.metadata.generation.unwrap_or_default()
        ));
        demo.memo.hashes.insert(name.clone(), new);
        demo.memo
            .generations
            .insert(name, dp.metadata.generation.unwrap_or_default());
    }
    step.saw(&changes.join("\n"));
    Ok(())
}
