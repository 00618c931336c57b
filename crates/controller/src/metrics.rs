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

use std::time::Duration;

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
    pub resource: &'static str,
}

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
        m
    }

    /// Records one reconcile.
    pub fn reconciled(&self, took: Duration, error: Option<&'static str>) {
        self.duration.observe(took.as_secs_f64());
        match error {
            None => {
                self.reconciles
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
            }
            Some(reason) => {
                self.reconciles
                    .get_or_create(&ResultLabel { result: "error" })
                    .inc();
                self.errors.get_or_create(&ReasonLabel { reason }).inc();
            }
        }
    }

    /// Records one write.
    pub fn wrote(&self, verb: &'static str, resource: &'static str) {
        self.writes
            .get_or_create(&WriteLabel { verb, resource })
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
                .get_or_create(&WriteLabel { verb, resource })
                .get()
        })
        .sum()
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
        m.reconciled(Duration::from_millis(3), Some("conflict"));
        m.wrote("apply", "deviceprocesses");
        m.managed_objects.set(2);
        m.leader.set(1);
        let text = apollo_runtime::http::encode_metrics(&registry);
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
    }
}
