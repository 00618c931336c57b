//! The benchmark program runs end to end on a small fleet and its numbers hold what the
//! design promises (no writes in steady state, one watch, stale within the window). Speed is
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
    let config = BenchConfig {
        repo: Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
        work_dir: work.path().to_owned(),
        bin_dir: dir,
        sizes: vec![40],
        heartbeat: Duration::from_secs(1),
        steady_heartbeats: 2,
        load_duration: Duration::from_millis(200),
        load_concurrency: 4,
        throughput_devices: 16,
    };
    let report = bench::run(&config).await.unwrap();
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

    let r = &report.sizes[0];
    assert!(r.errors.is_empty(), "{:?}", r.errors);
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
    let stale = r.stale_flip_max_seconds.expect("stale devices flipped");
    assert!(
        stale <= r.stale_window_seconds + 1.0,
        "stale after {stale}s"
    );
    assert!(text.contains("gateway / baseline"));
}
