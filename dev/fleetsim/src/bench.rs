//! The benchmark scenarios of `apollo-fleetsim bench`, each printing numbers (never asserting
//! timings): the API server's write floor, the gateway's baseline memory, fan-out, connect,
//! steady state, rollout (long poll vs polling; paced by `maxUnavailable` 1%, 10% and 100%),
//! staleness, conditional-GET throughput against a bare-hyper baseline measured in the same
//! run, and gateway replicas (per-replica CPU and memory with 1 and 3 replicas, failover after
//! a SIGKILL).
//!
//! Every phase has a time limit; a phase that runs out records how far it got (e.g.
//! `connect: 61234 of 100000 after 260s`) and the scenario goes on with what does not depend
//! on it, so a run always ends with numbers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use apollo_devcluster::User;
use serde::{Deserialize, Serialize};

use crate::cluster::{
    Cluster, Component, PhaseTimeout, Summary, Tracker, free_port, http_get_text, metric_sum,
    wait_http_ok, wait_listening,
};
use crate::fleet::{Fleet, FleetOptions, POLLING_IDLE_PER_ADDRESS};
use crate::floor::{self, FloorWrite, WriteFloor};
use crate::limits::OpenFiles;
use crate::load::{self, LoadResult};
use crate::procstat::{self, ProcSample};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Repository root (for `k8s/`).
    pub repo: PathBuf,
    /// Where each scenario keeps its server state and component logs.
    pub work_dir: PathBuf,
    /// Directory holding `apollo-gateway` and `apollo-controller`.
    pub bin_dir: PathBuf,
    /// Fleet sizes.
    pub sizes: Vec<usize>,
    /// Heartbeat interval the gateway asks for.
    pub heartbeat: Duration,
    /// Heartbeats observed in the steady-state window.
    pub steady_heartbeats: u32,
    /// Duration of each throughput run.
    pub load_duration: Duration,
    /// Requests in flight during the throughput runs.
    pub load_concurrency: usize,
    /// Devices the throughput runs spread their requests over.
    pub throughput_devices: usize,
    /// Run against this API server instead of the in-process development server.
    pub kubeconfig: Option<PathBuf>,
    /// Prefix of the namespaces created on an external API server (one per scenario).
    pub namespace_prefix: String,
    /// Time limit of each phase (fan-out, connect, each rollout, ...); `None`: 60 s + 2 ms
    /// per device.
    pub phase_timeout: Option<Duration>,
    /// Agents per loopback source address (0: all from the kernel's choice, and the gateway's
    /// per-address cap lifted instead).
    pub agents_per_address: usize,
    /// Agents started per second (0: all at once).
    pub start_rate: usize,
    /// Duration of each write-floor measurement.
    pub floor_duration: Duration,
    /// Gateway replica counts of the replica benchmark (empty: not run).
    pub replicas: Vec<usize>,
    /// Fleet size of the replica benchmark.
    pub replica_devices: usize,
    /// `--lease-duration` of the replicas.
    pub lease_duration: Duration,
    /// Run the conditional-GET throughput comparison.
    pub throughput: bool,
}

impl BenchConfig {
    /// A configuration with the defaults of `bench` (sizes and timings still to set).
    pub fn new(repo: PathBuf, work_dir: PathBuf, bin_dir: PathBuf) -> Self {
        BenchConfig {
            repo,
            work_dir,
            bin_dir,
            sizes: vec![1000],
            heartbeat: Duration::from_secs(10),
            steady_heartbeats: 3,
            load_duration: Duration::from_secs(10),
            load_concurrency: 32,
            throughput_devices: 2048,
            kubeconfig: None,
            namespace_prefix: "fleetsim".into(),
            phase_timeout: None,
            agents_per_address: crate::fleet::DEFAULT_AGENTS_PER_ADDRESS,
            start_rate: 10_000,
            floor_duration: Duration::from_secs(5),
            replicas: vec![1, 3],
            replica_devices: 1000,
            lease_duration: Duration::from_secs(15),
            throughput: true,
        }
    }

    fn phase_timeout(&self, devices: usize) -> Duration {
        self.phase_timeout
            .unwrap_or(Duration::from_secs(60) + Duration::from_millis(2 * devices as u64))
    }
}

/// CPU seconds per process over a phase (see [`SizeResult::rollout_long_poll_cpu_seconds`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutCpu {
    pub gateway: f64,
    pub controller: f64,
    pub simulator: f64,
}

impl RolloutCpu {
    /// The processes' CPU time so far.
    fn sample(gateway: &Component, controller: &Component) -> Self {
        let own = procstat::sample(std::process::id()).unwrap_or_default();
        RolloutCpu {
            gateway: gateway.sample().cpu.as_secs_f64(),
            controller: controller.sample().cpu.as_secs_f64(),
            simulator: own.cpu.as_secs_f64(),
        }
    }

    /// What was spent since `before`.
    fn since(&self, before: &RolloutCpu) -> RolloutCpu {
        RolloutCpu {
            gateway: (self.gateway - before.gateway).max(0.0),
            controller: (self.controller - before.controller).max(0.0),
            simulator: (self.simulator - before.simulator).max(0.0),
        }
    }
}

/// Results for one fleet size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SizeResult {
    pub devices: usize,
    /// Writes per second the API server took: status patches at the controller's and the
    /// gateway's write concurrency, spec applies at the controller's (measured before the
    /// scenario, on its server).
    pub write_floor: Vec<WriteFloor>,
    /// W: the status-patch floor at the controller's write concurrency.
    pub write_floor_per_second: Option<f64>,
    /// A: the spec-apply floor at the controller's write concurrency.
    pub apply_floor_per_second: Option<f64>,
    pub fanout_seconds: Option<f64>,
    /// DeviceProcesses that existed at the end of the fan-out phase.
    pub fanout_reached: usize,
    /// Fan-out time over N / W.
    pub fanout_over_floor: Option<f64>,
    pub controller_writes_fanout: u64,
    pub connect_seconds: Option<f64>,
    /// Devices connected and observed at the end of the connect phase.
    pub connect_reached: usize,
    /// Loopback source addresses the agents connected from.
    pub source_addresses: usize,
    pub steady_window_seconds: f64,
    pub steady_reports: u64,
    pub steady_status_writes: u64,
    pub steady_controller_writes: u64,
    pub gateway_lists: u64,
    pub gateway_watches: u64,
    /// RSS of a gateway with no DeviceProcess and no agent (its own process, same flags).
    pub gateway_baseline_rss_bytes: u64,
    pub gateway_rss_bytes: u64,
    /// RSS / N (baseline included).
    pub gateway_rss_bytes_per_device: f64,
    /// (RSS − baseline) / N.
    pub gateway_bytes_per_device_over_baseline: f64,
    pub gateway_cpu_ms_per_1000_heartbeats: f64,
    /// RSS of the controller with the fleet's N DeviceProcesses in its caches (steady
    /// window's end).
    pub controller_rss_bytes: u64,
    /// This process (API server when in process, agents, tracker): RSS and CPU share of one
    /// core during the steady window.
    pub simulator_rss_bytes: u64,
    pub simulator_cpu_percent: f64,
    pub rollout_long_poll_seconds: Option<f64>,
    /// Long-poll rollout time over 2N / W.
    pub rollout_long_poll_over_floor: Option<f64>,
    /// Long-poll rollout time over N / A + N / W (the controller's applies, then the
    /// gateway's status patches, on one server).
    pub rollout_long_poll_over_apply_floor: Option<f64>,
    /// Seconds after the template patch until every DeviceProcess carried the new spec (the
    /// controller's part of the long-poll rollout).
    pub rollout_long_poll_specs_written_seconds: Option<f64>,
    /// CPU seconds (user + system) the gateway, the controller and this process (the
    /// in-process development API server, the agents and the tracker; with `--kubeconfig`
    /// the agents and the tracker only) spent from the template patch until every agent
    /// observed the new spec: where the long-poll rollout's time went.
    pub rollout_long_poll_cpu_seconds: Option<RolloutCpu>,
    pub rollout_polling_seconds: Option<f64>,
    /// Polling rollout time over 2N / W.
    pub rollout_polling_over_floor: Option<f64>,
    /// Rollout with long poll over time: (seconds since the template patch was answered,
    /// DeviceProcesses whose agent observed the new spec), a point each time the count changed.
    pub rollout_long_poll_progress: Vec<(f64, usize)>,
    /// The same for the rollout with plain polling.
    pub rollout_polling_progress: Vec<(f64, usize)>,
    /// Rollouts paced by `maxUnavailable` (long poll), as (maxUnavailable, seconds).
    pub rollout_paced_seconds: Vec<(String, Option<f64>)>,
    pub stale_window_seconds: f64,
    pub stale_devices: usize,
    pub stale_flip_max_seconds: Option<f64>,
    /// Seconds the whole scenario took.
    pub wall_seconds: f64,
    pub errors: Vec<String>,
}

/// Throughput comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputResult {
    pub gateway: LoadResult,
    pub baseline: LoadResult,
    pub ratio: f64,
    /// Each round's gateway / baseline ratio (the spread of the alternating rounds).
    #[serde(default)]
    pub round_ratios: Vec<f64>,
}

/// One gateway replica in the replica benchmark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaSample {
    pub id: String,
    pub rss_bytes: u64,
    /// CPU time over the steady window, percent of one core.
    pub cpu_percent: f64,
    /// CPU ms per 1,000 heartbeats of the whole fleet.
    pub cpu_ms_per_1000_heartbeats: f64,
    /// `apollo_gateway_owned_devices`.
    pub owned_devices: u64,
    /// `apollo_gateway_long_polls_held`.
    pub long_polls_held: u64,
}

/// A replica's death (SIGKILL) and the survivors taking over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Failover {
    pub killed: String,
    /// Devices the killed replica owned.
    pub owned_by_killed: u64,
    /// `--lease-duration`.
    pub lease_seconds: f64,
    /// SIGKILL → the survivors' owned devices sum to N and each sees the smaller member set.
    pub seconds_to_full_ownership: Option<f64>,
    /// DeviceProcesses seen going to `AgentConnected` not True from the kill until a stale
    /// window after the takeover.
    pub flaps: u64,
}

/// The replica benchmark for one replica count.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaResult {
    pub replicas: usize,
    pub devices: usize,
    pub connect_seconds: Option<f64>,
    pub connect_reached: usize,
    pub steady_window_seconds: f64,
    pub steady_reports: u64,
    pub per_replica: Vec<ReplicaSample>,
    pub failover: Option<Failover>,
    pub errors: Vec<String>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub cores: usize,
    /// Memory of the machine (MemTotal).
    #[serde(default)]
    pub memory_bytes: u64,
    /// When the run started (RFC 3339, UTC).
    #[serde(default)]
    pub started: String,
    /// The command line.
    #[serde(default)]
    pub command: String,
    /// The API server: `development (in process)` or the kubeconfig's.
    #[serde(default)]
    pub api_server: String,
    /// This process' open-file limits (the gateway inherits them).
    #[serde(default)]
    pub open_files: OpenFiles,
    pub heartbeat_seconds: f64,
    pub sizes: Vec<SizeResult>,
    pub throughput: Option<ThroughputResult>,
    #[serde(default)]
    pub replicas: Vec<ReplicaResult>,
    pub agent_binary_bytes: Option<u64>,
}

/// The gateway's command line; `/readyz` and `/metrics` are on `metrics`. With agents spread
/// over source addresses the per-address cap stays at its default; otherwise the whole fleet
/// connects from 127.0.0.1 and the cap is lifted to the fleet size.
fn gateway_args(
    config: &BenchConfig,
    cluster: &Cluster,
    addr: &str,
    metrics: &str,
    devices: usize,
    key: &Path,
) -> Vec<String> {
    let ms = config.heartbeat.as_millis();
    let mut args = vec![
        format!("--addr={addr}"),
        format!("--metrics-addr={metrics}"),
        format!(
            "--kubeconfig={}",
            cluster.kubeconfig(User::Gateway).display()
        ),
        format!("--namespace={}", cluster.namespace),
        format!("--master-key-file={}", key.display()),
        format!("--heartbeat-interval={ms}ms"),
        format!("--stale-after={}ms", ms * 3),
    ];
    if config.agents_per_address == 0 {
        args.push(format!(
            "--max-connections-per-address={}",
            devices * 2 + 1024
        ));
    }
    args
}

/// The paced rollouts: `maxUnavailable` and the template args each one rolls out (the last one
/// leaves `100%` for the polling rollout after it).
pub const PACED: [(&str, &str); 3] = [
    ("1%", "paced-1"),
    ("10%", "paced-10"),
    ("100%", "paced-100"),
];

/// Starts the scenario's API server: the development one, or a fresh namespace on the
/// external one.
async fn start_cluster(config: &BenchConfig, name: &str) -> anyhow::Result<Cluster> {
    let dir = config.work_dir.join(name);
    match &config.kubeconfig {
        None => Cluster::start(&config.repo, &dir).await,
        Some(kubeconfig) => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let namespace = format!("{}-{name}-{secs}", config.namespace_prefix);
            Cluster::external(&config.repo, &dir, kubeconfig, &namespace).await
        }
    }
}

/// Starts the controller and waits until it serves its health endpoint.
async fn start_controller(
    config: &BenchConfig,
    cluster: &Cluster,
) -> anyhow::Result<(Component, SocketAddr)> {
    let health = free_port()?;
    let metrics = free_port()?;
    let controller = Component::spawn(
        &config.bin_dir.join("apollo-controller"),
        &[
            format!(
                "--kubeconfig={}",
                cluster.kubeconfig(User::Controller).display()
            ),
            format!("--namespace={}", cluster.namespace),
            format!("--metrics-addr={metrics}"),
            format!("--health-addr={health}"),
        ],
        cluster.dir.join("controller.log"),
    )?;
    Ok((controller, metrics))
}

/// Write and request counts: from the development server's request log when the server is
/// in process, else from the components' metrics.
struct Counters<'a> {
    cluster: &'a Cluster,
    controller_metrics: SocketAddr,
    gateway_metrics: Option<SocketAddr>,
}

impl Counters<'_> {
    async fn scrape(addr: Option<SocketAddr>, name: &str, labels: &str) -> u64 {
        let Some(addr) = addr else { return 0 };
        let text = http_get_text(&format!("http://{addr}/metrics"))
            .await
            .unwrap_or_default();
        metric_sum(&text, name, labels).unwrap_or(0.0) as u64
    }

    async fn controller_writes(&self) -> u64 {
        match self.cluster.writes_by(User::Controller) {
            Some(n) => n,
            None => {
                Self::scrape(
                    Some(self.controller_metrics),
                    "apollo_controller_writes_total",
                    "",
                )
                .await
            }
        }
    }

    async fn status_writes(&self) -> u64 {
        match self
            .cluster
            .count(User::Gateway, "patch", "deviceprocesses")
        {
            Some(n) => n,
            None => {
                Self::scrape(
                    self.gateway_metrics,
                    "apollo_gateway_status_writes_total",
                    "",
                )
                .await
            }
        }
    }

    async fn gateway_requests(&self, verb: &str) -> u64 {
        match self.cluster.count(User::Gateway, verb, "deviceprocesses") {
            Some(n) => n,
            None => {
                Self::scrape(
                    self.gateway_metrics,
                    "apollo_gateway_api_requests_total",
                    &format!("verb=\"{verb}\""),
                )
                .await
            }
        }
    }
}

/// Starts the fleet's agents for `names`, `config.start_rate` per second.
async fn start_agents(config: &BenchConfig, fleet: &mut Fleet, names: &[String]) {
    let batch = if config.start_rate == 0 {
        usize::MAX
    } else {
        (config.start_rate / 10).max(1)
    };
    for (i, name) in names.iter().enumerate() {
        if i > 0 && i % batch == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        fleet.start(name);
    }
}

/// Records a phase that ran out of time; returns how far it got.
fn timed_out(r: &mut Vec<String>, e: &PhaseTimeout) -> usize {
    eprintln!("  {e}");
    r.push(e.to_string());
    e.reached
}

/// Runs every scenario for one fleet size.
pub async fn run_size(config: &BenchConfig, devices: usize) -> anyhow::Result<SizeResult> {
    let wall = Instant::now();
    let mut r = SizeResult {
        devices,
        stale_window_seconds: (config.heartbeat * 3).as_secs_f64(),
        ..SizeResult::default()
    };
    let phase = config.phase_timeout(devices);
    let cluster = start_cluster(config, &format!("devices-{devices}")).await?;
    let tracker = cluster.track_device_processes();

    // The write floor W, before anything else runs on this server.
    let writers = floor::Writers {
        gateway: cluster.client(User::Gateway).await?,
        controller: cluster.client(User::Controller).await?,
    };
    match floor::measure(
        &cluster.admin,
        &writers,
        &cluster.namespace,
        256,
        &[
            (FloorWrite::StatusPatch, floor::CONTROLLER_WRITE_CONCURRENCY),
            (FloorWrite::StatusPatch, floor::GATEWAY_STATUS_WORKERS),
            (FloorWrite::SpecApply, floor::CONTROLLER_WRITE_CONCURRENCY),
        ],
        config.floor_duration,
    )
    .await
    {
        Ok(f) => {
            r.write_floor_per_second = f.first().map(|f| f.writes_per_second);
            r.apply_floor_per_second = f
                .iter()
                .find(|f| f.write == FloorWrite::SpecApply)
                .map(|f| f.writes_per_second);
            for m in &f {
                eprintln!(
                    "  write floor: {:.0} {}/s with {} in flight",
                    m.writes_per_second,
                    m.write.label(),
                    m.concurrency
                );
            }
            r.write_floor = f;
        }
        Err(e) => r.errors.push(format!("write floor: {e}")),
    }

    // The gateway's baseline: its own process, same flags, no DeviceProcess, no agent.
    let (master, key_file) = cluster.master_key()?;
    {
        let (addr, metrics) = (free_port()?, free_port()?);
        let baseline = Component::spawn(
            &config.bin_dir.join("apollo-gateway"),
            &gateway_args(
                config,
                &cluster,
                &addr.to_string(),
                &metrics.to_string(),
                devices,
                &key_file,
            ),
            cluster.dir.join("gateway-baseline.log"),
        )?;
        wait_http_ok(&format!("http://{metrics}/readyz"), Duration::from_secs(60)).await?;
        // Let start-up allocations settle (first lease renewal, metrics scrape).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = http_get_text(&format!("http://{metrics}/metrics")).await;
        r.gateway_baseline_rss_bytes = baseline.sample().rss_bytes;
        baseline.stop().await;
    }

    let names = cluster.create_switches(devices).await?;

    // Controller fan-out.
    let (controller, controller_metrics) = start_controller(config, &cluster).await?;
    let mut counters = Counters {
        cluster: &cluster,
        controller_metrics,
        gateway_metrics: None,
    };
    let writes_before = counters.controller_writes().await;
    cluster.create_deployment(&["v1"]).await?;
    match tracker.wait_for("fan-out", devices, phase, |_| true).await {
        Ok(took) => {
            r.fanout_seconds = Some(took.as_secs_f64());
            r.fanout_reached = devices;
        }
        Err(e) => r.fanout_reached = timed_out(&mut r.errors, &e),
    }
    r.controller_writes_fanout = counters.controller_writes().await - writes_before;
    eprintln!(
        "  fan-out: {} of {devices} in {}",
        r.fanout_reached,
        opt_secs(r.fanout_seconds)
    );

    // Gateway and fleet: connect.
    let addr = free_port()?;
    let metrics = free_port()?;
    let gateway = Component::spawn(
        &config.bin_dir.join("apollo-gateway"),
        &gateway_args(
            config,
            &cluster,
            &addr.to_string(),
            &metrics.to_string(),
            devices,
            &key_file,
        ),
        cluster.dir.join("gateway.log"),
    )?;
    // The baseline gateway's list and watch (same identity) are not this one's.
    let lists_before = counters.gateway_requests("list").await;
    let watches_before = counters.gateway_requests("watch").await;
    counters.gateway_metrics = Some(metrics);
    let url = format!("http://{addr}");
    wait_http_ok(&format!("http://{metrics}/readyz"), phase).await?;
    // A long poll holds a connection (a file descriptor in this process and in the gateway)
    // per device (reports share a few more); past the descriptor limit the fleet polls
    // instead, which holds only the requests in flight.
    let fd_limit = procstat::open_files_limit().unwrap_or(u64::MAX);
    let long_polls_fit = devices as u64 + 2048 <= fd_limit;
    if !long_polls_fit {
        r.errors.push(format!(
            "long poll skipped: {devices} held connections need more than the {fd_limit} open files allowed per process; the fleet polls"
        ));
    }
    let long_poll = FleetOptions {
        gateway_url: url.clone(),
        master,
        long_poll: if long_polls_fit {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        },
        initial_heartbeat: config.heartbeat,
        agents_per_address: config.agents_per_address,
        max_idle_per_address: (!long_polls_fit).then_some(POLLING_IDLE_PER_ADDRESS),
    };
    let mut fleet = Fleet::new(long_poll.clone());
    let start = Instant::now();
    start_agents(config, &mut fleet, &names).await;
    r.source_addresses = fleet.source_addresses();
    let connected = |s: &Summary| s.connected && s.observed_current;
    match tracker
        .wait_for(
            "connect",
            devices,
            phase.saturating_sub(start.elapsed()),
            connected,
        )
        .await
    {
        Ok(_) => {
            r.connect_seconds = Some(start.elapsed().as_secs_f64());
            r.connect_reached = devices;
        }
        Err(e) => r.connect_reached = timed_out(&mut r.errors, &e),
    }
    eprintln!(
        "  connect: {} of {devices}, all after {} ({} source addresses)",
        r.connect_reached,
        opt_secs(r.connect_seconds),
        r.source_addresses
    );
    let complete = r.connect_reached >= devices;
    // The controller's deployment status follows the DeviceProcess statuses; let it settle so
    // the steady window measures steady state only.
    if complete && let Err(e) = cluster.wait_deployment_observed(devices, phase).await {
        r.errors.push(format!("{e:#}"));
    }

    // Steady state: no writes, CPU per heartbeat, memory.
    let status_before = counters.status_writes().await;
    let controller_before = counters.controller_writes().await;
    let (_, reports_before) = fleet.totals();
    let cpu_before = gateway.sample().cpu;
    let self_before = procstat::sample(std::process::id()).unwrap_or_default();
    let window = config.heartbeat * config.steady_heartbeats;
    let start = Instant::now();
    // Measuring over a fixed window is the point here (how much happens in it), not waiting
    // for something to happen.
    tokio::time::sleep(window).await;
    r.steady_window_seconds = start.elapsed().as_secs_f64();
    let sample = gateway.sample();
    let self_after = procstat::sample(std::process::id()).unwrap_or_default();
    let (_, reports_after) = fleet.totals();
    r.steady_reports = reports_after - reports_before;
    r.steady_status_writes = counters.status_writes().await - status_before;
    r.steady_controller_writes = counters.controller_writes().await - controller_before;
    if sample.rss_bytes == 0 || self_after.rss_bytes == 0 {
        // Reading /proc needs a descriptor: at the open-file limit even that fails.
        r.errors.push(
            "memory and CPU not sampled: /proc unreadable (this process at its open-file limit?)"
                .into(),
        );
    }
    r.gateway_rss_bytes = sample.rss_bytes;
    r.controller_rss_bytes = controller.sample().rss_bytes;
    r.gateway_rss_bytes_per_device = sample.rss_bytes as f64 / devices.max(1) as f64;
    r.gateway_bytes_per_device_over_baseline = sample
        .rss_bytes
        .saturating_sub(r.gateway_baseline_rss_bytes)
        as f64
        / devices.max(1) as f64;
    r.simulator_rss_bytes = self_after.rss_bytes;
    r.simulator_cpu_percent = (self_after.cpu.saturating_sub(self_before.cpu)).as_secs_f64()
        * 100.0
        / r.steady_window_seconds.max(1e-9);
    if r.steady_reports > 0 {
        r.gateway_cpu_ms_per_1000_heartbeats =
            (sample.cpu - cpu_before).as_secs_f64() * 1000.0 / (r.steady_reports as f64 / 1000.0);
    }
    r.gateway_lists = counters.gateway_requests("list").await - lists_before;
    r.gateway_watches = counters.gateway_requests("watch").await - watches_before;
    eprintln!(
        "  steady: {} heartbeats, {} status writes, gateway RSS {:.1} MiB (baseline {:.1} MiB)",
        r.steady_reports,
        r.steady_status_writes,
        r.gateway_rss_bytes as f64 / 1048576.0,
        r.gateway_baseline_rss_bytes as f64 / 1048576.0
    );

    // Rollouts need every device connected; an incomplete connect skips them.
    if !complete {
        r.errors
            .push("rollouts skipped: not every device connected".into());
    }
    if complete && long_polls_fit {
        let cpu_before = RolloutCpu::sample(&gateway, &controller);
        let start = Instant::now();
        cluster.patch_template_args(&["v2"]).await?;
        let (written, observed) = tokio::join!(
            tracker.wait_for("rollout specs written", devices, phase, |s| s.args
                == ["v2"]),
            rolled_out(
                &tracker,
                "rollout (long poll)",
                (devices, phase, start),
                "v2",
                &mut r.rollout_long_poll_progress,
                &mut r.errors,
            )
        );
        r.rollout_long_poll_seconds = observed;
        r.rollout_long_poll_cpu_seconds = observed
            .is_some()
            .then(|| RolloutCpu::sample(&gateway, &controller).since(&cpu_before));
        // Both waits poll the same view: once every agent observed the new spec, every spec
        // was written, whichever wait looked first.
        r.rollout_long_poll_specs_written_seconds = written
            .ok()
            .map(|d| d.as_secs_f64())
            .map(|w| observed.map_or(w, |o| w.min(o)));
        // Rollouts paced by maxUnavailable: each DeviceProcess waits for a free slot, which
        // opens when an updated agent reports the new spec (long poll only; polling would
        // time the heartbeat interval times the number of rounds).
        for (pct, args) in PACED {
            if r.rollout_long_poll_seconds.is_none() {
                break;
            }
            let start = Instant::now();
            cluster.patch_rollout(pct, &[args]).await?;
            let took = rolled_out(
                &tracker,
                &format!("rollout (maxUnavailable {pct})"),
                (devices, phase, start),
                args,
                &mut Vec::new(),
                &mut r.errors,
            )
            .await;
            r.rollout_paced_seconds.push((pct.to_owned(), took));
        }
    }
    let mut stale_fleet = fleet;
    if complete {
        // The fleet restarts polling, unless it polls already (long polls did not fit).
        if long_polls_fit {
            let mut polling = Fleet::new(FleetOptions {
                long_poll: Duration::ZERO,
                ..long_poll
            });
            drop(stale_fleet);
            start_agents(config, &mut polling, &names).await;
            stale_fleet = polling;
        }
        let start = Instant::now();
        cluster.patch_template_args(&["v3"]).await?;
        r.rollout_polling_seconds = rolled_out(
            &tracker,
            "rollout (polling)",
            (devices, phase, start),
            "v3",
            &mut r.rollout_polling_progress,
            &mut r.errors,
        )
        .await;
    }
    if let Some(w) = r.write_floor_per_second.filter(|w| *w > 0.0) {
        let n = devices as f64;
        r.fanout_over_floor = r.fanout_seconds.map(|s| s / (n / w));
        r.rollout_long_poll_over_floor = r.rollout_long_poll_seconds.map(|s| s / (2.0 * n / w));
        r.rollout_polling_over_floor = r.rollout_polling_seconds.map(|s| s / (2.0 * n / w));
        if let Some(a) = r.apply_floor_per_second.filter(|a| *a > 0.0) {
            r.rollout_long_poll_over_apply_floor =
                r.rollout_long_poll_seconds.map(|s| s / (n / a + n / w));
        }
    }

    // Staleness: silence a tenth of the fleet (of those that connected).
    let silent: Vec<&String> = names.iter().step_by(10).collect();
    r.stale_devices = silent.len();
    for name in &silent {
        stale_fleet.stop(name);
    }
    let start = Instant::now();
    let silent_set: std::collections::HashSet<&str> = silent.iter().map(|s| s.as_str()).collect();
    match tracker
        .wait_for(
            "stale",
            silent.len(),
            Duration::from_secs(30) + config.heartbeat * 6,
            // Connected objects (most of them) are ruled out before any hashing: the tracker
            // counts under its lock, which its watch task waits on.
            |s| !s.connected && silent_set.contains(s.device.as_str()),
        )
        .await
    {
        Ok(_) => r.stale_flip_max_seconds = Some(start.elapsed().as_secs_f64()),
        Err(e) => {
            timed_out(&mut r.errors, &e);
        }
    }

    drop(stale_fleet);
    gateway.stop().await;
    controller.stop().await;
    drop(tracker);
    cluster.shutdown().await;
    r.wall_seconds = wall.elapsed().as_secs_f64();
    Ok(r)
}

/// Waits, after a rollout to `args` was started at `start`, until all `devices` run and observe
/// them (progress traced in `trace`), and prints the time: the seconds since `start`, or `None`
/// with the timeout recorded in `errors`.
async fn rolled_out(
    tracker: &Tracker,
    what: &str,
    (devices, phase, start): (usize, Duration, Instant),
    args: &str,
    trace: &mut Vec<(f64, usize)>,
    errors: &mut Vec<String>,
) -> Option<f64> {
    let took = match tracker
        .wait_for_traced(
            what,
            devices,
            phase,
            |s| s.args == [args] && s.observed_current,
            trace,
        )
        .await
    {
        Ok(_) => Some(start.elapsed().as_secs_f64()),
        Err(e) => {
            timed_out(errors, &e);
            None
        }
    };
    eprintln!("  {what}: {}", opt_secs(took));
    took
}

fn opt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| "not reached".into(), |s| format!("{s:.2}s"))
}

/// One gateway replica process.
struct Replica {
    id: String,
    component: Component,
    url: String,
    metrics: SocketAddr,
}

impl Replica {
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = http_get_text(&format!("http://{}/metrics", self.metrics)).await?;
        metric_sum(&text, name, "")
    }
}

/// The replica benchmark: `replicas` gateways (`--id`, `--advertise-url`, `--lease-duration`)
/// serve one fleet whose agents list every replica (each starting with a different one); per
/// replica CPU and memory over a steady window; with more than one replica, the first is
/// SIGKILLed and the time until the survivors own every device is measured.
pub async fn run_replicas(
    config: &BenchConfig,
    devices: usize,
    replicas: usize,
) -> anyhow::Result<ReplicaResult> {
    let mut r = ReplicaResult {
        replicas,
        devices,
        ..ReplicaResult::default()
    };
    let phase = config.phase_timeout(devices);
    let cluster = start_cluster(config, &format!("replicas-{replicas}-{devices}")).await?;
    let tracker = cluster.track_device_processes();
    let names = cluster.create_switches(devices).await?;
    let (controller, _) = start_controller(config, &cluster).await?;
    cluster.create_deployment(&["v1"]).await?;
    if let Err(e) = tracker.wait_for("fan-out", devices, phase, |_| true).await {
        timed_out(&mut r.errors, &e);
    }
    let (master, key_file) = cluster.master_key()?;
    let mut gateways = Vec::new();
    for i in 0..replicas {
        let (addr, metrics) = (free_port()?, free_port()?);
        let id = format!("gw-{i}");
        let mut args = gateway_args(
            config,
            &cluster,
            &addr.to_string(),
            &metrics.to_string(),
            devices,
            &key_file,
        );
        args.push(format!("--id={id}"));
        args.push(format!("--advertise-url=http://{addr}"));
        args.push(format!(
            "--lease-duration={}ms",
            config.lease_duration.as_millis()
        ));
        let component = Component::spawn(
            &config.bin_dir.join("apollo-gateway"),
            &args,
            cluster.dir.join(format!("gateway-{id}.log")),
        )?;
        gateways.push(Replica {
            id,
            component,
            url: format!("http://{addr}"),
            metrics,
        });
    }
    for g in &gateways {
        wait_http_ok(&format!("http://{}/readyz", g.metrics), phase).await?;
    }
    // Every replica sees the whole member set before the agents come.
    let start = Instant::now();
    loop {
        let mut all = true;
        for g in &gateways {
            all &= g.metric("apollo_gateway_members").await == Some(replicas as f64);
        }
        if all {
            break;
        }
        if start.elapsed() > phase {
            r.errors
                .push(format!("members: not every replica saw {replicas} members"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Agents listing every replica, each device starting with a different one.
    let urls: Vec<String> = gateways.iter().map(|g| g.url.clone()).collect();
    let options = |i: usize| FleetOptions {
        gateway_url: (0..replicas)
            .map(|k| urls[(i + k) % replicas].clone())
            .collect::<Vec<_>>()
            .join(","),
        master: master.clone(),
        long_poll: Duration::from_secs(30),
        initial_heartbeat: config.heartbeat,
        agents_per_address: config.agents_per_address,
        max_idle_per_address: None,
    };
    // One fleet per first replica (the gateway URL list is a fleet option).
    let mut fleets: Vec<Fleet> = (0..replicas).map(|k| Fleet::new(options(k))).collect();
    let start = Instant::now();
    let batch = if config.start_rate == 0 {
        usize::MAX
    } else {
        (config.start_rate / 10).max(1)
    };
    for (i, name) in names.iter().enumerate() {
        if i > 0 && i % batch == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        fleets[i % replicas].start(name);
    }
    match tracker
        .wait_for("connect", devices, phase, |s| {
            s.connected && s.observed_current
        })
        .await
    {
        Ok(_) => {
            r.connect_seconds = Some(start.elapsed().as_secs_f64());
            r.connect_reached = devices;
        }
        Err(e) => r.connect_reached = timed_out(&mut r.errors, &e),
    }
    eprintln!(
        "  {replicas} replicas: {} of {devices} connected in {}",
        r.connect_reached,
        opt_secs(r.connect_seconds)
    );
    // Let ownership and the first status writes settle before the window.
    tokio::time::sleep(config.heartbeat * 2).await;

    let totals = |fleets: &[Fleet]| fleets.iter().map(|f| f.totals().1).sum::<u64>();
    let before: Vec<ProcSample> = gateways.iter().map(|g| g.component.sample()).collect();
    let reports_before = totals(&fleets);
    let start = Instant::now();
    tokio::time::sleep(config.heartbeat * config.steady_heartbeats).await;
    r.steady_window_seconds = start.elapsed().as_secs_f64();
    r.steady_reports = totals(&fleets) - reports_before;
    for (g, b) in gateways.iter().zip(&before) {
        let s = g.component.sample();
        let cpu = s.cpu.saturating_sub(b.cpu).as_secs_f64();
        r.per_replica.push(ReplicaSample {
            id: g.id.clone(),
            rss_bytes: s.rss_bytes,
            cpu_percent: cpu * 100.0 / r.steady_window_seconds.max(1e-9),
            cpu_ms_per_1000_heartbeats: if r.steady_reports > 0 {
                cpu * 1000.0 / (r.steady_reports as f64 / 1000.0)
            } else {
                0.0
            },
            owned_devices: g
                .metric("apollo_gateway_owned_devices")
                .await
                .unwrap_or(0.0) as u64,
            long_polls_held: g
                .metric("apollo_gateway_long_polls_held")
                .await
                .unwrap_or(0.0) as u64,
        });
    }

    if replicas > 1 {
        let mut failover = Failover {
            killed: gateways[0].id.clone(),
            owned_by_killed: r.per_replica[0].owned_devices,
            lease_seconds: config.lease_duration.as_secs_f64(),
            ..Failover::default()
        };
        let flaps_before = tracker.flaps();
        let mut killed = gateways.remove(0);
        let start = Instant::now();
        killed.component.kill().await;
        let limit = config.lease_duration * 4 + Duration::from_secs(30);
        loop {
            let mut owned = 0.0;
            let mut members_ok = true;
            for g in &gateways {
                owned += g
                    .metric("apollo_gateway_owned_devices")
                    .await
                    .unwrap_or(0.0);
                members_ok &=
                    g.metric("apollo_gateway_members").await == Some((replicas - 1) as f64);
            }
            if members_ok && owned >= devices as f64 {
                failover.seconds_to_full_ownership = Some(start.elapsed().as_secs_f64());
                break;
            }
            if start.elapsed() > limit {
                r.errors.push(format!(
                    "failover: survivors own {owned} of {devices} after {}s",
                    limit.as_secs()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A flap would show within a stale window after the takeover.
        tokio::time::sleep(config.heartbeat * 4).await;
        failover.flaps = tracker.flaps() - flaps_before;
        eprintln!(
            "  failover: {} owned {} devices; survivors own all after {} (lease {:.0}s), {} flaps",
            failover.killed,
            failover.owned_by_killed,
            opt_secs(failover.seconds_to_full_ownership),
            failover.lease_seconds,
            failover.flaps
        );
        r.failover = Some(failover);
    }

    drop(fleets);
    for g in gateways {
        g.component.stop().await;
    }
    controller.stop().await;
    drop(tracker);
    cluster.shutdown().await;
    Ok(r)
}

/// Rounds per server in the throughput comparison.
const THROUGHPUT_ROUNDS: usize = 3;

/// Conditional-GET throughput of the gateway against the bare-hyper baseline.
pub async fn run_throughput(config: &BenchConfig) -> anyhow::Result<ThroughputResult> {
    let devices = config.throughput_devices;
    let cluster = start_cluster(config, "throughput").await?;
    let tracker = cluster.track_device_processes();
    let names = cluster.create_switches(devices).await?;
    let (controller, _) = start_controller(config, &cluster).await?;
    cluster.create_deployment(&["v1"]).await?;
    tracker
        .wait_for("fan-out", devices, config.phase_timeout(devices), |_| true)
        .await?;
    let (master, key_file) = cluster.master_key()?;
    let addr = free_port()?;
    let metrics = free_port()?;
    let mut args = gateway_args(
        config,
        &cluster,
        &addr.to_string(),
        &metrics.to_string(),
        devices,
        &key_file,
    );
    // The load client connects from 127.0.0.1 and primes every device at once: lift the
    // per-address cap (the baseline server has none either).
    args.push(format!(
        "--max-connections-per-address={}",
        devices * 2 + 1024
    ));
    let gateway = Component::spawn(
        &config.bin_dir.join("apollo-gateway"),
        &args,
        cluster.dir.join("gateway.log"),
    )?;
    wait_http_ok(&format!("http://{metrics}/readyz"), Duration::from_secs(60)).await?;
    let keys: Vec<_> = names.iter().map(|n| master.derive(n)).collect();
    // The baseline runs in its own process, as the gateway does.
    let baseline_addr = free_port()?;
    let baseline_server = Component::spawn(
        &config.bin_dir.join("apollo-fleetsim"),
        &[
            "serve-304".into(),
            "--listen".into(),
            baseline_addr.to_string(),
        ],
        cluster.dir.join("baseline.log"),
    )?;
    wait_listening(baseline_addr, Duration::from_secs(30)).await?;
    // Alternate the two servers over several rounds and keep each one's median round, so a
    // burst of other work on the machine does not land on one side only.
    let mut gateway_rounds = Vec::new();
    let mut baseline_rounds = Vec::new();
    for _ in 0..THROUGHPUT_ROUNDS {
        for (addr, rounds) in [
            (addr, &mut gateway_rounds),
            (baseline_addr, &mut baseline_rounds),
        ] {
            rounds.push(
                load::conditional_get_load(
                    &format!("http://{addr}"),
                    &keys,
                    config.load_concurrency,
                    config.load_duration,
                )
                .await,
            );
        }
    }
    let rate = |r: &LoadResult| r.not_modified as f64 / r.seconds.max(1e-9);
    let round_ratios = gateway_rounds
        .iter()
        .zip(&baseline_rounds)
        .map(|(g, b)| rate(g) / rate(b).max(1e-9))
        .collect();
    let gateway_result = load::median(gateway_rounds);
    let baseline = load::median(baseline_rounds);
    baseline_server.stop().await;
    gateway.stop().await;
    controller.stop().await;
    drop(tracker);
    cluster.shutdown().await;
    Ok(ThroughputResult {
        // Only `304`s count: an error answered fast is not throughput.
        ratio: rate(&gateway_result) / rate(&baseline).max(1e-9),
        gateway: gateway_result,
        baseline,
        round_ratios,
    })
}

/// MemTotal of this machine.
fn memory_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Runs everything and returns the report. `open_files` is what the caller's
/// [`crate::limits::raise_open_files`] achieved (before any component started).
pub async fn run(config: &BenchConfig, open_files: OpenFiles) -> anyhow::Result<BenchReport> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = jiff::Timestamp::now()
        .round(jiff::Unit::Second)?
        .to_string();
    let api_server = match &config.kubeconfig {
        None => "development API server (in process)".to_owned(),
        Some(path) => match crate::cluster::kubeconfig_server(path).await {
            Ok(url) => format!("{url} (kubeconfig {})", path.display()),
            Err(e) => format!("kubeconfig {}: {e:#}", path.display()),
        },
    };
    let throughput = if config.throughput {
        eprintln!("== conditional GET throughput");
        match run_throughput(config).await {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("throughput run failed: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let mut sizes = Vec::new();
    for &n in &config.sizes {
        eprintln!("== {n} devices");
        match run_size(config, n)
            .await
            .with_context(|| format!("{n} devices"))
        {
            Ok(r) => sizes.push(r),
            Err(e) => {
                eprintln!("{e:#}");
                sizes.push(SizeResult {
                    devices: n,
                    errors: vec![format!("{e:#}")],
                    ..SizeResult::default()
                });
            }
        }
    }
    let mut replicas = Vec::new();
    for &k in &config.replicas {
        eprintln!(
            "== {k} gateway replicas, {} devices",
            config.replica_devices
        );
        match run_replicas(config, config.replica_devices, k).await {
            Ok(r) => replicas.push(r),
            Err(e) => {
                eprintln!("{e:#}");
                replicas.push(ReplicaResult {
                    replicas: k,
                    devices: config.replica_devices,
                    errors: vec![format!("{e:#}")],
                    ..ReplicaResult::default()
                });
            }
        }
    }
    let agent_binary_bytes = std::fs::metadata(config.bin_dir.join("apollo-agent"))
        .ok()
        .map(|m| m.len());
    Ok(BenchReport {
        cores,
        memory_bytes: memory_total(),
        started,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        api_server,
        open_files,
        heartbeat_seconds: config.heartbeat.as_secs_f64(),
        sizes,
        throughput,
        replicas,
        agent_binary_bytes,
    })
}
