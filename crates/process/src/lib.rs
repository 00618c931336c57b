//! # apollo-process
//!
//! Process plumbing shared by every Apollo binary, the agent included, and free of Kubernetes:
//! configuration from flags with `APOLLO_*` environment twins through a testable
//! [`env::Env`] trait (a map implementation for tests), `--flag=value` as manifests write it
//! ([`args`]), human durations ([`duration`]), logging ([`telemetry`]), signal-driven shutdown
//! ([`shutdown`]) and, with the `serve` feature, the `/healthz`, `/readyz` and `/metrics`
//! endpoints ([`http`]). Kubernetes plumbing is one floor up, in `apollo-kube`.

pub mod args;
pub mod duration;
pub mod env;
#[cfg(feature = "serve")]
pub mod http;
pub mod shutdown;
pub mod telemetry;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A flag or environment variable has a bad value.
    #[error(transparent)]
    Config(#[from] ConfigError),
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
