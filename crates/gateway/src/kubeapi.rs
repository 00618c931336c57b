//! The Kubernetes client of the gateway, wrapped so every request to the API server is
//! counted by verb (`apollo_gateway_api_requests_total{verb}`, through the kube layer's
//! counting client, [`apollo_kube::counting`]): the proof that the gateway lists once per
//! (re)sync and writes only on transitions, whatever the device traffic.
//!
//! [`client`] builds it like `apollo_kube::client::client` but without kube's built-in
//! retry of 429/503/504 answers: that retry backs off exponentially up to minutes per request,
//! which would hold a status writer long after an outage ends. The gateway's own writers and
//! event worker retry with a 5 s cap instead, and the watcher has its own backoff.
//!
//! [`clients`] builds two such clients from one configuration ([`Clients`]): one for the
//! watch, status writes and Events, and one for membership (the replica's Lease), each with
//! its own connection pool, so that status writers queued at scale (or stuck on a slow API
//! server connection) cannot delay a Lease renewal and fence a healthy replica.

use std::sync::Arc;

use crate::metrics::Metrics;

/// The configuration for `kubeconfig` ([`apollo_kube::client::config`]: `Some("")`
/// in-cluster, `Some(path)` that file, `None` kube's inference) without kube's built-in retry.
async fn config(kubeconfig: Option<&str>) -> Result<kube::Config, apollo_kube::KubeError> {
    let mut config = apollo_kube::client::config(kubeconfig).await?;
    config.default_retry = false;
    Ok(config)
}

/// A client for `kubeconfig` without kube's built-in retry (its configuration is
/// [`apollo_kube::client::config`] with that retry off).
pub async fn client(kubeconfig: Option<&str>) -> Result<kube::Client, apollo_kube::KubeError> {
    apollo_kube::client::client_from(config(kubeconfig).await?)
}

/// The gateway's Kubernetes clients: same identity and server, separate connection pools.
#[derive(Clone)]
pub struct Clients {
    /// The DeviceProcess watch, status writes and Events (counted by verb).
    pub api: kube::Client,
    /// Membership only: the replica's Lease (create, renew, release) and the member list.
    pub membership: kube::Client,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

/// Both [`Clients`] for `kubeconfig`, from one configuration (as [`client`]'s).
pub async fn clients(kubeconfig: Option<&str>) -> Result<Clients, apollo_kube::KubeError> {
    let config = config(kubeconfig).await?;
    Ok(Clients {
        api: apollo_kube::client::client_from(config.clone())?,
        membership: apollo_kube::client::client_from(config)?,
    })
}

/// `client` with every request counted in `metrics` by verb (the kube layer's
/// [`apollo_kube::counting`]).
pub fn counting_client(client: kube::Client, metrics: Arc<Metrics>) -> kube::Client {
    apollo_kube::counting::counting_client(
        client,
        move |r: apollo_kube::counting::ApiRequest<'_>| metrics.api_request(r.verb),
    )
}
