//! coordination.k8s.io/v1 Leases as the gateway's membership uses them, pinned to a real API
//! server's behaviour (1.33, CoordinatedLeaderElection off): validation of the duration and
//! transitions (422 with the apiserver's message), feature-gated fields dropped, discovery,
//! label-selected lists, optimistic concurrency and deletion with a precondition.

use apollo_testkit::TestEnv;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::discovery::Discovery;
use serde_json::json;

fn lease(name: &str, spec: serde_json::Value) -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"apollo.azure.com/gateway-member": "true"}},
        "spec": spec,
    }))
    .unwrap()
}

fn invalid(err: kube::Error) -> String {
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
            s.message
        }
        e => panic!("expected 422, got {e:?}"),
    }
}

#[tokio::test]
async fn lease_validation_matches_the_api_server() {
    let env = TestEnv::new().await;
    let leases: Api<Lease> = Api::namespaced(env.admin().await, env.namespace());
    let pp = PostParams::default();
    let msg = invalid(
        leases
            .create(&pp, &lease("zero", json!({"leaseDurationSeconds": 0})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Lease.coordination.k8s.io \"zero\" is invalid: spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"
    );
    let msg = invalid(
        leases
            .create(&pp, &lease("neg", json!({"leaseTransitions": -1})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Lease.coordination.k8s.io \"neg\" is invalid: spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0"
    );
    // Feature-gated fields are dropped (the gate is off by default).
    let created = leases
        .create(
            &pp,
            &lease(
                "gw-a",
                json!({"holderIdentity": "a", "leaseDurationSeconds": 15,
                       "renewTime": "2026-01-01T00:00:00.000000Z",
                       "strategy": "OldestEmulationVersion", "preferredHolder": "b"}),
            ),
        )
        .await
        .unwrap();
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert!(spec.strategy.is_none() && spec.preferred_holder.is_none());
    // An update is validated too.
    let mut bad = created.clone();
    bad.spec.as_mut().unwrap().lease_duration_seconds = Some(-5);
    let msg = invalid(leases.replace("gw-a", &pp, &bad).await.unwrap_err());
    assert!(msg.ends_with("spec.leaseDurationSeconds: Invalid value: -5: must be greater than 0"));
    // Renewals with the resourceVersion they read; a stale one conflicts.
    let mut renew = created.clone();
    renew.spec.as_mut().unwrap().renew_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            "2026-01-01T00:00:05Z".parse().unwrap(),
        ));
    let renewed = leases.replace("gw-a", &pp, &renew).await.unwrap();
    assert!(leases.replace("gw-a", &pp, &renew).await.is_err());
    // Label-selected list: only members.
    leases
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "other"}, "spec": {}})).unwrap(),
        )
        .await
        .unwrap();
    let members = leases
        .list(&ListParams::default().labels("apollo.azure.com/gateway-member=true"))
        .await
        .unwrap();
    let names: Vec<_> = members
        .items
        .iter()
        .filter_map(|l| l.metadata.name.clone())
        .collect();
    assert_eq!(names, vec!["gw-a".to_string()]);
    // Deletion with a stale resourceVersion precondition conflicts; with the current one it
    // goes through (a replica releasing its own Lease at shutdown).
    let stale = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: created.metadata.resource_version.clone(),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    match leases.delete("gw-a", &stale).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("expected 409, got {other:?}"),
    }
    let current = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: renewed.metadata.resource_version.clone(),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    leases.delete("gw-a", &current).await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn leases_are_discoverable() {
    let env = TestEnv::new().await;
    let discovery = Discovery::new(env.admin().await)
        .filter(&["coordination.k8s.io"])
        .run()
        .await
        .unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Lease")
        .expect("Lease discovered");
    assert_eq!(
        (ar.group.as_str(), ar.version.as_str(), ar.plural.as_str()),
        ("coordination.k8s.io", "v1", "leases")
    );
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    for verb in [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ] {
        assert!(
            caps.operations.iter().any(|o| o == verb),
            "{verb} in {:?}",
            caps.operations
        );
    }
    env.cleanup().await;
}
