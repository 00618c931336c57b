//! # apollo-demo
//!
//! The demo runbook (`docs/DEMO.md`) as one self-checking command.
//!
//! - `apollo-demo local [--fast]` starts the development API server (or uses the cluster of
//!   `--kubeconfig`), installs CRDs and RBAC, starts the controller and gateway with their own
//!   identities and two agents as plain processes, then walks the runbook's nine steps.
//! - `apollo-demo cluster` runs the same steps against a cluster where controller and gateway
//!   are deployed (the kind demo, `scripts/demo-kind.sh`), with agents in docker compose.
//! - `apollo-demo containers [--fast]` runs every component in a local container: the
//!   development API server, controller and gateway from the `Dockerfile.*` images, the agents
//!   with docker compose (`make demo-containers`).
//! - `apollo-demo containers-ha` runs the gateway's replica scenarios in containers: three
//!   gateways, `docker kill` of one, `docker network disconnect` of one from the API server
//!   (`make demo-containers-ha`).
//!
//! Each step prints what it did, what it expected, what it saw (kubectl output when kubectl is
//! installed) and how long it took. The run ends with a summary table and one line per step,
//! `PASS <n> <title> <seconds>` or `FAIL <n> <title> <reason>`; the exit status is 0 only when
//! every step passed. Every process the demo started is stopped on exit, Ctrl-C included, and
//! each component's log is kept in one folder, named at the start and the end.

mod agents;
mod apievidence;
mod app;
mod cli;
mod cluster;
mod compose;
mod containers;
mod ha;
mod httpc;
mod kubectl;
mod metrics;
mod procs;
mod report;
mod rollout;
mod steps;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// The boolean flags, for `--flag=true|false` ([`apollo_process::args::split_equals`]).
const SWITCHES: &[&str] = &["--fast", "--no-kubectl", "--hold", "--pause"];

fn main() -> ExitCode {
    let cli: cli::Cli = apollo_process::args::from_env(SWITCHES);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("apollo-demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("apollo-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn logs_dir(explicit: Option<&PathBuf>) -> Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p.clone()),
        None => Ok(report::default_logs_dir(&std::env::current_dir()?)),
    }
}

async fn run(cli: cli::Cli) -> Result<ExitCode> {
    let common = cli.cmd.common();
    let logs = logs_dir(common.logs_dir.as_ref())?;
    let hold = matches!(&cli.cmd, cli::Cmd::Local(a) if a.hold);
    let shared = match &cli.cmd {
        cli::Cmd::ContainersHa(_) => app::Shared::with_titles(&logs, &ha::TITLES)?,
        _ => app::Shared::new(&logs)?,
    };
    let work = async {
        match &cli.cmd {
            cli::Cmd::Local(a) => app::local(a, &common, &shared).await,
            cli::Cmd::Cluster(a) => app::cluster(a, &common, &shared).await,
            cli::Cmd::Containers(a) => containers::demo(a, &common, &shared).await,
            cli::Cmd::ContainersHa(a) => ha::run(a, &common, &shared).await,
        }
    };
    let outcome = tokio::select! {
        r = work => Some(r),
        sig = shutdown_signal() => {
            shared.out.line(&format!("\ninterrupted ({sig}): stopping everything the demo started"));
            None
        }
    };
    let missing = match &outcome {
        None => "interrupted".to_string(),
        Some(Err(e)) => {
            let msg = format!("setup failed: {}", app::concise(e));
            shared.out.line(&format!("\n{msg}"));
            msg
        }
        Some(Ok(())) => "not reached".to_string(),
    };
    if hold && outcome.is_some() {
        shared.finish(&missing);
        shared.out.line(&format!(
            "\n--hold: everything keeps running; export KUBECONFIG={}/state/admin.kubeconfig and \
             explore; Ctrl-C stops it",
            logs.display()
        ));
        let sig = shutdown_signal().await;
        shared.out.line(&format!("{sig}: stopping"));
    }
    // Stop everything first, so that the report's per-step lines are the last lines printed.
    shared.out.line("");
    for line in shared.sup.stop_all().await {
        shared.out.line(&format!("  stopped  {line}"));
    }
    // Containers, networks and compose agents of `containers` mode (Ctrl-C included). A
    // second Ctrl-C during the removal must not cut it short.
    if !shared.docker.is_empty() {
        let removal = shared.docker.remove_all();
        tokio::pin!(removal);
        let lines = loop {
            tokio::select! {
                lines = &mut removal => break lines,
                sig = shutdown_signal() => {
                    shared.out.line(&format!("  ({sig}: still removing the demo's containers)"));
                }
            }
        };
        for line in lines {
            shared.out.line(&format!("  cleanup  {line}"));
        }
    }
    let all_passed = shared.finish(&missing);
    Ok(match outcome {
        None => ExitCode::from(130),
        Some(_) if all_passed => ExitCode::SUCCESS,
        Some(_) => ExitCode::FAILURE,
    })
}

/// Resolves on SIGINT, SIGTERM or SIGHUP; names the signal.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        // Without handlers, fall back to Ctrl-C only.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}
