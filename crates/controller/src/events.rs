//! Kubernetes events (events.k8s.io/v1) on deployments, as `kubectl describe` shows them.
//!
//! The reconciler decides when an event is due (a creation, a deletion, a new failure, a spec
//! turning invalid), so nothing is repeated on resync; this module only writes them, one post
//! per call, through the kube layer's [`apollo_kube::events`] (which builds the Event and says
//! why it is not `kube::runtime::events`).

use apollo_kube::events::{Occurrence, Poster};
use k8s_openapi::api::core::v1::ObjectReference;

pub use apollo_kube::events::EventType;

/// `reportingController` of every event.
pub const REPORTING_CONTROLLER: &str = "apollo.azure.com/controller";

/// Writes events regarding an object.
#[derive(Clone, Debug)]
pub struct Recorder {
    poster: Poster,
}

impl Recorder {
    /// A recorder reporting as `instance` (the replica's identity).
    pub fn new(client: kube::Client, instance: impl Into<String>) -> Self {
        Self {
            poster: Poster::new(client, REPORTING_CONTROLLER, instance),
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
        if regarding.namespace.is_none() {
            return;
        }
        let what = Occurrence {
            type_,
            reason,
            action,
            note: &note,
        };
        let event = self.poster.event(regarding, related, &what, 1);
        if let Err(error) = self.poster.create(&event).await {
            let object = regarding.name.as_deref().unwrap_or("object");
            tracing::warn!(%error, reason, object, "could not publish event");
        }
    }
}
