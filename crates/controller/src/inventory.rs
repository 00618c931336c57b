//! The inventory kind: any namespaced kind with labels, named `Kind.version.group`
//! (`NetworkSwitch.v1alpha1.azure.com` by default). The controller reads only its metadata.

use std::fmt;
use std::str::FromStr;

use kube::api::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;

use crate::Error;

/// Group, version and kind of the inventory, and its plural when known without discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryKind {
    /// API group (`""` for the core group).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name; `None` = ask discovery.
    pub plural: Option<String>,
}

impl Default for InventoryKind {
    fn default() -> Self {
        Self {
            group: apollo_api::GROUP.into(),
            version: apollo_api::VERSION.into(),
            kind: "NetworkSwitch".into(),
            plural: Some("networkswitches".into()),
        }
    }
}

impl FromStr for InventoryKind {
    type Err = String;

    /// `Kind.version.group` (`NetworkSwitch.v1alpha1.azure.com`), or `Kind.version` for the
    /// core group (`ConfigMap.v1`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '.');
        let kind = parts.next().unwrap_or_default();
        let version = parts.next().unwrap_or_default();
        let group = parts.next().unwrap_or_default();
        let ok_kind = kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && kind.chars().all(|c| c.is_ascii_alphanumeric());
        let ok_version = version.starts_with('v')
            && version
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok_kind || !ok_version {
            return Err(format!(
                "{s:?} is not Kind.version.group (e.g. NetworkSwitch.v1alpha1.azure.com)"
            ));
        }
        Ok(Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: None,
        })
    }
}

impl fmt::Display for InventoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}.{}", self.kind, self.version)
        } else {
            write!(f, "{}.{}.{}", self.kind, self.version, self.group)
        }
    }
}

impl InventoryKind {
    fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(&self.group, &self.version, &self.kind)
    }

    /// The API resource: from the given plural, or from discovery, which also checks that the
    /// kind is served and namespaced.
    pub async fn resolve(&self, client: &kube::Client) -> Result<ApiResource, Error> {
        if let Some(plural) = &self.plural {
            return Ok(ApiResource::from_gvk_with_plural(&self.gvk(), plural));
        }
        let (resource, caps) = kube::discovery::pinned_kind(client, &self.gvk())
            .await
            .map_err(|source| Error::Discovery {
                kind: self.to_string(),
                source: Box::new(source),
            })?;
        if caps.scope != Scope::Namespaced {
            return Err(Error::InventoryNotNamespaced(self.to_string()));
        }
        Ok(resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kind_version_group() {
        let k: InventoryKind = "NetworkSwitch.v1alpha1.azure.com".parse().unwrap();
        assert_eq!(
            (k.kind.as_str(), k.version.as_str(), k.group.as_str()),
            ("NetworkSwitch", "v1alpha1", "azure.com")
        );
        assert_eq!(k.to_string(), "NetworkSwitch.v1alpha1.azure.com");
        let core: InventoryKind = "ConfigMap.v1".parse().unwrap();
        assert_eq!(core.group, "");
        assert_eq!(core.to_string(), "ConfigMap.v1");
        for bad in [
            "",
            "NetworkSwitch",
            "networkswitch.v1.azure.com",
            "NetworkSwitch.alpha.azure.com",
            "Net-Switch.v1.x",
        ] {
            assert!(bad.parse::<InventoryKind>().is_err(), "{bad:?}");
        }
    }
}
