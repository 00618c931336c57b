//! Applying YAML manifests (`kubectl apply --server-side` for a file), for the demo, the
//! benchmarks and tests: every document is server-side applied with a field manager, resolved
//! through discovery, optionally moved into another namespace. [`crd_dir_for`] picks the CRD
//! directory that fits the server's Kubernetes version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};

/// Errors applying manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file cannot be read.
    #[error("{path}: {error}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        error: std::io::Error,
    },
    /// A document is not valid YAML or not a Kubernetes object.
    #[error("{path}: document {index}: {message}")]
    Parse {
        /// File.
        path: String,
        /// Zero-based document index.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// The API server refused or failed.
    #[error("applying {kind} {name}: {error}")]
    Apply {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
        /// Cause.
        error: kube::Error,
    },
    /// The kind is not served (for a custom resource: its CRD is missing or not established).
    #[error("{0} is not served by the API server")]
    UnknownKind(String),
    /// An applied CRD did not become Established in time ([`Applier::wait_established`]).
    #[error("crd {0} not Established in time")]
    NotEstablished(String),
    /// The server's `/version` could not be read or has no numeric minor.
    #[error("reading the server version: {0}")]
    Version(String),
}

/// The CRD directory of the repository `repo` that fits a server of Kubernetes 1.`minor`:
/// `k8s/crds`, or for an older server the variant `k8s-pre-1.<N>/crds` that
/// `apollo-crdgen --variants` writes (the smallest `N` above `minor`). The same choice as
/// `scripts/k8s-variant.sh` makes for `make install` and the kind demo.
pub fn crd_dir_for(repo: &Path, minor: u32) -> PathBuf {
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir(repo) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(n) = name
                .strip_prefix("k8s-pre-1.")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = entry.path().join("crds");
            if minor < n && dir.is_dir() && best.as_ref().is_none_or(|(b, _)| n < *b) {
                best = Some((n, dir));
            }
        }
    }
    best.map(|(_, d)| d)
        .unwrap_or_else(|| repo.join("k8s").join("crds"))
}

/// The server's Kubernetes minor version (`/version`; a managed cluster's `"29+"` is 29).
pub async fn server_minor(client: &kube::Client) -> Result<u32, ManifestError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(|e| ManifestError::Version(e.to_string()))?;
    let digits: String = info
        .minor
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .map_err(|_| ManifestError::Version(format!("minor {:?} is not a number", info.minor)))
}

#[cfg(test)]
mod variant_tests {
    use super::{crd_dir_for, moved_name};

    #[test]
    fn moved_names_stay_valid() {
        assert_eq!(moved_name("apollo", "t-1"), "apollo-t-1");
        let long = moved_name(&"a".repeat(250), "t-abcdefgh");
        assert!(long.len() <= 253, "{}", long.len());
        assert_eq!(long, moved_name(&"a".repeat(250), "t-abcdefgh"));
        assert_ne!(long, moved_name(&"a".repeat(250), "t-abcdefgi"));
    }

    #[test]
    fn older_servers_get_the_variant() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        std::fs::create_dir_all(repo.join("k8s/crds")).unwrap();
        assert_eq!(crd_dir_for(repo, 29), repo.join("k8s/crds"));
        std::fs::create_dir_all(repo.join("k8s-pre-1.31/crds")).unwrap();
        std::fs::create_dir_all(repo.join("k8s-pre-1.33/crds")).unwrap();
        std::fs::create_dir_all(repo.join("k8s-pre-1.x/crds")).unwrap();
        assert_eq!(crd_dir_for(repo, 29), repo.join("k8s-pre-1.31/crds"));
        assert_eq!(crd_dir_for(repo, 30), repo.join("k8s-pre-1.31/crds"));
        assert_eq!(crd_dir_for(repo, 31), repo.join("k8s-pre-1.33/crds"));
        assert_eq!(crd_dir_for(repo, 33), repo.join("k8s/crds"));
        assert_eq!(crd_dir_for(repo, 36), repo.join("k8s/crds"));
    }
}

/// Applies manifests with one field manager, caching discovery per kind.
pub struct Applier {
    client: kube::Client,
    manager: String,
    namespace: Option<String>,
    kinds: HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>,
    discovery_timeout: Duration,
    established_timeout: Option<Duration>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("manager", &self.manager)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Applier {
    /// An applier using `client` and field manager `manager`. Namespaced objects go into
    /// `namespace` when given (their own namespace otherwise, `default` when they have none).
    pub fn new(client: kube::Client, manager: &str, namespace: Option<&str>) -> Self {
        Self {
            client,
            manager: manager.to_owned(),
            namespace: namespace.map(str::to_owned),
            kinds: HashMap::new(),
            // A kind whose CRD was applied a moment ago may take a little while to be served.
            discovery_timeout: Duration::from_secs(10),
            established_timeout: None,
        }
    }

    /// After applying a CustomResourceDefinition, waits up to `timeout` for its `Established`
    /// condition (so that the next call can create instances at once); off by default.
    pub fn wait_established(mut self, timeout: Duration) -> Self {
        self.established_timeout = Some(timeout);
        self
    }

    /// Applies every document of a multi-document YAML file; returns `kind/name` of each.
    pub async fn apply_file(&mut self, path: &Path) -> Result<Vec<String>, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Read {
            path: path.display().to_string(),
            error,
        })?;
        self.apply_yaml(&text, &path.display().to_string()).await
    }

    /// Applies every `*.yaml` file of a directory, in name order.
    pub async fn apply_dir(&mut self, dir: &Path) -> Result<Vec<String>, ManifestError> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|error| ManifestError::Read {
                path: dir.display().to_string(),
                error,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut applied = Vec::new();
        for file in files {
            applied.extend(self.apply_file(&file).await?);
        }
        Ok(applied)
    }

    /// Applies every document of a multi-document YAML text (`origin` names it in errors).
    pub async fn apply_yaml(
        &mut self,
        text: &str,
        origin: &str,
    ) -> Result<Vec<String>, ManifestError> {
        let docs = parse_documents(text, origin)?;
        let mut applied = Vec::new();
        for (index, doc) in docs.into_iter().enumerate() {
            applied.push(self.apply_object(doc, origin, index).await?);
        }
        Ok(applied)
    }

    async fn resolve(
        &mut self,
        gvk: &GroupVersionKind,
    ) -> Result<(ApiResource, ApiCapabilities), ManifestError> {
        if let Some(found) = self.kinds.get(gvk) {
            return Ok(found.clone());
        }
        let deadline = Instant::now() + self.discovery_timeout;
        loop {
            match kube::discovery::pinned_kind(&self.client, gvk).await {
                Ok(found) => {
                    self.kinds.insert(gvk.clone(), found.clone());
                    return Ok(found);
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => {
                    return Err(ManifestError::UnknownKind(format!(
                        "{}/{} {}",
                        gvk.group, gvk.version, gvk.kind
                    )));
                }
            }
        }
    }

    async fn apply_object(
        &mut self,
        mut obj: DynamicObject,
        origin: &str,
        index: usize,
    ) -> Result<String, ManifestError> {
        let types = obj.types.clone().ok_or_else(|| ManifestError::Parse {
            path: origin.to_owned(),
            index,
            message: "missing apiVersion or kind".into(),
        })?;
        let gvk = GroupVersionKind::try_from(&types).map_err(|e| ManifestError::Parse {
            path: origin.to_owned(),
            index,
            message: e.to_string(),
        })?;
        let name = obj
            .metadata
            .name
            .clone()
            .ok_or_else(|| ManifestError::Parse {
                path: origin.to_owned(),
                index,
                message: "missing metadata.name".into(),
            })?;
        let (resource, caps) = self.resolve(&gvk).await?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => {
                obj.metadata.namespace = None;
                Api::all_with(self.client.clone(), &resource)
            }
            Scope::Namespaced => {
                let ns = self
                    .namespace
                    .clone()
                    .or_else(|| obj.metadata.namespace.clone())
                    .unwrap_or_else(|| "default".into());
                rewrite_subject_namespaces(&mut obj, &ns, self.namespace.is_some());
                obj.metadata.namespace = Some(ns.clone());
                Api::namespaced_with(self.client.clone(), &ns, &resource)
            }
        };
        let mut name = name;
        if self.namespace.is_some() && caps.scope == Scope::Cluster {
            let ns = self.namespace.clone().unwrap_or_default();
            // A cluster-wide binding whose subjects move to another namespace becomes a binding
            // of its own for that namespace: rewriting the shared one would take the grant away
            // from whoever else uses it (parallel tests, each in its own namespace).
            if rewrite_subject_namespaces(&mut obj, &ns, true) {
                name = moved_name(&name, &ns);
                obj.metadata.name = Some(name.clone());
                obj.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(MOVED_TO_LABEL.to_owned(), ns.clone());
            }
        }
        let params = PatchParams::apply(&self.manager).force();
        api.patch(&name, &params, &Patch::Apply(&obj))
            .await
            .map_err(|error| ManifestError::Apply {
                kind: gvk.kind.clone(),
                name: name.clone(),
                error,
            })?;
        if let Some(timeout) = self.established_timeout
            && gvk.group == "apiextensions.k8s.io"
            && gvk.kind == "CustomResourceDefinition"
        {
            wait_established(&api, &name, timeout).await?;
        }
        Ok(format!("{}/{name}", gvk.kind.to_ascii_lowercase()))
    }
}

/// Polls a CRD until its `Established` condition is `True`.
async fn wait_established(
    api: &Api<DynamicObject>,
    name: &str,
    timeout: Duration,
) -> Result<(), ManifestError> {
    let deadline = Instant::now() + timeout;
    loop {
        let crd = api.get(name).await.map_err(|error| ManifestError::Apply {
            kind: "CustomResourceDefinition".into(),
            name: name.to_owned(),
            error,
        })?;
        let established = crd
            .data
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
        if established {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ManifestError::NotEstablished(name.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The label on a cluster-scoped binding that [`Applier`] made for one namespace (its
/// ServiceAccount subjects moved there); its value is that namespace. Test environments delete
/// these bindings with their namespace.
pub const MOVED_TO_LABEL: &str = "apollo.azure.com/moved-to-namespace";

/// The name of a cluster-scoped object made for namespace `ns`: `<name>-<ns>`, shortened with a
/// hash to the 253 characters a name may have.
pub fn moved_name(name: &str, ns: &str) -> String {
    let full = format!("{name}-{ns}");
    if full.len() <= 253 {
        return full;
    }
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    full.hash(&mut hasher);
    let hash = format!("{:010x}", hasher.finish() & 0xff_ffff_ffff);
    let mut cut = 242;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", full[..cut].trim_end_matches(['-', '.']))
}

/// When manifests move to another namespace, ServiceAccount subjects of (Cluster)RoleBindings
/// move with them, so the bindings keep naming the accounts that were applied. Returns whether
/// a subject changed namespace.
fn rewrite_subject_namespaces(obj: &mut DynamicObject, ns: &str, moved: bool) -> bool {
    if !moved {
        return false;
    }
    let mut changed = false;
    if let Some(subjects) = obj.data.get_mut("subjects").and_then(|s| s.as_array_mut()) {
        for subject in subjects {
            if subject["kind"] == "ServiceAccount" && subject["namespace"] != ns {
                subject["namespace"] = serde_json::Value::String(ns.to_owned());
                changed = true;
            }
        }
    }
    changed
}

/// Splits a multi-document YAML text into objects, skipping empty documents.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<DynamicObject>, ManifestError> {
    let values: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Parse {
            path: origin.to_owned(),
            index: 0,
            message: e.to_string(),
        })?;
    values
        .into_iter()
        .filter(|v| !v.is_null())
        .enumerate()
        .map(|(index, v)| {
            let err = |message: String| ManifestError::Parse {
                path: origin.to_owned(),
                index,
                message,
            };
            let obj: DynamicObject = serde_json::from_value(v).map_err(|e| err(e.to_string()))?;
            if obj.types.is_none() {
                return Err(err(
                    "not a Kubernetes object: apiVersion or kind missing".into()
                ));
            }
            Ok(obj)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_yaml() {
        let docs = parse_documents(
            "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n---\n\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: b\nsubjects:\n- kind: ServiceAccount\n  name: a\n  namespace: default\n",
            "test",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        let mut binding = docs[1].clone();
        rewrite_subject_namespaces(&mut binding, "other", true);
        assert_eq!(binding.data["subjects"][0]["namespace"], "other");
    }

    #[test]
    fn reports_bad_documents() {
        let err = parse_documents("a: [unclosed", "bad.yaml").unwrap_err();
        assert!(err.to_string().contains("bad.yaml"), "{err}");
        let err = parse_documents("just: a map\n", "x.yaml").unwrap_err();
        assert!(err.to_string().contains("x.yaml"), "{err}");
    }
}
