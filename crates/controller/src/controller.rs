//! Wiring the kube-runtime `Controller`: one watch per kind, each feeding both a reflector
//! cache and the reconcile triggers. The caches keep what the controller reads: the
//! managedFields of other writers (the gateway's status entries, kubectl's) are dropped as
//! objects arrive, since at fleet size they are a large part of every cached object.
//!
//! - DeviceProcessDeployments: the controller's main watch and cache.
//! - DeviceProcesses: owned; a change to one triggers its controller owner.
//! - Inventory (metadata only): a change to an object triggers every deployment in its
//!   namespace whose selector matches its labels, plus the deployments that have a
//!   DeviceProcess for it (so one that stops matching, or is deleted, is cleaned up).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use apollo_api::{DeviceProcess, DeviceProcessDeployment};
use apollo_kube::counting::ApiRequest;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::{PartialObjectMeta, Selector, SelectorExt};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::events::Recorder;
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};

/// Settings of one controller run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Watched namespace (`None` = all).
    pub namespace: Option<String>,
    /// Inventory resource.
    pub inventory: ApiResource,
    /// Concurrent reconciles.
    pub concurrency: u16,
    /// Periodic resync.
    pub resync: Option<std::time::Duration>,
    /// First retry delay.
    pub retry_base: std::time::Duration,
    /// Longest retry delay.
    pub retry_max: std::time::Duration,
    /// Identity reported in events.
    pub identity: String,
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What the inventory cache keeps of a device's metadata: the controller reads its name,
/// namespace, labels and deletion timestamp; other writers' managedFields and kubectl's copy
/// of the whole object (`last-applied-configuration`) are most of its size at fleet scale.
fn trim_inventory(device: &mut PartialObjectMeta<DynamicObject>) {
    device.managed_fields_mut().clear();
    if let Some(annotations) = device.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The annotation `kubectl apply` (client-side) stores the whole applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Deployments to reconcile when an inventory object changes.
fn deployments_for_device(
    device: &PartialObjectMeta<DynamicObject>,
    deployments: &Store<DeviceProcessDeployment>,
    processes: &Store<DeviceProcess>,
) -> Vec<ObjectRef<DeviceProcessDeployment>> {
    let (Some(namespace), Some(name)) = (&device.metadata.namespace, &device.metadata.name) else {
        return Vec::new();
    };
    let labels = device.metadata.labels.clone().unwrap_or_default();
    let mut out: BTreeSet<(String, String)> = BTreeSet::new();
    let here = |meta: &kube::api::ObjectMeta| meta.namespace.as_deref() == Some(namespace.as_str());
    for dpd in deployments.state_filter(|d| here(&d.metadata)) {
        let matches = Selector::try_from(dpd.spec.selector.clone())
            .map(|s| s.matches(&labels))
            .unwrap_or(false);
        if matches {
            out.insert((namespace.clone(), dpd.name_any()));
        }
    }
    for dp in processes.state_filter(|dp| here(&dp.metadata) && &dp.spec.device_ref.name == name) {
        for owner in dp.owner_references() {
            if owner.controller == Some(true) && owner.kind == "DeviceProcessDeployment" {
                out.insert((namespace.clone(), owner.name.clone()));
            }
        }
    }
    out.into_iter()
        .map(|(ns, name)| ObjectRef::new(&name).within(&ns))
        .collect()
}

/// Whether a cache has had its first full list (any number of waiters).
///
/// Set by the watch stream itself after the reflector applied the list's end, so a waiter
/// that wakes up sees the full cache. (`Store::wait_until_ready` is not used: it wakes only the
/// waiter that polled it last, and the controller's own start gate is one of its waiters.)
#[derive(Debug, Clone)]
pub struct Synced(watch::Receiver<bool>);

impl Synced {
    pub(crate) fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Resolves once synced; `false` if the watch ended before.
    pub async fn wait(&self) -> bool {
        let mut rx = self.0.clone();
        rx.wait_for(|synced| *synced).await.is_ok()
    }

    /// Whether synced now.
    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }
}

/// Marks `flag` when the watch stream passes the end of a (re)list.
fn mark_synced<K>(
    flag: watch::Sender<bool>,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            flag.send_replace(true);
        }
    }
}

/// Sync state of a running controller's caches, for readiness.
#[derive(Debug, Clone)]
pub struct Caches {
    /// Deployments.
    pub deployments: Synced,
    /// DeviceProcesses.
    pub processes: Synced,
    /// Inventory metadata.
    pub inventory: Synced,
}

impl Caches {
    /// Resolves once every cache has its first full list (`false` if a watch ended first).
    pub async fn synced(&self) -> bool {
        self.deployments.wait().await && self.processes.wait().await && self.inventory.wait().await
    }
}

/// Builds the controller; the returned future runs it until `shutdown` resolves (running
/// reconciles finish first).
pub fn build(
    client: kube::Client,
    settings: RunSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> (Caches, impl Future<Output = ()> + Send) {
    // Every write (applies, deletes, status patches, Events) is counted as it is sent, by
    // verb and resource (`apollo_controller_writes_total`).
    let client = {
        let metrics = metrics.clone();
        apollo_kube::counting::counting_client(client, move |r: ApiRequest<'_>| {
            if r.is_write() {
                metrics.wrote(r.verb, r.resource);
            }
        })
    };
    let ns = settings.namespace.as_deref();
    let wc = watcher::Config::default();

    let (deployments_synced_tx, deployments_synced) = Synced::new();
    let (deployment_reader, deployment_writer) = reflector::store::<DeviceProcessDeployment>();
    let deployments = watcher(api::<DeviceProcessDeployment>(&client, ns), wc.clone())
        .default_backoff()
        .modify(|dpd| dpd.managed_fields_mut().clear())
        .reflect(deployment_writer)
        .inspect(mark_synced(deployments_synced_tx))
        .applied_objects();

    let (processes_synced_tx, processes_synced) = Synced::new();
    let (process_reader, process_writer) = reflector::store::<DeviceProcess>();
    let processes = watcher(api::<DeviceProcess>(&client, ns), wc.clone())
        .default_backoff()
        .modify(|dp| dp.managed_fields_mut().retain(crate::plan::is_own_apply))
        .reflect(process_writer)
        .inspect(mark_synced(processes_synced_tx))
        .touched_objects();

    let (inventory_synced_tx, inventory_synced) = Synced::new();
    let inventory_api: Api<PartialObjectMeta<DynamicObject>> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &settings.inventory),
        None => Api::all_with(client.clone(), &settings.inventory),
    };
    let inventory_writer = reflector::store::Writer::new(settings.inventory.clone());
    let inventory_reader = inventory_writer.as_reader();
    let inventory = watcher(inventory_api, wc)
        .default_backoff()
        .modify(trim_inventory)
        .reflect(inventory_writer)
        .inspect(mark_synced(inventory_synced_tx))
        .touched_objects();

    let ctl = Controller::for_stream(deployments, deployment_reader.clone())
        .with_config(controller::Config::default().concurrency(settings.concurrency));
    let caches = Caches {
        deployments: deployments_synced,
        processes: processes_synced.clone(),
        inventory: inventory_synced.clone(),
    };
    let mapper = {
        let deployments = deployment_reader.clone();
        let processes = process_reader.clone();
        move |device: PartialObjectMeta<DynamicObject>| {
            deployments_for_device(&device, &deployments, &processes)
        }
    };
    let recorder = Recorder::new(client.clone(), settings.identity.clone());
    let ctx = Arc::new(Context::new(
        client,
        deployment_reader,
        process_reader,
        inventory_reader,
        processes_synced,
        inventory_synced,
        metrics,
        recorder,
        settings.resync,
        settings.retry_base,
        settings.retry_max,
    ));
    let run = ctl
        .owns_stream(processes)
        .watches_stream_with(inventory, mapper, settings.inventory.clone())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(deployment = %object, "reconciled"),
                Err(controller::Error::ReconcilerFailed(_, object)) => {
                    tracing::debug!(deployment = %object, "reconcile failed; retry scheduled");
                }
                Err(controller::Error::ObjectNotFound(object)) => {
                    tracing::debug!(deployment = %object, "deployment gone before its reconcile");
                }
                Err(controller::Error::QueueError(error)) => {
                    tracing::warn!(%error, "watch failed; retrying with backoff");
                }
                Err(error) => tracing::warn!(%error, "controller error"),
            }
        });
    (caches, run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::Event;

    fn dpd(name: &str, ns: &str, selector: &[(&str, &str)]) -> DeviceProcessDeployment {
        let mut d: DeviceProcessDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "azure.com/v1alpha1",
            "kind": "DeviceProcessDeployment",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
            "spec": {
                "selector": {},
                "template": {"spec": {"artifact": {"type": "oci", "url": "x"}, "execution": {"backend": "container"}}}
            }
        }))
        .unwrap();
        d.spec.selector = LabelSelector {
            match_labels: Some(
                selector
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            match_expressions: None,
        };
        d
    }

    fn device(name: &str, ns: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<DynamicObject> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    #[test]
    fn inventory_changes_map_to_matching_and_owning_deployments() {
        let (dreader, mut dwriter) = reflector::store::<DeviceProcessDeployment>();
        let (preader, mut pwriter) = reflector::store::<DeviceProcess>();
        let logger = dpd("demo-logger", "default", &[("role", "tor")]);
        dwriter.apply_watcher_event(&Event::Apply(logger.clone()));
        dwriter.apply_watcher_event(&Event::Apply(dpd(
            "spines",
            "default",
            &[("role", "spine")],
        )));
        dwriter.apply_watcher_event(&Event::Apply(dpd("elsewhere", "other", &[("role", "tor")])));
        let owner = crate::plan::owner_reference(&logger).unwrap();
        let dp = crate::plan::desired_object(&logger, &owner, "demo-logger-tor1-03", "tor1-03");
        pwriter.apply_watcher_event(&Event::Apply(dp));

        let names = |refs: Vec<ObjectRef<DeviceProcessDeployment>>| -> Vec<String> {
            refs.into_iter().map(|r| r.name).collect()
        };
        // Matching now.
        let hit = deployments_for_device(
            &device("tor1-01", "default", &[("role", "tor")]),
            &dreader,
            &preader,
        );
        assert_eq!(names(hit), ["demo-logger"]);
        // Stopped matching, but demo-logger has a DeviceProcess for it.
        let hit = deployments_for_device(
            &device("tor1-03", "default", &[("role", "spine")]),
            &dreader,
            &preader,
        );
        assert_eq!(names(hit), ["demo-logger", "spines"]);
        // Nothing relevant.
        let hit = deployments_for_device(
            &device("tor1-04", "default", &[("role", "leaf")]),
            &dreader,
            &preader,
        );
        assert!(hit.is_empty());
    }

    #[test]
    fn the_inventory_cache_keeps_what_the_controller_reads() {
        let mut d = device("tor1-01", "default", &[("role", "tor")]);
        d.metadata.annotations = Some(
            [
                (
                    LAST_APPLIED.to_owned(),
                    "{\"a\": \"whole object\"}".to_owned(),
                ),
                ("note".to_owned(), "kept".to_owned()),
            ]
            .into(),
        );
        d.metadata.managed_fields = Some(vec![Default::default()]);
        trim_inventory(&mut d);
        assert_eq!(d.metadata.managed_fields.as_deref(), Some(&[][..]));
        assert_eq!(
            d.metadata
                .annotations
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["note"]
        );
        assert_eq!(d.metadata.labels.as_ref().unwrap()["role"], "tor");
        assert_eq!(d.metadata.name.as_deref(), Some("tor1-01"));
    }
}
