//! Kubernetes events (events.k8s.io/v1) on deployments, as `kubectl describe` shows them.
//!
//! The reconciler decides when an event is due (a creation, a deletion, a new failure, a spec
//! turning invalid), so nothing is repeated on resync; this module only writes them.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::metrics::Metrics;

/// `reportingController` of every event.
pub const REPORTING_CONTROLLER: &str = "apollo.azure.com/controller";

/// Severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something needs attention.
    Warning,
}

/// Writes events regarding an object.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    instance: String,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("instance", &self.instance)
            .finish()
    }
}

impl Recorder {
    /// A recorder reporting as `instance` (the replica's identity).
    pub fn new(client: kube::Client, instance: impl Into<String>, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            instance: instance.into(),
            metrics,
        }
    }

    /// Publishes one event; failures are logged, never fatal (events are best effort).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let Some(namespace) = regarding.namespace.clone() else {
            return;
        };
        let now = jiff::Timestamp::now();
        let object = regarding.name.clone().unwrap_or_else(|| "object".into());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(truncate(note, 1024)),
            regarding: Some(regarding.clone()),
            related,
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(truncate(self.instance.clone(), 128)),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        self.metrics.wrote("create", "events");
        if let Err(error) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(%error, reason, object, "could not publish event");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
