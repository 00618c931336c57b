use super::*;
use serde_json::json;

const NS: &str = "default";

fn sa(name: &str) -> UserInfo {
    UserInfo::service_account(NS, name)
}

fn res(
    user: &UserInfo,
    verb: &str,
    group: &str,
    resource: &str,
    ns: &str,
    name: &str,
) -> Attributes {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes {
        user: user.clone(),
        verb: verb.into(),
        api_group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: ns.into(),
        name: name.into(),
        resource_request: true,
        path: String::new(),
    }
}

fn non_res(user: &UserInfo, verb: &str, path: &str) -> Attributes {
    Attributes {
        user: user.clone(),
        verb: verb.into(),
        path: path.into(),
        resource_request: false,
        ..Default::default()
    }
}

fn cluster_role(name: &str, rules: serde_json::Value) -> serde_json::Value {
    json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
}

fn role(ns: &str, name: &str, rules: serde_json::Value) -> serde_json::Value {
    json!({"kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules})
}

fn binding(
    kind: &str,
    ns: Option<&str>,
    name: &str,
    role_kind: &str,
    role: &str,
    subjects: serde_json::Value,
) -> serde_json::Value {
    let mut meta = json!({"name": name});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({"kind": kind, "metadata": meta,
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
           "subjects": subjects})
}

/// A policy shaped like the project's k8s/rbac: a controller ClusterRole bound cluster-wide,
/// a gateway Role for status updates in `default`.
fn project_policy() -> Policy {
    Policy::new(
        vec![role(
            NS,
            "gateway",
            json!([
                {"apiGroups": ["azure.com"], "resources": ["deviceprocesses"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["azure.com"], "resources": ["deviceprocesses/status"], "verbs": ["get", "patch"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["gateway-tls"]}
            ]),
        )],
        vec![
            cluster_role(
                "controller",
                json!([
                    {"apiGroups": ["azure.com"], "resources": ["deviceprocesses", "deviceprocesses/status"], "verbs": ["*"]},
                    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
                    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
                ]),
            ),
            cluster_role(
                "pod-reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
            ),
        ],
        vec![
            binding(
                "RoleBinding",
                Some(NS),
                "gateway",
                "Role",
                "gateway",
                json!([{"kind": "ServiceAccount", "name": "apollo-deviceprocess-gateway"}]),
            ),
            binding(
                "RoleBinding",
                Some("other"),
                "pods",
                "ClusterRole",
                "pod-reader",
                json!([{"kind": "User", "name": "alice"}]),
            ),
        ],
        vec![binding(
            "ClusterRoleBinding",
            None,
            "controller",
            "ClusterRole",
            "controller",
            json!([{"kind": "ServiceAccount", "name": "apollo-deviceprocess-controller", "namespace": NS}]),
        )],
    )
}

#[test]
fn masters_are_always_allowed() {
    let p = Policy::new(vec![], vec![], vec![], vec![]);
    let admin = UserInfo::authenticated("admin", &["system:masters"]);
    assert!(p.authorize(&res(&admin, "delete", "", "namespaces", "", "x")));
    assert!(p.authorize(&non_res(&admin, "post", "/anything")));
}

#[test]
fn cluster_role_binding_grants_everywhere() {
    let p = project_policy();
    let ctrl = sa("apollo-deviceprocess-controller");
    assert!(p.authorize(&res(&ctrl, "list", "azure.com", "deviceprocesses", "", "")));
    assert!(p.authorize(&res(
        &ctrl,
        "watch",
        "azure.com",
        "deviceprocesses",
        "ns2",
        ""
    )));
    assert!(p.authorize(&res(
        &ctrl,
        "update",
        "azure.com",
        "deviceprocesses/status",
        NS,
        "dp"
    )));
    assert!(p.authorize(&res(&ctrl, "create", "", "events", NS, "")));
    assert!(p.authorize(&res(
        &ctrl,
        "update",
        "coordination.k8s.io",
        "leases",
        NS,
        "leader"
    )));
    assert!(!p.authorize(&res(
        &ctrl,
        "delete",
        "coordination.k8s.io",
        "leases",
        NS,
        "leader"
    )));
    // wrong group
    assert!(!p.authorize(&res(&ctrl, "create", "apps", "events", NS, "")));
    assert!(!p.authorize(&res(&ctrl, "get", "", "secrets", NS, "x")));
}

#[test]
fn role_binding_grants_only_in_its_namespace() {
    let p = project_policy();
    let gw = sa("apollo-deviceprocess-gateway");
    assert!(p.authorize(&res(&gw, "list", "azure.com", "deviceprocesses", NS, "")));
    assert!(!p.authorize(&res(
        &gw,
        "list",
        "azure.com",
        "deviceprocesses",
        "other",
        ""
    )));
    // cluster-wide list needs a ClusterRoleBinding
    assert!(!p.authorize(&res(&gw, "list", "azure.com", "deviceprocesses", "", "")));
    // a service account of the same name in another namespace is someone else
    let other = UserInfo::service_account("other", "apollo-deviceprocess-gateway");
    assert!(!p.authorize(&res(&other, "list", "azure.com", "deviceprocesses", NS, "")));
}

#[test]
fn role_binding_to_cluster_role_is_namespaced() {
    let p = project_policy();
    let alice = UserInfo::authenticated("alice", &[]);
    assert!(p.authorize(&res(&alice, "get", "", "pods", "other", "p")));
    assert!(!p.authorize(&res(&alice, "get", "", "pods", NS, "p")));
    assert!(!p.authorize(&res(&alice, "list", "", "pods", "", "")));
}

#[test]
fn subresources_need_their_own_rule() {
    let p = project_policy();
    let gw = sa("apollo-deviceprocess-gateway");
    assert!(p.authorize(&res(
        &gw,
        "patch",
        "azure.com",
        "deviceprocesses/status",
        NS,
        "dp"
    )));
    assert!(!p.authorize(&res(&gw, "patch", "azure.com", "deviceprocesses", NS, "dp")));
    assert!(!p.authorize(&res(
        &gw,
        "update",
        "azure.com",
        "deviceprocesses/status",
        NS,
        "dp"
    )));
    assert!(!p.authorize(&res(
        &gw,
        "get",
        "azure.com",
        "deviceprocesses/scale",
        NS,
        "dp"
    )));
}

#[test]
fn wildcards() {
    let p = Policy::new(
        vec![],
        vec![
            cluster_role(
                "all-status",
                json!([{"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["get"]}]),
            ),
            cluster_role(
                "everything",
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
            ),
        ],
        vec![],
        vec![
            binding(
                "ClusterRoleBinding",
                None,
                "a",
                "ClusterRole",
                "all-status",
                json!([{"kind": "User", "name": "u1"}]),
            ),
            binding(
                "ClusterRoleBinding",
                None,
                "b",
                "ClusterRole",
                "everything",
                json!([{"kind": "User", "name": "u2"}]),
            ),
        ],
    );
    let u1 = UserInfo::authenticated("u1", &[]);
    assert!(p.authorize(&res(
        &u1,
        "get",
        "azure.com",
        "deviceprocesses/status",
        NS,
        "x"
    )));
    assert!(p.authorize(&res(&u1, "get", "", "pods/status", "", "x")));
    assert!(!p.authorize(&res(&u1, "get", "", "pods", NS, "x")));
    assert!(!p.authorize(&res(&u1, "get", "", "pods/log", NS, "x")));
    let u2 = UserInfo::authenticated("u2", &[]);
    assert!(p.authorize(&res(&u2, "deletecollection", "x.io", "things/sub", NS, "")));
    // resource rules never grant non-resource URLs
    assert!(!p.authorize(&non_res(&u2, "get", "/metrics")));
}

#[test]
fn resource_names() {
    let p = project_policy();
    let gw = sa("apollo-deviceprocess-gateway");
    assert!(p.authorize(&res(&gw, "get", "", "secrets", NS, "gateway-tls")));
    assert!(!p.authorize(&res(&gw, "get", "", "secrets", NS, "other")));
    // a request without a name (list/create) does not match a rule with resourceNames
    assert!(!p.authorize(&res(&gw, "get", "", "secrets", NS, "")));
}

#[test]
fn group_subjects() {
    let p = Policy::new(
        vec![role(
            NS,
            "r",
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]),
        )],
        vec![cluster_role(
            "leases",
            json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]),
        )],
        vec![binding(
            "RoleBinding",
            Some(NS),
            "all-sas-here",
            "Role",
            "r",
            json!([{"kind": "Group", "name": "system:serviceaccounts:default"}]),
        )],
        vec![binding(
            "ClusterRoleBinding",
            None,
            "all-sas",
            "ClusterRole",
            "leases",
            json!([{"kind": "Group", "name": "system:serviceaccounts"}]),
        )],
    );
    let a = UserInfo::service_account(NS, "anything");
    let b = UserInfo::service_account("other", "anything");
    let human = UserInfo::authenticated("bob", &["devs"]);
    assert!(p.authorize(&res(&a, "get", "", "configmaps", NS, "c")));
    assert!(!p.authorize(&res(&b, "get", "", "configmaps", NS, "c")));
    assert!(p.authorize(&res(
        &b,
        "get",
        "coordination.k8s.io",
        "leases",
        "other",
        "l"
    )));
    assert!(!p.authorize(&res(
        &human,
        "get",
        "coordination.k8s.io",
        "leases",
        "other",
        "l"
    )));
}

#[test]
fn authenticated_group_subject() {
    let p = Policy::new(
        vec![],
        vec![cluster_role(
            "crd-reader",
            json!([{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list"]}]),
        )],
        vec![],
        vec![binding(
            "ClusterRoleBinding",
            None,
            "x",
            "ClusterRole",
            "crd-reader",
            json!([{"kind": "Group", "name": "system:authenticated"}]),
        )],
    );
    let agent = sa("apollo-agent");
    assert!(p.authorize(&res(
        &agent,
        "list",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        ""
    )));
    let anon = UserInfo {
        name: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
    };
    assert!(!p.authorize(&res(
        &anon,
        "list",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        ""
    )));
}

#[test]
fn bootstrap_policy() {
    let p = Policy::new(vec![], vec![], vec![], vec![]);
    let agent = sa("apollo-agent");
    for path in [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/azure.com/v1alpha1",
        "/version",
        "/openapi/v3",
        "/openapi/v2",
        "/healthz",
        "/readyz",
        "/livez",
    ] {
        assert!(p.authorize(&non_res(&agent, "get", path)), "{path}");
    }
    assert!(!p.authorize(&non_res(&agent, "post", "/api")));
    assert!(!p.authorize(&non_res(&agent, "get", "/metrics")));
    assert!(!p.authorize(&non_res(&agent, "get", "/healthz/etcd")));
    assert!(p.authorize(&res(
        &agent,
        "create",
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "",
        ""
    )));
    assert!(p.authorize(&res(
        &agent,
        "create",
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "",
        ""
    )));
    assert!(p.authorize(&res(
        &agent,
        "create",
        "authentication.k8s.io",
        "selfsubjectreviews",
        "",
        ""
    )));
    assert!(!p.authorize(&res(&agent, "list", "azure.com", "deviceprocesses", NS, "")));
    assert!(!p.authorize(&res(&agent, "get", "", "namespaces", "", "default")));
    let anon = UserInfo {
        name: "system:anonymous".into(),
        groups: vec![UNAUTHENTICATED_GROUP.into()],
    };
    assert!(p.authorize(&non_res(&anon, "get", "/version")));
    assert!(!p.authorize(&non_res(&anon, "get", "/apis")));
    // cluster-admin is bound to system:masters and usable by name
    let p = Policy::new(
        vec![],
        vec![],
        vec![],
        vec![binding(
            "ClusterRoleBinding",
            None,
            "ops",
            "ClusterRole",
            "cluster-admin",
            json!([{"kind": "User", "name": "ops"}]),
        )],
    );
    let ops = UserInfo::authenticated("ops", &[]);
    assert!(p.authorize(&res(&ops, "delete", "", "namespaces", "", "x")));
    assert!(p.authorize(&non_res(&ops, "get", "/metrics")));
    assert_eq!(
        bootstrap_cluster_roles().len(),
        bootstrap_cluster_role_bindings().len()
    );
}

#[test]
fn non_resource_urls() {
    let p = Policy::new(
        vec![],
        vec![cluster_role(
            "metrics",
            json!([{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]),
        )],
        vec![],
        vec![binding(
            "ClusterRoleBinding",
            None,
            "m",
            "ClusterRole",
            "metrics",
            json!([{"kind": "User", "name": "prom"}]),
        )],
    );
    let prom = UserInfo::authenticated("prom", &[]);
    assert!(p.authorize(&non_res(&prom, "get", "/metrics")));
    assert!(p.authorize(&non_res(&prom, "get", "/debug/pprof/heap")));
    assert!(p.authorize(&non_res(&prom, "get", "/debug/")));
    assert!(!p.authorize(&non_res(&prom, "get", "/metricsz")));
    assert!(!p.authorize(&non_res(&prom, "post", "/metrics")));
}

#[test]
fn cluster_role_binding_to_a_role_grants_nothing() {
    let p = Policy::new(
        vec![role(
            NS,
            "r",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
        )],
        vec![],
        vec![],
        vec![binding(
            "ClusterRoleBinding",
            None,
            "x",
            "Role",
            "r",
            json!([{"kind": "User", "name": "u"}]),
        )],
    );
    let u = UserInfo::authenticated("u", &[]);
    let d = p.authorize_with_reason(&res(&u, "get", "", "pods", NS, "p"));
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "RBAC: role.rbac.authorization.k8s.io \"r\" not found"
    );
}

#[test]
fn missing_roles_give_the_rbac_reason() {
    let p = Policy::new(
        vec![],
        vec![],
        vec![
            binding(
                "RoleBinding",
                Some(NS),
                "b",
                "ClusterRole",
                "gone",
                json!([{"kind": "User", "name": "u"}]),
            ),
            binding(
                "RoleBinding",
                Some(NS),
                "c",
                "Role",
                "gone-too",
                json!([{"kind": "User", "name": "u"}]),
            ),
            binding(
                "RoleBinding",
                Some(NS),
                "d",
                "Role",
                "not-mine",
                json!([{"kind": "User", "name": "v"}]),
            ),
        ],
        vec![],
    );
    let u = UserInfo::authenticated("u", &[]);
    let a = res(&u, "list", "", "pods", NS, "");
    let d = p.authorize_with_reason(&a);
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "RBAC: [clusterrole.rbac.authorization.k8s.io \"gone\" not found, role.rbac.authorization.k8s.io \"gone-too\" not found]"
    );
    assert_eq!(
        forbidden_message_with_reason(&a, &d.reason),
        "pods is forbidden: User \"u\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\": RBAC: [clusterrole.rbac.authorization.k8s.io \"gone\" not found, role.rbac.authorization.k8s.io \"gone-too\" not found]"
    );
    // bindings that do not apply to the user contribute no reason
    let v = UserInfo::authenticated("w", &[]);
    assert_eq!(
        p.authorize_with_reason(&res(&v, "list", "", "pods", NS, ""))
            .reason,
        ""
    );
}

#[test]
fn forbidden_messages() {
    let gw = sa("apollo-deviceprocess-gateway");
    assert_eq!(
        forbidden_message(&res(&gw, "list", "azure.com", "deviceprocesses", NS, "")),
        "deviceprocesses.azure.com is forbidden: User \"system:serviceaccount:default:apollo-deviceprocess-gateway\" cannot list resource \"deviceprocesses\" in API group \"azure.com\" in the namespace \"default\""
    );
    assert_eq!(
        forbidden_message(&res(
            &gw,
            "update",
            "azure.com",
            "deviceprocesses/status",
            NS,
            "x"
        )),
        "deviceprocesses.azure.com \"x\" is forbidden: User \"system:serviceaccount:default:apollo-deviceprocess-gateway\" cannot update resource \"deviceprocesses/status\" in API group \"azure.com\" in the namespace \"default\""
    );
    assert_eq!(
        forbidden_message(&res(&gw, "get", "", "secrets", NS, "tls")),
        "secrets \"tls\" is forbidden: User \"system:serviceaccount:default:apollo-deviceprocess-gateway\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(
        forbidden_message(&res(&gw, "list", "", "namespaces", "", "")),
        "namespaces is forbidden: User \"system:serviceaccount:default:apollo-deviceprocess-gateway\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    assert_eq!(
        forbidden_message(&res(&gw, "watch", "azure.com", "deviceprocesses", "", "")),
        "deviceprocesses.azure.com is forbidden: User \"system:serviceaccount:default:apollo-deviceprocess-gateway\" cannot watch resource \"deviceprocesses\" in API group \"azure.com\" at the cluster scope"
    );
    assert_eq!(
        forbidden_message(&non_res(&gw, "get", "/metrics")),
        "forbidden: User \"system:serviceaccount:default:apollo-deviceprocess-gateway\" cannot get path \"/metrics\""
    );
    let odd = UserInfo::authenticated("a<b>&c", &[]);
    assert_eq!(
        forbidden_message(&non_res(&odd, "get", "/x")),
        "forbidden: User \"a&lt;b&gt;&amp;c\" cannot get path \"/x\""
    );
}

#[test]
fn forbidden_status_body() {
    let gw = sa("apollo-deviceprocess-gateway");
    let st = forbidden_status(
        &res(
            &gw,
            "update",
            "azure.com",
            "deviceprocesses/status",
            NS,
            "x",
        ),
        "",
    );
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["apiVersion"], "v1");
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(st["code"], 403);
    assert_eq!(
        st["details"],
        json!({"name": "x", "group": "azure.com", "kind": "deviceprocesses"})
    );
    let st = forbidden_status(&non_res(&gw, "get", "/metrics"), "");
    assert_eq!(st["details"], json!({}));
    let st = forbidden_status(&res(&gw, "list", "", "secrets", NS, ""), "");
    assert_eq!(st["details"], json!({"kind": "secrets"}));
}

#[test]
fn identities() {
    let u = UserInfo::service_account("apollo", "ctrl");
    assert_eq!(u.name, "system:serviceaccount:apollo:ctrl");
    assert_eq!(
        u.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:apollo",
            "system:authenticated"
        ]
    );
    let a = UserInfo::authenticated("admin", &["system:masters", "system:authenticated"]);
    assert_eq!(a.groups, ["system:masters", "system:authenticated"]);
}

#[test]
fn malformed_objects_do_not_panic() {
    let p = Policy::new(
        vec![json!(null), json!({"rules": "nope"})],
        vec![
            json!([1, 2]),
            json!({"metadata": {"name": 5}, "rules": [{"verbs": "x"}]}),
        ],
        vec![
            json!("x"),
            json!({"metadata": {"namespace": "default"}, "subjects": [{}]}),
        ],
        vec![json!({"roleRef": {}, "subjects": [{"kind": "ServiceAccount", "name": "x"}]})],
    );
    let u = sa("x");
    assert!(!p.authorize(&res(&u, "get", "", "pods", NS, "p")));
}

#[test]
fn allow_reasons_name_the_binding() {
    let p = project_policy();
    let d = p.authorize_with_reason(&res(
        &sa("apollo-deviceprocess-controller"),
        "list",
        "azure.com",
        "deviceprocesses",
        "",
        "",
    ));
    assert!(d.allowed);
    assert_eq!(
        d.reason,
        "RBAC: allowed by ClusterRoleBinding \"controller\" of ClusterRole \"controller\" to ServiceAccount \"apollo-deviceprocess-controller/default\""
    );
    let d = p.authorize_with_reason(&res(
        &sa("apollo-deviceprocess-gateway"),
        "list",
        "azure.com",
        "deviceprocesses",
        NS,
        "",
    ));
    assert_eq!(
        d.reason,
        "RBAC: allowed by RoleBinding \"gateway/default\" of Role \"gateway\" to ServiceAccount \"apollo-deviceprocess-gateway/default\""
    );
    let d = p.authorize_with_reason(&non_res(&sa("x"), "get", "/version"));
    assert_eq!(
        d.reason,
        "RBAC: allowed by ClusterRoleBinding \"system:discovery\" of ClusterRole \"system:discovery\" to Group \"system:authenticated\""
    );
    let admin = UserInfo::authenticated("admin", &[MASTERS_GROUP]);
    assert_eq!(
        p.authorize_with_reason(&non_res(&admin, "get", "/x")),
        Decision {
            allowed: true,
            reason: String::new()
        }
    );
}

#[test]
fn rules_review() {
    let p = project_policy();
    let st = p.rules_for(&sa("apollo-deviceprocess-gateway"), NS);
    assert_eq!(st["incomplete"], false);
    let rr = st["resourceRules"].as_array().unwrap();
    assert!(rr.contains(&json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["gateway-tls"]})));
    assert!(rr.contains(&json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]})));
    assert!(st["nonResourceRules"].as_array().unwrap().iter().any(|r| {
        r["nonResourceURLs"]
            .as_array()
            .unwrap()
            .contains(&json!("/apis/*"))
    }));
    // the gateway's Role does not apply in another namespace
    let other = p.rules_for(&sa("apollo-deviceprocess-gateway"), "other");
    assert!(
        !other["resourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resources"] == json!(["secrets"]))
    );
    let broken = Policy::new(
        vec![],
        vec![],
        vec![binding(
            "RoleBinding",
            Some(NS),
            "b",
            "Role",
            "gone",
            json!([{"kind": "User", "name": "u"}]),
        )],
        vec![],
    );
    let st = broken.rules_for(&UserInfo::authenticated("u", &[]), NS);
    assert_eq!(st["incomplete"], true);
    assert_eq!(
        st["evaluationError"],
        "role.rbac.authorization.k8s.io \"gone\" not found"
    );
    let admin = p.rules_for(&UserInfo::authenticated("admin", &[MASTERS_GROUP]), NS);
    assert_eq!(
        admin["resourceRules"][0],
        json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
    );
}
