//! `/healthz`, `/readyz` and `/metrics` for the binaries that have no HTTP server of their own.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;

use crate::ProcessError;

/// Content type of the metrics text.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Readiness flag shared between the component and its `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Not ready.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    /// Current readiness.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The registry as OpenMetrics text.
pub fn encode_metrics(registry: &Registry) -> String {
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    resp
}

/// Answers one health/metrics request.
pub fn respond(
    req: &Request<Incoming>,
    registry: &Registry,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
            "text/plain",
        );
    }
    match req.uri().path() {
        "/healthz" | "/livez" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", "text/plain"),
        "/metrics" => text(
            StatusCode::OK,
            encode_metrics(registry),
            METRICS_CONTENT_TYPE,
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` until `shutdown` resolves.
pub async fn serve_health(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProcessError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| ProcessError::Listen { addr, error })?;
    serve_health_on(listener, registry, readiness, shutdown).await
}

/// Like [`serve_health`] on an already bound listener (tests bind port 0).
pub async fn serve_health_on(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProcessError> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "health listener accept failed");
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = respond(&req, &registry, &readiness);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use prometheus_client::metrics::counter::Counter;

    async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let resp = client
            .get(format!("http://{addr}{path}").parse().unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("apollo_test_things", "Things counted", counter.clone());
        counter.inc();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readiness = Readiness::new();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_health_on(
            listener,
            Arc::new(registry),
            readiness.clone(),
            async move {
                let _ = stop_rx.await;
            },
        ));

        assert_eq!(get(addr, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(addr, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set_ready(true);
        assert_eq!(get(addr, "/readyz").await.0, StatusCode::OK);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("apollo_test_things_total 1"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, StatusCode::NOT_FOUND);

        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
