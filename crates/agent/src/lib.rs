//! The Apollo device agent, as a library: configuration ([`config`]), the signed gateway
//! client ([`client`]), the long-poll/report loop ([`agent`]) and logging setup.
//!
//! The agent talks only to the device gateway, never to Kubernetes (a test checks that no
//! Kubernetes crate is in its dependency tree). In this stage it *observes* desired state:
//! it verifies and holds the desired document and reports the spec hashes as observed;
//! downloading and executing artifacts is the next stage.

pub mod agent;
pub mod client;
pub mod config;
#[cfg(feature = "tls")]
pub mod tls;

pub use agent::{AGENT_VERSION, Agent, AgentState, Held};
pub use config::{Args, Config, ConfigError, Env, LogFormat, ProcessEnv};

/// Install the global log subscriber: text (one line per event) or JSON, to stderr; the level
/// is `info` unless `RUST_LOG` says otherwise (`debug`, or `warn,apollo_agent=debug`: levels
/// and targets, no regular expressions — that keeps the binary small).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(filter)
            .try_init(),
    };
}
