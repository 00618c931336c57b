//! The HTTP server (hyper 1, HTTP/1.1): the device API of `docs/PROTOCOL.md`, `/healthz`,
//! `/readyz` and `/metrics` on one listener.
//!
//! Hardening: at most `max_connections` open connections (further ones wait in the accept
//! backlog), a header read timeout (the connection is closed), a body read timeout (`408`),
//! a body limit of 64 KiB (`413`, checked against `Content-Length` before reading and while
//! reading), JSON error bodies for every error, at most `max_long_polls` held long polls
//! (`429`), graceful shutdown (stop accepting, answer held long polls with `304`, let open
//! requests finish within the grace period).
//!
//! Order of checks on a device route (cheap and credential-free first): route (`404`), method
//! (`405` with `Allow`), device name (`400`), readiness (`503`), content type of a report
//! (`415`), body size and read time (`413`, `408`), authentication (`401`/`403`), replay
//! (`401`, or `429` when the device's nonce cache is full). Everything after authentication
//! is signed with the device key and bound to the request nonce.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apollo_protocol::auth::{
    AuthError, HEADER_SIGNATURE, ReplayCache, ReplayVerdict, sign_response, unix_now,
    verify_request,
};
use apollo_protocol::keys::{DeviceKey, MasterKeyRing};
use apollo_protocol::wire::{
    self, DeviceRoute, ErrorBody, MAX_REQUEST_BODY, Report, ReportAck, if_none_match_matches,
    parse_device_route, parse_wait, valid_device_name,
};
use apollo_runtime::http::{METRICS_CONTENT_TYPE, Readiness};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::desired::{DesiredStore, Doc};
use crate::liveness::{Agent, Liveness};
use crate::metrics::Metrics;
use crate::status::StatusController;

/// Longest accepted instance id, agent version and observed list of a report.
pub const MAX_INSTANCE_ID: usize = 128;
/// Longest accepted agent version.
pub const MAX_AGENT_VERSION: usize = 64;
/// Most observed processes in one report.
pub const MAX_OBSERVED: usize = 1024;

type Resp = Response<Full<Bytes>>;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct HttpState {
    pub desired: Arc<DesiredStore>,
    pub liveness: Arc<Liveness>,
    pub status: Arc<StatusController>,
    pub metrics: Arc<Metrics>,
    pub keys: MasterKeyRing,
    pub replay: ReplayCache,
    pub skew_secs: i64,
    pub heartbeat: Duration,
    pub readiness: Readiness,
    pub body_timeout: Duration,
    pub max_long_polls: usize,
    pub long_polls: AtomicUsize,
    pub shutdown: watch::Receiver<bool>,
    /// Log one line per device-API request (`request` at info).
    pub access_log: bool,
}

/// Listener settings.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub grace: Duration,
}

fn json_response(status: u16, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire::CONTENT_TYPE_JSON),
    );
    resp
}

/// An unsigned JSON error.
pub fn error(status: u16, message: &str) -> Resp {
    json_response(status, ErrorBody::new(status, message).to_bytes())
}

fn with_header(mut resp: Resp, name: header::HeaderName, value: &'static str) -> Resp {
    resp.headers_mut()
        .insert(name, HeaderValue::from_static(value));
    resp
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Signs responses to one authenticated request.
struct Signer {
    key: DeviceKey,
    nonce: String,
}

impl Signer {
    fn sign(&self, mut resp: Resp, body: &[u8]) -> Resp {
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sig = sign_response(
            &self.key,
            resp.status().as_u16(),
            &self.nonce,
            etag.as_deref(),
            body,
        );
        if let Ok(v) = HeaderValue::from_str(&sig) {
            resp.headers_mut().insert(HEADER_SIGNATURE, v);
        }
        resp
    }

    fn error(&self, status: u16, message: &str) -> Resp {
        let body = ErrorBody::new(status, message).to_bytes();
        self.sign(json_response(status, body.clone()), &body)
    }

    fn document(&self, status: u16, doc: &Doc) -> Resp {
        let body = if status == 200 {
            doc.body.clone()
        } else {
            Bytes::new()
        };
        let mut resp = if status == 200 {
            json_response(200, body.clone())
        } else {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        };
        if let Ok(v) = HeaderValue::from_str(&doc.etag) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        self.sign(resp, &body)
    }
}

/// Decrements the long-poll count when a held request ends (also when the client leaves).
struct LongPollGuard<'a>(&'a HttpState);

impl Drop for LongPollGuard<'_> {
    fn drop(&mut self) {
        self.0.long_polls.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.long_polls_held.dec();
    }
}

/// Answers one request.
pub async fn handle(state: Arc<HttpState>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    let started = tokio::time::Instant::now();
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_owned);
    let ready = state.readiness.is_ready() && !*state.shutdown.borrow();
    let (route, resp) = match path.as_str() {
        "/healthz" | "/readyz" | "/metrics" => {
            let route = match path.as_str() {
                "/healthz" => "healthz",
                "/readyz" => "readyz",
                _ => "metrics",
            };
            let resp = if req.method() != Method::GET {
                with_header(
                    error(405, "method not allowed; use GET"),
                    header::ALLOW,
                    "GET",
                )
            } else {
                match route {
                    "healthz" => text(StatusCode::OK, "ok\n", "text/plain; charset=utf-8"),
                    "readyz" if ready => text(StatusCode::OK, "ok\n", "text/plain; charset=utf-8"),
                    "readyz" => with_header(
                        error(503, "not ready: the DeviceProcess cache has not synced"),
                        header::RETRY_AFTER,
                        "1",
                    ),
                    _ => text(StatusCode::OK, state.metrics.encode(), METRICS_CONTENT_TYPE),
                }
            };
            (route, resp)
        }
        _ => match parse_device_route(&path) {
            Some(DeviceRoute::Desired(device)) => {
                let device = device.to_string();
                ("desired", device_request(&state, req, device, true).await)
            }
            Some(DeviceRoute::Report(device)) => {
                let device = device.to_string();
                ("report", device_request(&state, req, device, false).await)
            }
            None => ("other", error(404, "no such route")),
        },
    };
    state.metrics.http(route, resp.status().as_u16());
    if state.access_log && matches!(route, "desired" | "report" | "other") {
        tracing::info!(
            method = %method,
            path = %path,
            query = query.as_deref().unwrap_or(""),
            status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
    }
    Ok(resp)
}

fn is_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(wire::CONTENT_TYPE_JSON))
}

async fn device_request(
    state: &HttpState,
    req: Request<Incoming>,
    device: String,
    desired: bool,
) -> Resp {
    let (allowed, allow) = if desired {
        (Method::GET, "GET")
    } else {
        (Method::POST, "POST")
    };
    if req.method() != allowed {
        return with_header(
            error(405, &format!("method not allowed; use {allow}")),
            header::ALLOW,
            allow,
        );
    }
    if !valid_device_name(&device) {
        return error(
            400,
            "invalid device name: must be a DNS-1123 subdomain (lowercase a-z, 0-9, '-', '.')",
        );
    }
    if !state.readiness.is_ready() {
        return with_header(
            error(503, "not ready: the DeviceProcess cache has not synced"),
            header::RETRY_AFTER,
            "1",
        );
    }
    let shutting_down = *state.shutdown.borrow();
    if shutting_down {
        return with_header(
            error(503, "the gateway is shutting down"),
            header::RETRY_AFTER,
            "1",
        );
    }
    if !desired && !is_json(&req) {
        return error(415, "a report must have Content-Type: application/json");
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY as u64) {
        return error(413, "request body over the 64 KiB limit");
    }
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(
        state.body_timeout,
        Limited::new(body, MAX_REQUEST_BODY).collect(),
    )
    .await
    {
        Err(_) => return error(408, "request body not received in time"),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return error(413, "request body over the 64 KiB limit");
        }
        Ok(Err(_)) => return error(400, "request body could not be read"),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let now = unix_now();
    let verified = match verify_request(
        &state.keys,
        &device,
        parts.method.as_str(),
        path_and_query,
        &parts.headers,
        &body,
        now,
        state.skew_secs,
    ) {
        Ok(v) => v,
        Err(e) => {
            state.metrics.auth_failure(e.reason_label());
            tracing::debug!(device, reason = e.reason_label(), "authentication failed");
            return error(e.status(), e.client_message());
        }
    };
    let signer = Signer {
        key: verified.device_key,
        nonce: verified.nonce,
    };
    match state
        .replay
        .check(&device, &signer.nonce, verified.timestamp, now)
    {
        ReplayVerdict::Fresh => {}
        ReplayVerdict::Replayed => {
            let e = AuthError::Replay;
            state.metrics.auth_failure(e.reason_label());
            return error(e.status(), e.client_message());
        }
        ReplayVerdict::Full => {
            let resp = signer.error(429, "too many requests from this device; retry later");
            return with_header(resp, header::RETRY_AFTER, "1");
        }
    }
    if desired {
        desired_answer(state, &parts, &device, &signer).await
    } else {
        report_answer(state, &body, &device, &signer)
    }
}

async fn desired_answer(
    state: &HttpState,
    parts: &http::request::Parts,
    device: &str,
    signer: &Signer,
) -> Resp {
    let wait = match parse_wait(parts.uri.query()) {
        Ok(w) => w,
        Err(e) => return signer.error(400, &e.to_string()),
    };
    let inm = parts
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let matches = |doc: &Doc| {
        inm.as_deref()
            .is_some_and(|h| if_none_match_matches(h, &doc.etag))
    };
    let answer = |doc: &Doc, not_modified: bool| {
        state.metrics.desired_answer(not_modified);
        signer.document(if not_modified { 304 } else { 200 }, doc)
    };
    let doc = state.desired.current(device);
    if !matches(&doc) {
        return answer(&doc, false);
    }
    let Some(wait) = wait else {
        return answer(&doc, true);
    };
    if state.long_polls.fetch_add(1, Ordering::Relaxed) >= state.max_long_polls {
        state.long_polls.fetch_sub(1, Ordering::Relaxed);
        let resp = signer.error(429, "too many long polls held; retry later");
        return with_header(resp, header::RETRY_AFTER, "1");
    }
    state.metrics.long_polls_held.inc();
    let _guard = LongPollGuard(state);
    let mut shutdown = state.shutdown.clone();
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        // Register for wake-ups before looking, so a change in between is not missed.
        let changed = state.desired.changed(device);
        tokio::pin!(changed);
        changed.as_mut().enable();
        let doc = state.desired.current(device);
        if !matches(&doc) {
            return answer(&doc, false);
        }
        tokio::select! {
            _ = changed => {}
            _ = &mut deadline => break,
            _ = crate::stopped(&mut shutdown) => break,
        }
    }
    let doc = state.desired.current(device);
    answer(&doc, matches(&doc))
}

fn valid_report(r: &Report) -> Result<(), &'static str> {
    let printable = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
    if r.instance_id.is_empty()
        || r.instance_id.len() > MAX_INSTANCE_ID
        || !printable(&r.instance_id)
    {
        return Err("instanceId must be 1-128 printable ASCII characters");
    }
    if r.agent_version.len() > MAX_AGENT_VERSION || !printable(&r.agent_version) {
        return Err("agentVersion must be at most 64 printable ASCII characters");
    }
    if r.observed.len() > MAX_OBSERVED {
        return Err("observed lists at most 1024 processes");
    }
    if r.observed.iter().any(|o| {
        o.name.is_empty()
            || o.name.len() > 253
            || o.spec_hash.len() > 64
            || !printable(&o.spec_hash)
            || !printable(&o.name)
    }) {
        return Err(
            "observed entries need a name (at most 253 characters) and a specHash (at most 64)",
        );
    }
    Ok(())
}

fn report_answer(state: &HttpState, body: &[u8], device: &str, signer: &Signer) -> Resp {
    let report: Report = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return signer.error(400, &format!("malformed report: {e}")),
    };
    if let Err(msg) = valid_report(&report) {
        return signer.error(400, msg);
    }
    let agent = Agent::new(
        report.instance_id,
        report.agent_version,
        report.observed,
        true,
    );
    if state
        .liveness
        .report(device, agent, tokio::time::Instant::now())
        .is_some()
    {
        state.status.device_changed(device);
    }
    let ack = ReportAck {
        revision: state.desired.current(device).revision().to_string(),
        heartbeat_interval_ms: u64::try_from(state.heartbeat.as_millis()).unwrap_or(u64::MAX),
    };
    let body = Bytes::from(serde_json::to_vec(&ack).unwrap_or_default());
    signer.sign(json_response(200, body.clone()), &body)
}

/// Accepts connections until shutdown, then lets open ones finish within the grace period.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = crate::stopped(&mut shutdown) => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = crate::stopped(&mut shutdown) => break,
        };
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let mut conn_shutdown = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| handle(state.clone(), req));
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = crate::stopped(&mut conn_shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "connections still open after the grace period; closing them"
        );
        conns.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_protocol::wire::ObservedProcess;

    fn report(instance: &str, observed: Vec<ObservedProcess>) -> Report {
        Report {
            agent_version: "0.1.0".into(),
            instance_id: instance.into(),
            revision: None,
            observed,
        }
    }

    #[test]
    fn report_validation() {
        assert!(valid_report(&report("abc", vec![])).is_ok());
        assert!(valid_report(&report("", vec![])).is_err());
        assert!(valid_report(&report("has space", vec![])).is_err());
        assert!(valid_report(&report(&"x".repeat(129), vec![])).is_err());
        let o = |n: &str, h: &str| ObservedProcess {
            name: n.into(),
            spec_hash: h.into(),
            generation: None,
        };
        assert!(valid_report(&report("a", vec![o("dp", "1234")])).is_ok());
        assert!(valid_report(&report("a", vec![o("", "1234")])).is_err());
        assert!(valid_report(&report("a", vec![o("dp", &"f".repeat(65))])).is_err());
        assert!(
            valid_report(&report(
                "a",
                (0..1025).map(|i| o(&i.to_string(), "1")).collect()
            ))
            .is_err()
        );
    }
}
