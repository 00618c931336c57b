//! The write floor: how many DeviceProcess status patches per second the API server takes
//! with the client concurrency the components use. A rollout of N devices needs at least ~2N
//! writes (the controller's spec update and the gateway's status patch per device) and a
//! fan-out N (one create each), so `2N / W` and `N / W` are the least time the API server
//! allows; the benchmark prints each rollout's ratio to them.
//!
//! The measurement creates its own DeviceProcesses (labelled [`FLOOR_LABEL`], which the
//! tracker ignores and the controller never selects), warms up, patches their status round
//! robin with `concurrency` requests in flight for a fixed time, then deletes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apollo_api::DeviceProcess;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};

use crate::cluster::FLOOR_LABEL;

/// The gateway's default `--status-workers`: status patches it has in flight.
pub const GATEWAY_STATUS_WORKERS: usize = 8;
/// The controller's DeviceProcess writes in flight per reconcile (`WRITE_CONCURRENCY`).
pub const CONTROLLER_WRITE_CONCURRENCY: usize = 16;

/// One measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteFloor {
    /// Requests in flight.
    pub concurrency: usize,
    /// Status patches answered 200.
    pub writes: u64,
    /// Patches that failed.
    pub errors: u64,
    /// Wall time of the measurement.
    pub seconds: f64,
    /// `writes / seconds`.
    pub writes_per_second: f64,
}

/// Why the floor could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("creating the write-floor DeviceProcesses: {0}")]
    Create(#[source] kube::Error),
    #[error("the write-floor DeviceProcess does not decode: {0}")]
    Object(#[from] serde_json::Error),
    #[error("no status patch succeeded ({errors} failed; last: {last})")]
    NoWrites { errors: u64, last: String },
}

fn floor_object(name: &str) -> Result<DeviceProcess, serde_json::Error> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcess",
        "metadata": {"name": name, "labels": {FLOOR_LABEL: "true"}},
        "spec": {"deviceRef": {"name": name},
            "artifact": {"type": "oci", "url": "alpine:3.19"},
            "execution": {"backend": "container", "args": ["floor"]}}
    }))
}

/// A status patch like the gateway's (conditions, observed hash, phase); `i` makes every
/// patch a real change.
fn status_patch(i: u64) -> serde_json::Value {
    let now = jiff::Timestamp::now().to_string();
    let status = if i.is_multiple_of(2) { "True" } else { "False" };
    serde_json::json!({"status": {
        "phase": "Pending",
        "observedSpecHash": format!("{:016x}", i),
        "observedGeneration": 1,
        "conditions": [
            {"type": "AgentConnected", "status": status, "reason": "Heartbeat",
             "message": format!("write floor {i}"), "lastTransitionTime": now},
            {"type": "SpecObserved", "status": "True", "reason": "Observed",
             "message": "write floor", "lastTransitionTime": now}
        ]
    }})
}

/// Measures each of `concurrencies` for `duration` against `objects` DeviceProcesses in
/// `namespace`, created first by `admin` and deleted after; `writer` patches (the gateway's
/// identity, so authorization costs what it costs the gateway).
pub async fn measure(
    admin: &kube::Client,
    writer: &kube::Client,
    namespace: &str,
    objects: usize,
    concurrencies: &[usize],
    duration: Duration,
) -> Result<Vec<WriteFloor>, FloorError> {
    let api: Api<DeviceProcess> = Api::namespaced(admin.clone(), namespace);
    let patcher: Api<DeviceProcess> = Api::namespaced(writer.clone(), namespace);
    let object = floor_object("fleetsim-floor")?;
    let names: Vec<String> = (0..objects.max(1))
        .map(|i| format!("fleetsim-floor-{i:05}"))
        .collect();
    futures::stream::iter(names.clone())
        .map(|name| {
            let api = api.clone();
            let mut dp = object.clone();
            dp.metadata.name = Some(name.clone());
            dp.spec.device_ref.name = name;
            async move { api.create(&PostParams::default(), &dp).await }
        })
        .buffer_unordered(CONTROLLER_WRITE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .map_err(FloorError::Create)?;
    let names = Arc::new(names);
    // Warm up (connections, the server's first status writes of the type), not counted.
    let _ = measure_one(
        &patcher,
        &names,
        CONTROLLER_WRITE_CONCURRENCY,
        (duration / 5).min(Duration::from_secs(1)),
    )
    .await;
    let mut out = Vec::new();
    for &concurrency in concurrencies {
        out.push(measure_one(&patcher, &names, concurrency, duration).await?);
    }
    let _ = futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move { api.delete(&name, &DeleteParams::default()).await }
        })
        .buffer_unordered(CONTROLLER_WRITE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    Ok(out)
}

async fn measure_one(
    api: &Api<DeviceProcess>,
    names: &Arc<Vec<String>>,
    concurrency: usize,
    duration: Duration,
) -> Result<WriteFloor, FloorError> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (api, names, next) = (api.clone(), names.clone(), next.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors, mut last) = (0u64, 0u64, String::new());
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let name = &names[i as usize % names.len()];
                    match api
                        .patch_status(
                            name,
                            &PatchParams::default(),
                            &Patch::Merge(status_patch(i)),
                        )
                        .await
                    {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            errors += 1;
                            last = e.to_string();
                        }
                    }
                }
                (ok, errors, last)
            })
        })
        .collect();
    let (mut writes, mut errors, mut last) = (0, 0, String::new());
    for worker in workers {
        if let Ok((o, e, l)) = worker.await {
            writes += o;
            errors += e;
            if !l.is_empty() {
                last = l;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if writes == 0 {
        return Err(FloorError::NoWrites { errors, last });
    }
    Ok(WriteFloor {
        concurrency,
        writes,
        errors,
        seconds,
        writes_per_second: writes as f64 / seconds.max(1e-9),
    })
}
