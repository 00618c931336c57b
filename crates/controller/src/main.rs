//! `apollo-controller`: parses flags (with `APOLLO_*` environment twins), sets up logging and
//! the Kubernetes client, and runs the controller until SIGTERM/SIGINT.

use anyhow::Context as _;
use apollo_controller::{App, Config};
use apollo_process::env::ProcessEnv;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let args = match apollo_controller::config::parse_args(&argv) {
        Ok(args) => args,
        Err(early) => {
            // --help prints to stdout and exits 0; a usage error to stderr and exits 2.
            if early.status.is_ok() {
                println!("{}", early.output);
                return Ok(());
            }
            eprintln!("{}", early.output);
            std::process::exit(2);
        }
    };
    let config = Config::from_args(args, &ProcessEnv)?;
    apollo_process::telemetry::init(config.log_format, &config.log_filter);
    let client = apollo_kube::client::client(config.kubeconfig.as_deref())
        .await
        .context("building the Kubernetes client")?;
    App::new(config, client)
        .run(apollo_process::shutdown::signal())
        .await?;
    Ok(())
}
