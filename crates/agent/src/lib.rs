//! The Apollo device agent, as a library: configuration ([`config`]), the signed gateway
//! client ([`client`]), the long-poll/report loop ([`agent`]); flags, environment and logging
//! come from the kube-free `apollo-process`.
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

/// Installs the global log subscriber ([`apollo_process::telemetry::init`]): text or JSON to
/// stderr, `info` unless `RUST_LOG` says otherwise.
pub fn init_logging(format: LogFormat) {
    apollo_process::telemetry::init(format, "info");
}
