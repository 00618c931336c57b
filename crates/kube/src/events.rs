//! Kubernetes Events (events.k8s.io/v1): the one place that builds and posts them, for the
//! controller (one post per call) and the gateway (a queue with per-key coalescing into
//! series, rate limits and replica fencing on top, in `apollo-gateway`'s `events` module).
//!
//! Not `kube::runtime::events::Recorder` (kube 5.0): that recorder folds every Event with the
//! same type, action, reason and regarding object within six minutes into one series and keeps
//! the *first* note, so the controller's `Created` Event of a second reconcile (naming other
//! devices than the first's) would show as the first one with `count: 2`, and a second,
//! different `FailedCreate` would hide behind the first message. It also patches the series on
//! every repeat (no rate limit), awaits the API server on the caller's path, keeps its cache
//! per recorder without a bound other than that time, and has no way to cut a post at the end
//! of a Lease fence: the gateway needs its own keyed, rate-limited, fair and fenced queue. What
//! both components share is the object written and how it is written, which is what this
//! module holds: [`build_event`], and [`Poster`] to create an Event or update its series.

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

/// Longest `note` the API server accepts, in bytes.
pub const NOTE_MAX: usize = 1024;
/// Longest `reportingInstance` the API server accepts, in bytes.
pub const REPORTING_INSTANCE_MAX: usize = 128;
/// Characters of the regarded object's name kept in an Event's name (object names are at most
/// 253 characters; this keeps room for the `.<hex>` suffix).
pub const NAME_BASE_MAX: usize = 220;

/// Severity (the Event's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something needs attention.
    Warning,
}

impl EventType {
    /// The `type` field's value (`Normal`, `Warning`).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Who reports an Event: `reportingController` and `reportingInstance` (the replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporter {
    /// `reportingController`, e.g. `apollo.azure.com/controller`.
    pub controller: &'static str,
    /// `reportingInstance` (truncated to [`REPORTING_INSTANCE_MAX`] bytes when built).
    pub instance: String,
}

/// What happened: the fields of an Event its writer chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence<'a> {
    /// Severity.
    pub type_: EventType,
    /// `reason` (the `reason` column of `kubectl get events`).
    pub reason: &'a str,
    /// `action`.
    pub action: &'a str,
    /// `note` (truncated to [`NOTE_MAX`] bytes on a character boundary when built).
    pub note: &'a str,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The events.k8s.io/v1 object for `what` regarding `regarding` (in its namespace), reported
/// by `reporter`, standing for `count` occurrences: more than one gives it a `series`.
///
/// Named `<object>.<hex nanoseconds>` like the Kubernetes recorders (a process-wide sequence
/// added to the nanoseconds keeps two Events of one instant apart); `eventTime` (and the
/// series' `lastObservedTime`) is now.
pub fn build_event(
    reporter: &Reporter,
    regarding: &ObjectReference,
    related: Option<ObjectReference>,
    what: &Occurrence<'_>,
    count: u32,
) -> Event {
    let now = Timestamp::now();
    let nanos = now.as_nanosecond() as u128 + u128::from(SEQUENCE.fetch_add(1, Ordering::Relaxed));
    let base: String = regarding
        .name
        .as_deref()
        .unwrap_or("object")
        .chars()
        .take(NAME_BASE_MAX)
        .collect();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{base}.{nanos:x}")),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        series: (count > 1).then(|| EventSeries {
            count: i32::try_from(count).unwrap_or(i32::MAX),
            last_observed_time: MicroTime(now),
        }),
        reporting_controller: Some(reporter.controller.to_string()),
        reporting_instance: Some(truncate(&reporter.instance, REPORTING_INSTANCE_MAX).to_string()),
        action: Some(what.action.to_string()),
        reason: Some(what.reason.to_string()),
        type_: Some(what.type_.as_str().to_string()),
        note: Some(truncate(what.note, NOTE_MAX).to_string()),
        regarding: Some(regarding.clone()),
        related,
        ..Event::default()
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Posts Events as one reporter: builds them ([`build_event`]), creates them, updates their
/// series. Retrying, rate limiting and deciding when an Event is due are the caller's.
#[derive(Clone)]
pub struct Poster {
    client: kube::Client,
    reporter: Reporter,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl Poster {
    /// A poster writing through `client` as `controller` (`reportingController`) and
    /// `instance` (`reportingInstance`).
    pub fn new(
        client: kube::Client,
        controller: &'static str,
        instance: impl Into<String>,
    ) -> Self {
        Self {
            client,
            reporter: Reporter {
                controller,
                instance: instance.into(),
            },
        }
    }

    /// Who this poster reports as.
    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    /// [`build_event`] as this poster's reporter.
    pub fn event(
        &self,
        regarding: &ObjectReference,
        related: Option<ObjectReference>,
        what: &Occurrence<'_>,
        count: u32,
    ) -> Event {
        build_event(&self.reporter, regarding, related, what, count)
    }

    /// Creates `event` in its namespace (the API server's default namespace of the client
    /// when it has none).
    pub async fn create(&self, event: &Event) -> Result<Event, kube::Error> {
        self.api(event.metadata.namespace.as_deref())
            .create(&PostParams::default(), event)
            .await
    }

    /// Updates the series of the Event `name` in `namespace`: `count` occurrences, the last
    /// one now (a merge patch of `series`, the events.k8s.io form of an aggregated Event).
    pub async fn update_series(
        &self,
        namespace: &str,
        name: &str,
        count: u32,
    ) -> Result<Event, kube::Error> {
        let patch = serde_json::json!({
            "series": {
                "count": i32::try_from(count).unwrap_or(i32::MAX),
                "lastObservedTime": MicroTime(Timestamp::now()),
            }
        });
        self.api(Some(namespace))
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
    }

    fn api(&self, namespace: Option<&str>) -> Api<Event> {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::default_namespaced(self.client.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporter(instance: &str) -> Reporter {
        Reporter {
            controller: "example.com/reporter",
            instance: instance.into(),
        }
    }

    fn regarding(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("azure.com/v1alpha1".into()),
            kind: Some("DeviceProcess".into()),
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..ObjectReference::default()
        }
    }

    fn what(note: &str) -> Occurrence<'_> {
        Occurrence {
            type_: EventType::Warning,
            reason: "AgentStale",
            action: "Heartbeat",
            note,
        }
    }

    #[test]
    fn fields_of_a_single_event() {
        let r = regarding("dp-1");
        let a = build_event(&reporter("gw-0"), &r, None, &what("no report"), 1);
        let b = build_event(&reporter("gw-0"), &r, None, &what("no report"), 1);
        let name = a.metadata.name.clone().unwrap();
        assert!(name.starts_with("dp-1."), "{name}");
        assert_ne!(
            a.metadata.name, b.metadata.name,
            "two Events of one instant"
        );
        assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["reason"], "AgentStale");
        assert_eq!(v["action"], "Heartbeat");
        assert_eq!(v["note"], "no report");
        assert_eq!(v["reportingController"], "example.com/reporter");
        assert_eq!(v["reportingInstance"], "gw-0");
        assert_eq!(v["regarding"]["kind"], "DeviceProcess");
        assert_eq!(v["regarding"]["uid"], "u1");
        assert!(v["eventTime"].is_string());
        assert!(v.get("series").is_none(), "{v}");
        assert!(v.get("related").is_none(), "{v}");
    }

    #[test]
    fn more_than_one_occurrence_is_a_series() {
        let e = build_event(&reporter("gw-0"), &regarding("dp-1"), None, &what("x"), 7);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["series"]["count"], 7);
        assert!(v["series"]["lastObservedTime"].is_string());
        assert_eq!(v["series"]["lastObservedTime"], v["eventTime"]);
        let huge = build_event(
            &reporter("gw-0"),
            &regarding("dp-1"),
            None,
            &what("x"),
            u32::MAX,
        );
        assert_eq!(huge.series.unwrap().count, i32::MAX);
    }

    #[test]
    fn note_and_instance_are_cut_on_a_character_boundary() {
        // 'é' is two bytes: 1023 bytes of 'a' then 'é' straddles the 1 KiB limit.
        let note = format!("{}é and more", "a".repeat(NOTE_MAX - 1));
        let instance = format!("{}€", "i".repeat(REPORTING_INSTANCE_MAX - 1));
        let e = build_event(
            &reporter(&instance),
            &regarding("dp-1"),
            None,
            &what(&note),
            1,
        );
        let cut = e.note.unwrap();
        assert_eq!(cut, "a".repeat(NOTE_MAX - 1));
        let instance = e.reporting_instance.unwrap();
        assert_eq!(instance, "i".repeat(REPORTING_INSTANCE_MAX - 1));
        // Multi-byte characters that fit are kept whole.
        let fits = "é".repeat(NOTE_MAX / 2);
        let e = build_event(&reporter("gw"), &regarding("dp-1"), None, &what(&fits), 1);
        assert_eq!(e.note.unwrap(), fits);
        assert_eq!(truncate("ab€", 3), "ab");
        assert_eq!(truncate("ab€", 5), "ab€");
    }

    #[test]
    fn long_object_names_leave_room_for_the_suffix() {
        let long = "d".repeat(253);
        let e = build_event(&reporter("gw"), &regarding(&long), None, &what("x"), 1);
        let name = e.metadata.name.unwrap();
        assert!(name.len() <= 253, "{}", name.len());
        assert!(name.starts_with(&format!("{}.", "d".repeat(NAME_BASE_MAX))));
        let unnamed = ObjectReference::default();
        let e = build_event(&reporter("gw"), &unnamed, None, &what("x"), 1);
        assert!(e.metadata.name.unwrap().starts_with("object."));
    }
}
