//! The write floor: how many DeviceProcess status patches per second the API server takes
//! with the client concurrency the components use. A rollout of N devices needs at least ~2N
//! writes (the controller's spec update and the gateway's status patch per device) and a
//! fan-out N (one create each), so `2N / W` and `N / W` are the least time the API server
//! allows; the benchmark prints each rollout's ratio to them.
//!
//! The controller's spec writes are server-side applies, dearer than a merge patch on every
//! API server (managedFields are computed and compared per field), so the floor is also
//! measured for them ([`FloorWrite::SpecApply`], the controller's identity and field manager):
//! with an apply rate A, a rollout cannot beat `N / A + N / W` when both share one server.
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

/// The controller's field manager (its applies are measured as it makes them).
const CONTROLLER_FIELD_MANAGER: &str = "apollo-controller";

/// What kind of write a floor measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloorWrite {
    /// The gateway's: a JSON merge patch of `status`.
    #[default]
    StatusPatch,
    /// The controller's: a server-side apply (forced) of the whole object, the spec changed.
    SpecApply,
}

impl FloorWrite {
    /// How the table names it.
    pub fn label(self) -> &'static str {
        match self {
            FloorWrite::StatusPatch => "status patches",
            FloorWrite::SpecApply => "spec applies",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteFloor {
    /// The kind of write.
    pub write: FloorWrite,
    /// Requests in flight.
    pub concurrency: usize,
    /// Writes answered 200.
    pub writes: u64,
    /// Writes that failed.
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

/// The clients a floor measurement writes with: each component's own identity, so
/// authorization costs what it costs the component.
#[derive(Clone)]
pub struct Writers {
    /// Status patches (the gateway's identity).
    pub gateway: kube::Client,
    /// Spec applies (the controller's identity).
    pub controller: kube::Client,
}

/// Measures each `(write, concurrency)` of `runs` for `duration` against `objects`
/// DeviceProcesses in `namespace`, created first by `admin` and deleted after.
pub async fn measure(
    admin: &kube::Client,
    writers: &Writers,
    namespace: &str,
    objects: usize,
    runs: &[(FloorWrite, usize)],
    duration: Duration,
) -> Result<Vec<WriteFloor>, FloorError> {
    let api: Api<DeviceProcess> = Api::namespaced(admin.clone(), namespace);
    let patcher: Api<DeviceProcess> = Api::namespaced(writers.gateway.clone(), namespace);
    let applier: Api<DeviceProcess> = Api::namespaced(writers.controller.clone(), namespace);
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
    let writer = Writer {
        patcher,
        applier,
        object: Arc::new(object),
    };
    // Warm up (connections, the server's first writes of each type), not counted.
    let mut warmed = Vec::new();
    for &(write, _) in runs {
        if !warmed.contains(&write) {
            warmed.push(write);
            let warm = (duration / 5).min(Duration::from_secs(1));
            let _ = measure_one(&writer, &names, (write, CONTROLLER_WRITE_CONCURRENCY), warm).await;
        }
    }
    let mut out = Vec::new();
    for &run in runs {
        out.push(measure_one(&writer, &names, run, duration).await?);
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

/// The two ways of writing a floor object.
#[derive(Clone)]
struct Writer {
    patcher: Api<DeviceProcess>,
    applier: Api<DeviceProcess>,
    /// The object applied (name and args set per write).
    object: Arc<DeviceProcess>,
}

impl Writer {
    /// Write number `i` of the kind `write` to `name`.
    async fn write(&self, write: FloorWrite, name: &str, i: u64) -> Result<(), kube::Error> {
        match write {
            FloorWrite::StatusPatch => {
                let patch = Patch::Merge(status_patch(i));
                self.patcher
                    .patch_status(name, &PatchParams::default(), &patch)
                    .await?;
            }
            FloorWrite::SpecApply => {
                let mut dp = (*self.object).clone();
                dp.metadata.name = Some(name.to_owned());
                dp.spec.device_ref.name = name.to_owned();
                dp.spec.execution.args = vec![format!("floor-{i}")];
                let params = PatchParams::apply(CONTROLLER_FIELD_MANAGER).force();
                self.applier
                    .patch(name, &params, &Patch::Apply(&dp))
                    .await?;
            }
        }
        Ok(())
    }
}

async fn measure_one(
    writer: &Writer,
    names: &Arc<Vec<String>>,
    (write, concurrency): (FloorWrite, usize),
    duration: Duration,
) -> Result<WriteFloor, FloorError> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (writer, names, next) = (writer.clone(), names.clone(), next.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors, mut last) = (0u64, 0u64, String::new());
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let name = &names[i as usize % names.len()];
                    match writer.write(write, name, i).await {
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
        write,
        concurrency,
        writes,
        errors,
        seconds,
        writes_per_second: writes as f64 / seconds.max(1e-9),
    })
}
