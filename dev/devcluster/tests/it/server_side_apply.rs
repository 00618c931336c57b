//! Server-side apply (application/apply-patch+yaml) semantics.

use crate::common;

use apollo_testkit::TestEnv;
use common::*;
use serde_json::{Value, json};

async fn apply(env: &TestEnv, name: &str, sub: &str, query: &str, body: &Value) -> Raw {
    let path = format!("{}/{name}{sub}?{query}", widgets_path(env));
    raw(
        &env.admin().await,
        "PATCH",
        &path,
        Some("application/apply-patch+yaml"),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn apply_creates_and_drops_status_on_main_resource() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let mut w = widget("w1", "tor1-01");
    w["status"] = json!({"phase": "Ignored"});
    let r = apply(&env, "w1", "", "fieldManager=ctrl", &w).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        r.body
            .get("status")
            .is_none_or(|s| s.get("phase").is_none())
    );
    let again = apply(&env, "w1", "", "fieldManager=ctrl", &w).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.rv(), r.rv(), "unchanged apply is a no-op");
    env.cleanup().await;
}

#[tokio::test]
async fn apply_to_status_records_subresource_and_missing_object_is_404() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let missing = apply(&env, "nope", "/status", "fieldManager=gw", &json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND, "metadata": {"name": "nope"}, "status": {"phase": "X"}})).await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    apply(
        &env,
        "w1",
        "",
        "fieldManager=ctrl",
        &widget("w1", "tor1-01"),
    )
    .await;
    let st = json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND, "metadata": {"name": "w1"}, "status": {"phase": "Running"}});
    let r = apply(&env, "w1", "/status", "fieldManager=gw", &st).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"]["phase"], "Running");
    let mf = r.body["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        mf.iter().any(|e| e["manager"] == "gw"
            && e["operation"] == "Apply"
            && e["subresource"] == "status"),
        "{mf:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn conditions_from_two_managers_merge_per_key() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    apply(
        &env,
        "w1",
        "",
        "fieldManager=ctrl",
        &widget("w1", "tor1-01"),
    )
    .await;
    let cond = |t: &str| json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND, "metadata": {"name": "w1"}, "status": {"conditions": [{"type": t, "status": "True"}]}});
    assert_eq!(
        apply(
            &env,
            "w1",
            "/status",
            "fieldManager=a",
            &cond("AgentConnected")
        )
        .await
        .status,
        200
    );
    let r = apply(
        &env,
        "w1",
        "/status",
        "fieldManager=b",
        &cond("SpecObserved"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let types: Vec<&str> = r.body["status"]["conditions"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(types.len(), 2, "{types:?}");
    assert!(types.contains(&"AgentConnected") && types.contains(&"SpecObserved"));
    env.cleanup().await;
}

#[tokio::test]
async fn conflicts_force_and_removal_of_owned_fields() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let mut w = widget("w1", "tor1-01");
    w["spec"]["command"] = json!(["a"]);
    w["spec"]["mode"] = json!("fast");
    assert_eq!(
        apply(&env, "w1", "", "fieldManager=ctrl-spec", &w)
            .await
            .status,
        201
    );
    let mut other = widget("w1", "tor1-01");
    other["spec"]["command"] = json!(["b"]);
    let c = apply(&env, "w1", "", "fieldManager=intruder", &other).await;
    assert_eq!(c.status, 409, "{}", c.text);
    assert_eq!(c.reason(), "Conflict");
    assert!(
        c.message()
            .starts_with("Apply failed with 1 conflict: conflict with \"ctrl-spec\""),
        "{}",
        c.message()
    );
    assert!(c.message().contains(".spec.command"), "{}", c.message());
    // The real Status carries only the causes in its details (no name, group or kind).
    assert_eq!(
        c.body["details"],
        json!({"causes": [{
            "reason": "FieldManagerConflict",
            "message": "conflict with \"ctrl-spec\"",
            "field": ".spec.command"
        }]})
    );
    let forced = apply(&env, "w1", "", "fieldManager=intruder&force=true", &other).await;
    assert_eq!(forced.status, 200, "{}", forced.text);
    assert_eq!(forced.body["spec"]["command"], json!(["b"]));
    // ctrl-spec applies again without `mode`, which it owned alone: the field is removed.
    let mut again = widget("w1", "tor1-01");
    again["spec"]["command"] = json!(["b"]);
    let r = apply(&env, "w1", "", "fieldManager=ctrl-spec", &again).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["spec"].get("mode").is_none(), "{}", r.body["spec"]);
    env.cleanup().await;
}

#[tokio::test]
async fn status_conflict_names_the_subresource() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    apply(
        &env,
        "w1",
        "",
        "fieldManager=ctrl",
        &widget("w1", "tor1-01"),
    )
    .await;
    let st = |p: &str| json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND, "metadata": {"name": "w1"}, "status": {"phase": p}});
    assert_eq!(
        apply(&env, "w1", "/status", "fieldManager=ctrl-status", &st("A"))
            .await
            .status,
        200
    );
    let c = apply(&env, "w1", "/status", "fieldManager=other", &st("B")).await;
    assert_eq!(c.status, 409, "{}", c.text);
    assert_eq!(
        c.message(),
        "Apply failed with 1 conflict: conflict with \"ctrl-status\" with subresource \"status\": .status.phase"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn apply_requires_field_manager_and_honours_dry_run() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let r = apply(&env, "w1", "", "", &widget("w1", "tor1-01")).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message().contains("fieldManager: Required value"),
        "{}",
        r.message()
    );
    let dry = apply(
        &env,
        "w1",
        "",
        "fieldManager=ctrl&dryRun=All",
        &widget("w1", "tor1-01"),
    )
    .await;
    assert_eq!(dry.status, 201, "{}", dry.text);
    let get = raw(
        &env.admin().await,
        "GET",
        &format!("{}/w1", widgets_path(&env)),
        None,
        None,
    )
    .await;
    assert_eq!(get.status, 404, "dry run persisted nothing");
    env.cleanup().await;
}

#[tokio::test]
async fn malformed_applies_are_400_and_untypeable_ones_500() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let mut w = widget("w1", "tor1-01");
    w["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Apply"}]);
    let r = apply(&env, "w1", "", "fieldManager=ctrl", &w).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.reason(), "BadRequest");
    assert_eq!(r.message(), "metadata.managedFields must be nil");
    // Duplicate keys in a map list cannot be typed: the real server answers 500, also for a
    // status it then drops from a main-resource apply.
    // The object is named as the body has it: no namespace in the body, none in the message.
    let expected = format!(
        "failed to create typed patch object (/w1; {GROUP}/{VERSION}, Kind={KIND}): .status.conditions: duplicate entries for key [type=\"Ready\"]"
    );
    let conditions = json!({"conditions": [
        {"type": "Ready", "status": "True"},
        {"type": "Ready", "status": "False"}
    ]});
    let mut w = widget("w1", "tor1-01");
    w["status"] = conditions.clone();
    let r = apply(&env, "w1", "", "fieldManager=ctrl", &w).await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(r.message(), expected);
    let r = apply(
        &env,
        "w1",
        "",
        "fieldManager=ctrl",
        &widget("w1", "tor1-01"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let st = json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND,
        "metadata": {"name": "w1"}, "status": conditions});
    let r = apply(&env, "w1", "/status", "fieldManager=ctrl", &st).await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(r.message(), expected);
    env.cleanup().await;
}
