//! End to end: `apollo-demo local --fast` against the freshly built binaries of the workspace
//! (see `common/mod.rs` for how they are built and found).

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{alive, build_components, monitoring, reported_pids, signal, step_lines, workspace};

fn demo(logs: &Path, bins: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_apollo-demo"));
    cmd.current_dir(workspace())
        .arg("local")
        .arg("--fast")
        .arg("--bin-dir")
        .arg(bins)
        .arg("--logs-dir")
        .arg(logs)
        .args(extra)
        .env_remove("KUBECONFIG")
        .env_remove("APOLLO_DEMO_KUBECONFIG")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn fast_demo_passes_every_step_and_cleans_up() {
    let bins = build_components();
    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = demo(logs.path(), &bins, &[])
        .output()
        .expect("run apollo-demo");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "apollo-demo local --fast failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let steps = step_lines(&stdout);
    for (i, l) in steps.iter().enumerate() {
        let secs = l.rsplit(' ').next().unwrap_or("");
        assert!(
            l.starts_with(&format!("PASS {} ", i + 1)) && secs.parse::<f64>().is_ok(),
            "{l:?}"
        );
    }
    assert!(
        took < Duration::from_secs(60),
        "the fast demo took {took:?}, not well under a minute"
    );
    // What a presenter points at.
    for needle in [
        "demo-logger-tor1-01",
        "AgentConnected=False",
        "AgentStale",
        "401",
        "APOLLO_DEVICE_NAME=tor1-01",
        // Steps 5 and 9 name the API server's evidence they used.
        "evidence: the development API server's per-identity request log",
    ] {
        assert!(
            stdout.contains(needle),
            "output lacks {needle:?}:\n{stdout}"
        );
    }
    // Every component logged into the one folder, and the folder is named at start and end.
    for f in [
        "devcluster.log",
        "controller.log",
        "gateway.log",
        "agent-tor1-01.log",
        "agent-tor1-02.log",
        "demo.log",
    ] {
        let meta = std::fs::metadata(logs.path().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    let shown = logs.path().display().to_string();
    assert!(
        stdout.lines().take(6).any(|l| l.contains(&shown)),
        "logs dir not named at start"
    );
    assert!(
        stdout.lines().rev().take(12).any(|l| l.contains(&shown)),
        "logs dir not named at the end"
    );
    // Every metric the alert rules and the dashboard use is one the running components exposed
    // (their last scrapes, saved by the demo).
    let mut exposed = std::collections::BTreeSet::new();
    for component in ["controller", "gateway"] {
        let file = logs.path().join(format!("{component}.metrics"));
        let scrape = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        let names = monitoring::exposed(&scrape);
        let prefix = format!("apollo_{component}_");
        assert!(
            names.iter().filter(|n| n.starts_with(&prefix)).count() >= 5,
            "{component}.metrics has few {prefix}* names:\n{scrape}"
        );
        exposed.extend(names);
    }
    let referenced = monitoring::referenced();
    assert!(referenced.len() >= 15, "{referenced:?}");
    let unknown: Vec<_> = referenced.difference(&exposed).collect();
    assert!(
        unknown.is_empty(),
        "k8s/monitoring uses metrics the binaries do not expose: {unknown:?}\nexposed: {exposed:?}"
    );
    // Every process it started is gone.
    let pids = reported_pids(&stdout);
    assert!(
        pids.len() >= 6,
        "expected ≥ 6 started processes, saw {pids:?}"
    );
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the demo");
    }
}

#[test]
fn ctrl_c_stops_everything_and_fails_the_rest() {
    use std::io::{BufRead as _, BufReader};
    let bins = build_components();
    let logs = tempfile::tempdir().unwrap();
    // Also the path without kubectl (what a machine without it shows).
    let mut child = demo(logs.path(), &bins, &["--no-kubectl"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run apollo-demo");
    let stdout = child.stdout.take().expect("stdout");
    let demo_pid = child.id();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut signalled = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            // Interrupt once the agents are up (step 4 begins).
            if !signalled && line.contains("Step 4/9") {
                signalled = true;
                signal(demo_pid, rustix::process::Signal::INT).expect("SIGINT to apollo-demo");
            }
        }
        all
    });
    // Bounded wait for the demo to exit on its own after the interrupt.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("apollo-demo did not exit within 90s of starting");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().expect("reader");
    assert_eq!(status.code(), Some(130), "exit status after SIGINT:\n{out}");
    assert!(out.contains("interrupted (SIGINT)"), "{out}");
    assert!(
        out.contains("without kubectl: the same facts") && !out.contains("CREATED AT"),
        "{out}"
    );
    let steps = step_lines(&out);
    assert!(steps[0].starts_with("PASS 1 "), "{steps:?}");
    assert!(
        steps[8].starts_with("FAIL 9 ") && steps[8].contains("interrupted"),
        "{steps:?}"
    );
    let pids = reported_pids(&out);
    assert!(
        pids.len() >= 5,
        "expected the stack to have started: {pids:?}\n{out}"
    );
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the interrupted demo");
    }
}

#[test]
fn missing_binaries_fail_every_step_with_the_reason() {
    let logs = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = demo(logs.path(), empty.path(), &[]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let steps = step_lines(&stdout);
    for l in &steps {
        assert!(
            l.contains("setup failed: missing binaries") && l.contains("cargo build -p"),
            "{l}"
        );
    }
}
