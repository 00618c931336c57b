//! The CPU of a reconcile's pure part at fleet size: `plan`, the rollout gate, the counts and
//! the availability of every device of one deployment, against a cache that holds each
//! device's DeviceProcess as the API server returns it (labels, owner, managedFields, a status
//! with the observed spec hash and `AgentConnected`).
//!
//! During a rollout a deployment is reconciled again at each batch of status changes, so this
//! is the controller's per-device cost that does not depend on the API server. Run it under
//! `valgrind --tool=callgrind` for an instruction profile that machine noise does not move:
//!
//! ```text
//! cargo build --release -p apollo-controller --example reconcile_cost
//! target/release/examples/reconcile_cost --devices 10000 --rounds 20
//! ```
//!
//! It prints the time per device of one steady reconcile (nothing to write: every device
//! unchanged) and of the first reconcile of a rollout (every device to update), beside the
//! time to clone the cache's `Arc`s for the same devices (the least any reconcile that reads
//! the whole cache does), measured in the same run.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use apollo_api::conditions;
use apollo_api::{
    DeviceProcess, DeviceProcessDeployment, DeviceProcessDeploymentSpec, DeviceProcessStatus,
    DeviceProcessTemplate, TemplateMetadata, spec_hash,
};
use apollo_controller::spec_hashes::SpecHashes;
use apollo_controller::{plan, rollout};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, FieldsV1, LabelSelector, ManagedFieldsEntry, Time,
};

/// The per-device CPU of a reconcile's pure part.
#[derive(argh::FromArgs)]
struct Args {
    /// devices of the deployment (default 10000)
    #[argh(option, default = "10_000")]
    devices: usize,
    /// reconciles timed per case (default 20)
    #[argh(option, default = "20")]
    rounds: usize,
}

fn deployment(script: &str) -> DeviceProcessDeployment {
    let mut template = apollo_api::samples::demo_logger_template();
    template.execution.args = vec![script.to_owned()];
    let mut dpd = DeviceProcessDeployment::new(
        "fleet",
        DeviceProcessDeploymentSpec {
            selector: LabelSelector {
                match_labels: Some([("role".to_owned(), "tor".to_owned())].into()),
                match_expressions: None,
            },
            template: DeviceProcessTemplate {
                metadata: TemplateMetadata {
                    labels: [("app".to_owned(), "fleet".to_owned())].into(),
                },
                spec: template,
            },
            update_strategy: None,
            paused: None,
            progress_deadline_seconds: None,
        },
    );
    dpd.metadata.namespace = Some("default".into());
    dpd.metadata.uid = Some("uid-fleet".into());
    dpd.metadata.generation = Some(1);
    dpd
}

/// The cached DeviceProcess of `device` as applied from `dpd` and reported on by its agent.
fn cached(dpd: &DeviceProcessDeployment, device: &str, i: usize) -> Arc<DeviceProcess> {
    let owner = plan::owner_reference(dpd).expect("the deployment has a uid");
    let name = apollo_api::naming::device_process_name("fleet", device);
    let mut dp = plan::desired_object(dpd, &owner, &name, device);
    dp.metadata.uid = Some(format!("uid-dp-{i}"));
    dp.metadata.generation = Some(1);
    dp.metadata.resource_version = Some(format!("{}", 1000 + i));
    let labels: serde_json::Map<String, serde_json::Value> = dp
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, _)| (format!("f:{k}"), serde_json::json!({})))
        .collect();
    dp.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: Some(plan::FIELD_MANAGER.into()),
        operation: Some("Apply".into()),
        api_version: Some("azure.com/v1alpha1".into()),
        fields_type: Some("FieldsV1".into()),
        fields_v1: Some(FieldsV1(serde_json::json!({
            "f:metadata": {"f:labels": labels, "f:ownerReferences": {}},
            "f:spec": {"f:deviceRef": {}, "f:artifact": {}, "f:execution": {}},
        }))),
        ..ManagedFieldsEntry::default()
    }]);
    let now = Time(jiff::Timestamp::now());
    dp.status = Some(DeviceProcessStatus {
        observed_spec_hash: Some(spec_hash(&dp.spec)),
        observed_generation: Some(1),
        conditions: vec![Condition {
            type_: conditions::AGENT_CONNECTED.into(),
            status: "True".into(),
            reason: "HeartbeatReceived".into(),
            message: String::new(),
            last_transition_time: now,
            observed_generation: Some(1),
        }],
        ..DeviceProcessStatus::default()
    });
    Arc::new(dp)
}

/// One reconcile's pure part; returns how many writes it decided (so nothing is optimised
/// away).
fn reconcile(
    dpd: &DeviceProcessDeployment,
    devices: &[String],
    cache: &[Arc<DeviceProcess>],
    hashes: &SpecHashes,
) -> usize {
    let owner = plan::owner_reference(dpd).expect("the deployment has a uid");
    let p = plan::plan(dpd, &owner, devices, cache, &BTreeSet::new());
    let settings = rollout::Settings::of(dpd, devices.len()).expect("a valid strategy");
    let want = plan::Desired::new(dpd, &owner);
    let fleet = rollout::Fleet {
        matching: devices.len(),
        unchanged: &p.unchanged,
        hashes,
    };
    let gated = rollout::gate(&settings, &want, None, fleet, p.apply);
    let current: Vec<(String, &DeviceProcess)> = p
        .unchanged
        .iter()
        .chain(gated.held.iter())
        .map(|(d, dp)| (d.clone(), &**dp))
        .collect();
    let counts = plan::count(dpd, devices.len(), &current, hashes);
    let unavailable = rollout::unavailable_devices(devices, &current, hashes);
    gated.apply.len() + usize::try_from(counts.available).unwrap_or(0) + unavailable.len()
}

/// Time per device of `rounds` calls of `f`, after one untimed call (a running controller
/// has each cached DeviceProcess's spec hash remembered already).
fn per_device_ns(rounds: usize, devices: usize, f: &mut dyn FnMut() -> usize) -> f64 {
    let mut sink = f();
    let started = Instant::now();
    for _ in 0..rounds {
        sink += f();
    }
    let elapsed = started.elapsed();
    std::hint::black_box(sink);
    elapsed.as_nanos() as f64 / (rounds * devices) as f64
}

fn main() {
    let Args { devices: n, rounds } = argh::from_env();
    let dpd = deployment("v1");
    let devices: Vec<String> = (0..n).map(|i| format!("tor-{i:06}")).collect();
    let cache: Vec<Arc<DeviceProcess>> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| cached(&dpd, d, i))
        .collect();
    let next = deployment("v2");

    let baseline = per_device_ns(rounds, n, &mut || {
        let copy: Vec<Arc<DeviceProcess>> = cache.to_vec();
        copy.len()
    });
    let hashes = SpecHashes::default();
    let steady = per_device_ns(rounds, n, &mut || {
        reconcile(&dpd, &devices, &cache, &hashes)
    });
    let rollout = per_device_ns(rounds, n, &mut || {
        reconcile(&next, &devices, &cache, &hashes)
    });
    println!("devices {n}, rounds {rounds}");
    println!("baseline (clone the cache's Arcs)   {baseline:>9.0} ns/device");
    println!(
        "steady reconcile (nothing to write) {steady:>9.0} ns/device  ({:.0}x baseline)",
        steady / baseline.max(1.0)
    );
    println!(
        "rollout reconcile (every device)    {rollout:>9.0} ns/device  ({:.0}x baseline)",
        rollout / baseline.max(1.0)
    );
}
