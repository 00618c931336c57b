//! metadata.generation and resourceVersion rules (kube-apiserver-behaviour.md).

use crate::common;

use apollo_testkit::TestEnv;
use common::*;
use kube::api::{Patch, PatchParams};
use serde_json::json;

#[tokio::test]
async fn generation_bumps_only_on_spec_change() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let created = create_widget(&api, "w1", "tor1-01").await;
    assert_eq!(created.metadata.generation, Some(1));
    let pp = PatchParams::default();
    let labels = api
        .patch(
            "w1",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "1"}, "annotations": {"b": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labels.metadata.generation, Some(1), "labels/annotations");
    assert_ne!(rv_of(&labels), rv_of(&created));
    let status = api
        .patch_status(
            "w1",
            &pp,
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(status.metadata.generation, Some(1), "status write");
    let spec = api
        .patch(
            "w1",
            &pp,
            &Patch::Merge(json!({"spec": {"command": ["new"]}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2), "spec change");
    env.cleanup().await;
}

#[tokio::test]
async fn noop_patch_changes_nothing() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let created = create_widget(&api, "w1", "tor1-01").await;
    let same = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deviceRef": {"name": "tor1-01"}}})),
        )
        .await
        .unwrap();
    assert_eq!(rv_of(&same), rv_of(&created));
    assert_eq!(same.metadata.generation, Some(1));
    env.cleanup().await;
}

#[tokio::test]
async fn metadata_rules_uid_timestamp_generate_name() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let mut w = widget("", "tor1-01");
    w["metadata"] = json!({"generateName": "gen-"});
    let r = raw(
        &env.admin().await,
        "POST",
        &widgets_path(&env),
        Some("application/json"),
        Some(&w),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let name = r.body["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert!(
        r.body["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(
        r.body["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    // Creating the same name again: 409 AlreadyExists.
    let mut again = widget(&name, "x");
    again["metadata"]["name"] = json!(name);
    let dup = raw(
        &env.admin().await,
        "POST",
        &widgets_path(&env),
        Some("application/json"),
        Some(&again),
    )
    .await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.reason(), "AlreadyExists");
    assert_eq!(
        dup.message(),
        format!("{PLURAL}.{GROUP} \"{name}\" already exists")
    );
    // resourceVersions increase.
    let a = create_widget(&api, "a", "d").await;
    let b = create_widget(&api, "b", "d").await;
    assert!(rv_of(&b).parse::<u64>().unwrap() > rv_of(&a).parse::<u64>().unwrap());
    // Not found.
    let nf = raw(
        &env.admin().await,
        "GET",
        &format!("{}/missing", widgets_path(&env)),
        None,
        None,
    )
    .await;
    assert_eq!(nf.status, 404);
    assert_eq!(
        nf.message(),
        format!("{PLURAL}.{GROUP} \"missing\" not found")
    );
    env.cleanup().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let mut w = widget("w1", "d");
    w["metadata"]["finalizers"] = json!(["example.com/hold"]);
    let obj: kube::api::DynamicObject = serde_json::from_value(w).unwrap();
    api.create(&Default::default(), &obj).await.unwrap();
    api.delete("w1", &Default::default()).await.unwrap();
    let held = api.get("w1").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(
        api.get_opt("w1").await.unwrap().is_none(),
        "deleted once finalizers are gone"
    );
    env.cleanup().await;
}
