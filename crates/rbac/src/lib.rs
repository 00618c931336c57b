//! Kubernetes RBAC authorizer (pure, no I/O). Work in progress.

/// The requesting user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// The request being authorized.
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

/// RBAC objects as JSON.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: Vec<serde_json::Value>,
    cluster_roles: Vec<serde_json::Value>,
    role_bindings: Vec<serde_json::Value>,
    cluster_role_bindings: Vec<serde_json::Value>,
}

impl Policy {
    pub fn new(
        roles: Vec<serde_json::Value>,
        cluster_roles: Vec<serde_json::Value>,
        role_bindings: Vec<serde_json::Value>,
        cluster_role_bindings: Vec<serde_json::Value>,
    ) -> Self {
        Policy {
            roles,
            cluster_roles,
            role_bindings,
            cluster_role_bindings,
        }
    }

    /// Whether the request is allowed.
    pub fn authorize(&self, attrs: &Attributes) -> bool {
        let _ = (
            &self.roles,
            &self.cluster_roles,
            &self.role_bindings,
            &self.cluster_role_bindings,
        );
        attrs.user.groups.iter().any(|g| g == "system:masters")
    }
}

/// The real apiserver's Forbidden message.
pub fn forbidden_message(attrs: &Attributes) -> String {
    format!(
        "forbidden: User \"{}\" cannot {} resource \"{}\"",
        attrs.user.name, attrs.verb, attrs.resource
    )
}
