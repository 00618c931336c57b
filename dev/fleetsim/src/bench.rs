//! The benchmark scenarios of `apollo-fleetsim bench`, each printing numbers (never asserting
//! timings): fan-out, connect, steady state, rollout (long poll vs polling; paced by
//! `maxUnavailable` 1%, 10% and 100%), staleness, and
//! conditional-GET throughput against a bare-hyper baseline measured in the same run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use apollo_api::conditions::{AGENT_CONNECTED, SPEC_OBSERVED};
use apollo_api::{DeviceProcess, spec_hash};
use apollo_devcluster::User;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Component, NAMESPACE, free_port, wait_http_ok, wait_listening};
use crate::fleet::{Fleet, FleetOptions};
use crate::load::{self, LoadResult};

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
}

/// Results for one fleet size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SizeResult {
    pub devices: usize,
    pub fanout_seconds: f64,
    pub controller_writes_fanout: u64,
    pub connect_seconds: f64,
    pub steady_window_seconds: f64,
    pub steady_reports: u64,
    pub steady_status_writes: u64,
    pub steady_controller_writes: u64,
    pub gateway_lists: u64,
    pub gateway_watches: u64,
    pub gateway_rss_bytes: u64,
    pub gateway_rss_bytes_per_device: f64,
    pub gateway_cpu_ms_per_1000_heartbeats: f64,
    pub rollout_long_poll_seconds: Option<f64>,
    pub rollout_polling_seconds: Option<f64>,
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
    pub errors: Vec<String>,
}

/// Throughput comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputResult {
    pub gateway: LoadResult,
    pub baseline: LoadResult,
    pub ratio: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub cores: usize,
    pub heartbeat_seconds: f64,
    pub sizes: Vec<SizeResult>,
    pub throughput: Option<ThroughputResult>,
    pub agent_binary_bytes: Option<u64>,
}

fn connected(dp: &DeviceProcess) -> bool {
    dp.status
        .as_ref()
        .is_some_and(|s| s.is_true(AGENT_CONNECTED))
}

fn observed_current(dp: &DeviceProcess) -> bool {
    dp.status.as_ref().is_some_and(|s| {
        s.is_true(SPEC_OBSERVED) && s.observed_spec_hash.as_deref() == Some(&spec_hash(&dp.spec))
    })
}

/// The gateway's command line; `/readyz` and `/metrics` are on `metrics`. The whole fleet
/// connects from 127.0.0.1, so the per-address connection cap is lifted to the fleet size.
fn gateway_args(
    cluster: &Cluster,
    addr: &str,
    metrics: &str,
    devices: usize,
    key: &Path,
    heartbeat: Duration,
) -> Vec<String> {
    let ms = heartbeat.as_millis();
    vec![
        format!("--addr={addr}"),
        format!("--metrics-addr={metrics}"),
        format!("--max-connections-per-address={}", devices + 1024),
        format!(
            "--kubeconfig={}",
            cluster.dev.kubeconfig(User::Gateway).display()
        ),
        format!("--namespace={NAMESPACE}"),
        format!("--master-key-file={}", key.display()),
        format!("--heartbeat-interval={ms}ms"),
        format!("--stale-after={}ms", ms * 3),
    ]
}

/// The paced rollouts: `maxUnavailable` and the template args each one rolls out (the last one
/// leaves `100%` for the polling rollout after it).
pub const PACED: [(&str, &str); 3] = [
    ("1%", "paced-1"),
    ("10%", "paced-10"),
    ("100%", "paced-100"),
];

/// Runs every scenario for one fleet size.
pub async fn run_size(config: &BenchConfig, devices: usize) -> anyhow::Result<SizeResult> {
    let mut r = SizeResult {
        devices,
        stale_window_seconds: (config.heartbeat * 3).as_secs_f64(),
        ..SizeResult::default()
    };
    let cluster = Cluster::start(
        &config.repo,
        &config.work_dir.join(format!("devices-{devices}")),
    )
    .await?;
    let tracker = cluster.track_device_processes();
    let names = cluster.create_switches(devices).await?;

    // Controller fan-out.
    let controller_health = free_port()?;
    let controller = Component::spawn(
        &config.bin_dir.join("apollo-controller"),
        &[
            format!(
                "--kubeconfig={}",
                cluster.dev.kubeconfig(User::Controller).display()
            ),
            format!("--namespace={NAMESPACE}"),
            format!("--metrics-addr={}", free_port()?),
            format!("--health-addr={controller_health}"),
        ],
        cluster.dir.join("controller.log"),
    )?;
    let writes_before = cluster.writes_by(User::Controller);
    let start = Instant::now();
    cluster.create_deployment(&["v1"]).await?;
    tracker
        .wait_for("fan-out", devices, Duration::from_secs(600), |_| true)
        .await?;
    r.fanout_seconds = start.elapsed().as_secs_f64();
    r.controller_writes_fanout = cluster.writes_by(User::Controller) - writes_before;

    // Gateway and fleet: connect.
    let (master, key_file) = cluster.master_key()?;
    let addr = free_port()?;
    let metrics = free_port()?;
    let gateway = Component::spawn(
        &config.bin_dir.join("apollo-gateway"),
        &gateway_args(
            &cluster,
            &addr.to_string(),
            &metrics.to_string(),
            devices,
            &key_file,
            config.heartbeat,
        ),
        cluster.dir.join("gateway.log"),
    )?;
    let url = format!("http://{addr}");
    wait_http_ok(
        &format!("http://{metrics}/readyz"),
        Duration::from_secs(120),
    )
    .await?;
    // A long poll holds a connection (a file descriptor in this process and in the gateway)
    // per device; past the descriptor limit the fleet polls instead.
    let fd_limit = crate::procstat::open_files_limit().unwrap_or(u64::MAX);
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
    };
    let mut fleet = Fleet::new(long_poll.clone());
    let start = Instant::now();
    for name in &names {
        fleet.start(name);
    }
    let timeout = Duration::from_secs(60) + Duration::from_millis(devices as u64 * 5);
    tracker
        .wait_for("connect", devices, timeout, |dp| {
            connected(dp) && observed_current(dp)
        })
        .await?;
    r.connect_seconds = start.elapsed().as_secs_f64();
    // The controller's deployment status follows the DeviceProcess statuses; let it settle so
    // the steady window measures steady state only.
    cluster
        .wait_deployment_observed(devices, Duration::from_secs(120))
        .await?;

    // Steady state: no writes, CPU per heartbeat, memory.
    let status_before = cluster.count(User::Gateway, "patch", "deviceprocesses");
    let controller_before = cluster.writes_by(User::Controller);
    let (_, reports_before) = fleet.totals();
    let cpu_before = gateway.sample().cpu;
    let window = config.heartbeat * config.steady_heartbeats;
    let start = Instant::now();
    // Measuring over a fixed window is the point here (how much happens in it), not waiting
    // for something to happen.
    tokio::time::sleep(window).await;
    r.steady_window_seconds = start.elapsed().as_secs_f64();
    let sample = gateway.sample();
    let (_, reports_after) = fleet.totals();
    r.steady_reports = reports_after - reports_before;
    r.steady_status_writes =
        cluster.count(User::Gateway, "patch", "deviceprocesses") - status_before;
    r.steady_controller_writes = cluster.writes_by(User::Controller) - controller_before;
    r.gateway_rss_bytes = sample.rss_bytes;
    r.gateway_rss_bytes_per_device = sample.rss_bytes as f64 / devices as f64;
    if r.steady_reports > 0 {
        r.gateway_cpu_ms_per_1000_heartbeats =
            (sample.cpu - cpu_before).as_secs_f64() * 1000.0 / (r.steady_reports as f64 / 1000.0);
    }
    r.gateway_lists = cluster.count(User::Gateway, "list", "deviceprocesses");
    r.gateway_watches = cluster.count(User::Gateway, "watch", "deviceprocesses");

    // Rollout with long poll, then with plain polling.
    let rollout_timeout = Duration::from_secs(120) + Duration::from_millis(devices as u64 * 10);
    if long_polls_fit {
        let start = Instant::now();
        cluster.patch_template_args(&["v2"]).await?;
        match tracker
            .wait_for_traced(
                "rollout (long poll)",
                devices,
                rollout_timeout,
                |dp| dp.spec.execution.args == ["v2"] && observed_current(dp),
                &mut r.rollout_long_poll_progress,
            )
            .await
        {
            Ok(_) => r.rollout_long_poll_seconds = Some(start.elapsed().as_secs_f64()),
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    // Rollouts paced by maxUnavailable: each DeviceProcess waits for a free slot, which opens
    // when an updated agent reports the new spec (long poll only; polling would time the
    // heartbeat interval times the number of rounds).
    if long_polls_fit {
        for (pct, args) in PACED {
            let start = Instant::now();
            cluster.patch_rollout(pct, &[args]).await?;
            let what = format!("rollout (maxUnavailable {pct})");
            let took = match tracker
                .wait_for(&what, devices, rollout_timeout * 4, |dp| {
                    dp.spec.execution.args == [args] && observed_current(dp)
                })
                .await
            {
                Ok(_) => Some(start.elapsed().as_secs_f64()),
                Err(e) => {
                    r.errors.push(e.to_string());
                    None
                }
            };
            r.rollout_paced_seconds.push((pct.to_owned(), took));
        }
    }
    let mut polling = Fleet::new(FleetOptions {
        long_poll: Duration::ZERO,
        ..long_poll
    });
    fleet.shutdown();
    for name in &names {
        polling.start(name);
    }
    let start = Instant::now();
    cluster.patch_template_args(&["v3"]).await?;
    match tracker
        .wait_for_traced(
            "rollout (polling)",
            devices,
            rollout_timeout,
            |dp| dp.spec.execution.args == ["v3"] && observed_current(dp),
            &mut r.rollout_polling_progress,
        )
        .await
    {
        Ok(_) => r.rollout_polling_seconds = Some(start.elapsed().as_secs_f64()),
        Err(e) => r.errors.push(e.to_string()),
    }

    // Staleness: silence a tenth of the fleet.
    let silent: Vec<&String> = names.iter().step_by(10).collect();
    r.stale_devices = silent.len();
    for name in &silent {
        polling.stop(name);
    }
    let start = Instant::now();
    let silent_set: std::collections::HashSet<&str> = silent.iter().map(|s| s.as_str()).collect();
    match tracker
        .wait_for(
            "stale",
            silent.len(),
            Duration::from_secs(30) + config.heartbeat * 6,
            |dp| silent_set.contains(dp.spec.device_ref.name.as_str()) && !connected(dp),
        )
        .await
    {
        Ok(_) => r.stale_flip_max_seconds = Some(start.elapsed().as_secs_f64()),
        Err(e) => r.errors.push(e.to_string()),
    }

    polling.shutdown();
    gateway.stop().await;
    controller.stop().await;
    cluster.dev.shutdown().await;
    Ok(r)
}

/// Rounds per server in the throughput comparison.
const THROUGHPUT_ROUNDS: usize = 3;

/// Conditional-GET throughput of the gateway against the bare-hyper baseline.
pub async fn run_throughput(config: &BenchConfig) -> anyhow::Result<ThroughputResult> {
    let devices = config.throughput_devices;
    let cluster = Cluster::start(&config.repo, &config.work_dir.join("throughput")).await?;
    let tracker = cluster.track_device_processes();
    let names = cluster.create_switches(devices).await?;
    let controller = Component::spawn(
        &config.bin_dir.join("apollo-controller"),
        &[
            format!(
                "--kubeconfig={}",
                cluster.dev.kubeconfig(User::Controller).display()
            ),
            format!("--namespace={NAMESPACE}"),
            format!("--metrics-addr={}", free_port()?),
            format!("--health-addr={}", free_port()?),
        ],
        cluster.dir.join("controller.log"),
    )?;
    cluster.create_deployment(&["v1"]).await?;
    tracker
        .wait_for("fan-out", devices, Duration::from_secs(120), |_| true)
        .await?;
    let (master, key_file) = cluster.master_key()?;
    let addr = free_port()?;
    let metrics = free_port()?;
    let gateway = Component::spawn(
        &config.bin_dir.join("apollo-gateway"),
        &gateway_args(
            &cluster,
            &addr.to_string(),
            &metrics.to_string(),
            devices,
            &key_file,
            config.heartbeat,
        ),
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
    let gateway_result = load::median(gateway_rounds);
    let baseline = load::median(baseline_rounds);
    baseline_server.stop().await;
    gateway.stop().await;
    controller.stop().await;
    cluster.dev.shutdown().await;
    Ok(ThroughputResult {
        // Only `304`s count: an error answered fast is not throughput.
        ratio: (gateway_result.not_modified as f64 / gateway_result.seconds.max(1e-9))
            / (baseline.not_modified as f64 / baseline.seconds.max(1e-9)).max(1e-9),
        gateway: gateway_result,
        baseline,
    })
}

/// Runs everything and returns the report.
pub async fn run(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let throughput = match run_throughput(config).await {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("throughput run failed: {e:#}");
            None
        }
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
    let agent_binary_bytes = std::fs::metadata(config.bin_dir.join("apollo-agent"))
        .ok()
        .map(|m| m.len());
    Ok(BenchReport {
        cores,
        heartbeat_seconds: config.heartbeat.as_secs_f64(),
        sizes,
        throughput,
        agent_binary_bytes,
    })
}
