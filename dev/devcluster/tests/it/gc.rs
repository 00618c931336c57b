//! Background ownerReference garbage collection and deletecollection.

use crate::common;

use std::time::Duration;

use apollo_testkit::TestEnv;
use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use serde_json::json;

async fn owned_configmap(env: &TestEnv, name: &str, owner: &kube::api::DynamicObject) -> ConfigMap {
    let cms: Api<ConfigMap> = Api::namespaced(env.admin().await, env.namespace());
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND,
            "name": owner.metadata.name, "uid": owner.metadata.uid, "controller": true, "blockOwnerDeletion": true
        }]},
        "data": {"k": "v"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap()
}

#[tokio::test]
async fn background_deletion_cascades() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let owner = create_widget(&api, "owner", "d").await;
    owned_configmap(&env, "dep", &owner).await;
    let cms: Api<ConfigMap> = Api::namespaced(env.admin().await, env.namespace());
    api.delete("owner", &DeleteParams::default()).await.unwrap();
    let gone = eventually(Duration::from_secs(30), || {
        let cms = cms.clone();
        async move {
            cms.get_opt("dep")
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(gone.is_some(), "dependent collected");
    env.cleanup().await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_and_drops_the_reference() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let owner = create_widget(&api, "owner", "d").await;
    owned_configmap(&env, "dep", &owner).await;
    let cms: Api<ConfigMap> = Api::namespaced(env.admin().await, env.namespace());
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    api.delete("owner", &dp).await.unwrap();
    let owner_gone = eventually(Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            api.get_opt("owner")
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(
        owner_gone.is_some(),
        "owner deleted once orphaning finished"
    );
    let dep = cms.get("dep").await.expect("dependent kept");
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let owner = create_widget(&api, "owner", "d").await;
    owned_configmap(&env, "dep", &owner).await;
    let cms: Api<ConfigMap> = Api::namespaced(env.admin().await, env.namespace());
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    let r = api.delete("owner", &dp).await.unwrap();
    let pending = r
        .left()
        .expect("owner still present while dependents exist");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(
        pending
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );
    let all_gone = eventually(Duration::from_secs(30), || {
        let (api, cms) = (api.clone(), cms.clone());
        async move {
            let dep = cms.get_opt("dep").await.ok().flatten();
            let own = api.get_opt("owner").await.ok().flatten();
            (dep.is_none() && own.is_none()).then_some(())
        }
    })
    .await;
    assert!(all_gone.is_some());
    env.cleanup().await;
}

#[tokio::test]
async fn delete_collection_with_label_selector() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    for (n, team) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut w = widget(n, "d");
        w["metadata"]["labels"] = json!({"team": team});
        let o: kube::api::DynamicObject = serde_json::from_value(w).unwrap();
        api.create(&Default::default(), &o).await.unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("team=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(left, ["c"]);
    env.cleanup().await;
}

#[tokio::test]
async fn namespace_deletion_terminates_then_removes_contents() {
    let env = TestEnv::new().await;
    let admin = env.admin().await;
    let ns_name = format!("{}-x", env.namespace());
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns_name}})).unwrap();
    let created = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns_name);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let deleting = nss
        .delete(&ns_name, &DeleteParams::default())
        .await
        .unwrap();
    let ns = deleting
        .left()
        .expect("namespace returned while terminating");
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let gone = eventually(Duration::from_secs(60), || {
        let nss = nss.clone();
        let name = ns_name.clone();
        async move {
            nss.get_opt(&name)
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(gone.is_some(), "namespace removed");
    assert!(cms.get_opt("c").await.ok().flatten().is_none());
    env.cleanup().await;
}

#[tokio::test]
async fn delete_answers_status_once_gone_and_the_object_while_finalizers_remain() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    create_widget(&api, "w1", "d").await;
    let r = api.delete("w1", &DeleteParams::default()).await.unwrap();
    let status = r.right().expect("Status for an immediately deleted object");
    assert_eq!(status.details.as_ref().map(|d| d.name.as_str()), Some("w1"));
    let cms: Api<ConfigMap> = Api::namespaced(env.admin().await, env.namespace());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c", "finalizers": ["example.com/x"]}}))
            .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let r = cms.delete("c", &DeleteParams::default()).await.unwrap();
    assert!(
        r.left()
            .expect("object while finalizers remain")
            .metadata
            .deletion_timestamp
            .is_some()
    );
    let p = kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}}));
    cms.patch("c", &Default::default(), &p).await.unwrap();
    assert!(cms.get_opt("c").await.unwrap().is_none());
    env.cleanup().await;
}
