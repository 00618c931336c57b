//! The gateway's replica scenarios with a real docker engine: `apollo-demo containers-ha`
//! (what `make demo-containers-ha` runs) with images built from this tree's static binaries
//! under a tag of this test's own. The development API server, the controller and three
//! gateways run in containers (the gateways on an API network and an agents' network), the
//! agents in docker compose; the run kills one gateway (`docker kill`), restarts it, cuts one
//! off the API network (`docker network disconnect`) and reconnects it, and checks each time
//! that ownership moves within the Lease duration plus a heartbeat without a flap, an Event or
//! a second status writer. It must pass every step and leave no container, network, volume or
//! key directory behind. Skipped, with a message, only when no docker engine answers.
//!
//! The images need static binaries in `bin/`: the test runs `make build` first (a no-op when
//! they are fresh) unless `APOLLO_DEMO_SKIP_BUILD` is set.

#[path = "it/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use common::docker::{assert_nothing_left, build_images, engine, run_name};
use common::{step_lines_of, workspace};

#[test]
fn gateway_replicas_in_containers_survive_kill_and_partition() {
    if let Err(e) = engine() {
        eprintln!(
            "SKIP: no docker engine answers (`docker version`: {e}); the replica scenarios need one"
        );
        return;
    }
    let images = build_images("test-ha");
    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_apollo-demo"))
        .current_dir(workspace())
        .args(["containers-ha", "--image-tag", &images.tag])
        .arg("--logs-dir")
        .arg(logs.path())
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run apollo-demo containers-ha");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "apollo-demo containers-ha failed ({}) after {took:?}:\n{stdout}\n{stderr}",
        out.status
    );
    let steps = step_lines_of(&stdout, 7);
    for (i, l) in steps.iter().enumerate() {
        let secs = l.rsplit(' ').next().unwrap_or("");
        assert!(
            l.starts_with(&format!("PASS {} ", i + 1)) && secs.parse::<f64>().is_ok(),
            "{l:?}"
        );
    }
    // What was done to the containers, as a presenter reads it.
    for needle in [
        "$ docker kill ",
        "$ docker start ",
        "$ docker network disconnect ",
        "$ docker network connect ",
        "3 members",
        "2 members",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
    let run = run_name(&stdout, "apollo-ha");
    assert_nothing_left(&run);
    for log in [
        "apiserver.log",
        "controller.log",
        "gw-a.log",
        "gw-b.log",
        "gw-c.log",
        "agents.log",
    ] {
        assert!(
            logs.path().join(log).is_file(),
            "{log} kept in the logs directory"
        );
    }
    eprintln!("containers-ha passed in {took:?}");
}
