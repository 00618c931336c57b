//! End to end with a real docker engine: `apollo-demo containers --fast` (what
//! `make demo-containers` runs) with images built from this tree's static binaries under a tag
//! of this test's own, then the same interrupted with SIGINT half-way. Both runs must leave no
//! container, network, volume or key directory behind, and the images must have the flake's
//! layout (user, entrypoint, files). Skipped, with a message, only when no docker engine
//! answers.
//!
//! The images need static binaries in `bin/`: the test runs `make build` first (a no-op when
//! they are fresh; CI builds them before the tests) unless `APOLLO_DEMO_SKIP_BUILD` is set.

#[path = "it/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::{Images, assert_nothing_left, build_images, docker, engine, run_name};
use common::{step_lines, workspace};

fn demo_command(images: &Images, logs: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_apollo-demo"));
    cmd.current_dir(workspace())
        .args(["containers", "--fast", "--image-tag", &images.tag])
        .arg("--logs-dir")
        .arg(logs)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    cmd
}

/// Files of an image (`docker create` + `docker export`), with mode and owner.
fn image_files(image: &str) -> Vec<String> {
    let id = docker(&["create", image]).expect("docker create");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {id} | tar --numeric-owner -tvf -"))
        .output()
        .expect("docker export");
    let _ = docker(&["rm", &id]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn check_image_layout(images: &Images) {
    for (image, binary) in [
        ("apollo/controller", "apollo-controller"),
        ("apollo/gateway", "apollo-gateway"),
        ("apollo/agent", "apollo-agent"),
        ("apollo/devcluster", "apollo-devcluster"),
    ] {
        let r = format!("{image}:{}", images.tag);
        let cfg = docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}|{{json .Config.Entrypoint}}|{{.Config.WorkingDir}}|{{index .Config.Labels \"org.opencontainers.image.title\"}}",
            &r,
        ])
        .unwrap();
        assert_eq!(
            cfg,
            format!("65532:65532|[\"/usr/local/bin/{binary}\"]|/home/nonroot|{binary}"),
            "{r}"
        );
        let files = image_files(&r);
        let has = |mode: &str, owner: &str, path: &str| {
            files.iter().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() >= 6
                    && cols[0] == mode
                    && cols[1] == owner
                    && cols.last().is_some_and(|p| p.trim_end_matches('/') == path)
            })
        };
        for (mode, owner, path) in [
            ("-r-xr-xr-x", "0/0", format!("usr/local/bin/{binary}")),
            ("-rw-r--r--", "0/0", "etc/passwd".to_string()),
            ("-rw-r--r--", "0/0", "etc/group".to_string()),
            ("drwxr-xr-x", "65532/65532", "home/nonroot".to_string()),
            ("drwxrwxrwt", "0/0", "tmp".to_string()),
        ] {
            assert!(
                has(mode, owner, &path),
                "{r}: {mode} {owner} {path} in\n{}",
                files.join("\n")
            );
        }
        // Nothing else but docker's own mount points.
        let paths: BTreeSet<String> = files
            .iter()
            // docker's own symlink etc/mtab -> /proc/mounts
            .filter(|l| !l.starts_with('l'))
            .filter_map(|l| l.split_whitespace().last())
            .map(|p| p.trim_end_matches('/').to_string())
            .filter(|p| !p.starts_with("dev") && !p.starts_with("proc") && !p.starts_with("sys"))
            .filter(|p| {
                !matches!(
                    p.as_str(),
                    ".dockerenv" | "etc/hostname" | "etc/hosts" | "etc/resolv.conf" | "etc/mtab"
                )
            })
            .collect();
        let want: BTreeSet<String> = [
            "etc",
            "etc/passwd",
            "etc/group",
            "home",
            "home/nonroot",
            "tmp",
            "usr",
            "usr/local",
            "usr/local/bin",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("usr/local/bin/{binary}")])
        .collect();
        assert_eq!(paths, want, "{r}: files");
    }
}

#[test]
fn containers_demo_passes_every_step_and_leaves_nothing_behind() {
    if let Err(e) = engine() {
        eprintln!(
            "SKIP: no docker engine answers (`docker version`: {e}); the containers demo needs one"
        );
        return;
    }
    let images = build_images("test");
    check_image_layout(&images);

    // 1. The whole runbook.
    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = demo_command(&images, logs.path())
        .output()
        .expect("run apollo-demo containers");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "apollo-demo containers --fast failed ({}) after {took:?}:\n{stdout}\n{stderr}",
        out.status
    );
    for (i, l) in step_lines(&stdout).iter().enumerate() {
        let secs = l.rsplit(' ').next().unwrap_or("");
        assert!(
            l.starts_with(&format!("PASS {} ", i + 1)) && secs.parse::<f64>().is_ok(),
            "{l:?}"
        );
    }
    let run = run_name(&stdout, "apollo-demo");
    // What a presenter points at: compose commands, the agent container's configuration and
    // its only peer.
    for needle in [
        "up -d --no-deps agent-tor1-01",
        "stop agent-tor1-02",
        "start agent-tor1-02",
        "APOLLO_DEVICE_KEY=<redacted",
        "mounts: none",
        "TCP peers of the container",
        "host.docker.internal",
        "AgentConnected=False",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
    assert!(
        !stdout.contains("apollo-dk1:"),
        "a device key was printed:\n{stdout}"
    );
    assert_nothing_left(&run);
    for log in [
        "apiserver.log",
        "controller.log",
        "gateway.log",
        "agents.log",
    ] {
        assert!(
            logs.path().join(log).is_file(),
            "{log} kept in the logs directory"
        );
    }

    // 2. Ctrl-C once the agents run: exit 130, and still nothing left.
    let logs = tempfile::tempdir().unwrap();
    let mut child = demo_command(&images, logs.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run apollo-demo containers");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("━━ Step 4/") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let reached = rx.recv_timeout(Duration::from_secs(180));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(reached.is_ok(), "step 4 never started:\n{out}");
    assert_eq!(status.code(), Some(130), "exit status after SIGINT:\n{out}");
    assert_nothing_left(&run_name(&out, "apollo-demo"));
}
