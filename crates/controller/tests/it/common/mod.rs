//! Shared helpers of the controller's integration tests: a development API server (or the real
//! cluster named by APOLLO_TEST_KUBECONFIG) with the CRDs and the controller's own RBAC
//! applied, the controller running in-process as its ServiceAccount, and polling with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apollo_api::{DeviceProcess, DeviceProcessDeployment, NetworkSwitch};
use apollo_controller::{App, Config, Error, LeaderElectionConfig, Metrics};
use apollo_devcluster::User;
use apollo_testkit::{TestEnv, poll_until};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tokio::sync::{oneshot, watch};

/// Longest wait for any condition.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A path in the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A fresh environment with the CRDs and `k8s/rbac/controller.yaml` applied as admin.
pub async fn setup() -> TestEnv {
    let env = TestEnv::new().await;
    // The CRDs for the cluster's Kubernetes version (the variant without selectableFields on
    // 1.29 and 1.30).
    let crds = env.crd_dir(&repo("")).await;
    let files = [
        crds.join("networkswitches.azure.com.yaml"),
        crds.join("deviceprocesses.azure.com.yaml"),
        crds.join("deviceprocessdeployments.azure.com.yaml"),
        repo("k8s/rbac/controller.yaml"),
    ];
    for file in &files {
        env.apply_manifest_file(file)
            .await
            .unwrap_or_else(|e| panic!("applying {}: {e}", file.display()));
    }
    wait_controller_rbac(&env).await;
    env
}

/// Waits until the controller's ServiceAccount holds the grants of `k8s/rbac/controller.yaml`
/// (a real API server's authorizer sees a new binding a moment later).
pub async fn wait_controller_rbac(env: &TestEnv) {
    for (verb, group, resource) in [
        ("list", "azure.com", "deviceprocessdeployments"),
        ("watch", "azure.com", "deviceprocessdeployments"),
        ("patch", "azure.com", "deviceprocessdeployments/status"),
        ("list", "azure.com", "deviceprocesses"),
        ("create", "azure.com", "deviceprocesses"),
        ("list", "azure.com", "networkswitches"),
        ("create", "events.k8s.io", "events"),
        ("create", "coordination.k8s.io", "leases"),
    ] {
        env.wait_allowed(User::Controller, verb, group, resource, DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Applies the runbook's two switches and demo-logger deployment.
pub async fn apply_runbook(env: &TestEnv) {
    for file in [
        "k8s/samples/networkswitches.yaml",
        "k8s/samples/demo-logger.yaml",
    ] {
        env.apply_manifest_file(&repo(file))
            .await
            .unwrap_or_else(|e| panic!("applying {file}: {e}"));
    }
}

/// Test settings: all namespaces on the in-process server (one server per test), the test's
/// namespace on a shared real cluster; fast retries.
/// Applies a NetworkSwitch `name` with `labels` (YAML flow mapping, e.g. `{site: sfo, role: tor}`).
pub async fn add_switch(env: &TestEnv, name: &str, labels: &str) {
    env.apply_manifest(&format!(
        "apiVersion: azure.com/v1alpha1\nkind: NetworkSwitch\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n  dummy: ok\n"
    ))
    .await
    .unwrap();
}

pub fn config(env: &TestEnv) -> Config {
    Config {
        namespace: env.is_real().then(|| env.namespace().to_owned()),
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(2),
        ..Config::new()
    }
}

/// Fast leader election in the test's namespace.
pub fn leader_config(env: &TestEnv, identity: &str) -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_millis(100),
        ..LeaderElectionConfig::new(env.namespace(), identity)
    }
}

/// A controller running in-process.
pub struct Running {
    pub metrics: Arc<Metrics>,
    pub readiness: apollo_process::http::Readiness,
    pub leading: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Graceful stop (as on SIGTERM); returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.handle)
            .await
            .expect("controller stops within the deadline")
            .expect("controller task does not panic")
    }

    /// Waits for `run` to return by itself.
    pub async fn finished(mut self) -> Result<(), Error> {
        tokio::time::timeout(DEADLINE, &mut self.handle)
            .await
            .expect("controller returns within the deadline")
            .expect("controller task does not panic")
    }

    /// Kills the controller without any cleanup (as a crash would).
    pub async fn crash(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }

    /// Whether it currently runs the controller.
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }
}

/// Logs of the code under test, captured per test (shown when it fails); `RUST_LOG` filters.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("apollo_controller=debug,kube_runtime=info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Starts the controller with the controller's own identity.
pub async fn start(env: &TestEnv, config: Config) -> Running {
    init_logs();
    let client = env.as_user(User::Controller).await;
    let app = App::new(config, client);
    let metrics = app.metrics();
    let leading = app.leading();
    let readiness = app.readiness();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    Running {
        metrics,
        readiness,
        leading,
        stop: Some(tx),
        handle,
    }
}

/// Polls `check` until it returns `Ok`, panicking with the last `Err` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    poll_until(DEADLINE, check)
        .await
        .unwrap_or_else(|state| panic!("timed out waiting for {what}; last state: {state}"))
}

pub fn dps(env: &TestEnv, client: &kube::Client) -> Api<DeviceProcess> {
    Api::namespaced(client.clone(), env.namespace())
}

pub fn dpds(env: &TestEnv, client: &kube::Client) -> Api<DeviceProcessDeployment> {
    Api::namespaced(client.clone(), env.namespace())
}

pub fn switches(env: &TestEnv, client: &kube::Client) -> Api<NetworkSwitch> {
    Api::namespaced(client.clone(), env.namespace())
}

/// Sorted names of the DeviceProcesses in the test's namespace.
pub async fn dp_names(env: &TestEnv) -> Vec<String> {
    try_dp_names(env).await.expect("list DeviceProcesses")
}

/// Like [`dp_names`], an error when the list fails (fault injection).
pub async fn try_dp_names(env: &TestEnv) -> Result<Vec<String>, String> {
    let admin = env.admin().await;
    let mut names: Vec<String> = dps(env, &admin)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    Ok(names)
}

/// Retries `op` until it succeeds (for writes while faults are injected).
pub async fn retrying<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    eventually(what, || {
        let fut = op();
        async move { fut.await.map_err(|e| e.to_string()) }
    })
    .await
}

/// Waits until the DeviceProcesses are exactly `want`.
pub async fn wait_for_dps(env: &TestEnv, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    eventually(&format!("DeviceProcesses {want:?}"), || {
        let want = want.clone();
        async move {
            let names = try_dp_names(env).await?;
            if names == want {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        }
    })
    .await;
}

/// (desired, current, up-to-date, connected, observed) of a deployment once its status
/// describes its current generation.
pub async fn counts(env: &TestEnv, name: &str) -> Option<(i32, i32, i32, i32, i32)> {
    let admin = env.admin().await;
    let dpd = dpds(env, &admin).get(name).await.ok()?;
    let status = dpd.status?;
    (status.observed_generation == dpd.metadata.generation).then_some((
        status.desired_number_scheduled,
        status.current_number_scheduled,
        status.updated_number_scheduled,
        status.number_agent_connected,
        status.number_spec_observed,
    ))
}

/// Waits until a deployment's status counts are `want`.
pub async fn wait_for_counts(env: &TestEnv, name: &str, want: (i32, i32, i32, i32, i32)) {
    eventually(&format!("{name} status counts {want:?}"), || async move {
        let got = counts(env, name).await;
        if got == Some(want) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
}

/// Events regarding `name` as (type, reason, note).
pub async fn events_for(env: &TestEnv, name: &str) -> Vec<(String, String, String)> {
    let admin = env.admin().await;
    let api: Api<Event> = Api::namespaced(admin, env.namespace());
    let mut out: Vec<(String, String, String)> = api
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Writes of the controller so far: the API server's count when in-process (all write verbs
/// by the controller's user), otherwise the controller's own metric.
pub fn controller_writes(env: &TestEnv, metrics: &Metrics) -> u64 {
    match env.dev() {
        Some(dev) => dev.requests().writes_by(&env.username(User::Controller)),
        None => metrics.total_writes(),
    }
}
