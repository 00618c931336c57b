//! policy/v1 PodDisruptionBudgets (the gateway's manifests carry one), pinned to a real API
//! server's strategy and validation: zero status and generation 1 on create, generation bumped
//! by spec changes, minAvailable/maxUnavailable exclusive, integer ≥ 0 or percentage ≤ 100%,
//! discovery with the `pdb` short name.

use apollo_testkit::TestEnv;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::json;

fn pdb(name: &str, spec: serde_json::Value) -> PodDisruptionBudget {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn message(err: kube::Error) -> String {
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422, "{s:?}");
            s.message
        }
        e => panic!("expected 422, got {e:?}"),
    }
}

#[tokio::test]
async fn pdb_strategy_and_validation() {
    let env = TestEnv::new().await;
    let api: Api<PodDisruptionBudget> = Api::namespaced(env.admin().await, env.namespace());
    let pp = PostParams::default();
    let sel = json!({"matchLabels": {"app": "gw"}});
    let created = api
        .create(
            &pp,
            &pdb("ok", json!({"maxUnavailable": 1, "selector": sel})),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let status = created.status.clone().unwrap();
    assert_eq!(
        (
            status.current_healthy,
            status.desired_healthy,
            status.disruptions_allowed,
            status.expected_pods
        ),
        (0, 0, 0, 0)
    );
    let patched = api
        .patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxUnavailable": "50%"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let labelled = api
        .patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "labels do not bump it"
    );

    let msg = message(
        api.create(
            &pp,
            &pdb(
                "both",
                json!({"minAvailable": 1, "maxUnavailable": 1, "selector": sel}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        msg.starts_with("PodDisruptionBudget.policy \"both\" is invalid: spec: Invalid value:"),
        "{msg}"
    );
    assert!(
        msg.ends_with("minAvailable and maxUnavailable cannot be both set"),
        "{msg}"
    );
    for (spec, expected) in [
        (
            json!({"maxUnavailable": "150%"}),
            "spec.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%",
        ),
        (
            json!({"minAvailable": -1}),
            "spec.minAvailable: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            json!({"minAvailable": "half"}),
            "spec.minAvailable: Invalid value: \"half\": must be an integer or percentage (e.g '5%')",
        ),
        (
            json!({"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "Never"}),
            "spec.unhealthyPodEvictionPolicy: Unsupported value: \"Never\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\"",
        ),
    ] {
        let msg = message(api.create(&pp, &pdb("bad", spec)).await.unwrap_err());
        assert!(msg.ends_with(expected), "{msg}\nexpected …{expected}");
    }
    // Updates are validated too.
    let msg = message(
        api.patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minAvailable": 1}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        msg.ends_with("minAvailable and maxUnavailable cannot be both set"),
        "{msg}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn pdbs_are_discoverable() {
    let env = TestEnv::new().await;
    let discovery = Discovery::new(env.admin().await)
        .filter(&["policy"])
        .run()
        .await
        .unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "PodDisruptionBudget")
        .expect("PodDisruptionBudget discovered");
    assert_eq!(
        (ar.version.as_str(), ar.plural.as_str()),
        ("v1", "poddisruptionbudgets")
    );
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "poddisruptionbudgets/status" || r.plural == "status"),
        "{:?}",
        caps.subresources
    );
    env.cleanup().await;
}
