//! Kubernetes Events (events.k8s.io/v1) about DeviceProcesses, emitted only on transitions.
//!
//! The status module decides *when* (see [`crate::status`]); this module posts them in the
//! background so a slow or unavailable API server never blocks a device request. Each event is
//! retried with backoff for up to [`EVENT_RETRY_FOR`], then dropped and counted as failed.
//! Events are named `<object>.<hex nanoseconds>` like the Kubernetes recorders, carry
//! `reportingController: azure.com/apollo-gateway` and the pod name as `reportingInstance`,
//! and show up in `kubectl describe deviceprocess` and `kubectl get events`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;

/// `reportingController` of every event.
pub const REPORTING_CONTROLLER: &str = "azure.com/apollo-gateway";
/// How long one event is retried before it is dropped.
pub const EVENT_RETRY_FOR: Duration = Duration::from_secs(120);
/// How long queued events are still posted at shutdown.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);
/// Events waiting to be posted; beyond this they are dropped (and counted).
pub const EVENT_QUEUE: usize = 10_000;

/// Event types.
pub const NORMAL: &str = "Normal";
/// Event types.
pub const WARNING: &str = "Warning";

/// Event reasons (the `reason` column of `kubectl get events`).
pub mod reasons {
    /// First report of the device's agent (for this object).
    pub const AGENT_CONNECTED: &str = "AgentConnected";
    /// A report after the device was stale.
    pub const AGENT_RECONNECTED: &str = "AgentReconnected";
    /// The agent's instance id changed while it stayed connected.
    pub const AGENT_RESTARTED: &str = "AgentRestarted";
    /// No report within the stale window (Warning).
    pub const AGENT_STALE: &str = "AgentStale";
    /// The agent reported the current spec hash.
    pub const SPEC_OBSERVED: &str = "SpecObserved";
}

/// One event to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    pub type_: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Queue side of the recorder (cheap to clone).
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<(Regarding, EventSpec)>,
    metrics: Arc<Metrics>,
}

/// Worker side of the recorder.
#[derive(Debug)]
pub struct EventWorker {
    rx: mpsc::Receiver<(Regarding, EventSpec)>,
    instance: String,
    metrics: Arc<Metrics>,
}

/// A recorder and its worker.
pub fn recorder(metrics: Arc<Metrics>, instance: String) -> (Recorder, EventWorker) {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    (
        Recorder {
            tx,
            metrics: metrics.clone(),
        },
        EventWorker {
            rx,
            instance,
            metrics,
        },
    )
}

impl Recorder {
    /// Queues an event (never blocks).
    pub fn emit(&self, regarding: Regarding, spec: EventSpec) {
        tracing::info!(
            object = %regarding.name,
            reason = spec.reason,
            kind = spec.type_,
            "event: {}",
            spec.note
        );
        let type_ = spec.type_;
        if self.tx.try_send((regarding, spec)).is_err() {
            self.metrics.event(type_, "failed");
            tracing::warn!("event queue full; event dropped");
        }
    }
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The events.k8s.io/v1 object for an event.
pub fn build_event(regarding: &Regarding, spec: &EventSpec, instance: &str) -> Event {
    let now = Timestamp::now();
    let nanos = now.as_nanosecond() as u128 + u128::from(SEQUENCE.fetch_add(1, Ordering::Relaxed));
    // Object names are at most 253 characters; keep room for the suffix.
    let base: String = regarding.name.chars().take(220).collect();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{base}.{nanos:x}")),
            namespace: Some(regarding.namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
        reporting_instance: Some(instance.to_string()),
        action: Some(spec.action.to_string()),
        reason: Some(spec.reason.to_string()),
        type_: Some(spec.type_.to_string()),
        note: Some(spec.note.chars().take(1024).collect()),
        regarding: Some(ObjectReference {
            api_version: Some(apollo_api::API_VERSION.to_string()),
            kind: Some("DeviceProcess".to_string()),
            name: Some(regarding.name.clone()),
            namespace: Some(regarding.namespace.clone()),
            uid: (!regarding.uid.is_empty()).then(|| regarding.uid.clone()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

impl EventWorker {
    /// Posts queued events until shutdown (then drains what is queued, one attempt each).
    pub async fn run(mut self, client: kube::Client, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = tokio::select! {
                next = self.rx.recv() => next,
                _ = crate::stopped(&mut shutdown) => None,
            };
            let Some((regarding, spec)) = next else { break };
            self.post(&client, &regarding, &spec, &mut shutdown).await;
        }
        let drain = async {
            while let Ok((regarding, spec)) = self.rx.try_recv() {
                let api: Api<Event> = Api::namespaced(client.clone(), &regarding.namespace);
                let ev = build_event(&regarding, &spec, &self.instance);
                let result = api.create(&PostParams::default(), &ev).await;
                self.metrics.event(
                    spec.type_,
                    if result.is_ok() { "created" } else { "failed" },
                );
            }
        };
        if tokio::time::timeout(SHUTDOWN_DRAIN, drain).await.is_err() {
            tracing::warn!("events still queued at shutdown were dropped");
        }
    }

    async fn post(
        &self,
        client: &kube::Client,
        regarding: &Regarding,
        spec: &EventSpec,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let api: Api<Event> = Api::namespaced(client.clone(), &regarding.namespace);
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let ev = build_event(regarding, spec, &self.instance);
            match api.create(&PostParams::default(), &ev).await {
                Ok(_) => {
                    self.metrics.event(spec.type_, "created");
                    return;
                }
                Err(e) => {
                    let permanent = matches!(&e, kube::Error::Api(s) if s.code == 403 || s.code == 422 || s.code == 400 || s.code == 404);
                    if permanent || started.elapsed() > EVENT_RETRY_FOR || *shutdown.borrow() {
                        self.metrics.event(spec.type_, "failed");
                        tracing::warn!(object = %regarding.name, reason = spec.reason, error = %e, "event dropped");
                        return;
                    }
                    tracing::debug!(object = %regarding.name, error = %e, "event not posted yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = crate::stopped(shutdown) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_k8s_io_fields() {
        let r = Regarding {
            namespace: "default".into(),
            name: "demo-logger-tor1-01".into(),
            uid: "u1".into(),
        };
        let spec = EventSpec {
            type_: WARNING,
            reason: reasons::AGENT_STALE,
            action: "Heartbeat",
            note: "no report".into(),
        };
        let a = build_event(&r, &spec, "gw-0");
        let b = build_event(&r, &spec, "gw-0");
        let name = a.metadata.name.clone().unwrap();
        assert!(name.starts_with("demo-logger-tor1-01."), "{name}");
        assert_ne!(a.metadata.name, b.metadata.name);
        let v = serde_json::to_value(&a).unwrap();
        for field in [
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
            "type",
            "note",
        ] {
            assert!(v.get(field).is_some(), "{field} in {v}");
        }
        assert_eq!(v["regarding"]["kind"], "DeviceProcess");
        assert_eq!(v["regarding"]["apiVersion"], "azure.com/v1alpha1");
        assert_eq!(v["type"], "Warning");
    }
}
