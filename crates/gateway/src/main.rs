//! `apollo-gateway`: the device gateway binary (serve by default; `keys generate` and
//! `keys derive` for provisioning). See `apollo-gateway --help` and `docs/GATEWAY.md`.

use std::process::ExitCode;

use anyhow::Context as _;
use apollo_gateway::config::{Cli, Command, KeysAction, SWITCHES};
use apollo_gateway::{Gateway, keys};
use apollo_process::env::ProcessEnv;
use argh::FromArgs;

fn main() -> ExitCode {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_else(|| "apollo-gateway".to_string());
    let args = match apollo_process::args::split_equals(args, SWITCHES) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("apollo-gateway: {message}");
            return ExitCode::from(2);
        }
    };
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let cli = match Cli::from_args(&[program.as_str()], &refs) {
        Ok(cli) => cli,
        Err(exit) => {
            return if exit.status.is_ok() {
                println!("{}", exit.output);
                ExitCode::SUCCESS
            } else {
                eprintln!("{}", exit.output);
                ExitCode::from(2)
            };
        }
    };
    let result = match &cli.command {
        Some(Command::Keys(k)) => match &k.action {
            KeysAction::Generate(g) => keys::generate(g).map_err(anyhow::Error::from),
            KeysAction::Derive(d) => keys::derive(d, &ProcessEnv).map_err(anyhow::Error::from),
        }
        .map(|key| println!("{key}")),
        None => serve(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apollo-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: &Cli) -> anyhow::Result<()> {
    let config = cli.serve_config(&ProcessEnv)?;
    apollo_process::telemetry::init(config.log_format, "info");
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        runtime.worker_threads(n);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let clients = apollo_gateway::kubeapi::clients(config.kubeconfig.as_deref()).await?;
        let gateway = Gateway::start(config.settings, clients).await?;
        gateway.run_until(apollo_process::shutdown::signal()).await;
        Ok(())
    })
}
