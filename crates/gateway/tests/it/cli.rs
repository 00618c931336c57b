//! The `apollo-gateway` binary's CLI contract: `--help`, `keys generate`, `keys derive`, exit
//! codes, and serving against the development API server with the runbook's flags until
//! SIGTERM.

use crate::common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_devcluster::User;
use apollo_protocol::keys::{DeviceKey, MasterKey};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_apollo-gateway");

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("APOLLO_MASTER_KEY_FILE")
        .env_remove("APOLLO_DEVICE_NAME")
        .envs(env.iter().copied())
        .output()
        .expect("run apollo-gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_names_every_flag_and_env_twin() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for flag in [
        "--addr",
        "--kubeconfig",
        "--namespace",
        "--master-key-file",
        "--heartbeat-interval",
        "--stale-after",
        "APOLLO_ADDR",
        "APOLLO_STALE_AFTER",
        "keys",
    ] {
        assert!(out.contains(flag), "{flag} in\n{out}");
    }
    let (code, out, _) = run(&["keys", "derive", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--device") && out.contains("--master-key-file"),
        "{out}"
    );
    let (code, _, err) = run(&["--heartbeat-interval", "10"], &[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["--no-such-flag"], &[]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn keys_generate_and_derive() {
    let (code, out, err) = run(&["keys", "generate"], &[]);
    assert_eq!(code, 0, "{err}");
    let line = out.trim();
    assert_eq!(out.lines().count(), 1);
    let master: MasterKey = line.parse().expect("a master key");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("master.key");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let path = file.to_str().unwrap();
    let (code, out, err) = run(
        &[
            "keys",
            "derive",
            "--master-key-file",
            path,
            "--device",
            "tor1-01",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let key: DeviceKey = out.trim().parse().expect("a device key");
    assert_eq!(key, master.derive("tor1-01"));
    assert!(
        out.trim()
            .starts_with(&format!("apollo-dk1:{}:tor1-01:", master.id()))
    );
    // `=` form and env twins give the same key.
    let arg = format!("--master-key-file={path}");
    let (_, out2, _) = run(&["keys", "derive", &arg, "--device=tor1-01"], &[]);
    assert_eq!(out2, out);
    let (_, out3, _) = run(
        &["keys", "derive"],
        &[
            ("APOLLO_MASTER_KEY_FILE", path),
            ("APOLLO_DEVICE_NAME", "tor1-01"),
        ],
    );
    assert_eq!(out3, out);
    // Errors: exit 1, a message, no key material.
    let secret = line.rsplit(':').next().unwrap();
    let (code, out, err) = run(
        &[
            "keys",
            "derive",
            "--master-key-file",
            path,
            "--device",
            "Bad_Name",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("invalid device name"), "{err}");
    assert!(!err.contains(secret));
    let (code, _, err) = run(&["keys", "derive", "--device", "d"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--master-key-file"), "{err}");
}

#[test]
fn serve_without_master_key_fails_clearly() {
    let (code, _, err) = run(&["--addr", "127.0.0.1:0"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--master-key-file"), "{err}");
}

/// Kills the child (the one this test started) if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_with_the_runbook_flags_until_sigterm() {
    let h = Harness::start().await;
    let mut h = h;
    h.stop_gateway().await;
    h.create_dp("dp-bin", "tor1-01", "x").await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, format!("{}\n", h.master)).unwrap();
    if h.skip_on_real_cluster("needs the in-process cluster's gateway kubeconfig") {
        return;
    }
    let kubeconfig = h.env.dev().unwrap().kubeconfig(User::Gateway);
    let port = free_port();
    let metrics_port = free_port();
    let child = Command::new(BIN)
        .arg(format!("--addr=127.0.0.1:{port}"))
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--namespace={}", h.env.namespace()))
        .env("APOLLO_MASTER_KEY_FILE", &key_file)
        .env("APOLLO_HEARTBEAT_INTERVAL", "500ms")
        .env("APOLLO_ACCESS_LOG", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn apollo-gateway");
    let mut child = KillOnDrop(child);
    let logs = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.0.stderr.take().unwrap();
    let sink = logs.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    wait_until("binary ready", Duration::from_secs(30), || async {
        match raw_request(metrics, &build_request("GET", "/readyz", &[], b"")).await {
            Ok(r) => r.status == 200,
            Err(_) => false,
        }
    })
    .await;
    let dev = TestDevice {
        addr,
        key: h.master.derive("tor1-01"),
    };
    let r = dev.report("bin-instance", &[]).await;
    assert_eq!(r.status, 200);
    let ack: apollo_protocol::wire::ReportAck = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(ack.heartbeat_interval_ms, 500, "env twin applied");
    h.wait_status(
        "dp-bin",
        "connected via the binary",
        Duration::from_secs(20),
        |dp| cond_status(dp, "AgentConnected").as_deref() == Some("True"),
    )
    .await;
    let doc = dev.get(None, None).await;
    assert_eq!(doc.status, 200);
    let etag = doc.header("etag").unwrap().to_string();
    assert_eq!(dev.get(Some(&etag), None).await.status, 304);

    // SIGTERM → clean exit.
    // (no `kill` program: not every coreutils build has one, e.g. in the Nix build sandbox)
    let pid = rustix::process::Pid::from_raw(child.0.id() as i32).expect("a process id");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    reader.join().unwrap();
    let logs = logs.lock().unwrap().clone();
    assert!(status.success(), "exit {status:?}\n{logs}");
    for line in [
        "gateway listening",
        "cache synced; ready",
        "agent connected",
        "event: Agent of device tor1-01 connected",
        "request method=GET path=/v1/devices/tor1-01/desired query=\"\" status=200",
        "request method=GET path=/v1/devices/tor1-01/desired query=\"\" status=304",
        "gateway stopped",
    ] {
        assert!(logs.contains(line), "{line:?} in\n{logs}");
    }
    let secret = h.master.to_string();
    let secret = secret.rsplit(':').next().unwrap();
    assert!(!logs.contains(secret), "master key in logs");
    assert!(!logs.contains(&h.master.derive("tor1-01").to_string()));
    h.env.cleanup().await;
}
