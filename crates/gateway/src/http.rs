//! The HTTP servers (HTTP/1.1 on [`crate::server`]): the device API of `docs/PROTOCOL.md` on the device
//! listener, `/healthz`, `/readyz`, `/metrics` on the metrics listener, and the replica route
//! ([`crate::forward::FORWARD_PATH`]) on the peer listener when there is one (`--peer-addr`,
//! plain HTTP whatever the device listener speaks), else on the device listener. Every
//! listener runs the same [`serve`] loop, so the peer listener has the device listener's
//! pre-authentication bounds (below) with its own connection limits.
//!
//! Hardening: at most `max_connections` open connections (further ones wait in the accept
//! backlog) and at most `max_connections_per_address` from one source address (more are
//! closed at once), an 8 KiB request-head buffer ([`crate::limits::HEAD_BUFFER`], `431`
//! above), a header read timeout (the connection is closed), a body read timeout (`408`), no
//! body on a GET (`400`), a report body limit of 64 KiB (`413`, checked against
//! `Content-Length` before reading and while reading), a global budget of body bytes held
//! before authentication (`503`), JSON error bodies for every error, at most `max_long_polls`
//! held long polls and `max_long_polls_per_device` per device (`429`), graceful shutdown
//! (stop accepting, answer held long polls with `304`, let open requests finish within the
//! grace period). Accept errors back off and are logged once per interval with a count.
//!
//! Order of checks on a device route (cheap and credential-free first): route (`404`), method
//! (`405` with `Allow`), device name (`400`), readiness (`503`), content type of a report
//! (`415`), a body on a GET (`400`), body size, budget and read time (`413`, `503`, `408`),
//! authentication and replay (every failure the same `401`; the reason is counted only on the
//! metrics listener), or `429` when the device's nonce cache is full. Everything after
//! authentication is signed with the device key and bound to the request nonce.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_process::http::{METRICS_CONTENT_TYPE, Readiness};
use apollo_protocol::auth::{
    AuthError, AuthVersion, HEADER_SIGNATURE, ReplayCache, ReplayVerdict, sign_response_versioned,
    unix_now, verify_request,
};
use apollo_protocol::keys::{DeviceKey, MasterKeyRing};
use apollo_protocol::wire::{
    self, DeviceRoute, ErrorBody, MAX_REQUEST_BODY, Report, ReportAck, if_none_match_matches,
    parse_device_route, parse_wait, valid_device_name,
};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::desired::Doc;
use crate::index::ObjectIndex;
use crate::limits::{self, AcceptErrors, AddressLimiter, BodyBudget};
use crate::liveness::{Agent, Liveness};
use crate::metrics::Metrics;
use crate::server::{Body, BodyError, Reply, Request};
use crate::status::StatusController;

/// Longest accepted instance id of a report.
pub const MAX_INSTANCE_ID: usize = 64;
/// Longest accepted agent version.
pub const MAX_AGENT_VERSION: usize = 64;
/// Longest accepted spec hash and revision of a report.
pub const MAX_HASH: usize = 64;
/// Most observed processes in one report.
pub const MAX_OBSERVED: usize = 1024;

type Resp = Response<Bytes>;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct HttpState {
    pub desired: Arc<ObjectIndex>,
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
    /// Most long polls held for one device.
    pub max_long_polls_per_device: usize,
    /// Long polls held per device (entries only while some are held).
    pub device_polls: Mutex<HashMap<String, usize>>,
    /// Body bytes buffered by requests not yet authenticated.
    pub body_budget: BodyBudget,
    pub shutdown: watch::Receiver<bool>,
    /// Log one line per device-API request (`request` at info).
    pub access_log: bool,
    /// Revocation floors and the lowest accepted signature version.
    pub credentials: crate::revocation::CredentialPolicy,
    /// Which replica owns which device.
    pub ownership: Arc<crate::membership::Ownership>,
    /// Reports of devices other replicas own go there.
    pub forwarder: Arc<crate::forward::Forwarder>,
    /// Limits of forwarded batches received.
    pub inbound: crate::forward::Inbound,
    /// Whether the device listener serves the replica route (no peer listener: `false` once
    /// `--peer-addr` is set, and the route is `404` there like any unknown one).
    pub forward_on_devices: bool,
}

/// Listener settings.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// Most open connections from one source address (IPv6: one /64).
    pub max_connections_per_address: usize,
    pub grace: Duration,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The device API (and the replica route while [`HttpState::forward_on_devices`]).
    Devices,
    /// `/healthz`, `/readyz` and `/metrics` only.
    Metrics,
    /// The replica route only (`--peer-addr`).
    Peers,
}

fn json_response(status: u16, body: Bytes) -> Resp {
    let mut resp = Response::new(body);
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
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Signs responses to one authenticated request, in the request's signature version.
struct Signer {
    key: DeviceKey,
    nonce: String,
    version: AuthVersion,
    /// The request's `If-None-Match` as signed (v2).
    if_none_match: Option<String>,
}

impl Signer {
    fn sign(&self, mut resp: Resp, body: &[u8]) -> Resp {
        // The ETag is read where it stands (no copy per response).
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok());
        let sig = sign_response_versioned(
            &self.key,
            self.version,
            resp.status().as_u16(),
            &self.nonce,
            etag,
            body,
            self.if_none_match.as_deref(),
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
            let mut r = Response::new(Bytes::new());
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

/// Decrements the long-poll counts when a held request ends (also when the client leaves).
struct LongPollGuard<'a> {
    state: &'a HttpState,
    device: &'a str,
}

impl<'a> LongPollGuard<'a> {
    /// Takes a slot of the global and of the device's limit; `Err` with the refusal
    /// message when either is full.
    fn take(state: &'a HttpState, device: &'a str) -> Result<Self, &'static str> {
        {
            let mut polls = state.device_polls.lock().unwrap_or_else(|p| p.into_inner());
            let n = polls.entry(device.to_string()).or_insert(0);
            if *n >= state.max_long_polls_per_device {
                return Err("too many long polls held for this device; retry later");
            }
            *n += 1;
        }
        if state.long_polls.fetch_add(1, Ordering::Relaxed) >= state.max_long_polls {
            state.long_polls.fetch_sub(1, Ordering::Relaxed);
            Self::release_device(state, device);
            return Err("too many long polls held; retry later");
        }
        state.metrics.long_polls_held.inc();
        Ok(LongPollGuard { state, device })
    }

    fn release_device(state: &HttpState, device: &str) {
        let mut polls = state.device_polls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = polls.get_mut(device) {
            *n -= 1;
            if *n == 0 {
                polls.remove(device);
            }
        }
    }
}

impl Drop for LongPollGuard<'_> {
    fn drop(&mut self) {
        self.state.long_polls.fetch_sub(1, Ordering::Relaxed);
        self.state.metrics.long_polls_held.dec();
        Self::release_device(self.state, self.device);
    }
}

/// The one answer to every authentication or replay failure on the device listener: the same
/// status, body and headers whatever failed (the reason is counted on the metrics listener).
pub fn auth_refused() -> Resp {
    error(401, "authentication failed")
}

/// Answers one request of the metrics listener (bodies are never read).
pub fn handle_metrics(state: &HttpState, req: &Request) -> Resp {
    let path = req.path();
    let ready = state.readiness.is_ready() && !*state.shutdown.borrow();
    let (route, resp) = match path {
        "/healthz" | "/readyz" | "/metrics" => {
            let route = match path {
                "/healthz" => "healthz",
                "/readyz" => "readyz",
                _ => "metrics",
            };
            let resp = if req.method != Method::GET {
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
                    _ => {
                        let m = &state.metrics;
                        let queued = state.status.pending();
                        m.status_write_queue
                            .set(i64::try_from(queued).unwrap_or(i64::MAX));
                        m.ready.set(i64::from(ready));
                        m.members.set(state.ownership.members().len() as i64);
                        m.lease_held
                            .set(i64::from(state.ownership.write_deadline().is_some()));
                        m.owned_devices
                            .set(i64::try_from(state.status.owned_devices()).unwrap_or(0));
                        text(StatusCode::OK, m.encode(), METRICS_CONTENT_TYPE)
                    }
                }
            };
            (route, resp)
        }
        _ => (
            "other",
            error(
                404,
                "no such route: this listener serves /healthz, /readyz and /metrics",
            ),
        ),
    };
    state.metrics.http(route, resp.status().as_u16());
    resp
}

/// Answers one request of the device listener: at once, or later for a long poll (then the
/// request's state is freed before the wait; only the long poll allocates a timer and a
/// wake-up registration).
pub async fn handle(state: Arc<HttpState>, req: Request, body: Body<'_>) -> Reply {
    let started = tokio::time::Instant::now();
    // Copied only for the access log.
    let logged = state.access_log.then(|| {
        (
            req.method.clone(),
            req.path().to_owned(),
            req.query().map(str::to_owned),
        )
    });
    let replicas = state.forward_on_devices && req.path() == crate::forward::FORWARD_PATH;
    let call = parse_device_route(req.path()).map(|r| match r {
        DeviceRoute::Desired(d) => (Route::Desired, d.to_string()),
        DeviceRoute::Report(d) => (Route::Report, d.to_string()),
    });
    let (route, step) = match call {
        // Boxed: the replica route's state is allocated by its requests only.
        _ if replicas => (
            "replicas",
            Step::Answer(Box::pin(crate::forward::handle(&state, req, body)).await),
        ),
        Some((route, device)) => {
            let step = match route {
                Route::Desired => desired_request(&state, req, device),
                Route::Report => report_request(&state, req, body, device).await,
            };
            (route.label(), step)
        }
        None => ("other", Step::Answer(error(404, "no such route"))),
    };
    match step {
        Step::Answer(resp) => {
            answered(&state, route, &resp, logged, started);
            Reply::Now(resp)
        }
        // The request's state (and the step's box) is freed here: the wait holds the long
        // poll alone.
        Step::Wait(poll) => Reply::Later(Box::pin(long_poll_answered(
            state, *poll, route, logged, started,
        ))),
    }
}

/// A long poll, then its answer counted and logged like any other.
async fn long_poll_answered(
    state: Arc<HttpState>,
    poll: LongPoll,
    route: &'static str,
    logged: Logged,
    started: tokio::time::Instant,
) -> Resp {
    let resp = long_poll(&state, &poll).await;
    answered(&state, route, &resp, logged, started);
    resp
}

/// The request's method, path and query, when access-logged.
type Logged = Option<(Method, String, Option<String>)>;

/// Counts an answer of the device listener and writes its access-log line.
fn answered(
    state: &HttpState,
    route: &'static str,
    resp: &Resp,
    logged: Logged,
    started: tokio::time::Instant,
) {
    state.metrics.http(route, resp.status().as_u16());
    if let Some((method, path, query)) = logged {
        tracing::info!(
            method = %method,
            path = %path,
            query = query.as_deref().unwrap_or(""),
            status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
    }
}

/// Answers one request of the peer listener: the replica route, nothing else.
pub async fn handle_peers(state: &HttpState, req: Request, body: Body<'_>) -> Resp {
    let (route, resp) = if req.path() == crate::forward::FORWARD_PATH {
        (
            "replicas",
            Box::pin(crate::forward::handle(state, req, body)).await,
        )
    } else {
        (
            "other",
            error(
                404,
                "no such route: this listener serves /v1/replicas/reports only",
            ),
        )
    };
    state.metrics.http(route, resp.status().as_u16());
    resp
}

fn is_json(req: &Request) -> bool {
    req.header(header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(wire::CONTENT_TYPE_JSON))
}

/// The two device routes (the `route` label of the request metrics).
#[derive(Debug, Clone, Copy)]
enum Route {
    Desired,
    Report,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Desired => "desired",
            Route::Report => "report",
        }
    }
}

/// What both device routes check before anything else: the method, the device name, and
/// that the gateway is ready and not shutting down. `Some`: the refusal to answer with.
fn refusal(state: &HttpState, req: &Request, device: &str, allowed: Method) -> Option<Resp> {
    if req.method != allowed {
        let allow = if allowed == Method::GET {
            "GET"
        } else {
            "POST"
        };
        return Some(with_header(
            error(405, &format!("method not allowed; use {allow}")),
            header::ALLOW,
            allow,
        ));
    }
    if !valid_device_name(device) {
        return Some(error(
            400,
            "invalid device name: must be a DNS-1123 subdomain (lowercase a-z, 0-9, '-', '.')",
        ));
    }
    if !state.readiness.is_ready() {
        return Some(with_header(
            error(503, "not ready: the DeviceProcess cache has not synced"),
            header::RETRY_AFTER,
            "1",
        ));
    }
    let shutting_down = *state.shutdown.borrow();
    if shutting_down {
        return Some(with_header(
            error(503, "the gateway is shutting down"),
            header::RETRY_AFTER,
            "1",
        ));
    }
    None
}

/// Authenticates a device request (signature, key epoch, replay) from its head and its whole
/// body; on success returns the signer of the answer. Every refusal is counted and looks the
/// same to the client (`401`), except a full nonce cache (`429`, signed).
fn authenticate(
    state: &HttpState,
    device: &str,
    req: &Request,
    body: &[u8],
) -> Result<Signer, Box<Resp>> {
    let now = unix_now();
    let verified = match verify_request(
        &state.keys,
        device,
        req.method.as_str(),
        req.path_and_query(),
        &req.headers,
        body,
        now,
        state.skew_secs,
    ) {
        Ok(v) => v,
        Err(e) => {
            state.metrics.auth_failure(e.reason_label());
            tracing::debug!(device, reason = e.reason_label(), "authentication failed");
            return Err(Box::new(auth_refused()));
        }
    };
    state.metrics.auth_version(verified.version.as_str());
    if let Err(e) = state.credentials.check(&verified) {
        state.metrics.auth_failure(e.reason_label());
        tracing::debug!(device, reason = e.reason_label(), "credential refused");
        return Err(Box::new(auth_refused()));
    }
    let signer = Signer {
        key: verified.device_key,
        nonce: verified.nonce,
        version: verified.version,
        if_none_match: verified.if_none_match,
    };
    match state
        .replay
        .check(device, &signer.nonce, verified.timestamp, now)
    {
        ReplayVerdict::Fresh => Ok(signer),
        ReplayVerdict::Replayed => {
            state.metrics.auth_failure(AuthError::Replay.reason_label());
            Err(Box::new(auth_refused()))
        }
        ReplayVerdict::Full => {
            let resp = signer.error(429, "too many requests from this device; retry later");
            Err(Box::new(with_header(resp, header::RETRY_AFTER, "1")))
        }
    }
}

/// `GET /v1/devices/{device}/desired`: the device's document, or a long poll for its change.
fn desired_request(state: &HttpState, req: Request, device: String) -> Step {
    if let Some(resp) = refusal(state, &req, &device, Method::GET) {
        return Step::Answer(resp);
    }
    // A GET has no body: refuse one without reading it (the connection is closed after the
    // answer rather than drain an unread body).
    if req.has_body() {
        return Step::Answer(error(400, "a GET request has no body"));
    }
    let signer = match authenticate(state, &device, &req, &[]) {
        Ok(signer) => signer,
        Err(resp) => return Step::Answer(*resp),
    };
    let wait = match parse_wait(req.query()) {
        Ok(w) => w,
        Err(e) => return Step::Answer(signer.error(400, &e.to_string())),
    };
    let inm = req.header(header::IF_NONE_MATCH).map(str::to_owned);
    // Only what the wait needs is kept: a long poll holds no request head.
    drop(req);
    desired_answer(state, wait, inm, device, signer)
}

/// `POST /v1/devices/{device}/report`: the agent's report, recorded and acknowledged.
async fn report_request(state: &HttpState, req: Request, body: Body<'_>, device: String) -> Step {
    if let Some(resp) = refusal(state, &req, &device, Method::POST) {
        return Step::Answer(resp);
    }
    if !is_json(&req) {
        return Step::Answer(error(
            415,
            "a report must have Content-Type: application/json",
        ));
    }
    let declared = req.content_length();
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY as u64) {
        return Step::Answer(error(413, "request body over the 64 KiB limit"));
    }
    // Body bytes held before the signature is checked come out of one global budget.
    let reserve = declared.map_or(MAX_REQUEST_BODY, |n| n as usize);
    let _budget = if reserve > 0 {
        match state.body_budget.try_take(reserve) {
            Some(p) => Some(p),
            None => {
                return Step::Answer(with_header(
                    error(503, "too many request bodies in flight; retry later"),
                    header::RETRY_AFTER,
                    "1",
                ));
            }
        }
    } else {
        None
    };
    let body = match read_body(body, reserve, state.body_timeout).await {
        Ok(body) => body,
        Err(resp) => return Step::Answer(resp),
    };
    match authenticate(state, &device, &req, &body) {
        Ok(signer) => Step::Answer(report_answer(state, &body, &device, &signer)),
        Err(resp) => Step::Answer(*resp),
    }
}

/// Reads a request body of at most `limit` bytes within `timeout` (`408`, `413`, `400`; a
/// transfer-coded body `411`, `501` or `400`).
async fn read_body(body: Body<'_>, limit: usize, timeout: Duration) -> Result<Bytes, Resp> {
    body.read(limit, timeout).await.map_err(|e| {
        let message = match e {
            BodyError::TooLarge => "request body over the 64 KiB limit".to_string(),
            ref e => e.to_string(),
        };
        error(e.status(), &message)
    })
}

/// Whether `doc` matches the request's `If-None-Match`.
fn etag_matches(inm: Option<&str>, doc: &Doc) -> bool {
    inm.is_some_and(|h| if_none_match_matches(h, &doc.etag))
}

fn desired_document(state: &HttpState, signer: &Signer, doc: &Doc, not_modified: bool) -> Resp {
    state.metrics.desired_answer(not_modified);
    signer.document(if not_modified { 304 } else { 200 }, doc)
}

/// What a device request comes to: an answer now, or a long poll to hold.
enum Step {
    Answer(Resp),
    Wait(Box<LongPoll>),
}

/// A GET to hold until its device's document changes. Its device is the signer's (a request
/// authenticates for its path's device only).
struct LongPoll {
    wait: Duration,
    /// The request's `If-None-Match` when the signer does not hold it already (v1).
    inm: Option<String>,
    signer: Signer,
}

impl LongPoll {
    fn inm(&self) -> Option<&str> {
        self.inm.as_deref().or(self.signer.if_none_match.as_deref())
    }
}

/// Answers a GET of the desired document at once, unless it matches and the request asks to
/// wait (a long poll).
fn desired_answer(
    state: &HttpState,
    wait: Option<Duration>,
    inm: Option<String>,
    device: String,
    signer: Signer,
) -> Step {
    let doc = state.desired.current(&device);
    if !etag_matches(inm.as_deref(), &doc) {
        return Step::Answer(desired_document(state, &signer, &doc, false));
    }
    match wait {
        None => Step::Answer(desired_document(state, &signer, &doc, true)),
        Some(wait) => {
            // Held once: a v2 signer holds the request's If-None-Match already.
            let inm = inm.filter(|_| signer.if_none_match.is_none());
            drop(device);
            Step::Wait(Box::new(LongPoll { wait, inm, signer }))
        }
    }
}

/// Holds a GET whose document matches until the document changes (`200`), the wait ends or
/// the gateway shuts down (`304`).
async fn long_poll(state: &HttpState, poll: &LongPoll) -> Resp {
    let signer = &poll.signer;
    let device = signer.key.device();
    let matches = |doc: &Doc| etag_matches(poll.inm(), doc);
    let _guard = match LongPollGuard::take(state, device) {
        Ok(g) => g,
        Err(message) => {
            let resp = signer.error(429, message);
            return with_header(resp, header::RETRY_AFTER, "1");
        }
    };
    let mut shutdown = state.shutdown.clone();
    let deadline = tokio::time::sleep(poll.wait);
    tokio::pin!(deadline);
    loop {
        // Register for wake-ups before looking, so a change in between is not missed.
        let changed = state.desired.changed(device);
        tokio::pin!(changed);
        changed.as_mut().enable();
        let doc = state.desired.current(device);
        if !matches(&doc) {
            return desired_document(state, signer, &doc, false);
        }
        tokio::select! {
            _ = changed => {}
            _ = &mut deadline => break,
            _ = crate::stopped(&mut shutdown) => break,
        }
    }
    let doc = state.desired.current(device);
    desired_document(state, signer, &doc, matches(&doc))
}

/// Characters allowed in the device-controlled text that reaches logs, Events and status
/// (instance id, agent version): letters, digits and `. _ - + :`.
fn safe_text(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b':'))
}

/// Checks a report's fields; the message says which rule failed.
pub(crate) fn valid_report(r: &Report) -> Result<(), &'static str> {
    if !safe_text(&r.instance_id, MAX_INSTANCE_ID) {
        return Err("instanceId must be 1-64 characters of A-Z a-z 0-9 . _ - + :");
    }
    if !safe_text(&r.agent_version, MAX_AGENT_VERSION) {
        return Err("agentVersion must be 1-64 characters of A-Z a-z 0-9 . _ - + :");
    }
    if r.revision
        .as_deref()
        .is_some_and(|rev| !safe_text(rev, MAX_HASH))
    {
        return Err("revision must be 1-64 characters of A-Z a-z 0-9 . _ - + :");
    }
    if r.observed.len() > MAX_OBSERVED {
        return Err("observed lists at most 1024 processes");
    }
    for o in &r.observed {
        if !valid_device_name(&o.name) {
            return Err("observed names must be DeviceProcess names (DNS-1123 subdomains)");
        }
        if o.spec_hash.is_empty()
            || o.spec_hash.len() > MAX_HASH
            || !o.spec_hash.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err("observed specHash must be 1-64 letters and digits");
        }
        if o.generation.is_some_and(|g| g < 1) {
            return Err("observed generation must be at least 1");
        }
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
    let now = tokio::time::Instant::now();
    let owner = state.ownership.owner(device);
    if let crate::membership::Owner::Peer(peer) = &owner {
        state
            .forwarder
            .enqueue(&peer.url, device, report.clone(), now);
    }
    let agent = Agent::new(
        report.instance_id,
        report.agent_version,
        report.observed,
        true,
    );
    // Recorded here too (whoever owns it): if this replica takes the device over, it starts
    // from the agent's latest report rather than from status.
    let owned = !matches!(owner, crate::membership::Owner::Peer(_));
    state.status.agent_reported(device, agent, now, None, owned);
    let ack = ReportAck {
        revision: state.desired.current(device).revision().to_string(),
        heartbeat_interval_ms: u64::try_from(state.heartbeat.as_millis()).unwrap_or(u64::MAX),
    };
    let body = Bytes::from(serde_json::to_vec(&ack).unwrap_or_default());
    signer.sign(json_response(200, body.clone()), &body)
}

/// Accepts connections until shutdown, then lets open ones finish within the grace period.
/// With `tls`, each connection first completes a TLS handshake (within the header timeout).
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<HttpState>,
    role: Role,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = AddressLimiter::new(limits.max_connections_per_address);
    let mut accept_errors = AcceptErrors::new(limits::ACCEPT_LOG_INTERVAL);
    let mut refused: u64 = 0;
    let mut refused_logged: Option<tokio::time::Instant> = None;
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
            Ok(a) => {
                accept_errors.succeeded();
                a
            }
            Err(e) => {
                let delay = accept_errors.failed(&e, tokio::time::Instant::now());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = crate::stopped(&mut shutdown) => break,
                }
                continue;
            }
        };
        let Some(address_permit) = per_address.try_acquire(peer.ip()) else {
            // Closed at once: one address cannot take the pool from everyone else.
            refused += 1;
            let now = tokio::time::Instant::now();
            if refused_logged.is_none_or(|t| now.duration_since(t) >= limits::ACCEPT_LOG_INTERVAL) {
                tracing::warn!(
                    address = %peer.ip(),
                    refused,
                    limit = limits.max_connections_per_address,
                    "connections over the per-address limit closed"
                );
                refused = 0;
                refused_logged = Some(now);
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The task is the connection's future itself: nothing carried twice.
        conns.spawn(connection(
            stream,
            tls.clone(),
            Listener {
                state: state.clone(),
                role,
            },
            limits.header_timeout,
            shutdown.clone(),
            peer,
            (permit, address_permit),
        ));
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

/// Serves one accepted connection (after a TLS handshake with `tls`) until it ends or
/// shutdown; `_permits` (the connection's place in the listener's limits) are held as long.
async fn connection(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    listener: Listener,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    peer: SocketAddr,
    _permits: (tokio::sync::OwnedSemaphorePermit, limits::AddressPermit),
) {
    let limits = crate::server::Limits {
        header_timeout,
        max_head: limits::HEAD_BUFFER,
        max_headers: limits::MAX_HEADERS,
    };
    let served = match tls {
        None => crate::server::serve_connection(stream, &listener, limits, &mut shutdown).await,
        // Boxed: the TLS state is allocated by TLS connections only, not carried in the
        // task of every plain one.
        Some(tls) => Box::pin(serve_tls(tls, stream, &listener, limits, &mut shutdown)).await,
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Completes a TLS handshake (within the header timeout), then serves the connection.
async fn serve_tls(
    tls: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    listener: &Listener,
    limits: crate::server::Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), crate::server::ConnectionError> {
    // Boxed, the handshake's state and then the stream: allocated once each, not carried
    // through the futures that serve the connection.
    match tokio::time::timeout(limits.header_timeout, Box::pin(tls.accept(stream))).await {
        Ok(Ok(stream)) => {
            crate::server::serve_connection(Box::new(stream), listener, limits, shutdown).await
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(crate::server::ConnectionError::HandshakeTimeout),
    }
}

/// A listener's requests, answered by its role's handler.
pub struct Listener {
    pub state: Arc<HttpState>,
    pub role: Role,
}

impl crate::server::Service for Listener {
    async fn call<'a>(&'a self, req: Request, body: Body<'a>) -> Reply {
        match self.role {
            Role::Devices => handle(self.state.clone(), req, body).await,
            Role::Metrics => Reply::Now(handle_metrics(&self.state, &req)),
            Role::Peers => Reply::Now(handle_peers(&self.state, req, body).await),
        }
    }

    fn refuse(&self, status: u16, message: &str) -> Resp {
        error(status, message)
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

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, Fut>(_: impl FnOnce(A, B, C) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    fn future_size7<A, B, C, D, E, F, G, Fut>(_: impl FnOnce(A, B, C, D, E, F, G) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn connection_future_stays_small() {
        // One per open connection, idle and long-polling ones included: the server's state
        // between requests, no buffer (a request's state and a long poll are boxed while they
        // exist). Debug build: 1,160 bytes, most of it the wait for the next head (timer,
        // socket readiness, shutdown watch). hyper kept 16 KiB of buffers besides.
        // The task's future (a TLS connection's handshake and serving future, with its
        // stream, rustls' state, are boxed separately).
        let size = future_size7(connection);
        assert!(size <= 1200, "a connection's future is {size} bytes");
    }

    #[test]
    fn handler_future_stays_small() {
        // Boxed by the server while a request is handled (an idle or long-polling connection
        // holds none: a long poll's state is boxed separately by the requests that wait).
        // Debug build: about 1.7 KiB.
        let size = future_size(handle);
        assert!(size <= 2048, "the device handler's future is {size} bytes");
    }

    #[test]
    fn report_validation() {
        assert!(valid_report(&report("abc", vec![])).is_ok());
        assert!(valid_report(&report("Ab-1.2_3+4:5", vec![])).is_ok());
        for bad in [
            "",
            "has space",
            "new\nline",
            "\u{1b}[31mred",
            "quote\"",
            "ünï",
            &"x".repeat(65),
        ] {
            assert!(valid_report(&report(bad, vec![])).is_err(), "{bad:?}");
        }
        let mut r = report("a", vec![]);
        r.agent_version = String::new();
        assert!(valid_report(&r).is_err(), "empty version");
        r.agent_version = "1.0\r\nINFO forged".into();
        assert!(valid_report(&r).is_err());
        r.agent_version = "0.1.0".into();
        r.revision = Some("<script>".into());
        assert!(valid_report(&r).is_err());
        let o = |n: &str, h: &str, g: Option<i64>| ObservedProcess {
            name: n.into(),
            spec_hash: h.into(),
            generation: g,
        };
        assert!(valid_report(&report("a", vec![o("dp", "1234", Some(1))])).is_ok());
        assert!(valid_report(&report("a", vec![o("", "1234", None)])).is_err());
        assert!(valid_report(&report("a", vec![o("Bad Name", "1234", None)])).is_err());
        assert!(valid_report(&report("a", vec![o("dp", "", None)])).is_err());
        assert!(valid_report(&report("a", vec![o("dp", "12 4", None)])).is_err());
        assert!(valid_report(&report("a", vec![o("dp", &"f".repeat(65), None)])).is_err());
        assert!(valid_report(&report("a", vec![o("dp", "1234", Some(-1))])).is_err());
        assert!(valid_report(&report("a", vec![o("dp", "1234", Some(0))])).is_err());
        assert!(
            valid_report(&report(
                "a",
                (0..1025).map(|i| o(&format!("p{i}"), "1", None)).collect()
            ))
            .is_err()
        );
    }
}
