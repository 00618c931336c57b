//! Shared helpers of the conformance suite: the test CRD (shaped like DeviceProcess), raw HTTP
//! requests through a kube client, and waiting on conditions with deadlines.
#![allow(dead_code)]

use std::time::Duration;

use apollo_testkit::{TestEnv, poll_until};
use bytes::Bytes;
use http_body_util::BodyExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

pub const GROUP: &str = "conformance.apollo.azure.com";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "Widget";
pub const PLURAL: &str = "widgets";
pub const CRD_NAME: &str = "widgets.conformance.apollo.azure.com";

/// A CRD shaped like DeviceProcess: namespaced, status subresource, printer columns, short name,
/// category, `selectableFields: [.spec.deviceRef.name]`, conditions as a map list keyed by type.
pub fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL, "singular": "widget", "kind": KIND, "listKind": "WidgetList",
                "shortNames": ["wdg"], "categories": ["apollo-conformance"]
            },
            "versions": [{
                "name": VERSION, "served": true, "storage": true,
                "subresources": {"status": {}},
                "selectableFields": [{"jsonPath": ".spec.deviceRef.name"}],
                "additionalPrinterColumns": [
                    {"name": "Device", "type": "string", "jsonPath": ".spec.deviceRef.name"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "deviceRef": {"type": "object", "properties": {"name": {"type": "string"}}},
                                "command": {"type": "array", "items": {"type": "string"}},
                                "replicas": {"type": "integer", "default": 1},
                                "mode": {"type": "string", "enum": ["fast", "slow"]},
                                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string"},
                                "observedGeneration": {"type": "integer", "format": "int64"},
                                "conditions": {
                                    "type": "array",
                                    "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": ["type"],
                                    "items": {
                                        "type": "object",
                                        "required": ["type", "status"],
                                        "properties": {
                                            "type": {"type": "string"},
                                            "status": {"type": "string"},
                                            "reason": {"type": "string"},
                                            "message": {"type": "string"}
                                        }
                                    }
                                }
                            }
                        }
                    }
                }}
            }]
        }
    })
}

pub fn widget_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// Installs the Widget CRD (idempotent server-side apply) and waits until it is Established.
pub async fn install_widgets(env: &TestEnv) {
    let crd = widget_crd();
    let text = serde_json::to_string(&crd).unwrap();
    env.apply_manifest(&text).await.expect("install widget CRD");
}

pub async fn widgets(env: &TestEnv) -> Api<DynamicObject> {
    install_widgets(env).await;
    Api::namespaced_with(env.admin().await, env.namespace(), &widget_resource())
}

pub fn widget(name: &str, device: &str) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"deviceRef": {"name": device}, "command": ["run"]}
    })
}

pub fn widgets_path(env: &TestEnv) -> String {
    format!(
        "/apis/{GROUP}/{VERSION}/namespaces/{}/{PLURAL}",
        env.namespace()
    )
}

/// A raw response: status, headers, body as JSON (or a string for non-JSON).
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Raw {
    pub fn warnings(&self) -> Vec<String> {
        self.headers
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
    pub fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn reason(&self) -> &str {
        self.body
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn rv(&self) -> &str {
        self.body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Sends a request through a kube client (its auth and TLS) and reads the whole body.
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&Value>,
) -> Raw {
    raw_bytes(
        client,
        method,
        path,
        content_type,
        body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        None,
    )
    .await
}

pub async fn raw_bytes(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    accept: Option<&str>,
) -> Raw {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header(http::header::CONTENT_TYPE, ct);
    }
    if let Some(a) = accept {
        req = req.header(http::header::ACCEPT, a);
    }
    let req = req.body(kube::client::Body::from(body)).unwrap();
    let resp = client.send(req).await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes: Bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Raw {
        status,
        headers,
        body,
        text,
    }
}

/// Reads a watch response line by line until `until` says stop or the deadline passes.
pub async fn watch_events(
    client: &kube::Client,
    path: &str,
    deadline: Duration,
    mut until: impl FnMut(&[Value]) -> bool,
) -> (u16, Vec<Value>) {
    let req = http::Request::builder()
        .method("GET")
        .uri(path)
        .body(kube::client::Body::from(Vec::new()))
        .unwrap();
    let resp = client.send(req).await.expect("watch request");
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut events = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if until(&events) {
            break;
        }
        let frame = match tokio::time::timeout_at(end, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            _ => break,
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    events.push(v);
                }
            }
        }
    }
    (status, events)
}

/// Polls `f` until it returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll_until(deadline, || {
        let check = f();
        async move { check.await.ok_or(()) }
    })
    .await
    .ok()
}

pub async fn create_widget(api: &Api<DynamicObject>, name: &str, device: &str) -> DynamicObject {
    let obj: DynamicObject = serde_json::from_value(widget(name, device)).unwrap();
    api.create(&Default::default(), &obj)
        .await
        .expect("create widget")
}

pub fn rv_of(o: &DynamicObject) -> String {
    o.metadata.resource_version.clone().unwrap_or_default()
}

pub fn apply_params(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
}

pub fn merge(v: Value) -> Patch<Value> {
    Patch::Merge(v)
}

/// An admin client without kube's default retry of 429/503/504 (to observe injected faults).
pub async fn no_retry_admin(env: &TestEnv) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(env.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}
