//! The `apollo-controller` binary: `--help`, flags with env twins, health and metrics
//! listeners, JSON logs, leader election, and SIGTERM → graceful exit with the Lease released.

use crate::common;

use std::time::Duration;

use apollo_devcluster::User;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_apollo-controller");

#[test]
fn help_lists_every_flag_and_env_twin() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--kubeconfig",
        "APOLLO_KUBECONFIG",
        "--namespace",
        "APOLLO_NAMESPACE",
        "--inventory-kind",
        "APOLLO_INVENTORY_KIND",
        "--concurrency",
        "--metrics-addr",
        "APOLLO_METRICS_ADDR",
        "--health-addr",
        "APOLLO_HEALTH_ADDR",
        "--leader-elect",
        "APOLLO_LEADER_ELECT",
        "--lease-duration",
        "--renew-deadline",
        "--retry-period",
        "--log-format",
    ] {
        assert!(help.contains(needle), "{needle} missing:\n{help}");
    }
}

#[test]
fn unknown_flags_are_usage_errors() {
    let out = std::process::Command::new(BIN)
        .arg("--bogus=1")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
}

#[test]
fn bad_configuration_exits_with_a_clear_error() {
    let out = std::process::Command::new(BIN)
        .env("APOLLO_CONCURRENCY", "lots")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("APOLLO_CONCURRENCY") && err.contains("lots"),
        "{err}"
    );
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_probes_and_metrics_and_releases_the_lease_on_sigterm() {
    let env = setup().await;
    let Some(dev) = env.dev() else {
        // Needs the in-process server's kubeconfig for the controller identity.
        env.cleanup().await;
        return;
    };
    let kubeconfig = dev.kubeconfig(User::Controller);
    let (metrics_port, health_port) = (free_port().await, free_port().await);
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("controller.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .env("APOLLO_LOG_FORMAT", "json")
        .env("APOLLO_LEADER_ELECT", "true")
        .env("APOLLO_HEALTH_ADDR", format!("127.0.0.1:{health_port}"))
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            // The `--flag=value` form of the Kubernetes manifests.
            &format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            "--leader-election-namespace",
            env.namespace(),
            "--leader-election-identity",
            "bin-1",
            "--lease-duration",
            "2s",
            "--renew-deadline",
            "1500ms",
            "--retry-period",
            "100ms",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start apollo-controller");

    eventually("/healthz and /readyz answer 200", || async {
        let h = get(health_port, "/healthz").await?;
        let r = get(health_port, "/readyz").await?;
        if h.0 == 200 && r.0 == 200 {
            Ok(())
        } else {
            Err(format!("{h:?} {r:?}"))
        }
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(env.admin().await, env.namespace());
    let holder = || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt("apollo-deviceprocess-controller")
                .await
                .map_err(|e| e.to_string())
                .map(|l| l.and_then(|l| l.spec).and_then(|s| s.holder_identity))
        }
    };
    eventually("the binary holds the Lease", || async {
        match holder().await? {
            Some(h) if h == "bin-1" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    apply_runbook(&env).await;
    wait_for_dps(&env, &["demo-logger-tor1-01", "demo-logger-tor1-02"]).await;
    wait_for_counts(&env, "demo-logger", (2, 2, 2, 0, 0)).await;
    let metrics = eventually("/metrics shows the managed objects", || async {
        let (status, body) = get(metrics_port, "/metrics").await?;
        if status == 200 && body.contains("apollo_controller_managed_objects 2") {
            Ok(body)
        } else {
            Err(body)
        }
    })
    .await;
    for needle in [
        "apollo_controller_leader 1",
        "apollo_controller_reconciles_total{result=\"ok\"}",
        "apollo_controller_reconcile_duration_seconds_bucket",
        "apollo_controller_writes_total{verb=\"apply\",resource=\"deviceprocesses\"} 2",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }

    // (no `kill` program: not every coreutils build has one, e.g. in the Nix build sandbox)
    let pid =
        rustix::process::Pid::from_raw(child.id().expect("running") as i32).expect("a process id");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(holder().await.unwrap(), None, "Lease released");

    let logs = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.get("message").and_then(serde_json::Value::as_str))
        .collect();
    for needle in [
        "acquired leader lease",
        "caches synced",
        "DeviceProcess created",
        "deployment status updated",
        "received SIGTERM, shutting down",
        "released leader lease",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(needle)),
            "{needle:?} not logged:\n{logs}"
        );
    }
    env.cleanup().await;
}
