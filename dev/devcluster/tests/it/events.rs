//! Events: core/v1 and events.k8s.io/v1 are two views of one store.

use crate::common;

use apollo_testkit::TestEnv;
use common::*;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event as V1Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

fn v1_event(ns: &str, name: &str, regarding: &str) -> serde_json::Value {
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "azure.com/apollo-gateway",
        "reportingInstance": "gw-1",
        "action": "Heartbeat",
        "reason": "AgentConnected",
        "type": "Normal",
        "note": "agent connected",
        "regarding": {"apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND, "name": regarding, "namespace": ns}
    })
}

#[tokio::test]
async fn events_k8s_io_event_is_visible_as_core_event() {
    let env = TestEnv::new().await;
    let ns = env.namespace().to_string();
    let client = env.admin().await;
    let v1: Api<V1Event> = Api::namespaced(client.clone(), &ns);
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), &ns);
    let e: V1Event = serde_json::from_value(v1_event(&ns, "w1.1700000000000000001", "w1")).unwrap();
    v1.create(&PostParams::default(), &e)
        .await
        .expect("create events.k8s.io event");
    let got = core
        .get("w1.1700000000000000001")
        .await
        .expect("same object via core/v1");
    assert_eq!(got.involved_object.name.as_deref(), Some("w1"));
    assert_eq!(got.message.as_deref(), Some("agent connected"));
    assert_eq!(
        got.reporting_component.as_deref(),
        Some("azure.com/apollo-gateway")
    );
    assert_eq!(got.reason.as_deref(), Some("AgentConnected"));
    // Field selectors as kubectl describe uses them.
    let l = core
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name=w1,involvedObject.kind={KIND},involvedObject.namespace={ns}"
        )))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    let l = v1
        .list(&ListParams::default().fields("regarding.name=w1"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    let l = v1
        .list(&ListParams::default().fields("regarding.name=other"))
        .await
        .unwrap();
    assert!(l.items.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn core_event_is_visible_through_events_k8s_io() {
    let env = TestEnv::new().await;
    let ns = env.namespace().to_string();
    let client = env.admin().await;
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), &ns);
    let v1: Api<V1Event> = Api::namespaced(client.clone(), &ns);
    let e: CoreEvent = serde_json::from_value(json!({
        "metadata": {"generateName": "dp-a.", "namespace": ns},
        "involvedObject": {"kind": KIND, "name": "w1", "namespace": ns},
        "reason": "Stale", "message": "agent silent", "type": "Warning",
        "source": {"component": "apollo-gateway"}, "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"
    }))
    .unwrap();
    let created = core
        .create(&PostParams::default(), &e)
        .await
        .expect("core accepts generateName with a dot");
    let name = created.metadata.name.clone().unwrap();
    let got = v1.get(&name).await.unwrap();
    assert_eq!(
        got.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("w1")
    );
    assert_eq!(got.note.as_deref(), Some("agent silent"));
    assert_eq!(
        got.deprecated_source
            .as_ref()
            .and_then(|s| s.component.as_deref()),
        Some("apollo-gateway")
    );
    assert_eq!(got.deprecated_count, Some(1));
    let l = core
        .list(&ListParams::default().fields("type=Warning,reason=Stale,source=apollo-gateway"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn events_k8s_io_is_stricter() {
    let env = TestEnv::new().await;
    let ns = env.namespace().to_string();
    let client = env.admin().await;
    // A trailing-dot generateName is refused by events.k8s.io/v1.
    let mut e = v1_event(&ns, "", "w1");
    e["metadata"] = json!({"generateName": "dp-a.", "namespace": ns});
    let r = raw(
        &client,
        "POST",
        &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        Some("application/json"),
        Some(&e),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message().contains("metadata.generateName"),
        "{}",
        r.message()
    );
    // Missing required fields.
    let bare = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "x.1"}, "type": "Normal", "eventTime": "2026-01-01T00:00:00.000000Z", "regarding": {"kind": KIND, "name": "w1", "namespace": ns}});
    let r = raw(
        &client,
        "POST",
        &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        Some("application/json"),
        Some(&bare),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message().starts_with("Event \"x.1\" is invalid: ["),
        "{}",
        r.message()
    );
    for field in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        assert!(
            r.message().contains(&format!("{field}: Required value")),
            "{field}: {}",
            r.message()
        );
    }
    // eventTime is required.
    let mut no_time = v1_event(&ns, "x.2", "w1");
    no_time.as_object_mut().unwrap().remove("eventTime");
    let r = raw(
        &client,
        "POST",
        &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        Some("application/json"),
        Some(&no_time),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message().contains("eventTime: Required value"),
        "{}",
        r.message()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn watching_events_k8s_io_sees_core_writes_in_its_own_shape() {
    let env = TestEnv::new().await;
    let ns = env.namespace().to_string();
    let client = env.admin().await;
    let path = format!(
        "/apis/events.k8s.io/v1/namespaces/{ns}/events?watch=true&timeoutSeconds=10&fieldSelector=regarding.name%3Dw9"
    );
    let watcher = {
        let client = client.clone();
        tokio::spawn(async move {
            watch_events(&client, &path, std::time::Duration::from_secs(10), |e| {
                !e.is_empty()
            })
            .await
        })
    };
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), &ns);
    for (name, target) in [("other.1", "w8"), ("mine.1", "w9")] {
        let e: CoreEvent = serde_json::from_value(json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": KIND, "name": target, "namespace": ns},
            "reason": "Stale", "message": "agent silent", "type": "Warning"
        }))
        .unwrap();
        core.create(&PostParams::default(), &e).await.unwrap();
    }
    let (status, events) = watcher.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ADDED");
    let obj = &events[0]["object"];
    assert_eq!(obj["apiVersion"], "events.k8s.io/v1");
    assert_eq!(obj["regarding"]["name"], "w9");
    assert_eq!(obj["note"], "agent silent");
    assert!(obj.get("involvedObject").is_none());
    env.cleanup().await;
}
