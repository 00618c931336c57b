//! Kubernetes RBAC authorization (pure, no I/O): the decision kube-apiserver's RBAC authorizer
//! (behind the `system:masters` short-cut) takes from Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding objects given as JSON, and the `Forbidden` message it answers with.
//!
//! Implemented, as in `plugin/pkg/auth/authorizer/rbac`:
//! * `system:masters` members are always allowed.
//! * ClusterRoleBindings grant their ClusterRole everywhere (cluster-scoped, all namespaces and
//!   non-resource URLs); RoleBindings are consulted only for requests in their own namespace,
//!   and a RoleBinding to a ClusterRole grants that ClusterRole's rules in the binding's
//!   namespace only. A ClusterRoleBinding to a `Role` never grants anything.
//! * Subjects: `User` (exact name), `Group` (membership in `UserInfo::groups`), `ServiceAccount`
//!   (user name `system:serviceaccount:<ns>:<name>`; a RoleBinding's subject without a
//!   namespace means the binding's namespace). Groups such as `system:serviceaccounts`,
//!   `system:serviceaccounts:<ns>` and `system:authenticated` work through `Group` subjects;
//!   [`UserInfo::service_account`] and [`UserInfo::authenticated`] build identities carrying
//!   the groups the real authenticators add.
//! * Rules: `verbs` (`*`), `apiGroups` (`*`), `resources` (`*`, `res/sub`, `*/sub`; a request
//!   for a subresource needs the `res/sub` form), `resourceNames` (empty = all; a request
//!   without a name, such as list or create, only matches rules without resourceNames),
//!   `nonResourceURLs` (exact, `*`, or a prefix ending in `*`).
//! * The bootstrap policy every cluster has ([`bootstrap_cluster_roles`],
//!   [`bootstrap_cluster_role_bindings`]): `cluster-admin` bound to `system:masters`,
//!   `system:discovery` and `system:basic-user` bound to `system:authenticated`,
//!   `system:public-info-viewer` bound to `system:authenticated` and `system:unauthenticated`.
//!   [`Policy::new`] adds them unless objects of the same names are given.
//! * [`forbidden_message`] / [`forbidden_status`]: the wording of the real 403, including the
//!   `: RBAC: clusterrole.rbac.authorization.k8s.io "x" not found` suffix when a binding that
//!   applies to the user points at a missing role ([`Policy::authorize_with_reason`], which
//!   also gives the `RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to User "u"`
//!   reason of an allow, as a SubjectAccessReview's `status.reason` shows it).
//! * [`Policy::rules_for`]: the `status` of a SelfSubjectRulesReview (`kubectl auth can-i --list`).
//!
//! Not implemented: `aggregationRule` (aggregated ClusterRoles keep the rules they were given;
//! the default `admin`/`edit`/`view` roles are not built in), the escalation and bind checks
//! made when Roles and bindings are written, the Node and Webhook authorizers, impersonation.

use apollo_names::messages::go_quote;
use serde_json::{Value, json};

/// The requesting user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The group of anonymous requests.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The group that bypasses authorization.
pub const MASTERS_GROUP: &str = "system:masters";
/// The group of all service accounts.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

impl UserInfo {
    /// An authenticated user: `groups` plus `system:authenticated` (as the apiserver adds it).
    pub fn authenticated(name: impl Into<String>, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.to_string());
        }
        UserInfo {
            name: name.into(),
            groups,
        }
    }

    /// A service account's identity as the token authenticator produces it:
    /// `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts`,
    /// `system:serviceaccounts:<ns>` and `system:authenticated`.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        UserInfo {
            name: service_account_username(namespace, name),
            groups: vec![
                SERVICE_ACCOUNTS_GROUP.to_string(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
                AUTHENTICATED_GROUP.to_string(),
            ],
        }
    }
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The request being authorized (the apiserver's `authorizer.Attributes`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    pub user: UserInfo,
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub resource_request: bool,
    /// For non-resource requests.
    pub path: String,
}

#[derive(Debug, Clone, Default)]
struct Rule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
}

#[derive(Debug, Clone)]
struct Role {
    namespace: String,
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

#[derive(Debug, Clone)]
struct Binding {
    namespace: String,
    name: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn s(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return String::new(),
        }
    }
    cur.as_str().unwrap_or("").to_string()
}

fn parse_role(v: &Value) -> Role {
    let rules = v
        .get("rules")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|r| Rule {
                    verbs: strs(r.get("verbs")),
                    api_groups: strs(r.get("apiGroups")),
                    resources: strs(r.get("resources")),
                    resource_names: strs(r.get("resourceNames")),
                    non_resource_urls: strs(r.get("nonResourceURLs")),
                })
                .collect()
        })
        .unwrap_or_default();
    Role {
        namespace: s(v, &["metadata", "namespace"]),
        name: s(v, &["metadata", "name"]),
        rules,
    }
}

fn parse_binding(v: &Value) -> Binding {
    let subjects = v
        .get("subjects")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| Subject {
                    kind: s(x, &["kind"]),
                    name: s(x, &["name"]),
                    namespace: s(x, &["namespace"]),
                })
                .collect()
        })
        .unwrap_or_default();
    Binding {
        namespace: s(v, &["metadata", "namespace"]),
        name: s(v, &["metadata", "name"]),
        role_kind: s(v, &["roleRef", "kind"]),
        role_name: s(v, &["roleRef", "name"]),
        subjects,
    }
}

/// RBAC objects as JSON, compiled for authorization.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: Vec<Role>,
    cluster_roles: Vec<Role>,
    role_bindings: Vec<Binding>,
    cluster_role_bindings: Vec<Binding>,
}

/// An authorization decision with the authorizer's reason (empty when there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// e.g. `RBAC: clusterrole.rbac.authorization.k8s.io "x" not found` when a binding that
    /// applies to the user refers to a missing role; empty otherwise.
    pub reason: String,
}

impl Policy {
    /// Compiles the objects (malformed entries are read leniently: missing fields are empty).
    /// The bootstrap cluster roles and bindings are added unless given under the same names.
    pub fn new(
        roles: Vec<Value>,
        cluster_roles: Vec<Value>,
        role_bindings: Vec<Value>,
        cluster_role_bindings: Vec<Value>,
    ) -> Self {
        let mut cluster_roles: Vec<Role> = cluster_roles.iter().map(parse_role).collect();
        for r in bootstrap_cluster_roles() {
            let r = parse_role(&r);
            if !cluster_roles.iter().any(|c| c.name == r.name) {
                cluster_roles.push(r);
            }
        }
        let mut cluster_role_bindings: Vec<Binding> =
            cluster_role_bindings.iter().map(parse_binding).collect();
        for b in bootstrap_cluster_role_bindings() {
            let b = parse_binding(&b);
            if !cluster_role_bindings.iter().any(|c| c.name == b.name) {
                cluster_role_bindings.push(b);
            }
        }
        Policy {
            roles: roles.iter().map(parse_role).collect(),
            cluster_roles,
            role_bindings: role_bindings.iter().map(parse_binding).collect(),
            cluster_role_bindings,
        }
    }

    /// Whether the request is allowed.
    pub fn authorize(&self, attrs: &Attributes) -> bool {
        self.authorize_with_reason(attrs).allowed
    }

    /// The decision with the reason the real authorizer would give: on allow
    /// `RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to User "u"` (empty for
    /// `system:masters`), on deny the missing-role errors met on the way (or empty).
    pub fn authorize_with_reason(&self, attrs: &Attributes) -> Decision {
        if attrs.user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        let mut errors: Vec<String> = Vec::new();
        for b in &self.cluster_role_bindings {
            let Some(subject) = b.subjects.iter().find(|s| applies_to(&attrs.user, s, "")) else {
                continue;
            };
            match self.role_rules(&b.role_kind, &b.role_name, "") {
                Ok(rules) if rules.iter().any(|r| rule_allows(attrs, r)) => {
                    return Decision {
                        allowed: true,
                        reason: format!(
                            "RBAC: allowed by ClusterRoleBinding {} of {} {} to {}",
                            go_quote(&b.name),
                            b.role_kind,
                            go_quote(&b.role_name),
                            describe_subject(subject, "")
                        ),
                    };
                }
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        if !attrs.namespace.is_empty() {
            for b in self
                .role_bindings
                .iter()
                .filter(|b| b.namespace == attrs.namespace)
            {
                let Some(subject) = b
                    .subjects
                    .iter()
                    .find(|s| applies_to(&attrs.user, s, &attrs.namespace))
                else {
                    continue;
                };
                match self.role_rules(&b.role_kind, &b.role_name, &b.namespace) {
                    Ok(rules) if rules.iter().any(|r| rule_allows(attrs, r)) => {
                        return Decision {
                            allowed: true,
                            reason: format!(
                                "RBAC: allowed by RoleBinding {} of {} {} to {}",
                                go_quote(&format!("{}/{}", b.name, b.namespace)),
                                b.role_kind,
                                go_quote(&b.role_name),
                                describe_subject(subject, &b.namespace)
                            ),
                        };
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for e in &errors {
            if !seen.contains(&e.as_str()) {
                seen.push(e);
            }
        }
        let reason = match seen.as_slice() {
            [] => String::new(),
            [one] => format!("RBAC: {one}"),
            many => format!("RBAC: [{}]", many.join(", ")),
        };
        Decision {
            allowed: false,
            reason,
        }
    }

    /// The rules that apply to `user` in `namespace` (cluster-wide ones included), as a
    /// SelfSubjectRulesReview's `status` reports them: `resourceRules`, `nonResourceRules`,
    /// `incomplete` (a binding pointed at a missing role) and `evaluationError`.
    /// `system:masters` gets the `*` rules of cluster-admin.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Value {
        let mut rules: Vec<&Rule> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let masters = Rule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            ..Rule::default()
        };
        let masters_urls = Rule {
            verbs: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..Rule::default()
        };
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            rules.push(&masters);
            rules.push(&masters_urls);
        }
        for b in &self.cluster_role_bindings {
            if b.subjects.iter().any(|s| applies_to(user, s, "")) {
                match self.role_rules(&b.role_kind, &b.role_name, "") {
                    Ok(r) => rules.extend(r.iter()),
                    Err(e) => errors.push(e),
                }
            }
        }
        if !namespace.is_empty() {
            for b in self
                .role_bindings
                .iter()
                .filter(|b| b.namespace == namespace)
            {
                if b.subjects.iter().any(|s| applies_to(user, s, namespace)) {
                    match self.role_rules(&b.role_kind, &b.role_name, &b.namespace) {
                        Ok(r) => rules.extend(r.iter()),
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        let mut resource_rules = Vec::new();
        let mut non_resource_rules = Vec::new();
        for r in rules {
            if !r.resources.is_empty() {
                let mut o = serde_json::Map::new();
                o.insert("verbs".into(), json!(r.verbs));
                o.insert("apiGroups".into(), json!(r.api_groups));
                o.insert("resources".into(), json!(r.resources));
                if !r.resource_names.is_empty() {
                    o.insert("resourceNames".into(), json!(r.resource_names));
                }
                resource_rules.push(Value::Object(o));
            }
            if !r.non_resource_urls.is_empty() {
                non_resource_rules
                    .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
            }
        }
        let mut status = json!({
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": !errors.is_empty(),
        });
        if !errors.is_empty() {
            errors.dedup();
            let msg = match errors.as_slice() {
                [one] => one.clone(),
                many => format!("[{}]", many.join(", ")),
            };
            status["evaluationError"] = Value::String(msg);
        }
        status
    }

    fn role_rules(&self, kind: &str, name: &str, namespace: &str) -> Result<&[Rule], String> {
        match kind {
            "Role" => self
                .roles
                .iter()
                .find(|r| r.namespace == namespace && r.name == name && !namespace.is_empty())
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| format!("role.rbac.authorization.k8s.io \"{name}\" not found")),
            "ClusterRole" => self
                .cluster_roles
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| {
                    format!("clusterrole.rbac.authorization.k8s.io \"{name}\" not found")
                }),
            other => Err(format!("unsupported role reference kind: \"{other}\"")),
        }
    }
}

fn applies_to(user: &UserInfo, subject: &Subject, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = if subject.namespace.is_empty() {
                namespace
            } else {
                &subject.namespace
            };
            !ns.is_empty() && user.name == service_account_username(ns, &subject.name)
        }
        _ => false,
    }
}

fn describe_subject(s: &Subject, binding_namespace: &str) -> String {
    if s.kind == "ServiceAccount" {
        let ns = if s.namespace.is_empty() {
            binding_namespace
        } else {
            &s.namespace
        };
        format!("{} {}", s.kind, go_quote(&format!("{}/{ns}", s.name)))
    } else {
        format!("{} {}", s.kind, go_quote(&s.name))
    }
}

fn verb_matches(rule: &Rule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

fn api_group_matches(rule: &Rule, group: &str) -> bool {
    rule.api_groups.iter().any(|g| g == "*" || g == group)
}

fn resource_matches(rule: &Rule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

fn resource_name_matches(rule: &Rule, name: &str) -> bool {
    rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| n == name)
}

fn non_resource_url_matches(rule: &Rule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|u| {
        u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}

fn rule_allows(attrs: &Attributes, rule: &Rule) -> bool {
    if attrs.resource_request {
        let combined = if attrs.subresource.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        verb_matches(rule, &attrs.verb)
            && api_group_matches(rule, &attrs.api_group)
            && resource_matches(rule, &combined, &attrs.subresource)
            && resource_name_matches(rule, &attrs.name)
    } else {
        verb_matches(rule, &attrs.verb) && non_resource_url_matches(rule, &attrs.path)
    }
}

fn bootstrap_meta(name: &str) -> Value {
    json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}
    })
}

/// The bootstrap ClusterRoles this crate relies on, as the real apiserver creates them.
pub fn bootstrap_cluster_roles() -> Vec<Value> {
    let role = |name: &str, rules: Value| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": bootstrap_meta(name),
            "rules": rules
        })
    };
    vec![
        role(
            "cluster-admin",
            json!([
                {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["*"], "nonResourceURLs": ["*"]}
            ]),
        ),
        role(
            "system:discovery",
            json!([{"verbs": ["get"], "nonResourceURLs": [
                "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                "/openapi", "/openapi/*", "/readyz", "/version", "/version/"
            ]}]),
        ),
        role(
            "system:basic-user",
            json!([
                {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                 "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
                {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
                 "resources": ["selfsubjectreviews"]}
            ]),
        ),
        role(
            "system:public-info-viewer",
            json!([{"verbs": ["get"], "nonResourceURLs": [
                "/healthz", "/livez", "/readyz", "/version", "/version/"
            ]}]),
        ),
    ]
}

/// The bootstrap ClusterRoleBindings matching [`bootstrap_cluster_roles`].
pub fn bootstrap_cluster_role_bindings() -> Vec<Value> {
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
            .collect();
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": bootstrap_meta(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": subjects
        })
    };
    vec![
        binding("cluster-admin", &[MASTERS_GROUP]),
        binding("system:discovery", &[AUTHENTICATED_GROUP]),
        binding("system:basic-user", &[AUTHENTICATED_GROUP]),
        binding(
            "system:public-info-viewer",
            &[AUTHENTICATED_GROUP, UNAUTHENTICATED_GROUP],
        ),
    ]
}

/// The `&`, `<`, `>` escaping the apiserver applies to the message.
fn sanitize(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The authorizer part of the message (`User "u" cannot get resource ...`).
fn forbidden_detail(attrs: &Attributes) -> String {
    let user = go_quote(&attrs.user.name);
    if !attrs.resource_request {
        return format!(
            "User {user} cannot {} path {}",
            attrs.verb,
            go_quote(&attrs.path)
        );
    }
    let mut resource = attrs.resource.clone();
    if !attrs.subresource.is_empty() {
        resource = format!("{resource}/{}", attrs.subresource);
    }
    if attrs.namespace.is_empty() {
        format!(
            "User {user} cannot {} resource {} in API group {} at the cluster scope",
            attrs.verb,
            go_quote(&resource),
            go_quote(&attrs.api_group)
        )
    } else {
        format!(
            "User {user} cannot {} resource {} in API group {} in the namespace {}",
            attrs.verb,
            go_quote(&resource),
            go_quote(&attrs.api_group),
            go_quote(&attrs.namespace)
        )
    }
}

/// The real apiserver's Forbidden message, e.g.
/// `deviceprocesses.azure.com "x" is forbidden: User "system:serviceaccount:default:apollo-deviceprocess-gateway" cannot update resource "deviceprocesses/status" in API group "azure.com" in the namespace "default"`.
pub fn forbidden_message(attrs: &Attributes) -> String {
    forbidden_message_with_reason(attrs, "")
}

/// [`forbidden_message`] with the authorizer's reason appended (`...: RBAC: ...`) when non-empty.
pub fn forbidden_message_with_reason(attrs: &Attributes, reason: &str) -> String {
    let mut detail = sanitize(&forbidden_detail(attrs));
    if !reason.is_empty() {
        detail = format!("{detail}: {reason}");
    }
    let qualified = qualified_resource(attrs);
    if qualified.is_empty() {
        format!("forbidden: {detail}")
    } else if attrs.name.is_empty() {
        format!("{qualified} is forbidden: {detail}")
    } else {
        format!(
            "{qualified} {} is forbidden: {detail}",
            go_quote(&attrs.name)
        )
    }
}

fn qualified_resource(attrs: &Attributes) -> String {
    if !attrs.resource_request {
        return String::new();
    }
    if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    }
}

/// The whole `metav1.Status` body of the 403 (`details` names group, resource as `kind`, and name).
pub fn forbidden_status(attrs: &Attributes, reason: &str) -> Value {
    let mut details = serde_json::Map::new();
    if attrs.resource_request {
        if !attrs.name.is_empty() {
            details.insert("name".into(), Value::String(attrs.name.clone()));
        }
        if !attrs.api_group.is_empty() {
            details.insert("group".into(), Value::String(attrs.api_group.clone()));
        }
        if !attrs.resource.is_empty() {
            details.insert("kind".into(), Value::String(attrs.resource.clone()));
        }
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": forbidden_message_with_reason(attrs, reason),
        "reason": "Forbidden",
        "details": details,
        "code": 403
    })
}

#[cfg(test)]
mod tests;
