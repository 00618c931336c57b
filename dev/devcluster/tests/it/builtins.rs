//! Built-in kinds through typed clients: Lease (leader election), ConfigMap, Secret, Namespace.

use crate::common;

use apollo_testkit::TestEnv;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn lease_optimistic_concurrency_as_leader_election_uses_it() {
    let env = TestEnv::new().await;
    let leases: Api<Lease> = Api::namespaced(env.admin().await, env.namespace());
    let l: Lease = serde_json::from_value(json!({
        "metadata": {"name": "apollo-controller"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 0}
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &l).await.unwrap();
    assert!(
        created.metadata.generation.is_none(),
        "built-ins without generation"
    );
    let mut a = created.clone();
    a.spec.as_mut().unwrap().holder_identity = Some("a".into());
    a.spec.as_mut().unwrap().renew_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            "2026-01-01T00:00:05Z".parse().unwrap(),
        ));
    let renewed = leases
        .replace("apollo-controller", &PostParams::default(), &a)
        .await
        .unwrap();
    // A competitor holding the old resourceVersion loses.
    let mut b = created.clone();
    b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let err = leases
        .replace("apollo-controller", &PostParams::default(), &b)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    assert_eq!(
        leases
            .get("apollo-controller")
            .await
            .unwrap()
            .metadata
            .resource_version,
        renewed.metadata.resource_version
    );
    env.cleanup().await;
}

#[tokio::test]
async fn configmap_apply_strategic_merge_and_secret_string_data() {
    let env = TestEnv::new().await;
    let client = env.admin().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), env.namespace());
    let applied = cms
        .patch(
            "c",
            &PatchParams::apply("tester"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}})),
        )
        .await
        .expect("apply creates a ConfigMap");
    assert_eq!(applied.data.as_ref().unwrap()["a"], "1");
    let smp = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"b": null, "c": "3"}})),
        )
        .await
        .unwrap();
    let data = smp.data.unwrap();
    assert_eq!(data.get("a").map(String::as_str), Some("1"));
    assert!(!data.contains_key("b"));
    assert_eq!(data.get("c").map(String::as_str), Some("3"));
    let secrets: Api<Secret> = Api::namespaced(client, env.namespace());
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s"}, "stringData": {"token": "hello"}}),
    )
    .unwrap();
    let created = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(created.data.unwrap()["token"].0, b"hello");
    env.cleanup().await;
}

#[tokio::test]
async fn namespaces_have_the_apiserver_defaults() {
    let env = TestEnv::new().await;
    let nss: Api<Namespace> = Api::all(env.admin().await);
    let name = format!("{}-n", env.namespace());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    let created = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.spec.unwrap().finalizers.unwrap(), ["kubernetes"]);
    assert_eq!(
        created.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        name
    );
    let bad: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "Not.A.Label"}})).unwrap();
    let err = nss.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    nss.delete(&name, &Default::default()).await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn builtin_kinds_decode_strictly() {
    let env = TestEnv::new().await;
    let client = env.admin().await;
    let path = format!("/api/v1/namespaces/{}/configmaps", env.namespace());
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "bogus": 1}, "data": {"a": "b"}, "extra": true});
    let r = common::raw(
        &client,
        "POST",
        &format!("{path}?fieldValidation=Strict"),
        Some("application/json"),
        Some(&cm),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.message().contains("strict decoding error: ")
            && r.message().contains("unknown field \"extra\""),
        "{}",
        r.message()
    );
    assert!(
        r.message().contains("unknown field \"metadata.bogus\""),
        "{}",
        r.message()
    );
    let r = common::raw(&client, "POST", &path, Some("application/json"), Some(&cm)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body.get("extra").is_none() && r.body["metadata"].get("bogus").is_none());
    assert!(!r.warnings().is_empty());
    let wrong = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}, "data": {"a": 1}});
    let r = common::raw(
        &client,
        "POST",
        &path,
        Some("application/json"),
        Some(&wrong),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.reason(), "BadRequest");
    env.cleanup().await;
}

fn deployment(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }
        },
        "status": {"replicas": 7}
    })
}

#[tokio::test]
async fn deployments_are_stored_with_defaults_generation_and_status_subresource() {
    let env = TestEnv::new().await;
    let c = env.admin().await;
    let base = format!("/apis/apps/v1/namespaces/{}/deployments", env.namespace());
    let r = common::raw(
        &c,
        "POST",
        &base,
        Some("application/json"),
        Some(&deployment("d1")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["metadata"]["generation"], 1);
    assert_eq!(r.body["spec"]["replicas"], 1);
    assert_eq!(r.body["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(r.body["status"], json!({}), "status is dropped at create");
    let item = format!("{base}/d1");
    let merge = Some("application/merge-patch+json");
    // Status through /status: generation unchanged.
    let r = common::raw(
        &c,
        "PATCH",
        &format!("{item}/status"),
        merge,
        Some(&json!({"status": {"replicas": 1}, "spec": {"replicas": 5}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"]["replicas"], 1);
    assert_eq!(r.body["spec"]["replicas"], 1, "spec ignored on /status");
    assert_eq!(r.body["metadata"]["generation"], 1);
    // A label leaves generation alone, an annotation or a spec change bumps it.
    let r = common::raw(
        &c,
        "PATCH",
        &item,
        merge,
        Some(&json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await;
    assert_eq!(r.body["metadata"]["generation"], 1, "{}", r.text);
    let r = common::raw(
        &c,
        "PATCH",
        &item,
        merge,
        Some(&json!({"spec": {"replicas": 3}})),
    )
    .await;
    assert_eq!(r.body["metadata"]["generation"], 2, "{}", r.text);
    let r = common::raw(
        &c,
        "PATCH",
        &item,
        merge,
        Some(&json!({"metadata": {"annotations": {"x": "y"}}})),
    )
    .await;
    assert_eq!(r.body["metadata"]["generation"], 3, "{}", r.text);
    env.cleanup().await;
}

#[tokio::test]
async fn services_get_a_cluster_ip_and_node_ports_that_do_not_collide() {
    let env = TestEnv::new().await;
    let c = env.admin().await;
    let base = format!("/api/v1/namespaces/{}/services", env.namespace());
    let svc = |name: &str, node_port: Option<i64>| {
        let mut port = json!({"name": "http", "port": 8080, "targetPort": "http"});
        if let Some(n) = node_port {
            port["nodePort"] = json!(n);
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [port]}})
    };
    let r = common::raw(
        &c,
        "POST",
        &base,
        Some("application/json"),
        Some(&svc("s1", Some(31234))),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ip = r.body["spec"]["clusterIP"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{}", r.text);
    assert_eq!(r.body["spec"]["ports"][0]["protocol"], "TCP");
    let r = common::raw(
        &c,
        "POST",
        &base,
        Some("application/json"),
        Some(&svc("s2", Some(31234))),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.message(),
        "Service \"s2\" is invalid: spec.ports[0].nodePort: Invalid value: 31234: provided port is already allocated"
    );
    let r = common::raw(
        &c,
        "POST",
        &base,
        Some("application/json"),
        Some(&svc("s2", None)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let n = r.body["spec"]["ports"][0]["nodePort"].as_i64().unwrap_or(0);
    assert!((30000..=32767).contains(&n) && n != 31234, "{}", r.text);
    // A PUT without the allocated values keeps them.
    let mut put = svc("s1", None);
    let get = common::raw(&c, "GET", &format!("{base}/s1"), None, None).await;
    put["metadata"]["resourceVersion"] = json!(get.rv());
    let r = common::raw(
        &c,
        "PUT",
        &format!("{base}/s1"),
        Some("application/json"),
        Some(&put),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["spec"]["clusterIP"], ip.as_str());
    assert_eq!(r.body["spec"]["ports"][0]["nodePort"], 31234);
    env.cleanup().await;
}
