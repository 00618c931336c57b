//! The demo's view of the Kubernetes API: applying the project's manifests, reading
//! DeviceProcesses, deployments and events, and (on the development API server) its request
//! counters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use apollo_api::{DeviceProcess, DeviceProcessDeployment};
use apollo_kube::manifests::Applier;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;
use serde_json::Value;

use crate::wait::poll_until;

/// Field manager of everything the demo applies.
pub const FIELD_MANAGER: &str = "apollo-demo";

/// A client for one identity, with the namespace the demo works in.
#[derive(Clone)]
pub struct Kube {
    pub client: kube::Client,
    pub namespace: String,
    pub kubeconfig: PathBuf,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("namespace", &self.namespace)
            .field("kubeconfig", &self.kubeconfig)
            .finish()
    }
}

/// The server address of a kubeconfig's current context.
pub fn server_url(kubeconfig: &Path) -> Result<String> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read kubeconfig {}", kubeconfig.display()))?;
    let ctx_name = kc
        .current_context
        .clone()
        .ok_or_else(|| anyhow!("{} has no current-context", kubeconfig.display()))?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| anyhow!("context {ctx_name} not found"))?;
    kc.clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| anyhow!("cluster {} has no server", ctx.cluster))
}

impl Kube {
    pub async fn connect(kubeconfig: &Path, namespace: &str) -> Result<Kube> {
        let kc = Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("cannot read kubeconfig {}", kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("cannot use kubeconfig {}", kubeconfig.display()))?;
        let client = kube::Client::try_from(config)?;
        Ok(Kube {
            client,
            namespace: namespace.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
        })
    }

    /// Server-side applies every document of every `*.yaml` file in `path` (a file or a
    /// directory, files in name order) with [`apollo_kube::manifests::Applier`].
    /// Namespaced objects (and ServiceAccount subjects of bindings) land in the demo's
    /// namespace. Returns `kind/name` of each applied object.
    pub async fn apply_path(&self, path: &Path) -> Result<Vec<String>> {
        let mut applier = Applier::new(self.client.clone(), FIELD_MANAGER, Some(&self.namespace));
        let applied = if path.is_dir() {
            applier.apply_dir(path).await
        } else {
            applier.apply_file(path).await
        };
        applied.with_context(|| format!("applying {}", path.display()))
    }

    /// The CRD directory of `repo` for this server's Kubernetes version (`k8s/crds`, or
    /// `k8s-pre-1.31/crds` on 1.29 and 1.30).
    pub async fn crd_dir(&self, repo: &Path) -> Result<PathBuf> {
        let minor = apollo_kube::manifests::server_minor(&self.client).await?;
        Ok(apollo_kube::manifests::crd_dir_for(repo, minor))
    }

    /// Waits until every CRD in `names` has `Established=True`.
    pub async fn wait_established(&self, names: &[String], deadline: Duration) -> Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for name in names {
            let ok = poll_until(deadline, Duration::from_millis(100), || {
                let api = api.clone();
                async move {
                    let crd = api.get_opt(name).await.ok()??;
                    let established = crd
                        .status?
                        .conditions?
                        .into_iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            })
            .await;
            if ok.is_none() {
                bail!("CRD {name} not Established within {deadline:?}");
            }
        }
        Ok(())
    }

    pub async fn crd(&self, name: &str) -> Result<CustomResourceDefinition> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        Ok(api.get(name).await?)
    }

    pub fn device_processes(&self) -> Api<DeviceProcess> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn deployments(&self) -> Api<DeviceProcessDeployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Server-side applies one NetworkSwitch per device with `labels` (the inventory a
    /// deployment selects).
    pub async fn apply_switches(
        &self,
        devices: &[String],
        labels: &[(&str, &str)],
        dummy: &str,
    ) -> Result<()> {
        let api: Api<apollo_api::NetworkSwitch> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let apply = kube::api::PatchParams::apply(FIELD_MANAGER).force();
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        for d in devices {
            let sw = serde_json::json!({
                "apiVersion": apollo_api::API_VERSION, "kind": "NetworkSwitch",
                "metadata": {"name": d, "labels": labels},
                "spec": {"dummy": dummy}
            });
            api.patch(d, &apply, &kube::api::Patch::Apply(&sw))
                .await
                .with_context(|| format!("applying NetworkSwitch {d}"))?;
        }
        Ok(())
    }

    /// DeviceProcesses of `deployment`, by the controller's label.
    pub async fn processes_of(&self, deployment: &str) -> Result<Vec<DeviceProcess>> {
        let lp = ListParams::default().labels(&format!(
            "{}={}",
            apollo_api::labels::DEPLOYMENT,
            apollo_api::naming::label_value(deployment)
        ));
        let mut items = self.device_processes().list(&lp).await?.items;
        items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(items)
    }

    /// Core/v1 events about the object `name` (of kind `kind`), oldest first.
    pub async fn events_for(&self, kind: &str, name: &str) -> Result<Vec<Event>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().fields(&format!(
            "involvedObject.name={name},involvedObject.kind={kind}"
        ));
        let mut items = api.list(&lp).await?.items;
        // Belt and braces: a server ignoring the field selector must not fool the count.
        items.retain(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.involved_object.kind.as_deref() == Some(kind)
        });
        items.sort_by_key(|e| event_time(e).unwrap_or_default());
        Ok(items)
    }

    /// The development API server's request counters (`GET /_devcluster/requests`, admin
    /// only). `None` when the server is not the development one.
    pub async fn request_counts(&self) -> Option<RequestCounts> {
        let req = http::Request::get("/_devcluster/requests")
            .body(Vec::new())
            .ok()?;
        let v: Value = self.client.request(req).await.ok()?;
        RequestCounts::from_json(&v)
    }
}

/// A kubeconfig like `base` (same server and CA) whose every user presents `token`.
pub fn kubeconfig_with_token(base: &Path, token: &str) -> Result<Value> {
    let text = std::fs::read_to_string(base)
        .with_context(|| format!("cannot read kubeconfig {}", base.display()))?;
    let mut v: Value =
        serde_saphyr::from_str(&text).map_err(|e| anyhow!("kubeconfig {}: {e}", base.display()))?;
    if let Some(users) = v.get_mut("users").and_then(|u| u.as_array_mut()) {
        for u in users {
            u["user"] = serde_json::json!({ "token": token });
        }
    }
    Ok(v)
}

impl Kube {
    /// Mints a short-lived token for ServiceAccount `sa` (TokenRequest, as `kubectl create
    /// token` does) and writes a kubeconfig presenting it to `dest`, so a component runs with
    /// its own RBAC identity on any cluster. Returns the user name it authenticates as.
    pub async fn service_account_kubeconfig(&self, sa: &str, dest: &Path) -> Result<String> {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let req: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": { "expirationSeconds": 7200 }
        }))?;
        let resp: TokenRequest = api
            .create_subresource("token", sa, &Default::default(), &req)
            .await
            .with_context(|| format!("TokenRequest for ServiceAccount {sa}"))?;
        let token = resp
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("TokenRequest for {sa} returned no token"))?;
        let kc = kubeconfig_with_token(&self.kubeconfig, &token)?;
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(dest)
                .with_context(|| format!("cannot write {}", dest.display()))?;
            f.write_all(serde_json::to_string_pretty(&kc)?.as_bytes())?;
        }
        Ok(format!("system:serviceaccount:{}:{sa}", self.namespace))
    }
}

/// When an event last happened (RFC 3339), for ordering and display.
pub fn event_time(e: &Event) -> Option<String> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
}

/// How many times an event occurred (`count`, or `series.count`, at least 1).
pub fn event_occurrences(e: &Event) -> i64 {
    let series = e.series.as_ref().and_then(|s| s.count).unwrap_or(0);
    let count = e.count.unwrap_or(0);
    i64::from(count.max(series).max(1))
}

/// One row of `/_devcluster/requests`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RequestRow {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub verb: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub subresource: String,
    #[serde(default)]
    pub count: u64,
}

/// A snapshot of the development API server's request counters.
#[derive(Debug, Clone, Default)]
pub struct RequestCounts {
    pub rows: Vec<RequestRow>,
}

impl RequestCounts {
    /// Accepts a JSON array of rows, or an object holding one under `requests`/`items`.
    pub fn from_json(v: &Value) -> Option<RequestCounts> {
        let arr = v
            .as_array()
            .or_else(|| v.get("requests").and_then(Value::as_array))
            .or_else(|| v.get("items").and_then(Value::as_array))?;
        let rows = arr
            .iter()
            .filter_map(|r| serde_json::from_value(r.clone()).ok())
            .collect();
        Some(RequestCounts { rows })
    }

    /// Sum of counts matching the filters (`None` matches anything).
    pub fn count(
        &self,
        user: Option<&str>,
        verb: Option<&str>,
        resource: Option<&str>,
        subresource: Option<&str>,
    ) -> u64 {
        self.rows
            .iter()
            .filter(|r| user.is_none_or(|u| r.user == u))
            .filter(|r| verb.is_none_or(|v| r.verb == v))
            .filter(|r| resource.is_none_or(|x| r.resource == x))
            .filter(|r| subresource.is_none_or(|s| r.subresource == s))
            .map(|r| r.count)
            .sum()
    }

    /// Rows of `user`, formatted `verb resource[/sub] ×count`.
    pub fn rows_of(&self, user: &str) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.user == user)
            .map(|r| {
                let res = if r.subresource.is_empty() {
                    r.resource.clone()
                } else {
                    format!("{}/{}", r.resource, r.subresource)
                };
                format!("{:<8} {:<40} {}", r.verb, res, r.count)
            })
            .collect()
    }

    /// Distinct users seen.
    pub fn users(&self) -> Vec<String> {
        let mut u: Vec<String> = self.rows.iter().map(|r| r.user.clone()).collect();
        u.sort();
        u.dedup();
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counts_parse_and_filter() {
        let v = serde_json::json!([
            {"user": "gw", "verb": "list", "resource": "deviceprocesses", "subresource": "", "count": 1},
            {"user": "gw", "verb": "watch", "resource": "deviceprocesses", "subresource": "", "count": 2},
            {"user": "gw", "verb": "patch", "resource": "deviceprocesses", "subresource": "status", "count": 4},
            {"user": "admin", "verb": "list", "resource": "deviceprocesses", "subresource": "", "count": 7}
        ]);
        let c = RequestCounts::from_json(&v).unwrap();
        assert_eq!(c.count(Some("gw"), Some("list"), None, None), 1);
        assert_eq!(c.count(None, Some("list"), None, None), 8);
        assert_eq!(c.count(Some("gw"), Some("patch"), None, Some("status")), 4);
        assert_eq!(c.users(), vec!["admin", "gw"]);
        let wrapped = serde_json::json!({"requests": v});
        assert_eq!(RequestCounts::from_json(&wrapped).unwrap().rows.len(), 4);
        assert!(RequestCounts::from_json(&serde_json::json!("x")).is_none());
    }
}
