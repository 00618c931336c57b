//! Status subresource semantics (kube-apiserver-behaviour.md, "Status subresource").

use crate::common;

use apollo_testkit::TestEnv;
use common::*;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn status_merge_patch_changes_only_status() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let created = create_widget(&api, "w1", "tor1-01").await;
    let patched = api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "status": {"phase": "Running"},
                "spec": {"deviceRef": {"name": "other"}},
                "metadata": {"labels": {"sneaky": "yes"}}
            })),
        )
        .await
        .expect("status patch is 200");
    assert_eq!(patched.data["status"]["phase"], "Running");
    assert_eq!(
        patched.data["spec"]["deviceRef"]["name"], "tor1-01",
        "spec ignored"
    );
    assert!(
        patched
            .metadata
            .labels
            .as_ref()
            .is_none_or(|l| !l.contains_key("sneaky")),
        "labels ignored"
    );
    assert_eq!(patched.metadata.generation, created.metadata.generation);
    env.cleanup().await;
}

#[tokio::test]
async fn status_put_ignores_spec_and_get_status_returns_whole_object() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let mut obj = create_widget(&api, "w1", "tor1-01").await;
    obj.data["status"] = json!({"phase": "Pending"});
    obj.data["spec"]["deviceRef"]["name"] = json!("changed");
    let updated = api
        .replace_status("w1", &PostParams::default(), &obj)
        .await
        .expect("PUT /status");
    assert_eq!(updated.data["status"]["phase"], "Pending");
    assert_eq!(updated.data["spec"]["deviceRef"]["name"], "tor1-01");
    let got = api.get_status("w1").await.expect("GET /status");
    assert_eq!(
        got.data["spec"]["deviceRef"]["name"], "tor1-01",
        "whole object"
    );
    assert_eq!(got.data["status"]["phase"], "Pending");
    env.cleanup().await;
}

#[tokio::test]
async fn main_resource_ignores_status() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let created = create_widget(&api, "w1", "tor1-01").await;
    // A patch carrying only status is a no-op: 200 and the same resourceVersion.
    let same = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "X"}})),
        )
        .await
        .expect("200");
    assert_eq!(rv_of(&same), rv_of(&created));
    assert!(
        same.data
            .get("status")
            .is_none_or(|s| s.get("phase").is_none())
    );
    // A PUT with a changed status and a new label keeps the label and ignores the status.
    let mut obj = same.clone();
    obj.data["status"] = json!({"phase": "Y"});
    obj.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let put = api
        .replace("w1", &PostParams::default(), &obj)
        .await
        .expect("PUT");
    assert_eq!(put.metadata.labels.unwrap()["a"], "b");
    assert!(
        put.data
            .get("status")
            .is_none_or(|s| s.get("phase").is_none())
    );
    // Create drops status too.
    let mut w = widget("w2", "tor1-02");
    w["status"] = json!({"phase": "Created"});
    let c = raw(
        &env.admin().await,
        "POST",
        &widgets_path(&env),
        Some("application/json"),
        Some(&w),
    )
    .await;
    assert_eq!(c.status, 201);
    assert!(
        c.body
            .get("status")
            .is_none_or(|s| s.get("phase").is_none())
    );
    env.cleanup().await;
}

#[tokio::test]
async fn json_patch_on_status_and_status_validation() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    create_widget(&api, "w1", "tor1-01").await;
    let client = env.admin().await;
    let path = format!("{}/w1/status", widgets_path(&env));
    let r = raw(
        &client,
        "PATCH",
        &path,
        Some("application/json-patch+json"),
        Some(&json!([{"op": "add", "path": "/status", "value": {"phase": "Ready", "observedGeneration": 1}}])),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"]["phase"], "Ready");
    // Status is validated.
    let bad = raw(
        &client,
        "PATCH",
        &path,
        Some("application/merge-patch+json"),
        Some(&json!({"status": {"observedGeneration": "string"}})),
    )
    .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert_eq!(bad.reason(), "Invalid");
    assert_eq!(
        bad.message(),
        format!(
            "{KIND}.{GROUP} \"w1\" is invalid: status.observedGeneration: Invalid value: \"string\": observedGeneration in body must be of type integer: \"string\""
        )
    );
    // A cause's message is the error without the field name.
    assert_eq!(
        bad.body["details"]["causes"],
        json!([{
            "reason": "FieldValueTypeInvalid",
            "message": "Invalid value: \"string\": observedGeneration in body must be of type integer: \"string\"",
            "field": "status.observedGeneration"
        }])
    );
    env.cleanup().await;
}

#[tokio::test]
async fn stale_put_is_409_conflict() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let created = create_widget(&api, "w1", "tor1-01").await;
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"command": ["x"]}})),
    )
    .await
    .unwrap();
    let mut stale = created.clone();
    stale.data["spec"]["command"] = json!(["y"]);
    let err = api
        .replace("w1", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
            assert_eq!(
                s.message,
                format!(
                    "Operation cannot be fulfilled on {PLURAL}.{GROUP} \"w1\": the object has been modified; please apply your changes to the latest version and try again"
                )
            );
        }
        other => panic!("expected 409, got {other:?}"),
    }
    env.cleanup().await;
}
