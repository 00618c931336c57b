//! Report forwarding between replicas: a replica that receives a report for a device another
//! replica owns hands it to the owner, so the owner's liveness table (and only the owner's
//! status writes and Events) follow every agent wherever it is connected.
//!
//! - **Sender.** [`Forwarder::enqueue`] is a map insert under a mutex: the agent's request
//!   never waits for the owner. Per owner URL the queue holds at most one entry per device
//!   (the latest report wins: a report is the agent's whole state), all queues together at
//!   most [`MAX_QUEUED`] entries (more are dropped and counted; the agent's next heartbeat
//!   carries the same state). Every [`FLUSH_INTERVAL`] the queues are sent as batches of at
//!   most [`MAX_BATCH`] reports, one `POST /v1/replicas/reports` per owner and batch, signed
//!   with the replica key ([`apollo_protocol::replica`]). A failed batch is dropped, not
//!   retried: by then the member set has usually changed.
//! - **Receiver** ([`handle`], on the peer listener with `--peer-addr`, else on the device
//!   listener; plain HTTP either way: the signature, not the transport, authenticates and
//!   protects a batch, and reports are not secret). Authentication comes first, from the headers alone (the
//!   signature covers the body's declared SHA-256), then the body is read up to
//!   [`MAX_FORWARD_BODY`] (413 above, by `Content-Length` or while reading) and checked
//!   against the signed hash; at most [`MAX_INFLIGHT`] bodies are held at once (503 beyond),
//!   replays are refused, each report is validated like an agent's. Forwarded reports are
//!   recorded in the liveness table (with their age) and never forwarded again, whoever owns
//!   the device in this replica's view, so a disagreement during a membership change cannot
//!   loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_protocol::auth::{AuthError, ReplayVerdict, generate_nonce, unix_now};
use apollo_protocol::replica::{sign_replica_request, verify_replica_headers};
use apollo_protocol::wire::{Report, valid_device_name};
use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use crate::http::HttpState;
use crate::liveness::Agent;
use crate::server::{Body, BodyError};

/// The route of forwarded reports (the peer listener with `--peer-addr`, else the device
/// listener).
pub const FORWARD_PATH: &str = "/v1/replicas/reports";
/// Most reports queued for all peers together.
pub const MAX_QUEUED: usize = 100_000;
/// Most reports in one batch.
pub const MAX_BATCH: usize = 1_000;
/// Largest accepted batch body (1,000 reports of up to about 1 KiB).
pub const MAX_FORWARD_BODY: usize = 1024 * 1024;
/// Most forwarded batches read at once.
pub const MAX_INFLIGHT: usize = 8;
/// How often queued reports are sent.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Longest wait for a peer's answer.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// One forwarded report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forwarded {
    pub device: String,
    /// Milliseconds between the agent's report and the batch being sent.
    pub age_ms: u64,
    pub report: Report,
}

/// A batch of forwarded reports (the body of [`FORWARD_PATH`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    pub reports: Vec<Forwarded>,
}

#[derive(Debug, Default)]
struct Queues {
    by_peer: HashMap<String, HashMap<String, (Report, Instant)>>,
    len: usize,
}

/// The sending side.
#[derive(Debug)]
pub struct Forwarder {
    id: String,
    keys: apollo_protocol::keys::MasterKeyRing,
    queues: Mutex<Queues>,
    notify: Notify,
    metrics: Arc<crate::Metrics>,
}

impl Forwarder {
    /// A forwarder signing as replica `id`.
    pub fn new(
        id: &str,
        keys: apollo_protocol::keys::MasterKeyRing,
        metrics: Arc<crate::Metrics>,
    ) -> Arc<Forwarder> {
        Arc::new(Forwarder {
            id: id.to_string(),
            keys,
            queues: Mutex::new(Queues::default()),
            notify: Notify::new(),
            metrics,
        })
    }

    /// Queues `report` of `device` for the replica at `url` (never waits).
    pub fn enqueue(&self, url: &str, device: &str, report: Report, received: Instant) {
        let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let q = &mut *q;
        let full = q.len >= MAX_QUEUED;
        let peer = q.by_peer.entry(url.to_string()).or_default();
        match peer.get_mut(device) {
            Some(slot) => *slot = (report, received),
            None if full => {
                self.metrics.forward("dropped", 1);
            }
            None => {
                peer.insert(device.to_string(), (report, received));
                q.len += 1;
            }
        }
    }

    /// Reports waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).len
    }

    fn take(&self) -> HashMap<String, HashMap<String, (Report, Instant)>> {
        let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        q.len = 0;
        std::mem::take(&mut q.by_peer)
    }

    /// Sends queued reports every [`FLUSH_INTERVAL`] until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.notify.notified() => {}
                _ = crate::stopped(&mut shutdown) => return,
            }
            let work = self.take();
            if work.is_empty() {
                continue;
            }
            let mut sends = tokio::task::JoinSet::new();
            for (url, reports) in work {
                let now = Instant::now();
                let mut all: Vec<Forwarded> = reports
                    .into_iter()
                    .map(|(device, (report, at))| Forwarded {
                        device,
                        age_ms: u64::try_from(now.saturating_duration_since(at).as_millis())
                            .unwrap_or(u64::MAX),
                        report,
                    })
                    .collect();
                while !all.is_empty() {
                    let rest = all.split_off(all.len().min(MAX_BATCH));
                    let batch = Batch {
                        reports: std::mem::replace(&mut all, rest),
                    };
                    let this = self.clone();
                    let client = client.clone();
                    let url = url.clone();
                    sends.spawn(async move { this.send(&client, &url, batch).await });
                }
            }
            while sends.join_next().await.is_some() {}
        }
    }

    async fn send(&self, client: &Client<HttpConnector, Full<Bytes>>, url: &str, batch: Batch) {
        let n = batch.reports.len() as u64;
        let body = match serde_json::to_vec(&batch) {
            Ok(b) => Bytes::from(b),
            Err(_) => return,
        };
        let headers = sign_replica_request(
            &self.keys,
            &self.id,
            "POST",
            FORWARD_PATH,
            &body,
            unix_now(),
            &generate_nonce(),
        );
        let uri = format!("{}{FORWARD_PATH}", url.trim_end_matches('/'));
        let mut req = Request::builder().method(Method::POST).uri(&uri).header(
            header::CONTENT_TYPE,
            apollo_protocol::wire::CONTENT_TYPE_JSON,
        );
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let Ok(req) = req.body(Full::new(body)) else {
            self.metrics.forward("dropped", n);
            return;
        };
        let result = tokio::time::timeout(SEND_TIMEOUT, client.request(req)).await;
        match result {
            Ok(Ok(resp)) if resp.status() == StatusCode::OK => {
                self.metrics.forward("sent", n);
            }
            Ok(Ok(resp)) => {
                self.metrics.forward("dropped", n);
                tracing::debug!(
                    peer = url,
                    status = resp.status().as_u16(),
                    "forwarded reports refused"
                );
            }
            Ok(Err(e)) => {
                self.metrics.forward("dropped", n);
                tracing::debug!(peer = url, error = %e, "cannot forward reports");
            }
            Err(_) => {
                self.metrics.forward("dropped", n);
                tracing::debug!(peer = url, "forwarding timed out");
            }
        }
    }
}

/// Receiving side: limits shared by all forwarded batches.
#[derive(Debug)]
pub struct Inbound {
    pub replay: apollo_protocol::auth::ReplayCache,
    pub inflight: Semaphore,
}

impl Inbound {
    pub fn new(skew: Duration) -> Inbound {
        Inbound {
            // Up to 20 batches a second from each of a few hundred peers per window.
            replay: apollo_protocol::auth::ReplayCache::with_per_device_limit(
                skew, 200_000, 20_000,
            ),
            inflight: Semaphore::new(MAX_INFLIGHT),
        }
    }
}

type Resp = Response<Bytes>;

fn answer(status: u16, message: &str) -> Resp {
    crate::http::error(status, message)
}

/// Answers `POST /v1/replicas/reports`.
pub async fn handle(state: &HttpState, req: crate::server::Request, body: Body<'_>) -> Resp {
    if req.method != Method::POST {
        let mut r = answer(405, "method not allowed; use POST");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return r;
    }
    if !state.readiness.is_ready() {
        return answer(503, "not ready");
    }
    let now = unix_now();
    let verified = match verify_replica_headers(
        &state.keys,
        req.method.as_str(),
        req.path_and_query(),
        &req.headers,
        now,
        state.skew_secs,
    ) {
        Ok(v) => v,
        Err(e) => {
            state.metrics.auth_failure(e.reason_label());
            return crate::http::auth_refused();
        }
    };
    let Some(declared) = req.content_length() else {
        return answer(411, "Content-Length required");
    };
    if declared > MAX_FORWARD_BODY as u64 {
        return answer(413, "batch over the 1 MiB limit");
    }
    let Ok(_permit) = state.inbound.inflight.try_acquire() else {
        return answer(503, "too many forwarded batches in flight");
    };
    let body = match body.read(declared as usize, state.body_timeout).await {
        Ok(body) => body,
        Err(e @ BodyError::TooLarge) => return answer(e.status(), "batch over its Content-Length"),
        Err(e) => return answer(e.status(), &e.to_string()),
    };
    if verified.check_body(&body).is_err() {
        state
            .metrics
            .auth_failure(AuthError::BadSignature.reason_label());
        return crate::http::auth_refused();
    }
    match state.inbound.replay.check(
        &format!("replica/{}", verified.sender),
        &verified.nonce,
        verified.timestamp,
        now,
    ) {
        ReplayVerdict::Fresh => {}
        ReplayVerdict::Replayed => {
            state.metrics.auth_failure(AuthError::Replay.reason_label());
            return crate::http::auth_refused();
        }
        ReplayVerdict::Full => return answer(429, "too many batches; retry later"),
    }
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return answer(400, &format!("malformed batch: {e}")),
    };
    if batch.reports.len() > MAX_BATCH {
        return answer(400, "too many reports in one batch");
    }
    let received = Instant::now();
    let mut accepted = 0u64;
    for f in batch.reports {
        if !valid_device_name(&f.device) || crate::http::valid_report(&f.report).is_err() {
            continue;
        }
        let agent = Agent::new(
            f.report.instance_id,
            f.report.agent_version,
            f.report.observed,
            true,
        );
        let age = Duration::from_millis(f.age_ms.min(60_000));
        state
            .status
            .agent_reported(&f.device, agent, received, Some(age), true);
        accepted += 1;
    }
    state.metrics.forward("received", accepted);
    let body = Bytes::from(format!("{{\"accepted\":{accepted}}}"));
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
