//! The system under test: the development API server in this process (or any API server
//! through a kubeconfig), the controller and the gateway as separate processes (so their
//! memory and CPU are measured alone), and a tracker over DeviceProcesses to time when status
//! converges.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use apollo_api::conditions::{AGENT_CONNECTED, SPEC_OBSERVED};
use apollo_api::{DeviceProcess, DeviceProcessDeployment, NetworkSwitch, spec_hash};
use apollo_devcluster::{DevCluster, Options, User};
use apollo_protocol::keys::MasterKey;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::process::{Child, Command};

use crate::procstat::{self, ProcSample};

/// Namespace the benchmark runs in on the development API server.
pub const NAMESPACE: &str = "default";

/// Label of the objects the write-floor measurement creates (the tracker ignores them).
pub const FLOOR_LABEL: &str = "apollo-fleetsim/write-floor";

/// The API server under test: the development API server in this process, or any API server
/// reached through a kubeconfig (`bench --kubeconfig`).
pub struct Cluster {
    /// The development server, when the benchmark runs its own.
    pub dev: Option<DevCluster>,
    /// Admin client.
    pub admin: kube::Client,
    /// Working directory (kubeconfigs, master key, component logs); kept after the run.
    pub dir: PathBuf,
    /// Namespace of this run's objects.
    pub namespace: String,
    /// The kubeconfig every component uses against an external server.
    external: Option<PathBuf>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dev", &self.dev.as_ref().map(DevCluster::url))
            .field("external", &self.external)
            .field("namespace", &self.namespace)
            .finish()
    }
}

async fn kube_config(path: &Path) -> anyhow::Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {}", path.display()))
}

/// A kube client from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(kube_config(path).await?)?)
}

/// The server URL of a kubeconfig's current context.
pub async fn kubeconfig_server(path: &Path) -> anyhow::Result<String> {
    Ok(kube_config(path).await?.cluster_url.to_string())
}

impl Cluster {
    /// Starts the development server with its state and the component logs in `dir`, and
    /// installs the project's CRDs and RBAC from `repo/k8s`.
    pub async fn start(repo: &Path, dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.to_owned();
        std::fs::create_dir_all(&dir)?;
        let dev = DevCluster::start(Options {
            dir: dir.join("cluster"),
            ..Options::default()
        })
        .await?;
        let admin = dev.client(User::Admin).await?;
        let mut applier =
            apollo_kube::manifests::Applier::new(admin.clone(), "apollo-fleetsim", Some(NAMESPACE));
        applier.apply_dir(&repo.join("k8s/crds")).await?;
        applier.apply_dir(&repo.join("k8s/rbac")).await?;
        Ok(Self {
            dev: Some(dev),
            admin,
            dir,
            namespace: NAMESPACE.to_owned(),
            external: None,
        })
    }

    /// Uses the API server of `kubeconfig` (whose user must be allowed to install CRDs and
    /// to create a namespace): installs the CRDs from `repo/k8s/crds` and creates the
    /// namespace `namespace`, which [`Cluster::shutdown`] deletes again. Every component runs
    /// with this kubeconfig.
    pub async fn external(
        repo: &Path,
        dir: &Path,
        kubeconfig: &Path,
        namespace: &str,
    ) -> anyhow::Result<Self> {
        let dir = dir.to_owned();
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = std::path::absolute(kubeconfig)?;
        let admin = client_from_kubeconfig(&kubeconfig).await?;
        let mut applier =
            apollo_kube::manifests::Applier::new(admin.clone(), "apollo-fleetsim", None);
        applier.apply_dir(&repo.join("k8s/crds")).await?;
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"app.kubernetes.io/created-by": "apollo-fleetsim"}}
        }))?;
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {namespace}"))?;
        // The CRDs must be served before the first object is created.
        let api: Api<DeviceProcess> = Api::namespaced(admin.clone(), namespace);
        let start = Instant::now();
        while api.list(&ListParams::default().limit(1)).await.is_err() {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("DeviceProcesses not served after 60s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Self {
            dev: None,
            admin,
            dir,
            namespace: namespace.to_owned(),
            external: Some(kubeconfig),
        })
    }

    /// Whether the API server is the in-process development server (request counts known).
    pub fn is_dev(&self) -> bool {
        self.dev.is_some()
    }

    /// The kubeconfig a component running as `user` uses.
    pub fn kubeconfig(&self, user: User) -> PathBuf {
        match (&self.dev, &self.external) {
            (Some(dev), _) => dev.kubeconfig(user),
            (None, Some(path)) => path.clone(),
            (None, None) => PathBuf::new(),
        }
    }

    /// A client as `user` (the external kubeconfig's user against another server).
    pub async fn client(&self, user: User) -> anyhow::Result<kube::Client> {
        match &self.dev {
            Some(dev) => Ok(dev.client(user).await?),
            None => Ok(self.admin.clone()),
        }
    }

    /// Writes requests by `user` so far (create, update, patch, delete), when the server is
    /// the development one.
    pub fn writes_by(&self, user: User) -> Option<u64> {
        let dev = self.dev.as_ref()?;
        Some(dev.requests().writes_by(&user.username(NAMESPACE)))
    }

    /// `verb` requests by `user` on `resource` (any subresource), when the server is the
    /// development one.
    pub fn count(&self, user: User, verb: &str, resource: &str) -> Option<u64> {
        let dev = self.dev.as_ref()?;
        Some(dev.requests().count(
            Some(&user.username(NAMESPACE)),
            Some(verb),
            Some(resource),
            None,
        ))
    }

    /// Stops the development server, or deletes this run's namespace on an external one.
    pub async fn shutdown(self) {
        match self.dev {
            Some(dev) => dev.shutdown().await,
            None => {
                let namespaces: Api<Namespace> = Api::all(self.admin.clone());
                if let Err(e) = namespaces
                    .delete(&self.namespace, &DeleteParams::background())
                    .await
                {
                    eprintln!("deleting namespace {}: {e}", self.namespace);
                }
            }
        }
    }

    /// Creates `n` NetworkSwitches `sw-00000…` labelled `role=bench`, 64 at a time.
    pub async fn create_switches(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let api: Api<NetworkSwitch> = Api::namespaced(self.admin.clone(), &self.namespace);
        let names: Vec<String> = (0..n).map(|i| format!("sw-{i:06}")).collect();
        futures::stream::iter(names.clone())
            .map(|name| {
                let api = api.clone();
                async move {
                    let mut sw = NetworkSwitch::new(&name, Default::default());
                    sw.metadata.labels = Some([("role".to_owned(), "bench".to_owned())].into());
                    api.create(&PostParams::default(), &sw).await
                }
            })
            .buffer_unordered(64)
            .try_collect::<Vec<_>>()
            .await
            .context("creating switches")?;
        Ok(names)
    }

    /// Creates the `bench` DeviceProcessDeployment selecting every switch.
    pub async fn create_deployment(&self, args: &[&str]) -> anyhow::Result<()> {
        let api: Api<DeviceProcessDeployment> =
            Api::namespaced(self.admin.clone(), &self.namespace);
        let dpd: DeviceProcessDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "azure.com/v1alpha1", "kind": "DeviceProcessDeployment",
            "metadata": {"name": "bench"},
            "spec": {"selector": {"matchLabels": {"role": "bench"}},
                // Every DeviceProcess at once: the delivery scenarios measure latency, not
                // rollout pacing (the strategy scenarios set maxUnavailable themselves).
                "updateStrategy": {"rollingUpdate": {"maxUnavailable": "100%"}},
                "template": {"metadata": {"labels": {"app": "bench"}},
                    "spec": {"artifact": {"type": "oci", "url": "alpine:3.19"},
                        "execution": {"backend": "container", "args": args}}}}
        }))?;
        api.create(&PostParams::default(), &dpd).await?;
        Ok(())
    }

    /// Changes the template's args (a rollout).
    pub async fn patch_template_args(&self, args: &[&str]) -> anyhow::Result<()> {
        let api: Api<DeviceProcessDeployment> =
            Api::namespaced(self.admin.clone(), &self.namespace);
        let patch =
            serde_json::json!({"spec": {"template": {"spec": {"execution": {"args": args}}}}});
        api.patch(
            "bench",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Changes the template's args and `maxUnavailable` in one patch (a paced rollout).
    pub async fn patch_rollout(&self, max_unavailable: &str, args: &[&str]) -> anyhow::Result<()> {
        let api: Api<DeviceProcessDeployment> =
            Api::namespaced(self.admin.clone(), &self.namespace);
        let patch = serde_json::json!({"spec": {
            "updateStrategy": {"rollingUpdate": {"maxUnavailable": max_unavailable}},
            "template": {"spec": {"execution": {"args": args}}}
        }});
        api.patch(
            "bench",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Waits until the `bench` deployment's status counts `n` spec-observed DeviceProcesses
    /// and the controller has published the `RolloutComplete` Event that follows (its last
    /// write of the fan-out).
    pub async fn wait_deployment_observed(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let api: Api<DeviceProcessDeployment> =
            Api::namespaced(self.admin.clone(), &self.namespace);
        let start = Instant::now();
        loop {
            let observed = api
                .get_status("bench")
                .await?
                .status
                .map_or(0, |s| s.number_spec_observed);
            if usize::try_from(observed).unwrap_or(0) >= n && self.rollout_completed().await? {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("deployment status: {observed} of {n} observed after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether a `RolloutComplete` Event regards the `bench` deployment.
    async fn rollout_completed(&self) -> anyhow::Result<bool> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.admin.clone(), &self.namespace);
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("RolloutComplete")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bench")
            }))
    }

    /// Writes a new master key file and returns the key.
    pub fn master_key(&self) -> anyhow::Result<(MasterKey, PathBuf)> {
        let key = MasterKey::generate()?;
        let path = self.dir.join("master.key");
        std::fs::write(&path, format!("{key}\n"))?;
        Ok((key, path))
    }

    /// A live summary of every DeviceProcess (but the write floor's), as admin.
    pub fn track_device_processes(&self) -> Tracker {
        Tracker::start(Api::namespaced(self.admin.clone(), &self.namespace))
    }
}

/// What the benchmark needs to know of one DeviceProcess, computed once per watch event (so
/// counting 100,000 objects every poll costs no spec hashing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `spec.deviceRef.name`.
    pub device: String,
    /// `spec.execution.args`.
    pub args: Vec<String>,
    /// `AgentConnected=True`.
    pub connected: bool,
    /// `SpecObserved=True` and `observedSpecHash` is the spec's hash.
    pub observed_current: bool,
}

impl Summary {
    /// The summary of `dp`.
    pub fn of(dp: &DeviceProcess) -> Summary {
        let status = dp.status.as_ref();
        Summary {
            device: dp.spec.device_ref.name.clone(),
            args: dp.spec.execution.args.clone(),
            connected: status.is_some_and(|s| s.is_true(AGENT_CONNECTED)),
            observed_current: status.is_some_and(|s| {
                s.is_true(SPEC_OBSERVED)
                    && s.observed_spec_hash.as_deref() == Some(&spec_hash(&dp.spec))
            }),
        }
    }
}

/// A phase that did not complete in time: how far it got.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {reached} of {wanted} after {}s", timeout.as_secs())]
pub struct PhaseTimeout {
    /// The phase.
    pub what: String,
    /// Objects that satisfied the phase's predicate at the end.
    pub reached: usize,
    /// Objects that had to.
    pub wanted: usize,
    /// The phase's time limit.
    pub timeout: Duration,
}

#[derive(Default)]
struct TrackerState {
    objects: HashMap<String, Summary>,
    /// Objects seen going from `AgentConnected=True` to anything else.
    flaps: u64,
}

/// A live view of every DeviceProcess.
pub struct Tracker {
    state: Arc<Mutex<TrackerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("objects", &self.lock().objects.len())
            .finish()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_floor(dp: &DeviceProcess) -> bool {
    dp.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(FLOOR_LABEL))
}

impl Tracker {
    fn start(api: Api<DeviceProcess>) -> Tracker {
        let state = Arc::new(Mutex::new(TrackerState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut relisted: Option<HashSet<String>> = None;
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    watcher::Event::Init => relisted = Some(HashSet::new()),
                    watcher::Event::InitApply(dp) | watcher::Event::Apply(dp) => {
                        if is_floor(&dp) {
                            continue;
                        }
                        let name = dp.metadata.name.clone().unwrap_or_default();
                        let summary = Summary::of(&dp);
                        if let Some(seen) = relisted.as_mut() {
                            seen.insert(name.clone());
                        }
                        let was = state.objects.insert(name, summary.clone());
                        if was.is_some_and(|w| w.connected) && !summary.connected {
                            state.flaps += 1;
                        }
                    }
                    watcher::Event::Delete(dp) => {
                        let name = dp.metadata.name.unwrap_or_default();
                        state.objects.remove(&name);
                    }
                    watcher::Event::InitDone => {
                        if let Some(seen) = relisted.take() {
                            state.objects.retain(|name, _| seen.contains(name));
                        }
                    }
                }
            }
        });
        Tracker { state, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of DeviceProcesses for which `pred` holds.
    pub fn count(&self, pred: impl Fn(&Summary) -> bool) -> usize {
        self.lock().objects.values().filter(|s| pred(s)).count()
    }

    /// DeviceProcesses seen going from connected to not connected so far.
    pub fn flaps(&self) -> u64 {
        self.lock().flaps
    }

    /// Waits until at least `n` DeviceProcesses satisfy `pred`; returns the time it took.
    /// Fails at `timeout` with how many did.
    pub async fn wait_for(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Summary) -> bool,
    ) -> Result<Duration, PhaseTimeout> {
        self.wait_for_traced(what, n, timeout, pred, &mut Vec::new())
            .await
    }

    /// [`Self::wait_for`], recording `(seconds since start, how many satisfied pred)` in
    /// `trace` each time the count changes (at most one point per poll: 50 ms, 200 ms past
    /// 10,000 objects).
    pub async fn wait_for_traced(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Summary) -> bool,
        trace: &mut Vec<(f64, usize)>,
    ) -> Result<Duration, PhaseTimeout> {
        let start = Instant::now();
        let poll = if n > 10_000 {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(50)
        };
        loop {
            let have = self.count(&pred);
            if trace.last().is_none_or(|&(_, last)| last != have) {
                trace.push((start.elapsed().as_secs_f64(), have));
            }
            if have >= n {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(PhaseTimeout {
                    what: what.to_owned(),
                    reached: have,
                    wanted: n,
                    timeout,
                });
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// A component process with its log file.
pub struct Component {
    /// The child (killed on drop).
    pub child: Child,
    /// Where its output goes.
    pub log: PathBuf,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component").field("log", &self.log).finish()
    }
}

impl Component {
    /// Starts `bin` with `args`, output into `log`.
    pub fn spawn(bin: &Path, args: &[String], log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self { child, log })
    }

    /// RSS and CPU so far.
    pub fn sample(&self) -> ProcSample {
        self.child
            .id()
            .and_then(|pid| procstat::sample(pid).ok())
            .unwrap_or_default()
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGKILLs the process and waits for it, keeping the handle.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A free loopback port (bound and released; good enough on a quiet test machine).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if start.elapsed() > timeout {
            bail!("nothing listens on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Waits until `url` answers 200.
pub async fn wait_http_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let uri: http::Uri = url.parse()?;
    let start = Instant::now();
    loop {
        if let Ok(resp) = client.get(uri.clone()).await
            && resp.status() == http::StatusCode::OK
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{url} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of `GET url` if it answers 200.
pub async fn http_get_text(url: &str) -> Option<String> {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let uri: http::Uri = url.parse().ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .ok()?
        .ok()?;
    if resp.status() != http::StatusCode::OK {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// The sum of every sample of the Prometheus family `name` (all label sets) in `text`, or of
/// the samples whose labels contain `labels` (e.g. `result="success"`).
pub fn metric_sum(text: &str, name: &str, labels: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_part, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if !labels.is_empty() && !label_part.contains(labels) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_metric_families() {
        let text = "# HELP x\napollo_gateway_status_writes_total{result=\"success\"} 5\n\
                    apollo_gateway_status_writes_total{result=\"error\"} 2\n\
                    apollo_gateway_owned_devices 7\napollo_gateway_owned_devices_x 1\n";
        assert_eq!(
            metric_sum(text, "apollo_gateway_status_writes_total", ""),
            Some(7.0)
        );
        assert_eq!(
            metric_sum(
                text,
                "apollo_gateway_status_writes_total",
                "result=\"success\""
            ),
            Some(5.0)
        );
        assert_eq!(
            metric_sum(text, "apollo_gateway_owned_devices", ""),
            Some(7.0)
        );
        assert_eq!(metric_sum(text, "apollo_gateway_lease_held", ""), None);
    }
}
