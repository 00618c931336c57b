//! Which resources are served: the built-in kinds and one entry per served version of each CRD.

use std::collections::BTreeMap;
use std::sync::Arc;

use apollo_apimachinery::schema::{FieldError, Structural};
use apollo_apiquery::table::{self, Column};
use serde_json::{Value, json};

use crate::status::What;

/// How a resource's objects are treated beyond generic storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Generic,
    Namespace,
    CoreEvent,
    EventsV1,
    Crd,
    Custom,
    SelfSubjectAccessReview,
    SelfSubjectRulesReview,
}

#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<&'static str>,
    pub status_subresource: bool,
    pub flavor: Flavor,
    /// Storage key: both event views share `events`.
    pub storage: String,
    pub schema: Option<Arc<Structural>>,
    /// The CRD version's `openAPIV3Schema` as written (for OpenAPI documents).
    pub raw_schema: Option<Value>,
    /// Field paths (without the leading dot) declared in `selectableFields`.
    pub selectable_fields: Vec<String>,
    pub columns: Vec<Column>,
}

pub(crate) const STANDARD_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn what(&self) -> What<'_> {
        What {
            group: &self.group,
            resource: &self.plural,
        }
    }

    pub fn is_custom(&self) -> bool {
        self.flavor == Flavor::Custom
    }

    /// Whether `metadata.generation` is maintained (custom resources, CRDs, Deployments).
    pub fn has_generation(&self) -> bool {
        matches!(self.flavor, Flavor::Custom | Flavor::Crd)
            || crate::workloads::is_deployment(&self.group, &self.kind)
            || crate::pdb::is_pdb(&self.group, &self.kind)
    }

    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short_names: &[&str],
        flavor: Flavor,
    ) -> ResourceDef {
        ResourceDef {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            kind: kind.to_string(),
            namespaced,
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            verbs: STANDARD_VERBS.to_vec(),
            status_subresource: false,
            flavor,
            storage: if group.is_empty() {
                plural.to_string()
            } else {
                format!("{plural}.{group}")
            },
            schema: None,
            raw_schema: None,
            selectable_fields: Vec::new(),
            columns: table::builtin_columns(kind),
        }
    }
}

fn builtins() -> Vec<Arc<ResourceDef>> {
    use Flavor::*;
    let mut v = vec![
        {
            let mut d = ResourceDef::builtin(
                "",
                "v1",
                "namespaces",
                "Namespace",
                false,
                &["ns"],
                Namespace,
            );
            d.status_subresource = true;
            d.verbs = vec![
                "create", "delete", "get", "list", "patch", "update", "watch",
            ];
            d
        },
        ResourceDef::builtin("", "v1", "events", "Event", true, &["ev"], CoreEvent),
        ResourceDef::builtin("", "v1", "configmaps", "ConfigMap", true, &["cm"], Generic),
        ResourceDef::builtin("", "v1", "secrets", "Secret", true, &[], Generic),
        {
            let mut d =
                ResourceDef::builtin("", "v1", "services", "Service", true, &["svc"], Generic);
            d.status_subresource = true;
            d.categories = vec!["all".to_string()];
            d
        },
        ResourceDef::builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            Generic,
        ),
        {
            let mut d = ResourceDef::builtin(
                "events.k8s.io",
                "v1",
                "events",
                "Event",
                true,
                &["ev"],
                EventsV1,
            );
            d.storage = "events".to_string();
            d
        },
        {
            let mut d = ResourceDef::builtin(
                "apps",
                "v1",
                "deployments",
                "Deployment",
                true,
                &["deploy"],
                Generic,
            );
            d.status_subresource = true;
            d.categories = vec!["all".to_string()];
            d
        },
        {
            let mut d = ResourceDef::builtin(
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
                &["pdb"],
                Generic,
            );
            d.status_subresource = true;
            d
        },
        ResourceDef::builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            Generic,
        ),
        ResourceDef::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            Generic,
        ),
        ResourceDef::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            Generic,
        ),
        ResourceDef::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            Generic,
        ),
        ResourceDef::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            Generic,
        ),
        {
            let mut d = ResourceDef::builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                &["crd", "crds"],
                Crd,
            );
            d.status_subresource = true;
            d.categories = vec!["api-extensions".to_string()];
            d
        },
        {
            let mut d = ResourceDef::builtin(
                "authorization.k8s.io",
                "v1",
                "selfsubjectrulesreviews",
                "SelfSubjectRulesReview",
                false,
                &[],
                SelfSubjectRulesReview,
            );
            d.verbs = vec!["create"];
            d
        },
        {
            let mut d = ResourceDef::builtin(
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
                "SelfSubjectAccessReview",
                false,
                &[],
                SelfSubjectAccessReview,
            );
            d.verbs = vec!["create"];
            d
        },
    ];
    // The real server only lists the event's kind once per group; singular names are lowercase kinds.
    for d in &mut v {
        if d.singular.is_empty() {
            d.singular = d.kind.to_lowercase();
        }
    }
    v.into_iter().map(Arc::new).collect()
}

/// All served resources.
pub(crate) struct Registry {
    builtins: Vec<Arc<ResourceDef>>,
    /// CRD name → one def per served version.
    crds: BTreeMap<String, Vec<Arc<ResourceDef>>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            builtins: builtins(),
            crds: BTreeMap::new(),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceDef>> {
        self.builtins
            .iter()
            .chain(self.crds.values().flat_map(|v| v.iter()))
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.all()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
            .cloned()
    }

    /// Whether any resource is served in `group`/`version` (`""` is the core group).
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.all().any(|d| d.group == group && d.version == version)
    }

    /// Any served version of a storage key (for GC, namespace cleanup, owner lookups).
    pub fn by_storage(&self, storage: &str) -> Option<Arc<ResourceDef>> {
        self.all().find(|d| d.storage == storage).cloned()
    }

    /// Storage keys of every resource (deduplicated).
    pub fn storage_keys(&self) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = Vec::new();
        for d in self.all() {
            if matches!(
                d.flavor,
                Flavor::SelfSubjectAccessReview | Flavor::SelfSubjectRulesReview
            ) {
                continue;
            }
            if !out.iter().any(|(s, _)| s == &d.storage) {
                out.push((d.storage.clone(), d.namespaced));
            }
        }
        out
    }

    pub fn set_crd(&mut self, name: &str, defs: Vec<Arc<ResourceDef>>) {
        if defs.is_empty() {
            self.crds.remove(name);
        } else {
            self.crds.insert(name.to_string(), defs);
        }
    }

    pub fn crd_defs(&self, name: &str) -> Option<&Vec<Arc<ResourceDef>>> {
        self.crds.get(name)
    }

    /// Groups in discovery order with their versions, preferred first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in self.all() {
            if d.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| g == &d.group) {
                Some((_, versions)) => {
                    if !versions.contains(&d.version) {
                        versions.push(d.version.clone());
                    }
                }
                None => out.push((d.group.clone(), vec![d.version.clone()])),
            }
        }
        for (_, versions) in &mut out {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    /// `/api/v1` or `/apis/<g>/<v>` APIResourceList.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let defs: Vec<&Arc<ResourceDef>> = self
            .all()
            .filter(|d| d.group == group && d.version == version)
            .collect();
        if defs.is_empty() {
            return None;
        }
        let mut resources = Vec::new();
        for d in defs {
            let mut r = json!({
                "name": d.plural,
                "singularName": d.singular,
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": d.verbs,
            });
            if !d.short_names.is_empty() {
                r["shortNames"] = json!(d.short_names);
            }
            if !d.categories.is_empty() {
                r["categories"] = json!(d.categories);
            }
            resources.push(r);
            if d.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", d.plural),
                    "singularName": "",
                    "namespaced": d.namespaced,
                    "kind": d.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }))
    }
}

/// Kubernetes version priority: GA > beta > alpha > other, higher numbers first.
pub(crate) fn version_priority(v: &str) -> (u8, u64, u64, String) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0, v.to_string());
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return (0, 0, 0, v.to_string());
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0, String::new());
    }
    for (prefix, rank) in [("beta", 2u8), ("alpha", 1u8)] {
        if let Some(n) = tail.strip_prefix(prefix)
            && let Ok(minor) = n.parse::<u64>()
        {
            return (rank, major, minor, String::new());
        }
    }
    (0, 0, 0, v.to_string())
}

/// Problems with a CRD, reported as 422 causes (field, message).
pub(crate) type CrdProblems = Vec<FieldError>;

/// Validates a CRD and builds one def per served version.
pub(crate) fn crd_defs(crd: &Value) -> Result<Vec<Arc<ResourceDef>>, CrdProblems> {
    let mut problems: CrdProblems = Vec::new();
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let s = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let group = s("/group");
    let plural = s("/names/plural");
    let kind = s("/names/kind");
    let scope = s("/scope");
    let required =
        |problems: &mut CrdProblems, field: &str| problems.push(FieldError::required(field, ""));
    if group.is_empty() {
        required(&mut problems, "spec.group");
    }
    if plural.is_empty() {
        required(&mut problems, "spec.names.plural");
    }
    if kind.is_empty() {
        required(&mut problems, "spec.names.kind");
    }
    if scope != "Namespaced" && scope != "Cluster" {
        problems.push(FieldError::not_supported(
            "spec.scope",
            Value::String(scope.clone()),
            &["Cluster".to_string(), "Namespaced".to_string()],
        ));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        problems.push(FieldError::invalid(
            "metadata.name",
            Value::String(name.to_string()),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        problems.push(FieldError::invalid(
            "spec.versions",
            Value::Null,
            "must have exactly one version marked as storage version",
        ));
    } else {
        let storage = versions
            .iter()
            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .count();
        if storage != 1 {
            problems.push(FieldError::invalid(
                "spec.versions",
                Value::Array(versions.clone()),
                "must have exactly one version marked as storage version",
            ));
        }
    }
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let short_names = strs(names.get("shortNames"));
    let categories = strs(names.get("categories"));
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let mut defs = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if vname.is_empty() {
            required(&mut problems, &format!("spec.versions[{i}].name"));
            continue;
        }
        let schema = match v.pointer("/schema/openAPIV3Schema") {
            Some(sch) => match Structural::from_json(sch) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    problems.push(FieldError::invalid(
                        format!("spec.versions[{i}].schema.openAPIV3Schema"),
                        Value::String(String::new()),
                        e.to_string(),
                    ));
                    None
                }
            },
            None => {
                required(
                    &mut problems,
                    &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                );
                None
            }
        };
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let selectable_fields = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        defs.push(Arc::new(ResourceDef {
            group: group.clone(),
            version: vname,
            plural: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            namespaced: scope == "Namespaced",
            short_names: short_names.clone(),
            categories: categories.clone(),
            verbs: STANDARD_VERBS.to_vec(),
            status_subresource: v.pointer("/subresources/status").is_some(),
            flavor: Flavor::Custom,
            storage: format!("{plural}.{group}"),
            schema,
            raw_schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            selectable_fields,
            columns: table::crd_columns(v),
        }));
    }
    if problems.is_empty() {
        Ok(defs)
    } else {
        Err(problems)
    }
}

/// Applies the CRD defaults the real apiserver sets (listKind, singular, conversion).
pub(crate) fn default_crd(crd: &mut Value) {
    let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if !spec.contains_key("conversion") {
        spec.insert("conversion".into(), json!({"strategy": "None"}));
    }
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !names.contains_key("listKind") && !kind.is_empty() {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
        if !names.contains_key("singular") && !kind.is_empty() {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
    }
}

impl Registry {
    /// Aggregated discovery (`apidiscovery.k8s.io/<version>` APIGroupDiscoveryList) of the core
    /// group (`/api`) or of every named group (`/apis`).
    pub fn aggregated(&self, core: bool, api_version: &str) -> Value {
        let groups: Vec<(String, Vec<String>)> = if core {
            vec![(String::new(), vec!["v1".to_string()])]
        } else {
            self.groups()
        };
        let items: Vec<Value> = groups
            .into_iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> = self
                            .all()
                            .filter(|d| d.group == group && &d.version == v)
                            .map(|d| {
                                let gvk =
                                    json!({"group": d.group, "version": d.version, "kind": d.kind});
                                let mut r = json!({
                                    "resource": d.plural,
                                    "responseKind": gvk,
                                    "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
                                    "singularResource": d.singular,
                                    "verbs": d.verbs,
                                });
                                if !d.short_names.is_empty() {
                                    r["shortNames"] = json!(d.short_names);
                                }
                                if !d.categories.is_empty() {
                                    r["categories"] = json!(d.categories);
                                }
                                if d.status_subresource {
                                    r["subresources"] = json!([{
                                        "subresource": "status",
                                        "responseKind": gvk,
                                        "verbs": ["get", "patch", "update"],
                                    }]);
                                }
                                r
                            })
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                let mut metadata = json!({"creationTimestamp": null});
                if !group.is_empty() {
                    metadata["name"] = json!(group);
                }
                json!({"metadata": metadata, "versions": versions})
            })
            .collect();
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": api_version,
            "metadata": {},
            "items": items,
        })
    }
}
