//! RBAC evaluated from Role/ClusterRole/RoleBinding/ClusterRoleBinding objects.

use crate::common;

use apollo_devcluster::User;
use apollo_testkit::TestEnv;
use common::*;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn grant_gateway(env: &TestEnv) {
    let ns = env.namespace();
    let manifest = format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: gateway
  namespace: {ns}
rules:
- apiGroups: ["{GROUP}"]
  resources: ["{PLURAL}"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["{GROUP}"]
  resources: ["{PLURAL}/status"]
  verbs: ["patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: gateway
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: gateway
subjects:
- kind: ServiceAccount
  name: apollo-deviceprocess-gateway
  namespace: {ns}
"#
    );
    env.apply_manifest(&manifest).await.expect("apply RBAC");
}

/// A real cluster's authorizer sees new RBAC objects after a moment: wait for the first list.
async fn list_eventually(api: &Api<DynamicObject>) -> kube::core::ObjectList<DynamicObject> {
    eventually(std::time::Duration::from_secs(30), || {
        let api = api.clone();
        async move { api.list(&ListParams::default()).await.ok() }
    })
    .await
    .expect("list allowed")
}

fn forbidden(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn role_binding_grants_exactly_its_rules() {
    let env = TestEnv::new().await;
    let admin_api = widgets(&env).await;
    create_widget(&admin_api, "w1", "tor1-01").await;
    grant_gateway(&env).await;
    let ns = env.namespace().to_string();
    let gw: Api<DynamicObject> =
        Api::namespaced_with(env.as_user(User::Gateway).await, &ns, &widget_resource());
    assert_eq!(list_eventually(&gw).await.items.len(), 1);
    gw.patch_status(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .expect("patch status allowed");
    let err = gw
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"command": ["x"]}})),
        )
        .await
        .unwrap_err();
    let s = forbidden(err);
    assert_eq!(s.code, 403);
    assert_eq!(s.reason, "Forbidden");
    let user = env.username(User::Gateway);
    assert_eq!(
        s.message,
        format!(
            "{PLURAL}.{GROUP} \"w1\" is forbidden: User \"{user}\" cannot patch resource \"{PLURAL}\" in API group \"{GROUP}\" in the namespace \"{ns}\""
        )
    );
    let obj: DynamicObject = serde_json::from_value(widget("w2", "d")).unwrap();
    let s = forbidden(gw.create(&PostParams::default(), &obj).await.unwrap_err());
    assert_eq!(s.code, 403);
    env.cleanup().await;
}

#[tokio::test]
async fn unbound_identity_is_forbidden_with_the_real_message() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let ns = env.namespace().to_string();
    let agent: Api<DynamicObject> =
        Api::namespaced_with(env.as_user(User::Agent).await, &ns, &widget_resource());
    let s = forbidden(agent.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(s.code, 403);
    let user = env.username(User::Agent);
    assert_eq!(
        s.message,
        format!(
            "{PLURAL}.{GROUP} is forbidden: User \"{user}\" cannot list resource \"{PLURAL}\" in API group \"{GROUP}\" in the namespace \"{ns}\""
        )
    );
    let s = forbidden(agent.get_status("w1").await.unwrap_err());
    assert!(
        s.message
            .contains(&format!("cannot get resource \"{PLURAL}/status\"")),
        "{}",
        s.message
    );
    env.cleanup().await;
}

#[tokio::test]
async fn cluster_role_binding_and_discovery_for_everyone() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let ns = env.namespace();
    let agent = env.as_user(User::Agent).await;
    // Any authenticated user may read discovery.
    let r = raw(&agent, "GET", "/apis", None, None).await;
    assert_eq!(r.status, 200);
    let manifest = format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {ns}-widget-reader
rules:
- apiGroups: ["{GROUP}"]
  resources: ["{PLURAL}"]
  verbs: ["list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {ns}-widget-reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {ns}-widget-reader
subjects:
- kind: ServiceAccount
  name: apollo-agent
  namespace: {ns}
"#
    );
    env.apply_manifest(&manifest).await.unwrap();
    let all: Api<DynamicObject> = Api::all_with(agent.clone(), &widget_resource());
    list_eventually(&all).await;
    let admin = env.admin().await;
    let crb: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin.clone());
    let _ = crb
        .delete(&format!("{ns}-widget-reader"), &Default::default())
        .await;
    let cr: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(admin);
    let _ = cr
        .delete(&format!("{ns}-widget-reader"), &Default::default())
        .await;
    env.cleanup().await;
}

#[tokio::test]
async fn project_gateway_rbac_manifest_takes_effect() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (crd, rbac) = (
        root.join("k8s/crds/deviceprocesses.azure.com.yaml"),
        root.join("k8s/rbac/gateway.yaml"),
    );
    if !crd.is_file() || !rbac.is_file() {
        eprintln!("project manifests not present: skipped");
        return;
    }
    let env = TestEnv::new().await;
    env.apply_manifest_file(&crd).await.unwrap();
    env.apply_manifest_file(&rbac).await.unwrap();
    let ns = env.namespace().to_string();
    let ar = kube::api::ApiResource {
        group: "azure.com".into(),
        version: "v1alpha1".into(),
        api_version: "azure.com/v1alpha1".into(),
        kind: "DeviceProcess".into(),
        plural: "deviceprocesses".into(),
    };
    let admin: Api<DynamicObject> = Api::namespaced_with(env.admin().await, &ns, &ar);
    let dp: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcess",
        "metadata": {"name": "demo-logger-tor1-01"},
        "spec": {"deviceRef": {"name": "tor1-01"}, "artifact": {"type": "oci", "url": "alpine:3.19"},
                 "execution": {"backend": "container", "command": ["/bin/sh"]}}
    }))
    .unwrap();
    admin
        .create(&PostParams::default(), &dp)
        .await
        .expect("admin creates a DeviceProcess");
    let gw: Api<DynamicObject> = Api::namespaced_with(env.as_user(User::Gateway).await, &ns, &ar);
    list_eventually(&gw).await;
    gw.patch_status(
        "demo-logger-tor1-01",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Pending"}})),
    )
    .await
    .expect("gateway patches status");
    let s = forbidden(
        gw.patch(
            "demo-logger-tor1-01",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        s.message,
        format!(
            "deviceprocesses.azure.com \"demo-logger-tor1-01\" is forbidden: User \"{}\" cannot patch resource \"deviceprocesses\" in API group \"azure.com\" in the namespace \"{ns}\"",
            env.username(User::Gateway)
        )
    );
    env.cleanup().await;
}

/// `k8s/rbac/controller.yaml` applied for two namespaces side by side (two tests in parallel on
/// one real cluster): each gets a ClusterRoleBinding of its own naming its own ServiceAccount,
/// instead of one shared binding rewritten by the last writer; the shared ClusterRole is not
/// rewritten. Each test waits until its grant is in effect.
#[tokio::test]
async fn controller_rbac_for_parallel_namespaces_does_not_collide() {
    let env = TestEnv::new().await;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for crd in [
        "k8s/crds/deviceprocesses.azure.com.yaml",
        "k8s/crds/deviceprocessdeployments.azure.com.yaml",
        "k8s/crds/networkswitches.azure.com.yaml",
    ] {
        env.apply_manifest_file(&root.join(crd)).await.unwrap();
    }
    let admin = env.admin().await;
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    let other = format!("{}-b", env.namespace());
    ns_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": other}})).unwrap(),
        )
        .await
        .unwrap();
    let rbac = root.join("k8s/rbac/controller.yaml");
    env.apply_manifest_file(&rbac).await.unwrap();
    apollo_kube::manifests::Applier::new(admin.clone(), "apollo-testenv", Some(&other))
        .apply_file(&rbac)
        .await
        .unwrap();
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin.clone());
    for ns in [env.namespace(), other.as_str()] {
        let b = crbs
            .get(&format!("apollo-deviceprocess-controller-{ns}"))
            .await
            .unwrap();
        let subjects = b.subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].namespace.as_deref(), Some(ns));
        assert_eq!(
            b.metadata.labels.unwrap()[apollo_kube::manifests::MOVED_TO_LABEL],
            ns
        );
    }
    env.wait_allowed(
        User::Controller,
        "list",
        "azure.com",
        "deviceprocesses",
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap();
    let ctl = env.as_user(User::Controller).await;
    let dps: Api<DynamicObject> = Api::all_with(
        ctl,
        &kube::api::ApiResource {
            group: "azure.com".into(),
            version: "v1alpha1".into(),
            api_version: "azure.com/v1alpha1".into(),
            kind: "DeviceProcess".into(),
            plural: "deviceprocesses".into(),
        },
    );
    dps.list(&ListParams::default()).await.unwrap();
    // Not granted: the wait gives up at its deadline with a clear error.
    let err = env
        .wait_allowed(
            User::Agent,
            "list",
            "azure.com",
            "deviceprocesses",
            std::time::Duration::from_millis(300),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("may not list deviceprocesses"), "{err}");
    let _ = ns_api.delete(&other, &Default::default()).await;
    for ns in [env.namespace().to_string(), other.clone()] {
        let _ = crbs
            .delete(
                &format!("apollo-deviceprocess-controller-{ns}"),
                &Default::default(),
            )
            .await;
    }
    env.cleanup().await;
}
