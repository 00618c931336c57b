//! Kubernetes minors: the server reports its version, and a CRD's `selectableFields` behaves as
//! a server of that minor treats it (unknown field before 1.30, dropped while the gate is off
//! by default in 1.30, served from 1.31). In process the server pretends to be 1.29
//! (`Options::version`); on a real cluster the expectations follow that cluster's `/version`.

use crate::common;

use std::time::Duration;

use apollo_devcluster::{KubeVersion, Options};
use apollo_testkit::TestEnv;
use common::*;
use serde_json::{Value, json};

fn options(minor: u32) -> Options {
    Options {
        version: KubeVersion::new(minor).unwrap(),
        ..Options::default()
    }
}

async fn server_minor(c: &kube::Client) -> u32 {
    let r = raw(c, "GET", "/version", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let minor = r.body["minor"].as_str().unwrap_or_default();
    minor
        .trim_end_matches('+')
        .parse()
        .unwrap_or_else(|_| panic!("minor {minor:?}"))
}

/// A CRD of its own (cluster-scoped names are shared on a real cluster): the Widget CRD under
/// a group unique to this test.
fn gadget_crd(suffix: &str) -> (Value, String, String) {
    let group = format!("v{suffix}.versions.apollo.azure.com");
    let name = format!("gadgets.{group}");
    let mut crd = widget_crd();
    crd["metadata"]["name"] = json!(name);
    crd["spec"]["group"] = json!(group);
    crd["spec"]["names"] = json!({"plural": "gadgets", "singular": "gadget", "kind": "Gadget",
        "listKind": "GadgetList"});
    (crd, name, group)
}

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

#[tokio::test]
async fn version_is_reported() {
    let env = TestEnv::with_options(options(29)).await;
    let c = env.admin().await;
    let r = raw(&c, "GET", "/version", None, None).await;
    if env.is_real() {
        assert!(r.body["gitVersion"].as_str().unwrap().starts_with("v1."));
    } else {
        assert_eq!(r.body["major"], "1");
        assert_eq!(r.body["minor"], "29");
        assert_eq!(r.body["gitVersion"], "v1.29.0-apollo-devcluster");
    }
    env.cleanup().await;
    if std::env::var_os("APOLLO_TEST_KUBECONFIG").is_none() {
        let env = TestEnv::new().await;
        let minor = server_minor(&env.admin().await).await;
        assert_eq!(minor, KubeVersion::DEFAULT.minor());
        env.cleanup().await;
    }
}

async fn selectable_fields_on(minor_wanted: u32) {
    let env = TestEnv::with_options(options(minor_wanted)).await;
    let c = env.admin().await;
    let minor = server_minor(&c).await;
    let suffix: String = env.namespace().trim_start_matches("t-").to_string();
    let (crd, name, group) = gadget_crd(&suffix);
    let path = format!("{CRDS}/{name}");

    // kubectl's default: strict field validation.
    let r = raw(
        &c,
        "POST",
        &format!("{CRDS}?fieldValidation=Strict"),
        Some("application/json"),
        Some(&crd),
    )
    .await;
    if minor < 30 {
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.reason(), "BadRequest");
        assert_eq!(
            r.message(),
            "CustomResourceDefinition in version \"v1\" cannot be handled as a CustomResourceDefinition: strict decoding error: unknown field \"spec.versions[0].selectableFields\""
        );
        // An API client's default (Warn): created, the field pruned, with a warning.
        let r = raw(&c, "POST", CRDS, Some("application/json"), Some(&crd)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert!(
            r.warnings()
                .iter()
                .any(|w| w.contains(r#"unknown field \"spec.versions[0].selectableFields\""#)),
            "{:?}",
            r.warnings()
        );
    } else {
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let stored = raw(&c, "GET", &path, None, None).await;
    let has_field = stored.body["spec"]["versions"][0]
        .get("selectableFields")
        .is_some();
    assert_eq!(has_field, minor >= 31, "{}", stored.text);
    // Served once Established; a field selector on the field needs the declaration.
    let list = format!(
        "/apis/{group}/{VERSION}/namespaces/{}/gadgets?fieldSelector=spec.deviceRef.name%3Dtor1-01",
        env.namespace()
    );
    let r = eventually(Duration::from_secs(30), || {
        let (c, list) = (c.clone(), list.clone());
        async move {
            let r = raw(&c, "GET", &list, None, None).await;
            (r.status != 404).then_some(r)
        }
    })
    .await
    .expect("the CRD's resource is served");
    if minor >= 31 {
        assert_eq!(r.status, 200, "{}", r.text);
    } else {
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(
            r.message(),
            "field label not supported: spec.deviceRef.name"
        );
    }
    let r = raw(&c, "DELETE", &path, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    env.cleanup().await;
}

#[tokio::test]
async fn selectable_fields_are_unknown_on_1_29() {
    selectable_fields_on(29).await;
}

#[tokio::test]
async fn selectable_fields_are_dropped_on_1_30() {
    selectable_fields_on(30).await;
}

#[tokio::test]
async fn selectable_fields_are_served_from_1_31() {
    selectable_fields_on(31).await;
}

#[tokio::test]
async fn ignore_prunes_the_unknown_field_silently_on_1_29() {
    let env = TestEnv::with_options(options(29)).await;
    let c = env.admin().await;
    if server_minor(&c).await >= 30 {
        env.cleanup().await;
        return;
    }
    let suffix: String = env.namespace().trim_start_matches("t-").to_string();
    let (crd, name, _) = gadget_crd(&suffix);
    let r = raw(
        &c,
        "POST",
        &format!("{CRDS}?fieldValidation=Ignore"),
        Some("application/json"),
        Some(&crd),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.warnings().is_empty(), "{:?}", r.warnings());
    assert!(
        r.body["spec"]["versions"][0]
            .get("selectableFields")
            .is_none()
    );
    // An update that adds the field back under Strict is refused the same way.
    let current = eventually(Duration::from_secs(30), || {
        let c = c.clone();
        let path = format!("{CRDS}/{name}");
        async move {
            let r = raw(&c, "GET", &path, None, None).await;
            let established = r.body["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
            established.then_some(r.body)
        }
    })
    .await
    .expect("Established");
    let mut update = current;
    update["spec"]["versions"][0]["selectableFields"] =
        json!([{"jsonPath": ".spec.deviceRef.name"}]);
    let r = raw(
        &c,
        "PUT",
        &format!("{CRDS}/{name}?fieldValidation=Strict"),
        Some("application/json"),
        Some(&update),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.message().ends_with(
            "strict decoding error: unknown field \"spec.versions[0].selectableFields\""
        ),
        "{}",
        r.message()
    );
    let r = raw(&c, "DELETE", &format!("{CRDS}/{name}"), None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    env.cleanup().await;
}

/// The suites install the CRDs that fit the cluster: the variant without selectableFields on a
/// 1.29 server, `k8s/crds` on the default one.
#[tokio::test]
async fn test_environments_pick_the_crds_for_the_server() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let env = TestEnv::with_options(options(29)).await;
    let minor = server_minor(&env.admin().await).await;
    let dir = env.crd_dir(&repo).await;
    assert_eq!(
        dir.ends_with("k8s-pre-1.31/crds"),
        minor < 31,
        "{}",
        dir.display()
    );
    env.apply_manifest_file(&dir.join("deviceprocesses.azure.com.yaml"))
        .await
        .unwrap();
    env.cleanup().await;
    if std::env::var_os("APOLLO_TEST_KUBECONFIG").is_none() {
        let env = TestEnv::new().await;
        assert!(env.crd_dir(&repo).await.ends_with("k8s/crds"));
        env.cleanup().await;
    }
}
