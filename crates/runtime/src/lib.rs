//! # apollo-runtime
//!
//! Process plumbing shared by `apollo-controller` and `apollo-gateway` (the agent stays free of
//! it, and of Kubernetes): configuration from flags with `APOLLO_*` environment twins through a
//! testable [`env::Env`] trait, human durations, tracing setup, signal-driven shutdown, the
//! Kubernetes client, applying YAML manifests, and the `/healthz`, `/readyz`, `/metrics`
//! endpoints.

pub mod args;
pub mod duration;
pub mod env;
pub mod http;
pub mod kubeclient;
pub mod manifests;
pub mod shutdown;
pub mod telemetry;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A flag or environment variable has a bad value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No Kubernetes client could be built.
    #[error("cannot configure the Kubernetes client: {0}")]
    Kube(String),
    /// A listener could not be bound or served.
    #[error("cannot serve on {addr}: {error}")]
    Listen {
        /// Address concerned.
        addr: std::net::SocketAddr,
        /// Cause.
        error: std::io::Error,
    },
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable holds an unparsable value.
    #[error("environment variable {key}={value:?} is invalid: {reason}")]
    Env {
        /// Variable name.
        key: String,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A duration string could not be parsed.
    #[error("invalid duration {input:?}: {reason} (examples: 500ms, 2s, 1m, 1h30m)")]
    Duration {
        /// The input.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// Any other invalid setting.
    #[error("{0}")]
    Invalid(String),
}
