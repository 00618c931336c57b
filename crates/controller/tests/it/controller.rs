//! The controller against the development API server, over HTTP, as its own ServiceAccount
//! with the RBAC of `k8s/rbac/controller.yaml` (issue 4's test list).

use crate::common;

use std::time::{Duration, Instant};

use apollo_api::{DeviceProcess, DeviceProcessDeployment, spec_hash};
use apollo_controller::metrics::ReasonLabel;
use apollo_devcluster::User;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn runbook_names() -> [&'static str; 2] {
    ["demo-logger-tor1-01", "demo-logger-tor1-02"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_fans_out_to_one_device_process_per_switch() {
    let env = setup().await;
    let ctl = start(&env, config(&env)).await;
    apply_runbook(&env).await;

    wait_for_dps(&env, &runbook_names()).await;
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 0, 0)).await;
    eventually("ready once the caches synced", || async {
        if ctl.readiness.is_ready() {
            Ok(())
        } else {
            Err("not ready".to_owned())
        }
    })
    .await;

    let admin = env.admin().await;
    let dpd = dpds(&env, &admin).get("demo-logger").await.unwrap();
    for (name, device) in [
        ("demo-logger-tor1-01", "tor1-01"),
        ("demo-logger-tor1-02", "tor1-02"),
    ] {
        let dp = dps(&env, &admin).get(name).await.unwrap();
        let labels = dp.labels();
        assert_eq!(labels.get("app").map(String::as_str), Some("logger"));
        assert_eq!(
            labels
                .get("apollo.azure.com/deployment")
                .map(String::as_str),
            Some("demo-logger")
        );
        assert_eq!(
            labels.get("apollo.azure.com/device").map(String::as_str),
            Some(device)
        );
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("apollo-controller")
        );
        let owners = dp.owner_references();
        assert_eq!(owners.len(), 1, "{owners:?}");
        assert_eq!(owners[0].kind, "DeviceProcessDeployment");
        assert_eq!(owners[0].api_version, "azure.com/v1alpha1");
        assert_eq!(owners[0].name, "demo-logger");
        assert_eq!(Some(owners[0].uid.clone()), dpd.uid());
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
        assert_eq!(dp.spec, dpd.spec.template.spec.for_device(device));
        assert_eq!(
            dp.spec.execution.args,
            ["echo hello from ${APOLLO_DEVICE_NAME}; sleep 3600"],
            "template copied verbatim"
        );
        assert_eq!(dp.metadata.generation, Some(1));
        assert!(
            dp.status.is_none(),
            "the controller writes no DeviceProcess status"
        );
    }
    let status = dpd.status.unwrap();
    let available = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert_eq!(available.status, "True");
    assert_eq!(available.reason, "AllUpdated");

    let events = events_for(&env, "demo-logger").await;
    // Both creations of the first reconcile, summed up in one Event.
    let created: Vec<_> = events.iter().filter(|e| e.1 == "Created").collect();
    assert_eq!(created.len(), 1, "{events:?}");
    assert_eq!(created[0].0, "Normal");
    assert_eq!(
        created[0].2,
        "Created 2 DeviceProcesses: demo-logger-tor1-01, demo-logger-tor1-02"
    );
    assert_eq!(
        ctl.metrics
            .errors
            .get_or_create(&ReasonLabel {
                reason: "forbidden"
            })
            .get(),
        0,
        "the RBAC manifest grants everything the controller does"
    );
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_changes_add_and_remove_device_processes() {
    let env = setup().await;
    let ctl = start(&env, config(&env)).await;
    apply_runbook(&env).await;
    wait_for_dps(&env, &runbook_names()).await;

    add_switch(&env, "tor1-03", "{site: sfo, role: tor}").await;
    wait_for_dps(
        &env,
        &[
            "demo-logger-tor1-01",
            "demo-logger-tor1-02",
            "demo-logger-tor1-03",
        ],
    )
    .await;
    wait_for_counts(&env, "demo-logger", (3, 3, 3, 0, 0)).await;

    let admin = env.admin().await;
    switches(&env, &admin)
        .patch(
            "tor1-02",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "spine"}}})),
        )
        .await
        .unwrap();
    wait_for_dps(&env, &["demo-logger-tor1-01", "demo-logger-tor1-03"]).await;
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 0, 0)).await;

    switches(&env, &admin)
        .delete("tor1-01", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_dps(&env, &["demo-logger-tor1-03"]).await;
    wait_for_counts(&env, "demo-logger", (1, 1, 1, 0, 0)).await;

    let events = events_for(&env, "demo-logger").await;
    let deleted: Vec<_> = events.iter().filter(|e| e.1 == "Deleted").collect();
    assert_eq!(deleted.len(), 2, "{events:?}");
    assert!(
        deleted.iter().any(|e| e.2.contains("demo-logger-tor1-02")
            && e.2.contains("no longer matches the selector"))
    );
    assert!(
        deleted
            .iter()
            .any(|e| e.2.contains("demo-logger-tor1-01")
                && e.2.contains("no longer in the inventory"))
    );
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_change_updates_every_device_process() {
    let env = setup().await;
    let ctl = start(&env, config(&env)).await;
    apply_runbook(&env).await;
    wait_for_dps(&env, &runbook_names()).await;
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 0, 0)).await;

    // The gateway's part, played by admin: both agents connected and observed the spec.
    let admin = env.admin().await;
    for name in runbook_names() {
        report_observed(&env, name).await;
    }
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 2, 2)).await;

    // The runbook's step 13.
    dpds(&env, &admin)
        .patch(
            "demo-logger",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec":{"template":{"spec":{"execution":{"args":["echo","updated"]}}}}}),
            ),
        )
        .await
        .unwrap();
    // Default maxUnavailable 1: one DeviceProcess at a time (tor1-01 first, by name); the
    // next one once the first one's agent observed the new spec.
    let updated_ones = || {
        let admin = admin.clone();
        let env = &env;
        async move {
            let list = dps(env, &admin).list(&ListParams::default()).await.unwrap();
            let mut names: Vec<String> = list
                .items
                .iter()
                .filter(|dp| dp.spec.execution.args == ["echo", "updated"])
                .map(|dp| {
                    assert_eq!(dp.metadata.generation, Some(2));
                    dp.name_any()
                })
                .collect();
            names.sort();
            names
        }
    };
    eventually("tor1-01 updated first", || async {
        let names = updated_ones().await;
        if names == ["demo-logger-tor1-01"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    wait_for_counts(&env, "demo-logger", (2, 2, 1, 2, 0)).await;
    assert_eq!(
        updated_ones().await,
        ["demo-logger-tor1-01"],
        "one at a time"
    );
    report_observed(&env, "demo-logger-tor1-01").await;
    eventually("tor1-02 updated once tor1-01 observed", || async {
        let names = updated_ones().await;
        if names.len() == 2 {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    // Up to date again; tor1-02's agent has not observed the new spec yet.
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 2, 1)).await;
    let dpd = dpds(&env, &admin).get("demo-logger").await.unwrap();
    assert_eq!(dpd.metadata.generation, Some(2));
    assert_eq!(dpd.status.unwrap().observed_generation, Some(2));

    report_observed(&env, "demo-logger-tor1-02").await;
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 2, 2)).await;

    let updated: Vec<_> = events_for(&env, "demo-logger")
        .await
        .into_iter()
        .filter(|e| e.1 == "Updated")
        .collect();
    assert_eq!(updated.len(), 2, "{updated:?}");
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

/// Writes what the gateway would: agent connected, current spec hash observed.
async fn report_observed(env: &apollo_testkit::TestEnv, name: &str) {
    let admin = env.admin().await;
    let api = dps(env, &admin);
    let dp = api.get(name).await.unwrap();
    let hash = spec_hash(&dp.spec);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": "Pending",
            "observedSpecHash": hash,
            "observedGeneration": dp.metadata.generation,
            "conditions": [
                {"type": "AgentConnected", "status": "True", "reason": "Heartbeat", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "SpecObserved", "status": "True", "reason": "SpecHashMatched", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ],
            "agent": {"version": "0.1.0", "instanceId": "i-1"}
        }})),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_are_put_back_and_foreign_objects_left_alone() {
    let env = setup().await;
    let admin = env.admin().await;
    // Someone else's DeviceProcess already has the name the controller would pick for tor1-09.
    dps(&env, &admin)
        .create(
            &PostParams::default(),
            &serde_json::from_value::<DeviceProcess>(json!({
                "apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcess",
                "metadata": {"name": "demo-logger-tor1-09", "labels": {"owner": "someone-else"}},
                "spec": {"deviceRef": {"name": "tor1-09"}, "artifact": {"type": "http", "url": "http://x/y"}, "execution": {"backend": "systemd"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let ctl = start(&env, config(&env)).await;
    apply_runbook(&env).await;
    add_switch(&env, "tor1-09", "{site: sfo, role: tor}").await;
    let hashed = apollo_api::naming::hashed_device_process_name("demo-logger", "tor1-09");
    let mut want = [
        "demo-logger-tor1-01".to_owned(),
        "demo-logger-tor1-02".to_owned(),
        "demo-logger-tor1-09".to_owned(),
        hashed.clone(),
    ];
    want.sort();
    let want_refs: Vec<&str> = want.iter().map(String::as_str).collect();
    wait_for_dps(&env, &want_refs).await;
    wait_for_counts(&env, "demo-logger", (3, 3, 3, 0, 0)).await;
    let foreign = dps(&env, &admin).get("demo-logger-tor1-09").await.unwrap();
    assert!(
        foreign.owner_references().is_empty(),
        "foreign object untouched"
    );
    assert_eq!(foreign.labels().len(), 1);
    assert_eq!(foreign.spec.artifact.url, "http://x/y");
    assert_eq!(
        dps(&env, &admin)
            .get(&hashed)
            .await
            .unwrap()
            .spec
            .device_ref
            .name,
        "tor1-09"
    );

    // Hand-deleted: recreated (a new object).
    let old_uid = dps(&env, &admin)
        .get("demo-logger-tor1-01")
        .await
        .unwrap()
        .uid();
    dps(&env, &admin)
        .delete("demo-logger-tor1-01", &DeleteParams::default())
        .await
        .unwrap();
    eventually("demo-logger-tor1-01 recreated", || {
        let admin = admin.clone();
        let env = &env;
        let old_uid = old_uid.clone();
        async move {
            match dps(env, &admin)
                .get_opt("demo-logger-tor1-01")
                .await
                .unwrap()
            {
                Some(dp) if dp.uid() != old_uid => Ok(()),
                other => Err(format!("{:?}", other.map(|d| d.uid()))),
            }
        }
    })
    .await;

    // Hand-edited spec: put back.
    dps(&env, &admin)
        .patch(
            "demo-logger-tor1-02",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"execution": {"args": ["hacked"]}, "artifact": {"url": "evil:1"}}}),
            ),
        )
        .await
        .unwrap();
    eventually("demo-logger-tor1-02 spec restored", || {
        let admin = admin.clone();
        let env = &env;
        async move {
            let dp = dps(env, &admin).get("demo-logger-tor1-02").await.unwrap();
            if dp.spec.execution.args == ["echo hello from ${APOLLO_DEVICE_NAME}; sleep 3600"]
                && dp.spec.artifact.url == "alpine:3.19"
            {
                Ok(())
            } else {
                Err(format!("{:?}", dp.spec))
            }
        }
    })
    .await;

    // Status written by someone else: counted, never overwritten.
    report_observed(&env, "demo-logger-tor1-02").await;
    wait_for_counts(&env, "demo-logger", (3, 3, 3, 1, 1)).await;
    let dp = dps(&env, &admin).get("demo-logger-tor1-02").await.unwrap();
    let status = dp.status.expect("status kept");
    assert_eq!(
        status.agent.as_ref().map(|a| a.instance_id.clone()),
        Some("i-1".to_owned())
    );
    assert!(status.is_true("AgentConnected"));
    if let Some(dev) = env.dev() {
        let user = env.username(User::Controller);
        assert_eq!(
            dev.requests()
                .count(Some(&user), None, Some("deviceprocesses"), Some("status")),
            0,
            "the controller never touches DeviceProcess status"
        );
    }
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_deployment_garbage_collects_its_device_processes() {
    let env = setup().await;
    let ctl = start(&env, config(&env)).await;
    apply_runbook(&env).await;
    wait_for_dps(&env, &runbook_names()).await;
    let admin = env.admin().await;
    dpds(&env, &admin)
        .delete("demo-logger", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_dps(&env, &[]).await;
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_period_after_convergence_costs_zero_writes() {
    let env = setup().await;
    // Resync often, to show that periodic reconciles write nothing either.
    let ctl = start(
        &env,
        apollo_controller::Config {
            resync_period: Some(Duration::from_millis(300)),
            ..config(&env)
        },
    )
    .await;
    apply_runbook(&env).await;
    wait_for_dps(&env, &runbook_names()).await;
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 0, 0)).await;

    let writes_before = controller_writes(&env, &ctl.metrics);
    let events_before = events_for(&env, "demo-logger").await.len();
    let reconciles = |m: &apollo_controller::Metrics| {
        m.reconciles
            .get_or_create(&apollo_controller::metrics::ResultLabel { result: "ok" })
            .get()
    };
    let reconciles_before = reconciles(&ctl.metrics);
    let rv_before = dpds(&env, &env.admin().await)
        .get("demo-logger")
        .await
        .unwrap()
        .resource_version();
    // Measuring window, not synchronisation: count writes over a fixed interval.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes_after = controller_writes(&env, &ctl.metrics);
    assert_eq!(
        writes_after,
        writes_before,
        "controller wrote during the quiet period: {:?}",
        env.dev().map(|d| d.requests().snapshot())
    );
    assert!(
        reconciles(&ctl.metrics) >= reconciles_before + 2,
        "resyncs ran during the window"
    );
    assert_eq!(events_for(&env, "demo-logger").await.len(), events_before);
    let rv_after = dpds(&env, &env.admin().await)
        .get("demo-logger")
        .await
        .unwrap()
        .resource_version();
    assert_eq!(rv_before, rv_after, "deployment untouched");
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_identity_is_least_privilege() {
    let env = setup().await;
    apply_runbook(&env).await;
    let ctl_client = env.as_user(User::Controller).await;
    let forbidden = |r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(s)) => s.code == 403,
        _ => false,
    };
    let secrets: Api<Secret> = Api::namespaced(ctl_client.clone(), env.namespace());
    assert!(forbidden(
        secrets.list(&ListParams::default()).await.map(|_| ())
    ));
    // May not change a deployment's spec, nor a DeviceProcess's status.
    let spec_patch = dpds(&env, &ctl_client)
        .patch(
            "demo-logger",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"labels": {"x": "y"}}}}})),
        )
        .await
        .map(|_| ());
    assert!(forbidden(spec_patch));
    let switches_write = switches(&env, &ctl_client)
        .delete("tor1-01", &DeleteParams::default())
        .await
        .map(|_| ());
    assert!(forbidden(switches_write));
    let leases: Api<Lease> = Api::namespaced(ctl_client.clone(), env.namespace());
    let other_lease = leases
        .replace(
            "someone-elses-lease",
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "someone-elses-lease"}})).unwrap(),
        )
        .await
        .map(|_| ());
    assert!(forbidden(other_lease));
    // What it needs works.
    dpds(&env, &ctl_client)
        .list(&ListParams::default())
        .await
        .expect("list deployments");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leads_and_the_other_takes_over() {
    let env = setup().await;
    let a = start(
        &env,
        apollo_controller::Config {
            leader_election: Some(leader_config(&env, "replica-a")),
            ..config(&env)
        },
    )
    .await;
    let admin = env.admin().await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), env.namespace());
    let holder = || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt("apollo-deviceprocess-controller")
                .await
                .unwrap()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
        }
    };
    eventually("replica-a leads", || async {
        match holder().await {
            Some(h) if h == "replica-a" && a.is_leading() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let b = start(
        &env,
        apollo_controller::Config {
            leader_election: Some(leader_config(&env, "replica-b")),
            ..config(&env)
        },
    )
    .await;
    apply_runbook(&env).await;
    wait_for_dps(&env, &runbook_names()).await;
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 0, 0)).await;
    assert!(!b.is_leading());
    assert_eq!(b.metrics.total_writes(), 0, "the standby writes nothing");
    assert_eq!(b.metrics.leader.get(), 0);
    assert_eq!(a.metrics.leader.get(), 1);
    assert_eq!(holder().await.as_deref(), Some("replica-a"));

    // Graceful stop (SIGTERM): the Lease is released, so b takes over well before it would
    // have expired.
    a.stop().await.unwrap();
    let stopped = Instant::now();
    eventually("replica-b leads", || async {
        match holder().await {
            Some(h) if h == "replica-b" && b.is_leading() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Well under the 4 s lease duration: the Lease was released, not left to expire.
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "takeover after release took {:?}",
        stopped.elapsed()
    );
    // And b reconciles.
    add_switch(&env, "tor1-03", "{site: sfo, role: tor}").await;
    wait_for_dps(
        &env,
        &[
            "demo-logger-tor1-01",
            "demo-logger-tor1-02",
            "demo-logger-tor1-03",
        ],
    )
    .await;
    assert!(b.metrics.total_writes() > 0);

    // A crashed leader (no release): a new replica takes over once the Lease expires.
    b.crash().await;
    let c = start(
        &env,
        apollo_controller::Config {
            leader_election: Some(leader_config(&env, "replica-c")),
            ..config(&env)
        },
    )
    .await;
    eventually("replica-c leads after the lease expires", || async {
        match holder().await {
            Some(h) if h == "replica-c" && c.is_leading() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let lease = leases.get("apollo-deviceprocess-controller").await.unwrap();
    assert!(lease.spec.unwrap().lease_transitions.unwrap_or(0) >= 2);
    c.stop().await.unwrap();
    let released = leases
        .get("apollo-deviceprocess-controller")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(released, None, "Lease released on graceful stop");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_deployments_get_a_condition_and_an_event_and_others_still_reconcile() {
    let env = setup().await;
    let ctl = start(&env, config(&env)).await;
    env.apply_manifest(
        r#"
apiVersion: azure.com/v1alpha1
kind: DeviceProcessDeployment
metadata:
  name: bad-selector
spec:
  selector:
    matchExpressions:
    - {key: role, operator: Equals, values: [tor]}
  template:
    spec:
      artifact: {type: oci, url: "alpine:3.19"}
      execution: {backend: container}
---
apiVersion: azure.com/v1alpha1
kind: DeviceProcessDeployment
metadata:
  name: bad-template
spec:
  selector:
    matchLabels: {role: tor}
  template:
    metadata:
      labels: {app: "not valid!"}
    spec:
      artifact: {type: oci, url: "alpine:3.19"}
      execution: {backend: container}
"#,
    )
    .await
    .unwrap();
    apply_runbook(&env).await;
    wait_for_dps(&env, &runbook_names()).await;
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 0, 0)).await;

    let admin = env.admin().await;
    for (name, reason, needle) in [
        (
            "bad-selector",
            "InvalidSelector",
            "matchExpressions[0].operator: Unsupported value: \"Equals\"",
        ),
        (
            "bad-template",
            "InvalidTemplate",
            "spec.template.metadata.labels[\"app\"]: Invalid value: \"not valid!\"",
        ),
    ] {
        let cond = eventually(&format!("{name} InvalidSpec"), || {
            let admin = admin.clone();
            let env = &env;
            async move {
                let dpd: DeviceProcessDeployment = dpds(env, &admin).get(name).await.unwrap();
                dpd.status
                    .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "InvalidSpec"))
                    .filter(|c| c.status == "True")
                    .ok_or_else(|| "no InvalidSpec=True".to_owned())
            }
        })
        .await;
        assert_eq!(cond.reason, reason);
        assert!(cond.message.contains(needle), "{}", cond.message);
        let env_ref = &env;
        let events = eventually(&format!("{name} warning event"), || async move {
            let events = events_for(env_ref, name).await;
            if events.iter().any(|e| e.0 == "Warning" && e.1 == reason) {
                Ok(events)
            } else {
                Err(format!("{events:?}"))
            }
        })
        .await;
        let warning = events.iter().find(|e| e.1 == reason).unwrap();
        assert!(warning.2.contains(needle), "{}", warning.2);
        assert_eq!(events.len(), 1, "one event, no repeats: {events:?}");
    }
    // Nothing created for the invalid ones.
    assert_eq!(dp_names(&env).await, runbook_names());

    // Fixing the selector makes it reconcile.
    dpds(&env, &admin)
        .patch(
            "bad-selector",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["tor"]}]}}})),
        )
        .await
        .unwrap();
    wait_for_counts(&env, "bad-selector", (2, 2, 2, 0, 0)).await;
    let mut want = [
        "bad-selector-tor1-01",
        "bad-selector-tor1-02",
        "demo-logger-tor1-01",
        "demo-logger-tor1-02",
    ];
    want.sort();
    wait_for_dps(&env, &want).await;
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_through_api_errors_dropped_watches_and_compaction() {
    let env = setup().await;
    let Some(faults) = env.dev().map(apollo_devcluster::DevCluster::faults) else {
        // Fault injection exists only in the development API server.
        env.cleanup().await;
        return;
    };
    let ctl = start(&env, config(&env)).await;
    apply_runbook(&env).await;
    wait_for_dps(&env, &runbook_names()).await;
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 0, 0)).await;

    // Watches end and history is compacted: the controller relists and sees the new switch.
    faults.drop_watches();
    faults.compact();
    add_switch(&env, "tor1-03", "{site: sfo, role: tor}").await;
    wait_for_dps(
        &env,
        &[
            "demo-logger-tor1-01",
            "demo-logger-tor1-02",
            "demo-logger-tor1-03",
        ],
    )
    .await;

    // Half the requests fail with 503 while the inventory changes.
    faults.fail_share(0.5, 503);
    let admin = env.admin().await;
    retrying("relabel tor1-02", || {
        let api = switches(&env, &admin);
        async move {
            api.patch(
                "tor1-02",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"role": "spine"}}})),
            )
            .await
        }
    })
    .await;
    retrying("create tor1-04", || {
        let api = switches(&env, &admin);
        async move {
            api.create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "azure.com/v1alpha1", "kind": "NetworkSwitch",
                    "metadata": {"name": "tor1-04", "labels": {"site": "sfo", "role": "tor"}},
                    "spec": {"dummy": "ok"}
                }))
                .unwrap(),
            )
            .await
        }
    })
    .await;
    let want = [
        "demo-logger-tor1-01",
        "demo-logger-tor1-03",
        "demo-logger-tor1-04",
    ];
    wait_for_dps(&env, &want).await;
    wait_for_counts(&env, "demo-logger", (3, 3, 3, 0, 0)).await;
    faults.clear();

    // Converged and quiet again. Writes that failed under the faults are retried with
    // backoff and may still land after convergence; the controller must then fall silent (a
    // one-second window with no write) well before the deadline — a hot loop never does.
    wait_for_dps(&env, &want).await;
    wait_for_counts(&env, "demo-logger", (3, 3, 3, 0, 0)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut before = controller_writes(&env, &ctl.metrics);
    loop {
        let window = Instant::now();
        while window.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let now = controller_writes(&env, &ctl.metrics);
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller kept writing after convergence ({before} -> {now})"
        );
        before = now;
    }
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_namespaced_kind_can_be_the_inventory() {
    let env = setup().await;
    // A different inventory kind, found by discovery, and the RBAC to watch it.
    env.apply_manifest(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: routers.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: routers, singular: router, kind: Router}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: apollo-controller-routers
rules:
- apiGroups: ["example.com"]
  resources: ["routers"]
  verbs: ["list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: apollo-controller-routers
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: apollo-controller-routers}
subjects:
- {kind: ServiceAccount, name: apollo-deviceprocess-controller, namespace: default}
---
apiVersion: example.com/v1
kind: Router
metadata:
  name: edge-1
  labels: {role: edge}
---
apiVersion: example.com/v1
kind: Router
metadata:
  name: core-1
  labels: {role: core}
---
apiVersion: azure.com/v1alpha1
kind: DeviceProcessDeployment
metadata:
  name: edge-agent
spec:
  selector:
    matchLabels: {role: edge}
  template:
    spec:
      artifact: {type: oci, url: "alpine:3.19"}
      execution: {backend: container}
"#,
    )
    .await
    .unwrap();
    let ctl = start(
        &env,
        apollo_controller::Config {
            inventory: "Router.v1.example.com".parse().unwrap(),
            ..config(&env)
        },
    )
    .await;
    wait_for_dps(&env, &["edge-agent-edge-1"]).await;
    wait_for_counts(&env, "edge-agent", (1, 1, 1, 0, 0)).await;
    ctl.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_stops_writing() {
    let env = setup().await;
    let a = start(
        &env,
        apollo_controller::Config {
            leader_election: Some(leader_config(&env, "replica-a")),
            ..config(&env)
        },
    )
    .await;
    let mut leading = a.leading.clone();
    tokio::time::timeout(DEADLINE, leading.wait_for(|l| *l))
        .await
        .expect("leads")
        .unwrap();
    // Someone else takes the Lease (as after a long partition).
    let admin = env.admin().await;
    let leases: Api<Lease> = Api::namespaced(admin, env.namespace());
    let mut lease = leases.get("apollo-deviceprocess-controller").await.unwrap();
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("intruder".into());
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            jiff::Timestamp::now(),
        ));
    }
    leases
        .replace(
            "apollo-deviceprocess-controller",
            &PostParams::default(),
            &lease,
        )
        .await
        .unwrap();
    let metrics = a.metrics.clone();
    let result = a.finished().await;
    assert!(
        matches!(result, Err(apollo_controller::Error::LostLeadership)),
        "{result:?}"
    );
    assert_eq!(metrics.leader.get(), 0);
    let holder = leases
        .get("apollo-deviceprocess-controller")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(
        holder.as_deref(),
        Some("intruder"),
        "a lost Lease is not released"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_whose_names_collide_get_distinct_device_processes() {
    let env = setup().await;
    // Deployment "a" on device "b-c" and deployment "a-b" on device "c" both want "a-b-c";
    // both exist before the controller starts, so they are reconciled at the same time.
    env.apply_manifest(
        r#"
apiVersion: azure.com/v1alpha1
kind: NetworkSwitch
metadata: {name: b-c, labels: {grp: left}}
spec: {dummy: ok}
---
apiVersion: azure.com/v1alpha1
kind: NetworkSwitch
metadata: {name: c, labels: {grp: right}}
spec: {dummy: ok}
---
apiVersion: azure.com/v1alpha1
kind: DeviceProcessDeployment
metadata: {name: a}
spec:
  selector: {matchLabels: {grp: left}}
  template:
    spec: {artifact: {type: oci, url: "a:1"}, execution: {backend: container}}
---
apiVersion: azure.com/v1alpha1
kind: DeviceProcessDeployment
metadata: {name: a-b}
spec:
  selector: {matchLabels: {grp: right}}
  template:
    spec: {artifact: {type: oci, url: "ab:1"}, execution: {backend: container}}
"#,
    )
    .await
    .unwrap();
    let ctl = start(&env, config(&env)).await;
    wait_for_counts(&env, "a", (1, 1, 1, 0, 0)).await;
    wait_for_counts(&env, "a-b", (1, 1, 1, 0, 0)).await;
    let admin = env.admin().await;
    let list = dps(&env, &admin)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        list.items.len(),
        2,
        "{:?}",
        list.items.iter().map(|d| d.name_any()).collect::<Vec<_>>()
    );
    let names: Vec<String> = list.items.iter().map(|d| d.name_any()).collect();
    assert!(names.contains(&"a-b-c".to_owned()), "{names:?}");
    for dp in &list.items {
        let owner = dp
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.name.clone());
        let want = if dp.spec.device_ref.name == "b-c" {
            "a"
        } else {
            "a-b"
        };
        assert_eq!(owner.as_deref(), Some(want), "{}", dp.name_any());
        assert_eq!(dp.owner_references().len(), 1);
        let url = if want == "a" { "a:1" } else { "ab:1" };
        assert_eq!(dp.spec.artifact.url, url);
    }
    // And they stay that way.
    let before = controller_writes(&env, &ctl.metrics);
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(controller_writes(&env, &ctl.metrics), before);
    ctl.stop().await.unwrap();
    env.cleanup().await;
}
