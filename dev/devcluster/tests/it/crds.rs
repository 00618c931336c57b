//! CustomResourceDefinition lifecycle: served at once, updated, deleted with its instances.

use crate::common;

use std::time::Duration;

use apollo_testkit::TestEnv;
use common::*;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;

fn gizmo_crd(group: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("gizmos.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]
        }
    })
}

#[tokio::test]
async fn crd_deletion_deletes_instances_and_stops_serving() {
    let env = TestEnv::new().await;
    let group = format!("{}.conformance.apollo.azure.com", env.namespace());
    env.apply_manifest(&gizmo_crd(&group).to_string())
        .await
        .unwrap();
    let ar = ApiResource {
        group: group.clone(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: "Gizmo".into(),
        plural: "gizmos".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(env.admin().await, env.namespace(), &ar);
    let g: DynamicObject = serde_json::from_value(json!({"apiVersion": format!("{group}/v1"), "kind": "Gizmo", "metadata": {"name": "g1"}, "spec": {"x": 1}})).unwrap();
    api.create(&PostParams::default(), &g).await.unwrap();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(env.admin().await);
    crds.delete(&format!("gizmos.{group}"), &Default::default())
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(60), || {
        let crds = crds.clone();
        let name = format!("gizmos.{group}");
        async move {
            crds.get_opt(&name)
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(gone.is_some(), "CRD removed after its instances");
    let c = env.admin().await;
    let path = format!("/apis/{group}/v1/namespaces/{}/gizmos", env.namespace());
    let unserved = eventually(Duration::from_secs(30), || {
        let (c, path) = (c.clone(), path.clone());
        async move { (raw(&c, "GET", &path, None, None).await.status == 404).then_some(()) }
    })
    .await;
    assert!(unserved.is_some(), "no longer served");
    env.cleanup().await;
}

#[tokio::test]
async fn invalid_crd_is_422() {
    let env = TestEnv::new().await;
    let mut crd = gizmo_crd("x.conformance.apollo.azure.com");
    crd["metadata"]["name"] = json!("wrong.name.example.com");
    let r = raw(
        &env.admin().await,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some("application/json"),
        Some(&crd),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message()
            .contains("must be spec.names.plural+\".\"+spec.group"),
        "{}",
        r.message()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn crd_scope_and_group_are_immutable_and_updates_reserve() {
    let env = TestEnv::new().await;
    let group = format!("{}.conformance.apollo.azure.com", env.namespace());
    env.apply_manifest(&gizmo_crd(&group).to_string())
        .await
        .unwrap();
    let c = env.admin().await;
    let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gizmos.{group}");
    let r = raw(
        &c,
        "PATCH",
        &path,
        Some("application/merge-patch+json"),
        Some(&json!({"spec": {"scope": "Cluster"}})),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message()
            .contains("spec.scope: Invalid value: \"Cluster\": field is immutable"),
        "{}",
        r.message()
    );
    // Adding a short name is served at once.
    let r = raw(
        &c,
        "PATCH",
        &path,
        Some("application/merge-patch+json"),
        Some(&json!({"spec": {"names": {"shortNames": ["gz"]}}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["metadata"]["generation"], 2);
    // Served at once here; a real server updates discovery within moments.
    let served = eventually(Duration::from_secs(30), || {
        let (c, group) = (c.clone(), group.clone());
        async move {
            let d = raw(&c, "GET", &format!("/apis/{group}/v1"), None, None).await;
            (d.body["resources"][0]["shortNames"] == json!(["gz"])).then_some(())
        }
    })
    .await;
    assert!(served.is_some(), "short name in discovery");
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(c);
    let _ = crds
        .delete(&format!("gizmos.{group}"), &Default::default())
        .await;
    env.cleanup().await;
}
