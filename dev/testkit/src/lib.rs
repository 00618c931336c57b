//! What the test suites share (the testkit; development tooling, never shipped).
//!
//! The test environment: an in-process development cluster by default, or the real cluster
//! named by `APOLLO_TEST_KUBECONFIG`; each [`TestEnv`] has its own namespace, deleted at the
//! end.
//!
//! Also the test suites' one way to wait for a condition: [`poll_until`] (a deadline, never a
//! fixed sleep standing in for synchronisation). Each crate's test helpers wrap it with the
//! failure message their tests want. [`poll_every`] is the same with its own interval.
//!
//! And the one [`DeviceProcessObserver`]: a watch that records every DeviceProcess version
//! showing `AgentConnected=False`, for the "no flap" checks of the gateway's replica tests and
//! the demo's high-availability scenarios.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apollo_kube::manifests::Applier;
use kube::api::Api;
use rand::Rng;

use apollo_devcluster::{DevCluster, Error, Options, User};

mod observer;
pub use observer::{DeviceProcessObserver, Flapped, condition_status, connected_and_observed};

/// How often [`poll_until`] checks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Ok`, every [`POLL_INTERVAL`], for at most `within`; then
/// returns the last `Err` (the state last seen, for the test's failure message). `check` runs at
/// least once, and once more after the deadline has passed, so a condition that became true
/// while the test was descheduled still counts.
pub async fn poll_until<T, E, F, Fut>(within: Duration, check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    poll_every(POLL_INTERVAL, within, check).await
}

/// [`poll_until`] with its own interval (a runbook polls at the pace its timings set). The last
/// wait before the deadline is cut short, so the final check happens at the deadline.
pub async fn poll_every<T, E, F, Fut>(
    interval: Duration,
    within: Duration,
    mut check: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let past = tokio::time::Instant::now() >= deadline;
        match check().await {
            Ok(value) => return Ok(value),
            Err(last) if past => return Err(last),
            Err(_) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(interval.min(left)).await;
            }
        }
    }
}

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
            let admin = apollo_devcluster::client_from_file(&path).await?;
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
        let dir = tempfile::tempdir().map_err(|source| Error::Io {
            context: "temp dir".into(),
            source,
        })?;
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

    /// The CRD directory of the repository `repo` for this cluster's Kubernetes version:
    /// `k8s/crds`, or on 1.29 and 1.30 the `k8s-pre-1.31/crds` variant without the fields those
    /// servers lack (`apollo_kube::manifests::crd_dir_for`).
    pub async fn crd_dir(&self, repo: &Path) -> PathBuf {
        let minor = apollo_kube::manifests::server_minor(&self.admin)
            .await
            .unwrap_or(u32::MAX);
        apollo_kube::manifests::crd_dir_for(repo, minor)
    }

    /// Applies a multi-document YAML file with server-side apply as admin (field manager
    /// `apollo-testenv`, through [`apollo_kube::manifests::Applier`]); namespaced objects
    /// (and ServiceAccount subjects of bindings) are put into this test's namespace. Waits for
    /// applied CRDs to be Established.
    pub async fn apply_manifest_file(&self, path: &Path) -> Result<(), Error> {
        self.applier()
            .apply_file(path)
            .await
            .map(drop)
            .map_err(|e| Error::Manifest(e.to_string()))
    }

    /// Like [`TestEnv::apply_manifest_file`] for YAML text.
    pub async fn apply_manifest(&self, text: &str) -> Result<(), Error> {
        self.applier()
            .apply_yaml(text, "manifest")
            .await
            .map(drop)
            .map_err(|e| Error::Manifest(e.to_string()))
    }

    fn applier(&self) -> Applier {
        Applier::new(self.admin.clone(), "apollo-testenv", Some(&self.namespace))
            .wait_established(Duration::from_secs(30))
    }

    /// Waits (up to `timeout`) until `user` may `verb` the `resource` (`"deviceprocesses"`,
    /// `"deviceprocesses/status"`) of `group` in this test's namespace, asking the server with
    /// a SelfSubjectAccessReview as that user. A real authorizer works from an informer cache,
    /// so a binding just applied takes a moment to count; tests wait for it instead of racing.
    pub async fn wait_allowed(
        &self,
        user: User,
        verb: &str,
        group: &str,
        resource: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        };
        let client = self.try_as_user(user).await?;
        let api: Api<SelfSubjectAccessReview> = Api::all(client);
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r.to_string(), Some(s.to_string())),
            None => (resource.to_string(), None),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(self.namespace.clone()),
                    verb: Some(verb.to_string()),
                    group: Some(group.to_string()),
                    resource: Some(resource.clone()),
                    subresource,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let denied = || {
            Error::Kube(format!(
                "{} may not {verb} {resource} in {group:?} in namespace {} after {timeout:?}",
                self.username(user),
                self.namespace
            ))
        };
        poll_until(timeout, || async {
            let allowed = api
                .create(&Default::default(), &review)
                .await
                .ok()
                .and_then(|r| r.status)
                .is_some_and(|s| s.allowed);
            if allowed { Ok(()) } else { Err(denied()) }
        })
        .await
    }

    /// Deletes the namespace (real cluster) and the cluster-wide bindings made for it, and stops
    /// the in-process server.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        if self.dev.is_none() {
            delete_namespace(&self.admin, &self.namespace).await;
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
                if let Ok(client) = apollo_devcluster::client_from_file(&path).await {
                    delete_namespace(&client, &namespace).await;
                }
            });
        })
        .join();
    }
}

/// Deletes a test namespace and the ClusterRoleBindings the applier made for it
/// (`apollo_kube::manifests::MOVED_TO_LABEL`).
async fn delete_namespace(admin: &kube::Client, namespace: &str) {
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin.clone());
    let selector = format!("{}={namespace}", apollo_kube::manifests::MOVED_TO_LABEL);
    let _ = bindings
        .delete_collection(
            &Default::default(),
            &kube::api::ListParams::default().labels(&selector),
        )
        .await;
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    let _ = ns.delete(namespace, &Default::default()).await;
}
