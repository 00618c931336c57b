//! List and watch with label and field selectors, including CRD selectableFields.

use crate::common;

use std::time::Duration;

use apollo_testkit::TestEnv;
use common::*;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

fn names(list: &kube::core::ObjectList<kube::api::DynamicObject>) -> Vec<String> {
    let mut v: Vec<String> = list
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn selectable_fields_on_list() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    create_widget(&api, "a", "tor1-01").await;
    create_widget(&api, "b", "tor1-02").await;
    create_widget(&api, "c", "tor1-01").await;
    let l = api
        .list(&ListParams::default().fields("spec.deviceRef.name=tor1-01"))
        .await
        .unwrap();
    assert_eq!(names(&l), ["a", "c"]);
    let l = api
        .list(&ListParams::default().fields("spec.deviceRef.name==tor1-01"))
        .await
        .unwrap();
    assert_eq!(names(&l), ["a", "c"]);
    let l = api
        .list(&ListParams::default().fields("spec.deviceRef.name!=tor1-01"))
        .await
        .unwrap();
    assert_eq!(names(&l), ["b"]);
    let l = api
        .list(&ListParams::default().fields(&format!(
            "spec.deviceRef.name=tor1-01,metadata.name=c,metadata.namespace={}",
            env.namespace()
        )))
        .await
        .unwrap();
    assert_eq!(names(&l), ["c"]);
    // Cluster-wide.
    let all: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(env.admin().await, &widget_resource());
    let l = all
        .list(&ListParams::default().fields("spec.deviceRef.name=tor1-02"))
        .await
        .unwrap();
    assert!(names(&l).contains(&"b".to_string()));
    env.cleanup().await;
}

#[tokio::test]
async fn undeclared_field_is_400() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let err = api
        .list(&ListParams::default().fields("spec.command=x"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 400);
            assert_eq!(s.message, "field label not supported: spec.command");
        }
        other => panic!("{other:?}"),
    }
    env.cleanup().await;
}

#[tokio::test]
async fn label_selectors_all_operators() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    for (n, labels) in [
        ("a", json!({"site": "sfo", "role": "tor"})),
        ("b", json!({"site": "sea"})),
        ("c", json!({})),
    ] {
        let mut w = widget(n, "d");
        w["metadata"]["labels"] = labels;
        let o: kube::api::DynamicObject = serde_json::from_value(w).unwrap();
        api.create(&Default::default(), &o).await.unwrap();
    }
    let check = |sel: &'static str, want: &'static [&'static str]| {
        let api = api.clone();
        async move {
            let l = api.list(&ListParams::default().labels(sel)).await.unwrap();
            assert_eq!(names(&l), want, "selector {sel}");
        }
    };
    check("site=sfo", &["a"]).await;
    check("site==sfo", &["a"]).await;
    check("site!=sfo", &["b", "c"]).await;
    check("site in (sfo,sea)", &["a", "b"]).await;
    check("site notin (sfo)", &["b", "c"]).await;
    check("site", &["a", "b"]).await;
    check("!site", &["c"]).await;
    check("site=sfo,role=tor", &["a"]).await;
    env.cleanup().await;
}

#[tokio::test]
async fn field_selected_watch_sends_added_and_deleted_on_transitions() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let a = create_widget(&api, "a", "tor1-02").await;
    let client = env.admin().await;
    let path = format!(
        "{}?watch=true&fieldSelector=spec.deviceRef.name%3Dtor1-01&resourceVersion={}&timeoutSeconds=10",
        widgets_path(&env),
        rv_of(&a)
    );
    let watch = tokio::spawn(async move {
        watch_events(&client, &path, Duration::from_secs(10), |evs| {
            evs.len() >= 3
        })
        .await
    });
    let pp = PatchParams::default();
    // Start matching → ADDED; change while matching → MODIFIED; stop matching → DELETED.
    // (The watch starts at a known resourceVersion, so it sees these whenever it connects.)
    api.patch(
        "a",
        &pp,
        &Patch::Merge(json!({"spec": {"deviceRef": {"name": "tor1-01"}}})),
    )
    .await
    .unwrap();
    api.patch("a", &pp, &Patch::Merge(json!({"spec": {"command": ["z"]}})))
        .await
        .unwrap();
    api.patch(
        "a",
        &pp,
        &Patch::Merge(json!({"spec": {"deviceRef": {"name": "tor1-03"}}})),
    )
    .await
    .unwrap();
    let (status, events) = watch.await.unwrap();
    assert_eq!(status, 200);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"], "{events:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn limit_and_continue() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    for i in 0..5 {
        create_widget(&api, &format!("w{i}"), "d").await;
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(&first), ["w0", "w1"]);
    let token = first.metadata.continue_.clone().expect("continue token");
    // Changes after the first page do not show up in later pages (consistent snapshot).
    create_widget(&api, "w25", "d").await;
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["w2", "w3"]);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let token = second.metadata.continue_.clone().expect("continue token");
    let third = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&third), ["w4"]);
    assert!(third.metadata.continue_.as_deref().unwrap_or("").is_empty());
    env.cleanup().await;
}
