//! Conditional-GET throughput: signed `GET desired` with `If-None-Match`, many in flight, against
//! the gateway and against a bare hyper server that answers `304` (the baseline measured in the
//! same run, so the ratio is what counts, not the machine).
//!
//! The load client signs every request like an agent (so the gateway does its full
//! authentication work) but does not verify response signatures: that cost is the agent's, and
//! the baseline cannot produce them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apollo_protocol::auth::RequestSigner;
use apollo_protocol::keys::DeviceKey;
use apollo_protocol::wire;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};

use crate::stats::Latency;

/// Outcome of one load run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// Requests completed.
    pub requests: u64,
    /// Of which answered `304`.
    pub not_modified: u64,
    /// Answered with any other status, or failed.
    pub errors: u64,
    /// Wall time of the measurement.
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency in microseconds.
    pub p50_us: u64,
    /// 99th percentile latency in microseconds.
    pub p99_us: u64,
}

fn http_client(connections: usize) -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build(connector)
}

/// One signed GET; returns the status and the ETag.
async fn signed_get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    base: &str,
    key: &DeviceKey,
    etag: Option<&str>,
) -> Result<(StatusCode, Option<String>), String> {
    let path = wire::desired_path(key.device());
    let signed = RequestSigner::new(key).sign_now("GET", &path, b"");
    let mut builder = Request::get(format!("{base}{path}"));
    if let Some(etag) = etag {
        builder = builder.header(header::IF_NONE_MATCH, etag);
    }
    let mut request = builder.body(Empty::new()).map_err(|e| e.to_string())?;
    signed.apply(request.headers_mut());
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Drain the body so the connection is reused.
    let _ = response.into_body().collect().await;
    Ok((status, etag))
}

/// Runs `concurrency` loops of conditional GETs for `duration`. Each loop walks over all
/// `keys` (devices) in turn, as a fleet's requests arrive from many devices; the ETags are
/// fetched once before the clock starts.
pub async fn conditional_get_load(
    base: &str,
    keys: &[DeviceKey],
    concurrency: usize,
    duration: Duration,
) -> LoadResult {
    let client = http_client(concurrency);
    let base: Arc<str> = Arc::from(base.trim_end_matches('/'));
    // Prime: one unconditional GET per device (a 200 from the gateway; the baseline answers
    // 304 with its fixed ETag).
    let etags: Vec<Option<String>> = futures::future::join_all(keys.iter().map(|key| {
        let client = client.clone();
        let base = base.clone();
        async move {
            signed_get(&client, &base, key, None)
                .await
                .ok()
                .and_then(|(_, etag)| etag)
        }
    }))
    .await;
    let devices: Arc<Vec<(DeviceKey, Option<String>)>> =
        Arc::new(keys.iter().cloned().zip(etags).collect());

    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|worker| {
            let client = client.clone();
            let base = base.clone();
            let devices = devices.clone();
            tokio::spawn(async move {
                let mut latency = Latency::default();
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut i = worker;
                while Instant::now() < deadline && !devices.is_empty() {
                    let (key, etag) = &devices[i % devices.len()];
                    i += 1;
                    let t0 = Instant::now();
                    match signed_get(&client, &base, key, etag.as_deref()).await {
                        Ok((StatusCode::NOT_MODIFIED, _)) => ok += 1,
                        _ => errors += 1,
                    }
                    latency.record(t0.elapsed());
                }
                (latency, ok, errors)
            })
        })
        .collect();
    let mut latency = Latency::default();
    let (mut ok, mut errors) = (0, 0);
    for worker in workers {
        if let Ok((l, o, e)) = worker.await {
            latency.merge(&l);
            ok += o;
            errors += e;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    LoadResult {
        requests: ok + errors,
        not_modified: ok,
        errors,
        seconds,
        rps: (ok + errors) as f64 / seconds.max(1e-9),
        p50_us: latency.quantile(0.5).as_micros() as u64,
        p99_us: latency.quantile(0.99).as_micros() as u64,
    }
}

/// The round with the median rate of `304`s.
pub fn median(mut rounds: Vec<LoadResult>) -> LoadResult {
    rounds.sort_by(|a, b| {
        let rate = |r: &LoadResult| r.not_modified as f64 / r.seconds.max(1e-9);
        rate(a).total_cmp(&rate(b))
    });
    let mid = rounds.len() / 2;
    if rounds.is_empty() {
        return LoadResult::default();
    }
    rounds.swap_remove(mid)
}

/// A bare hyper server answering every request with `304` and an ETag: the baseline.
/// Returns its address; it runs until the runtime stops. (The benchmark runs it in a process
/// of its own, `apollo-fleetsim serve-304`, like the gateway, so neither shares the load
/// client's runtime.)
pub async fn spawn_baseline_304() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    spawn_baseline_304_on(listener)
}

/// [`spawn_baseline_304`] on a bound listener.
pub fn spawn_baseline_304_on(listener: tokio::net::TcpListener) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = StatusCode::NOT_MODIFIED;
                    resp.headers_mut().insert(
                        header::ETAG,
                        header::HeaderValue::from_static("\"baseline\""),
                    );
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_protocol::keys::MasterKey;

    #[tokio::test]
    async fn baseline_answers_304_under_load() {
        let addr = spawn_baseline_304().await.unwrap();
        let master = MasterKey::generate().unwrap();
        let keys: Vec<_> = (0..4).map(|i| master.derive(&format!("dev-{i}"))).collect();
        let result = conditional_get_load(
            &format!("http://{addr}"),
            &keys,
            4,
            Duration::from_millis(300),
        )
        .await;
        assert!(result.requests > 10, "{result:?}");
        assert_eq!(result.errors, 0, "{result:?}");
        assert_eq!(result.requests, result.not_modified);
        assert!(result.p99_us >= result.p50_us);
    }
}
