//! Prometheus metrics of the controller (served on `/metrics`).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `apollo_controller_reconciles_total` | counter | `result` = `ok` / `error` |
//! | `apollo_controller_reconcile_errors_total` | counter | `reason` |
//! | `apollo_controller_reconcile_duration_seconds` | histogram | |
//! | `apollo_controller_writes_total` | counter | `verb`, `resource` |
//! | `apollo_controller_managed_objects` | gauge | (DeviceProcesses controlled by a deployment) |
//! | `apollo_controller_deployments` | gauge | (deployments in the cache) |
//! | `apollo_controller_leader` | gauge | 1 while this replica leads (or runs without election) |
//! | `apollo_controller_deployment_devices` | gauge | `namespace`, `deployment`, `state` (see [`DEVICE_STATES`]) |
//! | `apollo_controller_rollout_stalled` | gauge | `namespace`, `deployment`: 1 while `RolledOut` is `False/Stalled` |
//!
//! The per-deployment gauges come from the deployments' `status` as the leader's cache holds it
//! (refreshed before each reconcile); their labels name deployments, never devices, so the
//! series count grows with the number of deployments only, and a deleted deployment's series
//! are removed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_api::DeviceProcessDeployment;
use apollo_api::conditions::{self, reasons};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Error reason.
    pub reason: &'static str,
}

/// `verb`/`resource` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    /// `apply`, `delete`, `patch`, `create`, `update`.
    pub verb: &'static str,
    /// Plural resource, with `/status` for the subresource.
    pub resource: String,
}

/// `namespace`/`deployment` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabel {
    /// Namespace of the deployment.
    pub namespace: String,
    /// Name of the DeviceProcessDeployment.
    pub deployment: String,
}

/// `namespace`/`deployment`/`state` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceStateLabel {
    /// Namespace of the deployment.
    pub namespace: String,
    /// Name of the DeviceProcessDeployment.
    pub deployment: String,
    /// One of [`DEVICE_STATES`].
    pub state: &'static str,
}

/// The `state` values of `apollo_controller_deployment_devices`, from the deployment's status:
/// `desired` (matching devices), `current` (DeviceProcesses that exist), `updated` (spec equals
/// the template), `connected` (`AgentConnected=True`), `stale` (`current - connected`: a
/// DeviceProcess whose agent is not connected), `observed` (agent runs the current spec),
/// `available` and `unavailable` (`desired - available`).
pub const DEVICE_STATES: [&str; 8] = [
    "desired",
    "current",
    "updated",
    "connected",
    "stale",
    "observed",
    "available",
    "unavailable",
];

/// The controller's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Reconciles by result.
    pub reconciles: Family<ResultLabel, Counter>,
    /// Failed reconciles by reason.
    pub errors: Family<ReasonLabel, Counter>,
    /// Reconcile durations.
    pub duration: Histogram,
    /// Writes sent to the API server.
    pub writes: Family<WriteLabel, Counter>,
    /// DeviceProcesses controlled by a deployment.
    pub managed_objects: Gauge,
    /// Deployments in the cache.
    pub deployments: Gauge,
    /// 1 while leading.
    pub leader: Gauge,
    /// Devices per deployment by state.
    pub deployment_devices: Family<DeviceStateLabel, Gauge>,
    /// 1 while a deployment's rollout is stalled.
    pub rollout_stalled: Family<DeploymentLabel, Gauge>,
    /// Deployments whose series are set (to remove those of deleted deployments).
    published: Arc<Mutex<HashSet<DeploymentLabel>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            writes: Family::default(),
            managed_objects: Gauge::default(),
            deployments: Gauge::default(),
            leader: Gauge::default(),
            deployment_devices: Family::default(),
            rollout_stalled: Family::default(),
            published: Arc::default(),
        }
    }
}

impl Metrics {
    /// Metrics registered in `registry` under `apollo_controller_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("apollo_controller");
        r.register(
            "reconciles",
            "Reconciles of DeviceProcessDeployments by result",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by reason",
            m.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            m.duration.clone(),
        );
        r.register(
            "writes",
            "Writes sent to the API server by verb and resource",
            m.writes.clone(),
        );
        r.register(
            "managed_objects",
            "DeviceProcesses controlled by a DeviceProcessDeployment",
            m.managed_objects.clone(),
        );
        r.register(
            "deployments",
            "DeviceProcessDeployments in the cache",
            m.deployments.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
            m.leader.clone(),
        );
        r.register(
            "deployment_devices",
            "Devices of a DeviceProcessDeployment by state (from its status)",
            m.deployment_devices.clone(),
        );
        r.register(
            "rollout_stalled",
            "1 while the deployment's rollout is stalled (RolledOut=False, reason Stalled)",
            m.rollout_stalled.clone(),
        );
        // Start the reconcile counters at zero: a family without series is not exposed, and
        // rate() and alerts need the series before the first error.
        for result in ["ok", "error"] {
            let _ = m.reconciles.get_or_create(&ResultLabel { result });
        }
        for kind in crate::reconcile::ErrorKind::ALL {
            let _ = m.errors.get_or_create(&ReasonLabel {
                reason: kind.metric_label(),
            });
        }
        m
    }

    /// Sets the per-deployment gauges from `deployments` (the cache) and removes the series
    /// of deployments no longer in it.
    pub fn observe_deployments<'a>(
        &self,
        deployments: impl IntoIterator<Item = &'a DeviceProcessDeployment>,
    ) {
        let mut seen = HashSet::new();
        for dpd in deployments {
            let key = DeploymentLabel {
                namespace: dpd.metadata.namespace.clone().unwrap_or_default(),
                deployment: dpd.metadata.name.clone().unwrap_or_default(),
            };
            let status = dpd.status.clone().unwrap_or_default();
            let stale = (status.current_number_scheduled - status.number_agent_connected).max(0);
            let values = [
                status.desired_number_scheduled,
                status.current_number_scheduled,
                status.updated_number_scheduled,
                status.number_agent_connected,
                stale,
                status.number_spec_observed,
                status.number_available,
                status.number_unavailable,
            ];
            for (state, value) in DEVICE_STATES.into_iter().zip(values) {
                self.deployment_devices
                    .get_or_create(&device_state(&key, state))
                    .set(i64::from(value));
            }
            let stalled = status.conditions.iter().any(|c| {
                c.type_ == conditions::ROLLED_OUT
                    && c.status == conditions::status::FALSE
                    && c.reason == reasons::STALLED
            });
            self.rollout_stalled
                .get_or_create(&key)
                .set(i64::from(stalled));
            seen.insert(key);
        }
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        for gone in published.difference(&seen) {
            for state in DEVICE_STATES {
                self.deployment_devices.remove(&device_state(gone, state));
            }
            self.rollout_stalled.remove(gone);
        }
        *published = seen;
    }

    /// Records one reconcile.
    pub fn reconciled(&self, took: Duration, error: Option<crate::reconcile::ErrorKind>) {
        self.duration.observe(took.as_secs_f64());
        match error {
            None => {
                self.reconciles
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
            }
            Some(kind) => {
                self.reconciles
                    .get_or_create(&ResultLabel { result: "error" })
                    .inc();
                self.errors
                    .get_or_create(&ReasonLabel {
                        reason: kind.metric_label(),
                    })
                    .inc();
            }
        }
    }

    /// Records one write (fed by the controller's counting client, see
    /// `apollo_kube::counting`: every request that is not a get, list or watch).
    pub fn wrote(&self, verb: &'static str, resource: &str) {
        self.writes
            .get_or_create(&WriteLabel {
                verb,
                resource: resource.to_string(),
            })
            .inc();
    }

    /// Sum of writes so far.
    pub fn total_writes(&self) -> u64 {
        [
            ("apply", "deviceprocesses"),
            ("delete", "deviceprocesses"),
            ("patch", "deviceprocessdeployments/status"),
            ("create", "events"),
        ]
        .iter()
        .map(|(verb, resource)| {
            self.writes
                .get_or_create(&WriteLabel {
                    verb,
                    resource: resource.to_string(),
                })
                .get()
        })
        .sum()
    }
}

fn device_state(key: &DeploymentLabel, state: &'static str) -> DeviceStateLabel {
    DeviceStateLabel {
        namespace: key.namespace.clone(),
        deployment: key.deployment.clone(),
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.reconciled(Duration::from_millis(3), None);
        m.reconciled(
            Duration::from_millis(3),
            Some(crate::reconcile::ErrorKind::Conflict),
        );
        m.wrote("apply", "deviceprocesses");
        m.managed_objects.set(2);
        m.leader.set(1);
        let text = apollo_process::http::encode_metrics(&registry);
        for needle in [
            "apollo_controller_reconciles_total{result=\"ok\"} 1",
            "apollo_controller_reconciles_total{result=\"error\"} 1",
            "apollo_controller_reconcile_errors_total{reason=\"conflict\"} 1",
            "apollo_controller_reconcile_duration_seconds_count 2",
            "apollo_controller_writes_total{verb=\"apply\",resource=\"deviceprocesses\"} 1",
            "apollo_controller_managed_objects 2",
            "apollo_controller_leader 1",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        assert_eq!(m.total_writes(), 1);
        // Reasons that never happened are there at zero.
        assert!(
            text.contains("apollo_controller_reconcile_errors_total{reason=\"forbidden\"} 0"),
            "{text}"
        );
    }

    fn deployment(name: &str, stalled: bool) -> DeviceProcessDeployment {
        let mut dpd: DeviceProcessDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": apollo_api::API_VERSION,
            "kind": "DeviceProcessDeployment",
            "metadata": { "name": name, "namespace": "ops" },
            "spec": {
                "selector": {},
                "template": { "spec": {
                    "artifact": { "type": "oci", "url": "alpine:3.19" },
                    "execution": { "backend": "container", "command": ["sleep", "1"] }
                } }
            },
            "status": {
                "desiredNumberScheduled": 10,
                "currentNumberScheduled": 9,
                "updatedNumberScheduled": 8,
                "numberAgentConnected": 6,
                "numberSpecObserved": 5,
                "numberAvailable": 5,
                "numberUnavailable": 5,
                "conditions": [{
                    "type": "RolledOut",
                    "status": "False",
                    "reason": if stalled { "Stalled" } else { "InProgress" },
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"
                }]
            }
        }))
        .expect("a deployment");
        dpd.metadata.name = Some(name.to_owned());
        dpd
    }

    #[test]
    fn per_deployment_gauges_follow_the_cache() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let (a, b) = (deployment("logger", true), deployment("exporter", false));
        m.observe_deployments([&a, &b]);
        let text = apollo_process::http::encode_metrics(&registry);
        for needle in [
            "apollo_controller_deployment_devices{namespace=\"ops\",deployment=\"logger\",state=\"desired\"} 10",
            "apollo_controller_deployment_devices{namespace=\"ops\",deployment=\"logger\",state=\"connected\"} 6",
            "apollo_controller_deployment_devices{namespace=\"ops\",deployment=\"logger\",state=\"stale\"} 3",
            "apollo_controller_deployment_devices{namespace=\"ops\",deployment=\"logger\",state=\"observed\"} 5",
            "apollo_controller_deployment_devices{namespace=\"ops\",deployment=\"exporter\",state=\"updated\"} 8",
            "apollo_controller_rollout_stalled{namespace=\"ops\",deployment=\"logger\"} 1",
            "apollo_controller_rollout_stalled{namespace=\"ops\",deployment=\"exporter\"} 0",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        // The deleted deployment's series disappear; the other's stay.
        m.observe_deployments([&b]);
        let text = apollo_process::http::encode_metrics(&registry);
        assert!(!text.contains("deployment=\"logger\""), "{text}");
        assert!(
            text.contains(
                "apollo_controller_rollout_stalled{namespace=\"ops\",deployment=\"exporter\"} 0"
            ),
            "{text}"
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("apollo_controller_deployment_devices{"))
            .count();
        assert_eq!(series, DEVICE_STATES.len(), "{text}");
    }
}
