//! Prometheus metrics of the gateway, served on `/metrics` of the main listener.
//!
//! Exactly these families (OpenMetrics text; counters carry the `_total` suffix). No label
//! ever names a device or an object, so the series count is fixed whatever the fleet size.
//!
//! | Family | Type | Labels |
//! |---|---|---|
//! | `apollo_gateway_http_requests_total` | counter | `route` (desired, report, healthz, readyz, metrics, other), `code` |
//! | `apollo_gateway_desired_not_modified_ratio` | gauge | — (304 answers / all 200+304 answers of `desired`, since start) |
//! | `apollo_gateway_long_polls_held` | gauge | — |
//! | `apollo_gateway_auth_failures_total` | counter | `reason` (missing, malformed, unknown_key, bad_signature, skew, wrong_device, replay, revoked, old_version) |
//! | `apollo_gateway_auth_requests_total` | counter | `version` (v1, v2): requests whose signature verified, by signature version |
//! | `apollo_gateway_status_writes_total` | counter | `result` (success, conflict, error, gone) |
//! | `apollo_gateway_events_total` | counter | `type` (Normal, Warning), `result` (created, updated: a repeat counted into an Event's series, failed; fenced: not posted because the device moved to another replica or the own Lease lapsed) |
//! | `apollo_gateway_connected_devices` | gauge | — |
//! | `apollo_gateway_stale_transitions_total` | counter | — |
//! | `apollo_gateway_api_requests_total` | counter | `verb` (list, watch, get, create, patch, update, delete) |
//! | `apollo_gateway_status_write_queue` | gauge | — (DeviceProcesses whose status write is due and not yet sent, at scrape time; not those held back by `--status-write-interval`) |
//! | `apollo_gateway_ready` | gauge | — (1 while `/readyz` answers 200, at scrape time) |
//! | `apollo_gateway_members` | gauge | — (replicas in this replica's member set, itself included) |
//! | `apollo_gateway_owned_devices` | gauge | — (devices with DeviceProcesses this replica owns) |
//! | `apollo_gateway_lease_held` | gauge | — (1 while its Lease is renewed within the write fence) |
//! | `apollo_gateway_forwarded_reports_total` | counter | `result` (sent, dropped: queue full or owner unreachable, received) |
//! | `apollo_gateway_lease_renewals_total` | counter | `result` (success, failure): renewals (and creations) of the own member Lease |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `route` and `code` of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub code: u16,
}

/// A single `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// A single `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// `type` and `result` of an event.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct EventLabels {
    /// `Normal` or `Warning` (the `type` label).
    pub kind: &'static str,
    pub result: &'static str,
}

impl EncodeLabelSet for EventLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("type", self.kind), ("result", self.result)].encode(encoder)
    }
}

/// A single `version` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

/// A single `verb` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: &'static str,
}

/// Every metric of the gateway, with its registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RouteLabels, Counter>,
    not_modified_ratio: Gauge<f64, AtomicU64>,
    desired_ok: AtomicU64,
    desired_not_modified: AtomicU64,
    pub long_polls_held: Gauge,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub auth_requests: Family<VersionLabels, Counter>,
    pub status_writes: Family<ResultLabels, Counter>,
    pub events: Family<EventLabels, Counter>,
    pub connected_devices: Gauge,
    pub stale_transitions: Counter,
    pub api_requests: Family<VerbLabels, Counter>,
    pub status_write_queue: Gauge,
    pub ready: Gauge,
    pub members: Gauge,
    pub owned_devices: Gauge,
    pub lease_held: Gauge,
    pub forwarded: Family<ResultLabels, Counter>,
    pub lease_renewals: Family<ResultLabels, Counter>,
}

impl Metrics {
    /// A registry with every family registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let http_requests = Family::<RouteLabels, Counter>::default();
        let not_modified_ratio = Gauge::<f64, AtomicU64>::default();
        let long_polls_held = Gauge::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let auth_requests = Family::<VersionLabels, Counter>::default();
        let status_writes = Family::<ResultLabels, Counter>::default();
        let events = Family::<EventLabels, Counter>::default();
        let connected_devices = Gauge::default();
        let stale_transitions = Counter::default();
        let api_requests = Family::<VerbLabels, Counter>::default();
        let status_write_queue = Gauge::default();
        let ready = Gauge::default();
        let members = Gauge::default();
        let owned_devices = Gauge::default();
        let lease_held = Gauge::default();
        let forwarded = Family::<ResultLabels, Counter>::default();
        let lease_renewals = Family::<ResultLabels, Counter>::default();
        registry.register(
            "apollo_gateway_lease_renewals",
            "Renewals of this replica's member Lease, by result (success, failure)",
            lease_renewals.clone(),
        );
        registry.register(
            "apollo_gateway_members",
            "Gateway replicas in this replica's member set (itself included)",
            members.clone(),
        );
        registry.register(
            "apollo_gateway_owned_devices",
            "Devices whose liveness, status and Events this replica owns",
            owned_devices.clone(),
        );
        registry.register(
            "apollo_gateway_lease_held",
            "1 while this replica's member Lease is renewed within its write fence (it may write)",
            lease_held.clone(),
        );
        registry.register(
            "apollo_gateway_forwarded_reports",
            "Reports forwarded between replicas, by result (sent, dropped, received)",
            forwarded.clone(),
        );
        registry.register(
            "apollo_gateway_http_requests",
            "HTTP requests answered, by route and status code",
            http_requests.clone(),
        );
        registry.register(
            "apollo_gateway_desired_not_modified_ratio",
            "Share of desired-state answers that were 304 Not Modified (since start)",
            not_modified_ratio.clone(),
        );
        registry.register(
            "apollo_gateway_long_polls_held",
            "Long-poll requests currently held open",
            long_polls_held.clone(),
        );
        registry.register(
            "apollo_gateway_auth_failures",
            "Requests refused by authentication, by reason",
            auth_failures.clone(),
        );
        registry.register(
            "apollo_gateway_auth_requests",
            "Requests whose signature verified, by signature version (v1 agents remaining)",
            auth_requests.clone(),
        );
        registry.register(
            "apollo_gateway_status_writes",
            "DeviceProcess /status patches sent to the API server, by result",
            status_writes.clone(),
        );
        registry.register(
            "apollo_gateway_events",
            "Kubernetes Events emitted, by type and result",
            events.clone(),
        );
        registry.register(
            "apollo_gateway_connected_devices",
            "Devices whose agent reported within the stale window",
            connected_devices.clone(),
        );
        registry.register(
            "apollo_gateway_stale_transitions",
            "Devices that went from connected to stale",
            stale_transitions.clone(),
        );
        registry.register(
            "apollo_gateway_api_requests",
            "Requests sent to the Kubernetes API server, by verb",
            api_requests.clone(),
        );
        registry.register(
            "apollo_gateway_status_write_queue",
            "DeviceProcesses waiting for a status write",
            status_write_queue.clone(),
        );
        registry.register(
            "apollo_gateway_ready",
            "1 while the gateway is ready (DeviceProcess cache synced, not shutting down)",
            ready.clone(),
        );
        Arc::new(Metrics {
            registry,
            http_requests,
            not_modified_ratio,
            desired_ok: AtomicU64::new(0),
            desired_not_modified: AtomicU64::new(0),
            long_polls_held,
            auth_failures,
            auth_requests,
            status_writes,
            events,
            connected_devices,
            stale_transitions,
            api_requests,
            status_write_queue,
            ready,
            members,
            owned_devices,
            lease_held,
            forwarded,
            lease_renewals,
        })
    }

    /// The registry (for encoding).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        apollo_process::http::encode_metrics(&self.registry)
    }

    /// Counts an HTTP answer.
    pub fn http(&self, route: &'static str, code: u16) {
        self.http_requests
            .get_or_create(&RouteLabels { route, code })
            .inc();
    }

    /// Counts a desired-state answer (200 or 304) for the 304 ratio.
    pub fn desired_answer(&self, not_modified: bool) {
        if not_modified {
            self.desired_not_modified.fetch_add(1, Ordering::Relaxed);
        } else {
            self.desired_ok.fetch_add(1, Ordering::Relaxed);
        }
        let nm = self.desired_not_modified.load(Ordering::Relaxed) as f64;
        let ok = self.desired_ok.load(Ordering::Relaxed) as f64;
        if nm + ok > 0.0 {
            self.not_modified_ratio.set(nm / (nm + ok));
        }
    }

    /// Counts an authentication failure.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a request whose signature verified, by signature version.
    pub fn auth_version(&self, version: &'static str) {
        self.auth_requests
            .get_or_create(&VersionLabels { version })
            .inc();
    }

    /// Counts a status write.
    pub fn status_write(&self, result: &'static str) {
        self.status_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts an event.
    pub fn event(&self, type_: &'static str, result: &'static str) {
        self.events
            .get_or_create(&EventLabels {
                kind: type_,
                result,
            })
            .inc();
    }

    /// Counts an API request.
    pub fn api_request(&self, verb: &'static str) {
        self.api_requests.get_or_create(&VerbLabels { verb }).inc();
    }

    /// Counts forwarded reports.
    pub fn forward(&self, result: &'static str, n: u64) {
        self.forwarded
            .get_or_create(&ResultLabels { result })
            .inc_by(n);
    }

    /// Counts a renewal of the own Lease (`success` or `failure`).
    pub fn lease_renewal(&self, result: &'static str) {
        self.lease_renewals
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Value of a counter family member, for tests and logs.
    pub fn status_writes_of(&self, result: &'static str) -> u64 {
        self.status_writes
            .get_or_create(&ResultLabels { result })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_ratio() {
        let m = Metrics::new();
        m.http("desired", 200);
        m.desired_answer(false);
        m.desired_answer(true);
        m.desired_answer(true);
        m.desired_answer(true);
        m.auth_failure("replay");
        m.status_write("success");
        m.event("Warning", "created");
        m.api_request("patch");
        m.stale_transitions.inc();
        m.connected_devices.set(2);
        m.status_write_queue.set(7);
        m.ready.set(1);
        m.forward("sent", 3);
        m.lease_renewal("failure");
        let text = m.encode();
        for needle in [
            "apollo_gateway_http_requests_total{route=\"desired\",code=\"200\"} 1",
            "apollo_gateway_desired_not_modified_ratio 0.75",
            "apollo_gateway_long_polls_held 0",
            "apollo_gateway_auth_failures_total{reason=\"replay\"} 1",
            "apollo_gateway_status_writes_total{result=\"success\"} 1",
            "apollo_gateway_events_total{type=\"Warning\",result=\"created\"} 1",
            "apollo_gateway_connected_devices 2",
            "apollo_gateway_stale_transitions_total 1",
            "apollo_gateway_api_requests_total{verb=\"patch\"} 1",
            "apollo_gateway_status_write_queue 7",
            "apollo_gateway_ready 1",
            "apollo_gateway_members 0",
            "apollo_gateway_owned_devices 0",
            "apollo_gateway_lease_held 0",
            "apollo_gateway_forwarded_reports_total{result=\"sent\"} 3",
            "apollo_gateway_lease_renewals_total{result=\"failure\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(families, 16, "{text}");
    }
}
