//! Field validation, structural pruning, defaulting and schema validation of custom resources.

use crate::common;

use apollo_testkit::TestEnv;
use common::*;
use serde_json::json;

fn with_bogus() -> serde_json::Value {
    let mut w = widget("w1", "tor1-01");
    w["spec"]["bogusField"] = json!("x");
    w
}

#[tokio::test]
async fn strict_rejects_unknown_fields_with_400() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let r = raw(
        &env.admin().await,
        "POST",
        &format!("{}?fieldValidation=Strict", widgets_path(&env)),
        Some("application/json"),
        Some(&with_bogus()),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.reason(), "BadRequest");
    assert!(
        r.message()
            .contains("strict decoding error: unknown field \"spec.bogusField\""),
        "{}",
        r.message()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn ignore_prunes_silently_and_warn_is_the_default() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let client = env.admin().await;
    let r = raw(
        &client,
        "POST",
        &format!("{}?fieldValidation=Ignore", widgets_path(&env)),
        Some("application/json"),
        Some(&with_bogus()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["spec"].get("bogusField").is_none());
    assert!(r.warnings().is_empty());
    let mut w2 = with_bogus();
    w2["metadata"]["name"] = json!("w2");
    let r = raw(
        &client,
        "POST",
        &widgets_path(&env),
        Some("application/json"),
        Some(&w2),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["spec"].get("bogusField").is_none(), "pruned");
    let warnings = r.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("unknown field") && w.contains("spec.bogusField")),
        "{warnings:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn preserve_unknown_fields_and_defaults() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let mut w = widget("w1", "tor1-01");
    w["spec"]["free"] = json!({"anything": {"goes": [1, 2]}});
    let r = raw(
        &env.admin().await,
        "POST",
        &widgets_path(&env),
        Some("application/json"),
        Some(&w),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["spec"]["free"]["anything"]["goes"], json!([1, 2]));
    assert_eq!(r.body["spec"]["replicas"], json!(1), "default applied");
    env.cleanup().await;
}

#[tokio::test]
async fn type_and_enum_errors_are_422_naming_the_path() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let mut w = widget("w1", "tor1-01");
    w["spec"]["replicas"] = json!("three");
    w["spec"]["mode"] = json!("medium");
    let r = raw(
        &env.admin().await,
        "POST",
        &widgets_path(&env),
        Some("application/json"),
        Some(&w),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.reason(), "Invalid");
    let msg = r.message();
    assert!(
        msg.starts_with(&format!("{KIND}.{GROUP} \"w1\" is invalid: ")),
        "{msg}"
    );
    assert!(
        msg.contains("spec.replicas: Invalid value: \"string\""),
        "{msg}"
    );
    assert!(
        msg.contains("spec.mode: Unsupported value: \"medium\""),
        "{msg}"
    );
    let causes = r.body["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        causes.iter().any(|c| c["field"] == "spec.replicas"),
        "{causes:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn strategic_merge_patch_on_custom_resource_is_415() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    create_widget(&api, "w1", "tor1-01").await;
    let r = raw(
        &env.admin().await,
        "PATCH",
        &format!("{}/w1", widgets_path(&env)),
        Some("application/strategic-merge-patch+json"),
        Some(&json!({"spec": {"command": ["x"]}})),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text);
    assert_eq!(r.reason(), "UnsupportedMediaType");
    env.cleanup().await;
}

#[tokio::test]
async fn invalid_names_are_422() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let w = widget("Bad_Name", "tor1-01");
    let r = raw(
        &env.admin().await,
        "POST",
        &widgets_path(&env),
        Some("application/json"),
        Some(&w),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message()
            .contains("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        "{}",
        r.message()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn object_meta_labels_and_owner_references_are_validated() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let client = env.admin().await;
    let long = "x".repeat(64);
    let mut w = widget("w1", "tor1-01");
    w["metadata"]["labels"] = json!({"apollo.azure.com/device": long});
    let r = raw(
        &client,
        "POST",
        &widgets_path(&env),
        Some("application/json"),
        Some(&w),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message().contains(&format!(
            "metadata.labels: Invalid value: \"{long}\": must be no more than 63 bytes"
        )),
        "{}",
        r.message()
    );
    let mut w = widget("w1", "tor1-01");
    w["metadata"]["labels"] = json!({"bad key!": "v"});
    let r = raw(
        &client,
        "POST",
        &widgets_path(&env),
        Some("application/json"),
        Some(&w),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message()
            .contains("metadata.labels: Invalid value: \"bad key!\": name part must consist of"),
        "{}",
        r.message()
    );
    let mut w = widget("w1", "tor1-01");
    w["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "c"}]);
    let r = raw(
        &client,
        "POST",
        &widgets_path(&env),
        Some("application/json"),
        Some(&w),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message()
            .contains("metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty"),
        "{}",
        r.message()
    );
    env.cleanup().await;
}

/// A CRD of this test's own (its schema is changed by the test), in a group per namespace.
fn ratchet_crd(group: &str, modes: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("ratchets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "ratchets", "singular": "ratchet", "kind": "Ratchet"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {
                            "mode": {"type": "string", "enum": modes},
                            "note": {"type": "string"}
                        }},
                        "status": {"type": "object", "properties": {
                            "observedGeneration": {"type": "integer", "format": "int64"}
                        }}
                    }
                }}
            }]
        }
    })
}

#[tokio::test]
async fn updates_ratchet_and_status_writes_validate_only_status() {
    let env = TestEnv::new().await;
    let group = format!("{}.conformance.apollo.azure.com", env.namespace());
    env.apply_manifest(&ratchet_crd(&group, &["fast", "slow", "medium"]).to_string())
        .await
        .unwrap();
    let c = env.admin().await;
    let path = format!("/apis/{group}/v1/namespaces/{}/ratchets", env.namespace());
    let obj = |name: &str, mode: &str| {
        json!({"apiVersion": format!("{group}/v1"), "kind": "Ratchet",
               "metadata": {"name": name}, "spec": {"mode": mode}})
    };
    let r = raw(
        &c,
        "POST",
        &path,
        Some("application/json"),
        Some(&obj("r1", "medium")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Tighten the enum: `medium` becomes invalid for new objects.
    env.apply_manifest(&ratchet_crd(&group, &["fast", "slow"]).to_string())
        .await
        .unwrap();
    let refused = eventually(std::time::Duration::from_secs(30), || {
        let (c, path, probe) = (c.clone(), path.clone(), obj("probe", "medium"));
        async move {
            let r = raw(&c, "POST", &path, Some("application/json"), Some(&probe)).await;
            (r.status == 422).then_some(r)
        }
    })
    .await
    .expect("the tightened schema is enforced");
    assert_eq!(
        refused.message(),
        format!(
            "Ratchet.{group} \"probe\" is invalid: spec.mode: Unsupported value: \"medium\": supported values: \"fast\", \"slow\""
        )
    );
    // An update that leaves the invalid value alone is accepted (ratcheting).
    let item = format!("{path}/r1");
    let r = raw(
        &c,
        "PATCH",
        &item,
        Some("application/merge-patch+json"),
        Some(&json!({"metadata": {"labels": {"a": "b"}}, "spec": {"note": "n"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["spec"]["mode"], "medium");
    // A /status write validates only status.
    let r = raw(
        &c,
        "PATCH",
        &format!("{item}/status"),
        Some("application/merge-patch+json"),
        Some(&json!({"status": {"observedGeneration": 2}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Changing the invalid value to another invalid one is refused.
    let r = raw(
        &c,
        "PATCH",
        &item,
        Some("application/merge-patch+json"),
        Some(&json!({"spec": {"mode": "turbo"}})),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.message(),
        format!(
            "Ratchet.{group} \"r1\" is invalid: spec.mode: Unsupported value: \"turbo\": supported values: \"fast\", \"slow\""
        )
    );
    let crds: kube::Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = kube::Api::all(c);
    let _ = crds
        .delete(&format!("ratchets.{group}"), &Default::default())
        .await;
    env.cleanup().await;
}
