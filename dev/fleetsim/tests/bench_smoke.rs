//! The benchmark program runs end to end on a small fleet and its numbers hold what the
//! design promises (no writes in steady state, one watch, stale within the window), with the
//! new scenarios covered cheaply: agents spread over loopback source addresses, the write
//! floor, the gateway's baseline memory, 1 and 3 gateway replicas with a failover, the JSON
//! comparison, and `--kubeconfig` against an API server the benchmark did not start. Speed is
//! printed by `make bench`, never asserted here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apollo_fleetsim::bench::{self, BenchConfig};

fn bin_dir() -> PathBuf {
    // The test binary lives in target/debug/deps; the component binaries in target/debug.
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_apollo-fleetsim"));
    exe.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn ensure_built(dir: &Path) {
    let missing: Vec<&str> = ["apollo-gateway", "apollo-controller"]
        .into_iter()
        .filter(|b| !dir.join(b).exists())
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.arg("build");
    for b in &missing {
        cmd.args(["-p", b]);
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building {missing:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_bench_completes_with_sound_numbers() {
    let dir = bin_dir();
    ensure_built(&dir);
    let work = tempfile::tempdir().unwrap();
    let open_files = apollo_fleetsim::limits::raise_open_files();
    let mut config = BenchConfig::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
        work.path().to_owned(),
        dir,
    );
    config.sizes = vec![40];
    config.heartbeat = Duration::from_secs(1);
    config.steady_heartbeats = 2;
    config.load_duration = Duration::from_millis(200);
    config.load_concurrency = 4;
    config.throughput_devices = 16;
    config.floor_duration = Duration::from_millis(300);
    // 40 agents over 4 source addresses, with the gateway's default per-address cap.
    config.agents_per_address = 10;
    config.replicas = vec![1, 3];
    config.replica_devices = 30;
    config.lease_duration = Duration::from_secs(3);
    let report = bench::run(&config, open_files).await.unwrap();
    let text = apollo_fleetsim::report::render(&report);
    println!("{text}");

    let t = report.throughput.as_ref().expect("throughput measured");
    assert!(
        t.gateway.not_modified > 0 && t.baseline.not_modified > 0,
        "{t:?}"
    );
    assert_eq!(
        t.gateway.errors, 0,
        "the gateway refused conditional GETs: {t:?}"
    );
    assert_eq!(t.round_ratios.len(), 3);

    let r = &report.sizes[0];
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.source_addresses, 4);
    assert_eq!((r.fanout_reached, r.connect_reached), (40, 40));
    assert_eq!(r.write_floor.len(), 3, "{:?}", r.write_floor);
    assert!(r.write_floor.iter().all(|f| f.writes > 0 && f.errors == 0));
    assert!(r.write_floor_per_second.is_some_and(|w| w > 0.0));
    assert!(r.apply_floor_per_second.is_some_and(|a| a > 0.0));
    assert!(r.rollout_long_poll_over_floor.is_some() && r.fanout_over_floor.is_some());
    assert!(r.rollout_long_poll_over_apply_floor.is_some());
    assert!(
        r.rollout_long_poll_specs_written_seconds
            .is_some_and(|written| written > 0.0),
        "{:?}",
        r.rollout_long_poll_specs_written_seconds
    );
    // The rollout's CPU is sampled per process (in 10 ms ticks: a 40-device rollout may
    // take less than one of any process).
    let cpu = r
        .rollout_long_poll_cpu_seconds
        .expect("rollout CPU sampled");
    assert!(
        cpu.gateway >= 0.0 && cpu.controller >= 0.0 && cpu.simulator >= 0.0,
        "{cpu:?}"
    );
    assert!(r.gateway_baseline_rss_bytes > 0 && r.gateway_rss_bytes > 0);
    assert!(r.steady_reports > 0);
    assert_eq!(r.steady_status_writes, 0, "status written in steady state");
    assert_eq!(
        r.steady_controller_writes, 0,
        "controller wrote in steady state"
    );
    assert_eq!(r.gateway_watches, 1, "one DeviceProcess watch");
    assert!(r.rollout_long_poll_seconds.is_some() && r.rollout_polling_seconds.is_some());
    let paced: Vec<&str> = r
        .rollout_paced_seconds
        .iter()
        .filter(|(_, s)| s.is_some())
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        paced,
        ["1%", "10%", "100%"],
        "every paced rollout completed"
    );
    assert!(text.contains("rollout, maxUnavailable 10% (s)"));
    assert!(text.contains("write floor W"));
    assert!(text.contains("gateway RSS, 0 devices (MiB)"));
    let stale = r.stale_flip_max_seconds.expect("stale devices flipped");
    assert!(
        stale <= r.stale_window_seconds + 1.0,
        "stale after {stale}s"
    );
    assert!(text.contains("gateway / baseline"));

    // Replicas: one, then three sharing the fleet; one of the three killed.
    assert_eq!(report.replicas.len(), 2);
    let one = &report.replicas[0];
    assert!(one.errors.is_empty(), "{:?}", one.errors);
    assert_eq!(one.per_replica.len(), 1);
    assert_eq!(one.per_replica[0].owned_devices, 30);
    assert!(one.failover.is_none());
    let three = &report.replicas[1];
    assert!(three.errors.is_empty(), "{:?}", three.errors);
    assert_eq!(three.per_replica.len(), 3);
    assert_eq!(
        three
            .per_replica
            .iter()
            .map(|s| s.owned_devices)
            .sum::<u64>(),
        30,
        "{:?}",
        three.per_replica
    );
    let failover = three.failover.as_ref().expect("a replica was killed");
    assert!(failover.seconds_to_full_ownership.is_some(), "{failover:?}");

    // The JSON reads back and compares with itself: every delta zero.
    let json = serde_json::to_string(&report).unwrap();
    let back: bench::BenchReport = serde_json::from_str(&json).unwrap();
    let diff = apollo_fleetsim::compare::render(&report, &back);
    assert!(diff.contains("40.connect_seconds"), "{diff}");
    assert!(diff.contains("replicas-3x30.failover_seconds"), "{diff}");
}

/// `bench --kubeconfig`: the product against an API server the benchmark did not start (here a
/// development server started by the test, reached only through its kubeconfig); counts come
/// from the components' metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_against_any_api_server() {
    let dir = bin_dir();
    ensure_built(&dir);
    let work = tempfile::tempdir().unwrap();
    let server = apollo_devcluster::DevCluster::start(apollo_devcluster::Options {
        dir: work.path().join("server"),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut config = BenchConfig::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
        work.path().join("bench"),
        dir,
    );
    config.kubeconfig = Some(server.kubeconfig(apollo_devcluster::User::Admin));
    config.sizes = vec![20];
    config.heartbeat = Duration::from_secs(1);
    config.steady_heartbeats = 2;
    config.floor_duration = Duration::from_millis(200);
    config.throughput = false;
    config.replicas = Vec::new();
    let report = bench::run(&config, Default::default()).await.unwrap();
    println!("{}", apollo_fleetsim::report::render(&report));
    let r = &report.sizes[0];
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.connect_reached, 20);
    assert!(r.write_floor_per_second.is_some_and(|w| w > 0.0));
    assert!(r.rollout_long_poll_seconds.is_some());
    assert_eq!(r.steady_status_writes, 0, "status written in steady state");
    assert_eq!(
        r.gateway_watches, 1,
        "one DeviceProcess watch (from metrics)"
    );
    assert!(
        report.api_server.starts_with("https://127.0.0.1:"),
        "{}",
        report.api_server
    );
    server.shutdown().await;
}
