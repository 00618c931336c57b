//! # apollo-kube
//!
//! Kubernetes plumbing shared by `apollo-controller`, `apollo-gateway` and the development
//! tooling: building the client the way other Kubernetes clients do ([`client`]), counting its
//! requests by verb and resource ([`counting`]), building and posting events.k8s.io/v1 Events
//! ([`events`]) and applying YAML manifests server-side ([`manifests`]). The kube-free process
//! layer (flags, env, logging, shutdown, health endpoints) is one floor down, in
//! `apollo-process`; the agent uses only that one.

pub mod client;
pub mod counting;
pub mod events;
pub mod manifests;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No Kubernetes client could be built.
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(String),
}
