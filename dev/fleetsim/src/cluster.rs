//! The system under test: the development API server in this process, the controller and the
//! gateway as separate processes (so their memory and CPU are measured alone), and a reflector
//! over DeviceProcesses to time when status converges.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apollo_api::{DeviceProcess, DeviceProcessDeployment, NetworkSwitch};
use apollo_devcluster::{DevCluster, Options, User};
use apollo_protocol::keys::MasterKey;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::process::{Child, Command};

use crate::procstat::{self, ProcSample};

/// Namespace the benchmark runs in.
pub const NAMESPACE: &str = "default";

/// The development API server plus handles on it.
pub struct Cluster {
    /// The server.
    pub dev: DevCluster,
    /// Admin client.
    pub admin: kube::Client,
    /// Working directory (kubeconfigs, master key, component logs); kept after the run.
    pub dir: PathBuf,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.dev.url())
            .finish()
    }
}

impl Cluster {
    /// Starts the server with its state and the component logs in `dir`, and installs the
    /// project's CRDs and RBAC from `repo/k8s`.
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
        Ok(Self { dev, admin, dir })
    }

    /// Writes requests by `user` so far (create, update, patch, delete).
    pub fn writes_by(&self, user: User) -> u64 {
        self.dev.requests().writes_by(&user.username(NAMESPACE))
    }

    /// `verb` requests by `user` on `resource` (any subresource).
    pub fn count(&self, user: User, verb: &str, resource: &str) -> u64 {
        self.dev.requests().count(
            Some(&user.username(NAMESPACE)),
            Some(verb),
            Some(resource),
            None,
        )
    }

    /// Creates `n` NetworkSwitches `sw-00000…` labelled `role=bench`, 64 at a time.
    pub async fn create_switches(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let api: Api<NetworkSwitch> = Api::namespaced(self.admin.clone(), NAMESPACE);
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
        let api: Api<DeviceProcessDeployment> = Api::namespaced(self.admin.clone(), NAMESPACE);
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
        let api: Api<DeviceProcessDeployment> = Api::namespaced(self.admin.clone(), NAMESPACE);
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
        let api: Api<DeviceProcessDeployment> = Api::namespaced(self.admin.clone(), NAMESPACE);
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
        let api: Api<DeviceProcessDeployment> = Api::namespaced(self.admin.clone(), NAMESPACE);
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
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether a `RolloutComplete` Event regards the `bench` deployment.
    async fn rollout_completed(&self) -> anyhow::Result<bool> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.admin.clone(), NAMESPACE);
        Ok(events
            .list(&kube::api::ListParams::default())
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

    /// A reflector over every DeviceProcess, as admin.
    pub fn track_device_processes(&self) -> Tracker {
        let api: Api<DeviceProcess> = Api::namespaced(self.admin.clone(), NAMESPACE);
        let (store, writer) = reflector::store();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while stream.next().await.is_some() {}
        });
        Tracker { store, task }
    }
}

/// A live view of every DeviceProcess.
pub struct Tracker {
    store: Store<DeviceProcess>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("objects", &self.store.len())
            .finish()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tracker {
    /// Number of DeviceProcesses for which `pred` holds.
    pub fn count(&self, pred: impl Fn(&DeviceProcess) -> bool) -> usize {
        self.store.state().iter().filter(|dp| pred(dp)).count()
    }

    /// Waits until at least `n` DeviceProcesses satisfy `pred`; returns the time it took.
    /// Fails at `timeout` with how many did.
    pub async fn wait_for(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&DeviceProcess) -> bool,
    ) -> anyhow::Result<Duration> {
        self.wait_for_traced(what, n, timeout, pred, &mut Vec::new())
            .await
    }

    /// [`Self::wait_for`], recording `(seconds since start, how many satisfied pred)` in
    /// `trace` each time the count changes (at most one point per 50 ms poll).
    pub async fn wait_for_traced(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&DeviceProcess) -> bool,
        trace: &mut Vec<(f64, usize)>,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let have = self.count(&pred);
            if trace.last().is_none_or(|&(_, last)| last != have) {
                trace.push((start.elapsed().as_secs_f64(), have));
            }
            if have >= n {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!("{what}: {have} of {n} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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
