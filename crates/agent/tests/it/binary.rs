//! The `apollo-agent` binary as an operator runs it: environment configuration, log lines on
//! state changes (text and JSON), SIGTERM → exit 0, configuration errors → exit 2, and no key
//! material in its output.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::{Behaviour, Event, FakeGateway, device_key, document, process};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

const T: Duration = Duration::from_secs(20);

fn agent(gw: &FakeGateway, key_file: &std::path::Path, log_format: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_apollo-agent"))
        .env_clear()
        .env("APOLLO_DEVICE_NAME", common::DEVICE)
        .env("APOLLO_GATEWAY_URL", gw.url())
        .env("APOLLO_DEVICE_KEY_FILE", key_file)
        .env("APOLLO_LONG_POLL", "1s")
        .env("APOLLO_LOG_FORMAT", log_format)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start apollo-agent")
}

async fn terminate(mut child: Child) -> String {
    // (no `kill` program: not every coreutils build has one, e.g. in the Nix build sandbox)
    let pid =
        rustix::process::Pid::from_raw(child.id().expect("pid") as i32).expect("a process id");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let mut stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    let exit = tokio::time::timeout(T, async {
        stderr.read_to_string(&mut log).await.unwrap();
        child.wait().await.unwrap()
    })
    .await
    .expect("agent did not exit after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}; log:\n{log}");
    log
}

async fn run_once(log_format: &str) -> String {
    let doc = document(vec![process("hello-tor1-01", "23648a6c57cc6195", 1)]);
    let mut gw = FakeGateway::start(
        doc.clone(),
        Behaviour {
            heartbeat_ms: 200,
            ..Behaviour::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("device.key");
    std::fs::write(&key_file, format!("{}\n", device_key())).unwrap();
    let child = agent(&gw, &key_file, log_format);

    let reports = gw.reports(2, T).await;
    assert_eq!(
        reports[0].1.revision.as_deref(),
        Some(doc.revision.as_str())
    );
    assert_eq!(reports[0].1.observed[0].spec_hash, "23648a6c57cc6195");
    gw.wait_for(T, "a 304", |e| {
        matches!(e, Event::Desired { status: 304, .. })
    })
    .await;
    let log = terminate(child).await;
    let secret = device_key().to_string();
    let secret = secret.rsplit(':').next().unwrap();
    assert!(!log.contains(secret), "the key leaked into the log:\n{log}");
    log
}

#[tokio::test]
async fn runs_from_env_logs_state_changes_and_exits_on_sigterm() {
    let log = run_once("text").await;
    for line in [
        "agent starting",
        "connected to gateway",
        "new desired revision",
        "hello-tor1-01=23648a6c57cc6195",
        "observed state reported",
        // 200 ms is below the binary's 1 s floor: clamped, and said so.
        "heartbeat interval out of bounds; clamped requested_ms=200 using=1s",
        "shutting down",
    ] {
        assert!(log.contains(line), "log lacks {line:?}:\n{log}");
    }
    // One line per state change: a quiet period of heartbeats and 304s logs nothing more.
    assert_eq!(log.matches("new desired revision").count(), 1, "{log}");
    assert_eq!(log.matches("observed state reported").count(), 1, "{log}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let log = run_once("json").await;
    let mut messages = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        messages.push(v["message"].as_str().unwrap_or_default().to_string());
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(
        messages.iter().any(|m| m == "new desired revision"),
        "{log}"
    );
    assert!(messages.iter().any(|m| m == "shutting down"), "{log}");
}

#[tokio::test]
async fn configuration_errors_exit_2_with_one_clear_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_apollo-agent"))
        .env_clear()
        .env("APOLLO_DEVICE_NAME", "tor1-01")
        .env("APOLLO_GATEWAY_URL", "http://127.0.0.1:9")
        .env("APOLLO_DEVICE_KEY_FILE", "/nonexistent/device.key")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "apollo-agent: cannot read device key file /nonexistent/device.key: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn an_outage_logs_one_line_when_it_starts_and_one_when_it_ends() {
    let doc = document(vec![]);
    let mut gw = FakeGateway::start(
        doc,
        Behaviour {
            drop_connections: true,
            ..Behaviour::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("device.key");
    std::fs::write(&key_file, device_key().to_string()).unwrap();
    let child = agent(&gw, &key_file, "text");
    // Several failed attempts (backoff from 500 ms)...
    for i in 0..3 {
        gw.wait_for(T, &format!("dropped connection {i}"), |e| {
            matches!(e, Event::Dropped { .. })
        })
        .await;
    }
    // ...then the gateway is back.
    gw.set_behaviour(|b| b.drop_connections = false);
    gw.reports(1, T).await;
    let log = terminate(child).await;
    assert_eq!(
        log.matches("gateway unreachable; retrying with backoff")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("gateway reachable again").count(), 1, "{log}");
    assert!(log.contains("failures="), "{log}");
}

/// Unsigned error bodies come from anyone on the path: a fake gateway whose errors carry
/// newlines, a forged `INFO` line and ANSI escapes (in a JSON error message, then as a raw
/// body) cannot add a line to the agent's log or colour it.
#[tokio::test]
async fn unsigned_error_text_cannot_forge_log_lines() {
    let forged = "nope\n2026-01-01T00:00:00.000000Z  INFO new desired revision revision=evil\r\x1b[2K\x1b[31mred";
    let json = apollo_protocol::wire::ErrorBody::new(500, forged).to_bytes();
    let raw = bytes::Bytes::from(format!("{forged}\n{}", "x".repeat(5000)));
    for body in [json, raw] {
        let mut gw = FakeGateway::start(
            document(vec![]),
            Behaviour {
                fail_with: Some(500),
                fail_body: Some(body),
                ..Behaviour::default()
            },
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("device.key");
        std::fs::write(&key_file, device_key().to_string()).unwrap();
        let child = agent(&gw, &key_file, "text");
        for i in 0..2 {
            gw.wait_for(T, &format!("failed GET {i}"), |e| {
                matches!(e, Event::Desired { status: 500, .. })
            })
            .await;
        }
        let log = terminate(child).await;
        assert!(log.contains("gateway request failed"), "{log}");
        assert!(log.contains("nope"), "the message is still shown: {log}");
        assert!(!log.contains('\x1b') && !log.contains('\r'), "{log:?}");
        for line in log.lines() {
            assert!(
                !line.starts_with("2026-01-01T00:00:00"),
                "forged line in the log: {line:?}"
            );
            assert!(line.len() < 2000, "unbounded line: {} bytes", line.len());
        }
        assert!(!log.contains("revision=evil\n"), "{log}");
    }
}

/// Answers the agent must refuse (here: signed 304s while it holds no document, what a proxy
/// rewriting `If-None-Match` obtained from a v1 gateway) are logged at warn level each time,
/// with the running count, and retried with backoff rather than in a tight loop.
#[tokio::test]
async fn refused_answers_are_warned_with_a_count() {
    let mut gw = FakeGateway::start(
        document(vec![]),
        Behaviour {
            tamper: common::Tamper::AlwaysNotModified,
            ..Behaviour::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("device.key");
    std::fs::write(&key_file, device_key().to_string()).unwrap();
    let child = agent(&gw, &key_file, "text");
    let started = tokio::time::Instant::now();
    // The fourth request is sent only after the third answer was handled (and logged).
    for i in 0..4 {
        gw.wait_for(T, &format!("refused 304 {i}"), |e| {
            matches!(e, Event::Desired { status: 304, .. })
        })
        .await;
    }
    // Backoff from 500 ms (jittered to at least half): three attempts take over 0.5 s.
    assert!(started.elapsed() >= Duration::from_millis(500));
    let log = terminate(child).await;
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("refused gateway response"))
        .collect();
    assert!(warns.len() >= 3, "{log}");
    assert!(warns[0].contains("refused=1"), "{}", warns[0]);
    assert!(warns[2].contains("refused=3"), "{}", warns[2]);
    assert!(warns[0].contains("no document"), "{}", warns[0]);
}
