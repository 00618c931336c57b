//! `apollo-devcluster`: the development Kubernetes API server as a standalone binary.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use apollo_devcluster::{DevCluster, Options};
use argh::FromArgs;

/// Development Kubernetes API server (in-memory, HTTPS, bearer-token users).
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(Serve),
}

/// Serve the API: write <dir>/admin.kubeconfig, controller.kubeconfig, gateway.kubeconfig,
/// agent.kubeconfig and ca.crt, then print `ready <https-url>` once accepting requests.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct Serve {
    /// address to listen on (default 127.0.0.1:6443; port 0 picks a free one)
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 6443))")]
    listen: SocketAddr,
    /// state directory for kubeconfig files and the CA certificate
    #[argh(option)]
    dir: PathBuf,
    /// namespace of the component ServiceAccount identities (default "default")
    #[argh(option, default = "String::from(\"default\")")]
    namespace: String,
    /// interval between watch BOOKMARK events (default 60s)
    #[argh(
        option,
        default = "humantime::Duration::from(std::time::Duration::from_secs(60))"
    )]
    bookmark_interval: humantime::Duration,
    /// watch history kept per resource, in events (default 10000); older resourceVersions get 410
    #[argh(option, default = "10_000")]
    history_limit: usize,
    /// interval of the garbage collector and namespace cleanup (default 500ms)
    #[argh(
        option,
        default = "humantime::Duration::from(std::time::Duration::from_millis(500))"
    )]
    gc_interval: humantime::Duration,
    /// the Kubernetes minor to pretend to be, 1.29 to 1.36 (default 1.33): `/version` reports it
    /// and CRD fields it lacks are refused or dropped as that minor does
    #[argh(option, default = "apollo_devcluster::KubeVersion::DEFAULT")]
    version: apollo_devcluster::KubeVersion,
    /// extra name (DNS name or IP address) for the serving certificate, repeatable (e.g. the
    /// container name when clients are containers on a docker network)
    #[argh(option)]
    tls_san: Vec<String>,
    /// server URL written into the kubeconfig files (default: the listen address)
    #[argh(option)]
    advertise_url: Option<String>,
}

/// The boolean flags, for `--flag=true|false` ([`apollo_process::args::split_equals`]).
const SWITCHES: &[&str] = &[];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli: Cli = apollo_process::args::from_env(SWITCHES);
    let Command::Serve(s) = cli.command;
    let opts = Options {
        listen: s.listen,
        dir: s.dir,
        namespace: s.namespace,
        bookmark_interval: s.bookmark_interval.into(),
        history_limit: s.history_limit,
        gc_interval: s.gc_interval.into(),
        version: s.version,
        tls_sans: s.tls_san,
        advertise_url: s.advertise_url,
        ..Options::default()
    };
    let dev = DevCluster::start(opts).await.context("starting server")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {}", dev.url())?;
        out.flush()?;
    }
    wait_for_signal().await;
    dev.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
