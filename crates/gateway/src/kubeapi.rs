//! The Kubernetes client of the gateway, wrapped so every request to the API server is
//! counted by verb (`apollo_gateway_api_requests_total{verb}`): the proof that the gateway
//! lists once per (re)sync and writes only on transitions, whatever the device traffic.
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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use kube::client::Body;

use crate::metrics::Metrics;

/// The verb of an API request, as the API server's audit log would name it (for the
/// collections this gateway reads: DeviceProcesses and Events).
pub fn verb_of(method: &Method, uri: &http::Uri) -> &'static str {
    match *method {
        Method::GET => {
            let watch = uri.query().is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv == "watch=true" || kv == "watch=1" || kv == "watch")
            });
            if watch {
                "watch"
            } else {
                let last = uri.path().rsplit('/').next().unwrap_or("");
                if last == "deviceprocesses" || last == "events" {
                    "list"
                } else {
                    "get"
                }
            }
        }
        Method::POST => "create",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::DELETE => "delete",
        _ => "other",
    }
}

#[derive(Clone)]
struct Counting {
    inner: kube::Client,
    metrics: Arc<Metrics>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

impl tower::Service<Request<Body>> for Counting {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.metrics.api_request(verb_of(req.method(), req.uri()));
        let client = self.inner.clone();
        Box::pin(async move { client.send(req).await })
    }
}

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

/// `client` with every request counted in `metrics`.
pub fn counting_client(client: kube::Client, metrics: Arc<Metrics>) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    kube::Client::new(
        Counting {
            inner: client,
            metrics,
        },
        namespace,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        let u = |s: &str| s.parse::<http::Uri>().unwrap();
        let base = "/apis/azure.com/v1alpha1/namespaces/default/deviceprocesses";
        assert_eq!(verb_of(&Method::GET, &u(base)), "list");
        assert_eq!(
            verb_of(&Method::GET, &u(&format!("{base}?limit=500"))),
            "list"
        );
        assert_eq!(
            verb_of(
                &Method::GET,
                &u(&format!("{base}?watch=true&resourceVersion=5"))
            ),
            "watch"
        );
        assert_eq!(verb_of(&Method::GET, &u(&format!("{base}/x"))), "get");
        assert_eq!(
            verb_of(&Method::PATCH, &u(&format!("{base}/x/status"))),
            "patch"
        );
        assert_eq!(
            verb_of(
                &Method::POST,
                &u("/apis/events.k8s.io/v1/namespaces/default/events")
            ),
            "create"
        );
    }
}
