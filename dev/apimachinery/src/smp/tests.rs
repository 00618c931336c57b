use super::*;
use serde_json::json;

fn crd_merge(original: Value, patch: Value) -> Value {
    strategic_merge(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        &original,
        &patch,
    )
    .unwrap()
}

fn deploy_merge(original: Value, patch: Value) -> Value {
    strategic_merge("apps", "Deployment", &original, &patch).unwrap()
}

#[test]
fn table_lookup() {
    assert_eq!(
        list_strategy(
            "apps",
            "Deployment",
            &["spec", "template", "spec", "containers"]
        ),
        ListStrategy::MergeByKey("name")
    );
    assert_eq!(
        list_strategy("", "Service", &["spec", "ports"]),
        ListStrategy::MergeByKey("port")
    );
    assert_eq!(
        list_strategy("", "ConfigMap", &["metadata", "finalizers"]),
        ListStrategy::MergePrimitives
    );
    assert_eq!(
        list_strategy("rbac.authorization.k8s.io", "Role", &["rules"]),
        ListStrategy::Replace
    );
    assert_eq!(
        list_strategy("", "Service", &["spec", "ports", "x"]),
        ListStrategy::Replace
    );
}

/// The runbook case: the project's NetworkSwitch CRD (columns Role, Age) on the server, the
/// runbook's CRD (column Role) applied client-side: kubectl's three-way patch names the
/// version and the Role column; Age stays.
#[test]
fn crd_versions_and_columns_merge_by_name() {
    let live = json!({"spec": {"group": "azure.com", "versions": [{
        "name": "v1alpha1", "served": true, "storage": true,
        "additionalPrinterColumns": [
            {"name": "Role", "type": "string", "jsonPath": ".metadata.labels.role"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ],
        "subresources": {"status": {}}
    }]}});
    let patch = json!({"spec": {
        "$setElementOrder/versions": [{"name": "v1alpha1"}],
        "versions": [{
            "name": "v1alpha1",
            "$setElementOrder/additionalPrinterColumns": [{"name": "Role"}],
            "schema": {"openAPIV3Schema": {"type": "object"}}
        }]
    }});
    let out = crd_merge(live, patch);
    let v = &out["spec"]["versions"][0];
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Role", "Age"]);
    assert_eq!(v["subresources"], json!({"status": {}}));
    assert_eq!(v["schema"], json!({"openAPIV3Schema": {"type": "object"}}));
    assert_eq!(out["spec"]["group"], "azure.com");
    assert!(!out.to_string().contains('$'), "{out}");
}

#[test]
fn containers_env_ports_and_volumes_merge_by_their_keys() {
    let live = json!({"spec": {"replicas": 1, "template": {"spec": {
        "containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
             "ports": [{"containerPort": 80, "name": "http"}]},
            {"name": "b", "image": "b:1"}
        ],
        "volumes": [{"name": "v1", "emptyDir": {}}]
    }}}});
    let patch = json!({"spec": {"template": {"spec": {
        "containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}],
             "ports": [{"containerPort": 8080}]},
            {"name": "c", "image": "c:1", "env": [{"name": "Q", "$patch": "delete"}]}
        ],
        "volumes": [{"name": "v2", "secret": {"secretName": "s"}}]
    }}}});
    let out = deploy_merge(live, patch);
    let cs = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 3);
    assert_eq!(cs[0]["image"], "a:2");
    assert_eq!(
        cs[0]["env"],
        json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}])
    );
    assert_eq!(
        cs[0]["ports"],
        json!([{"containerPort": 80, "name": "http"}, {"containerPort": 8080}])
    );
    assert_eq!(cs[1], json!({"name": "b", "image": "b:1"}));
    assert_eq!(cs[2], json!({"name": "c", "image": "c:1", "env": []}));
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "v1", "emptyDir": {}}, {"name": "v2", "secret": {"secretName": "s"}}])
    );
    assert_eq!(out["spec"]["replicas"], 1);
}

#[test]
fn patch_directives() {
    let live = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "b:1"}
    ]}}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    // Delete an element by key.
    let out = deploy_merge(
        live.clone(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Replace a list whole.
    let out = deploy_merge(
        live.clone(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "z", "image": "z"}, {"$patch": "replace"}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "z", "image": "z"}])
    );
    // Replace a map whole.
    let out = deploy_merge(
        live.clone(),
        json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    // Delete a map.
    let out = deploy_merge(
        live.clone(),
        json!({"spec": {"strategy": {"$patch": "delete"}}}),
    );
    assert!(out["spec"].get("strategy").is_none());
    // retainKeys (kubectl sends it for Deployment.spec.strategy).
    let out = deploy_merge(
        live.clone(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    // setElementOrder reorders by key.
    let out = deploy_merge(
        live.clone(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "a:2"}]
        }}}}),
    );
    let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][1]["image"],
        "a:2"
    );
    // Null removes a field; $patch: merge is the default.
    let out = deploy_merge(live, json!({"spec": {"$patch": "merge", "strategy": null}}));
    assert!(out["spec"].get("strategy").is_none());
}

#[test]
fn primitive_lists() {
    let live = json!({"metadata": {"finalizers": ["a", "b"]}, "data": {"k": "v"}});
    let out = strategic_merge(
        "",
        "ConfigMap",
        &live,
        &json!({"metadata": {"finalizers": ["c", "a"]}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
    let out = strategic_merge(
        "",
        "ConfigMap",
        &live,
        &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "$setElementOrder/finalizers": ["b"]}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    // A list without a strategy is replaced.
    let role = json!({"rules": [{"verbs": ["get"]}, {"verbs": ["list"]}]});
    let out = strategic_merge(
        "rbac.authorization.k8s.io",
        "Role",
        &role,
        &json!({"rules": [{"verbs": ["watch"]}]}),
    )
    .unwrap();
    assert_eq!(out["rules"], json!([{"verbs": ["watch"]}]));
}

#[test]
fn malformed_patches_are_errors() {
    let live = json!({"spec": {"ports": [{"port": 80}]}});
    let err =
        strategic_merge("", "Service", &live, &json!({"spec": {"$patch": "bogus"}})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unknown patch type: bogus, Expected one of: replace, merge, delete"
    );
    let err = strategic_merge(
        "",
        "Service",
        &live,
        &json!({"spec": {"ports": [{"name": "x"}]}}),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not contain declared merge key: port"),
        "{err}"
    );
    let err = strategic_merge("", "Service", &live, &json!({"spec": {"ports": [1]}})).unwrap_err();
    assert!(err.to_string().contains("merge key"), "{err}");
    assert!(strategic_merge("", "Service", &live, &json!([1])).is_err());
    let err =
        strategic_merge("", "Service", &live, &json!({"spec": {"$retainKeys": "x"}})).unwrap_err();
    assert!(err.to_string().contains("$retainKeys"), "{err}");
    // Deep input stays bounded (serde_json's recursion limit guards parsing).
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!({"a": deep});
    }
    assert!(strategic_merge("", "ConfigMap", &json!({}), &deep).is_ok());
}
