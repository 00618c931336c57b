//! The Kubernetes minor version the server pretends to be (`--version 1.29`).
//!
//! `/version` and the OpenAPI documents report it, and the API fields that a real server of
//! that minor does not have behave as there: a field the API types do not have yet is an
//! *unknown field* (400 `strict decoding error: unknown field "..."` under Strict, a warning
//! under Warn, pruned either way), and a field whose feature gate is off by default is
//! dropped silently (the apiserver's `dropDisabledFields`). The table of such fields is
//! `apollo_apimachinery::compat::CRD_VERSION_FIELDS`; everything else behaves as the newest
//! minor the server follows (`kube-apiserver-behaviour.md`, observed on v1.36.2).

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// A Kubernetes `1.<minor>` the server can pretend to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    minor: u32,
}

impl KubeVersion {
    /// The oldest minor the server can pretend to be.
    pub const OLDEST: KubeVersion = KubeVersion {
        minor: apollo_apimachinery::compat::OLDEST_SUPPORTED_MINOR,
    };
    /// The newest minor (the behaviour the server follows was observed on v1.36.2).
    pub const NEWEST: KubeVersion = KubeVersion { minor: 36 };
    /// What the server reports unless told otherwise.
    pub const DEFAULT: KubeVersion = KubeVersion { minor: 33 };

    /// `1.<minor>`, if within [`KubeVersion::OLDEST`]..=[`KubeVersion::NEWEST`].
    pub fn new(minor: u32) -> Option<KubeVersion> {
        (Self::OLDEST.minor..=Self::NEWEST.minor)
            .contains(&minor)
            .then_some(KubeVersion { minor })
    }

    /// The minor number.
    pub fn minor(self) -> u32 {
        self.minor
    }

    /// `v1.<minor>.0-apollo-devcluster`.
    pub fn git_version(self) -> String {
        format!("v1.{}.0-apollo-devcluster", self.minor)
    }

    /// The `/version` document.
    pub(crate) fn document(self) -> Value {
        let minor = self.minor.to_string();
        serde_json::json!({
            "major": "1",
            "minor": minor,
            "emulationMajor": "1",
            "emulationMinor": minor,
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": (self.minor - 1).to_string(),
            "gitVersion": self.git_version(),
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24",
            "compiler": "gc",
            "platform": "linux/amd64",
        })
    }

    /// Applies the version gates to a CustomResourceDefinition: removes the fields this
    /// minor does not serve and returns the paths of those its API types do not have at all
    /// (unknown fields, e.g. `spec.versions[0].selectableFields`), for field validation.
    pub(crate) fn gate_crd(self, crd: &mut Value) -> Vec<String> {
        apollo_apimachinery::compat::strip_crd_fields(crd, self.minor)
            .into_iter()
            .filter(|r| !r.known_by(self.minor))
            .map(|r| r.path())
            .collect()
    }
}

impl Default for KubeVersion {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}

/// A version string that is not `1.<minor>` (optionally `v`-prefixed, with a patch) within
/// the supported range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported Kubernetes version {0:?}: expected 1.<minor> with minor from {min} to {max}, e.g. 1.29",
    min = KubeVersion::OLDEST.minor,
    max = KubeVersion::NEWEST.minor
)]
pub struct VersionError(String);

impl FromStr for KubeVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionError(s.chars().take(40).collect());
        let t = s.trim().trim_start_matches('v');
        let mut parts = t.split('.');
        let (Some("1"), Some(minor)) = (parts.next(), parts.next()) else {
            return Err(err());
        };
        if let Some(patch) = parts.next()
            && (patch.is_empty() || !patch.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(err());
        }
        if parts.next().is_some() || minor.is_empty() || minor.len() > 3 {
            return Err(err());
        }
        let minor: u32 = minor.parse().map_err(|_| err())?;
        KubeVersion::new(minor).ok_or_else(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_minor_versions_in_range() {
        assert_eq!("1.29".parse::<KubeVersion>().unwrap().minor(), 29);
        assert_eq!("v1.36.2".parse::<KubeVersion>().unwrap().minor(), 36);
        for bad in [
            "1.28", "1.37", "2.30", "1", "1.x", "1.30.a", "", "1.30.1.1", "1.0030",
        ] {
            let e = bad.parse::<KubeVersion>().unwrap_err().to_string();
            assert!(e.contains("unsupported Kubernetes version"), "{bad}: {e}");
        }
        let long = "9".repeat(10_000);
        assert!(long.parse::<KubeVersion>().unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn version_document() {
        let d = KubeVersion::new(29).unwrap().document();
        assert_eq!(d["minor"], "29");
        assert_eq!(d["gitVersion"], "v1.29.0-apollo-devcluster");
        assert_eq!(d["minCompatibilityMinor"], "28");
    }

    #[test]
    fn crd_gates_report_unknown_fields_only_before_they_exist() {
        let crd = json!({"spec": {"versions": [
            {"name": "v1", "selectableFields": [{"jsonPath": ".spec.a"}]}
        ]}});
        let mut c = crd.clone();
        assert_eq!(
            KubeVersion::new(29).unwrap().gate_crd(&mut c),
            ["spec.versions[0].selectableFields"]
        );
        assert!(c["spec"]["versions"][0].get("selectableFields").is_none());
        let mut c = crd.clone();
        assert!(KubeVersion::new(30).unwrap().gate_crd(&mut c).is_empty());
        assert!(c["spec"]["versions"][0].get("selectableFields").is_none());
        let mut c = crd.clone();
        assert!(KubeVersion::new(31).unwrap().gate_crd(&mut c).is_empty());
        assert_eq!(c, crd);
    }
}
