//! `apollo-agent`: parse flags and environment, set up logging, run the agent until SIGTERM or
//! SIGINT, exit 0. Configuration errors exit 2 with one clear line.

use std::process::ExitCode;

use apollo_agent::{AGENT_VERSION, Agent, Args, Config, ProcessEnv, init_logging};

fn main() -> ExitCode {
    let args: Args = apollo_process::args::from_env(&["--version"]);
    if args.version {
        println!("apollo-agent {AGENT_VERSION}");
        return ExitCode::SUCCESS;
    }
    let config = match Config::resolve(&args, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("apollo-agent: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apollo-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        Agent::new(config).run(shutdown).await;
        Ok(())
    })
}

/// Completes on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
