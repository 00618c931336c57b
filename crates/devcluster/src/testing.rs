//! Test environment: an in-process development cluster by default, or the real cluster named by
//! `APOLLO_TEST_KUBECONFIG`; each [`TestEnv`] has its own namespace, deleted at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use rand::Rng;
use serde_json::Value;

use crate::{DevCluster, Error, Options, User};

/// The environment variable naming a real cluster's kubeconfig.
pub const KUBECONFIG_ENV: &str = "APOLLO_TEST_KUBECONFIG";

/// One test's cluster and namespace.
pub struct TestEnv {
    dev: Option<DevCluster>,
    _dir: Option<tempfile::TempDir>,
    real_kubeconfig: Option<PathBuf>,
    namespace: String,
    admin: kube::Client,
    cleaned: bool,
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl TestEnv {
    /// A fresh environment; panics when the cluster cannot be reached (test helper).
    pub async fn new() -> Self {
        match Self::try_new().await {
            Ok(env) => env,
            Err(e) => panic!("test environment: {e}"),
        }
    }

    /// A fresh environment with custom server options (in-process only; ignored on a real cluster).
    pub async fn with_options(opts: Options) -> Self {
        match Self::try_with_options(opts).await {
            Ok(env) => env,
            Err(e) => panic!("test environment: {e}"),
        }
    }

    pub async fn try_new() -> Result<Self, Error> {
        Self::try_with_options(Options::default()).await
    }

    pub async fn try_with_options(mut opts: Options) -> Result<Self, Error> {
        let namespace = format!("t-{}", random_suffix());
        if let Some(path) = std::env::var_os(KUBECONFIG_ENV).filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            let admin = crate::kubeconfig::client_from_file(&path).await?;
            let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
            let obj: k8s_openapi::api::core::v1::Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))
                    .map_err(|e| Error::Kube(e.to_string()))?;
            ns.create(&Default::default(), &obj)
                .await
                .map_err(|e| Error::Kube(e.to_string()))?;
            return Ok(TestEnv {
                dev: None,
                _dir: None,
                real_kubeconfig: Some(path),
                namespace,
                admin,
                cleaned: false,
            });
        }
        let dir = tempfile::tempdir().map_err(|e| Error::io("temp dir", e))?;
        opts.dir = dir.path().to_path_buf();
        opts.namespace = namespace.clone();
        let dev = DevCluster::start(opts).await?;
        let admin = dev.client(User::Admin).await?;
        Ok(TestEnv {
            dev: Some(dev),
            _dir: Some(dir),
            real_kubeconfig: None,
            namespace,
            admin,
            cleaned: false,
        })
    }

    /// This test's namespace (`t-xxxxxxxx`); the component identities are ServiceAccounts in it.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The in-process server, or None on a real cluster.
    pub fn dev(&self) -> Option<&DevCluster> {
        self.dev.as_ref()
    }

    /// Whether the tests run against a real cluster.
    pub fn is_real(&self) -> bool {
        self.dev.is_none()
    }

    /// An admin client.
    pub async fn admin(&self) -> kube::Client {
        self.admin.clone()
    }

    /// The user name an identity has in this environment.
    pub fn username(&self, user: User) -> String {
        user.username(&self.namespace)
    }

    /// A client for `user`: its own token in-process, impersonation on a real cluster.
    pub async fn as_user(&self, user: User) -> kube::Client {
        match self.try_as_user(user).await {
            Ok(c) => c,
            Err(e) => panic!("client for {user:?}: {e}"),
        }
    }

    pub async fn try_as_user(&self, user: User) -> Result<kube::Client, Error> {
        if let Some(dev) = &self.dev {
            return dev.client(user).await;
        }
        let path = self
            .real_kubeconfig
            .clone()
            .ok_or_else(|| Error::Kube("no kubeconfig".into()))?;
        let kc =
            kube::config::Kubeconfig::read_from(&path).map_err(|e| Error::Kube(e.to_string()))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kube(e.to_string()))?;
        if user != User::Admin {
            config.auth_info.impersonate = Some(user.username(&self.namespace));
            config.auth_info.impersonate_groups = Some(user.groups(&self.namespace));
        }
        kube::Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
    }

    /// A kubeconfig file for `kubectl` as admin (in-process: the server's; real: the env's).
    pub fn kubeconfig(&self) -> PathBuf {
        match (&self.dev, &self.real_kubeconfig) {
            (Some(dev), _) => dev.kubeconfig(User::Admin),
            (None, Some(p)) => p.clone(),
            (None, None) => PathBuf::new(),
        }
    }

    /// Applies a multi-document YAML file with server-side apply as admin; namespaced objects
    /// (and ServiceAccount subjects of bindings) are put into this test's namespace. Waits for
    /// applied CRDs to be Established.
    pub async fn apply_manifest_file(&self, path: &Path) -> Result<(), Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        self.apply_manifest(&text).await
    }

    /// Like [`TestEnv::apply_manifest_file`] for YAML text.
    pub async fn apply_manifest(&self, text: &str) -> Result<(), Error> {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| Error::Manifest(format!("yaml: {e}")))?;
        for mut doc in docs {
            if doc.is_null() {
                continue;
            }
            self.apply_value(&mut doc).await?;
        }
        Ok(())
    }

    async fn apply_value(&self, doc: &mut Value) -> Result<(), Error> {
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if kind.is_empty() || name.is_empty() {
            return Err(Error::Manifest(format!(
                "document without kind or name: {doc}"
            )));
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &kind);
        let (ar, caps) = kube::discovery::pinned_kind(&self.admin, &gvk)
            .await
            .map_err(|e| Error::Manifest(format!("{api_version} {kind}: {e}")))?;
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            if let Some(m) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("namespace".into(), Value::String(self.namespace.clone()));
            }
            Api::namespaced_with(self.admin.clone(), &self.namespace, &ar)
        } else {
            Api::all_with(self.admin.clone(), &ar)
        };
        if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_array_mut) {
            for s in subjects {
                if s.get("kind").and_then(Value::as_str) == Some("ServiceAccount") {
                    s["namespace"] = Value::String(self.namespace.clone());
                }
            }
        }
        let pp = PatchParams::apply("apollo-testenv").force();
        api.patch(&name, &pp, &Patch::Apply(&*doc))
            .await
            .map_err(|e| Error::Manifest(format!("{kind} {name}: {e}")))?;
        if kind == "CustomResourceDefinition" {
            self.wait_established(&api, &name).await?;
        }
        Ok(())
    }

    async fn wait_established(&self, api: &Api<DynamicObject>, name: &str) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let crd = api
                .get(name)
                .await
                .map_err(|e| Error::Manifest(format!("crd {name}: {e}")))?;
            let established = crd
                .data
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.get("type").and_then(Value::as_str) == Some("Established")
                            && c.get("status").and_then(Value::as_str) == Some("True")
                    })
                });
            if established {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Manifest(format!(
                    "crd {name} not Established in 30s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes the namespace (real cluster) and stops the in-process server.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        if self.dev.is_none() {
            let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.admin.clone());
            let _ = ns.delete(&self.namespace, &Default::default()).await;
        }
        if let Some(dev) = self.dev.take() {
            dev.shutdown().await;
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.cleaned || self.dev.is_some() {
            return;
        }
        // Real cluster: delete the namespace from a helper thread with its own runtime.
        let Some(path) = self.real_kubeconfig.clone() else {
            return;
        };
        let namespace = self.namespace.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = crate::kubeconfig::client_from_file(&path).await {
                    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
                    let _ = ns.delete(&namespace, &Default::default()).await;
                }
            });
        })
        .join();
    }
}
