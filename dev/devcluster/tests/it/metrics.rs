//! `GET /metrics`: `apiserver_request_total` by verb, group, version, resource, subresource,
//! scope and code, readable only by identities allowed the non-resource URL `/metrics`.

use crate::common;

use std::time::Duration;

use apollo_devcluster::User;
use apollo_testkit::TestEnv;
use common::*;
use serde_json::json;

/// The value of the sample of `apiserver_request_total` with exactly these labels (0 if none).
fn sample(text: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(c: &kube::Client) -> Raw {
    raw(c, "GET", "/metrics", None, None).await
}

#[tokio::test]
async fn apiserver_request_total_counts_by_verb_resource_and_code() {
    let env = TestEnv::new().await;
    let admin = env.admin().await;
    let ns = env.namespace().to_string();
    let before = scrape(&admin).await;
    assert_eq!(before.status, 200, "{}", before.text);
    assert!(
        before
            .text
            .contains("# TYPE apiserver_request_total counter"),
        "{}",
        &before.text[..before.text.len().min(500)]
    );
    let list = [
        ("verb", "LIST"),
        ("resource", "configmaps"),
        ("scope", "namespace"),
        ("code", "200"),
        ("group", ""),
        ("version", "v1"),
    ];
    let get_404 = [
        ("verb", "GET"),
        ("resource", "configmaps"),
        ("scope", "resource"),
        ("code", "404"),
    ];
    let created = [
        ("verb", "POST"),
        ("resource", "configmaps"),
        ("code", "201"),
    ];
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    for _ in 0..3 {
        assert_eq!(raw(&admin, "GET", &path, None, None).await.status, 200);
    }
    assert_eq!(
        raw(&admin, "GET", &format!("{path}/missing"), None, None)
            .await
            .status,
        404
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}});
    assert_eq!(
        raw(&admin, "POST", &path, Some("application/json"), Some(&cm))
            .await
            .status,
        201
    );
    let after = scrape(&admin).await;
    // A shared real cluster has other clients: at least our requests are counted.
    let grew = |labels: &[(&str, &str)]| sample(&after.text, labels) - sample(&before.text, labels);
    if env.is_real() {
        assert!(grew(&list) >= 3.0);
        assert!(grew(&get_404) >= 1.0);
        assert!(grew(&created) >= 1.0);
    } else {
        assert_eq!(grew(&list), 3.0, "{}", after.text);
        assert_eq!(grew(&get_404), 1.0, "{}", after.text);
        assert_eq!(grew(&created), 1.0, "{}", after.text);
    }
    env.cleanup().await;
}

#[tokio::test]
async fn metrics_need_the_non_resource_url_grant() {
    let env = TestEnv::new().await;
    let gw = env.as_user(User::Gateway).await;
    let r = scrape(&gw).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        r.message(),
        format!(
            "forbidden: User \"{}\" cannot get path \"/metrics\"",
            env.username(User::Gateway)
        )
    );
    let ns = env.namespace().to_string();
    let name = format!("{ns}-metrics-reader");
    env.apply_manifest(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {name}
rules:
- nonResourceURLs: ["/metrics"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {name}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {name}}}
subjects:
- {{kind: ServiceAccount, name: apollo-deviceprocess-gateway, namespace: {ns}}}
"#
    ))
    .await
    .unwrap();
    let r = eventually(Duration::from_secs(30), || {
        let gw = gw.clone();
        async move {
            let r = scrape(&gw).await;
            (r.status == 200).then_some(r)
        }
    })
    .await
    .expect("allowed once bound");
    assert!(r.text.contains("apiserver_request_total{"), "{}", r.text);
    let admin = env.admin().await;
    for kind in ["clusterrolebindings", "clusterroles"] {
        let _ = raw(
            &admin,
            "DELETE",
            &format!("/apis/rbac.authorization.k8s.io/v1/{kind}/{name}"),
            None,
            None,
        )
        .await;
    }
    env.cleanup().await;
}
