//! A small fake gateway for agent tests: a hyper server on 127.0.0.1 that verifies requests
//! and signs responses with `apollo-protocol`, holds long polls until its document changes,
//! and can misbehave on demand (error statuses, dropped connections, tampered responses).
//! Every exchange is recorded as an [`Event`] so tests wait on what the gateway saw.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_agent::Config;
use apollo_protocol::auth::{self, ReplayCache};
use apollo_protocol::keys::{DeviceKey, MasterKey, MasterKeyRing};
use apollo_protocol::wire::{
    self, DesiredDocument, DesiredProcess, EncodedDocument, ErrorBody, Report, ReportAck,
};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub const DEVICE: &str = "tor1-01";

pub fn master() -> MasterKey {
    MasterKey::new("k1", [42; 32]).unwrap()
}

pub fn device_key() -> DeviceKey {
    master().derive(DEVICE)
}

/// How the fake tampers with responses it signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None,
    /// Change the body after signing.
    Body,
    /// Leave the signature out.
    Unsigned,
    /// Sign as if answering another request (another nonce): a replayed response.
    OtherNonce,
    /// Sign with another device's key.
    OtherDevice,
    /// Sign correctly, but send an ETag that does not name the document's revision.
    MismatchedEtag,
    /// Answer every desired request with a correctly signed `304` carrying the current
    /// document's ETag, whatever `If-None-Match` said: what a proxy rewriting
    /// `If-None-Match: *` obtained from a gateway with v1 signatures.
    AlwaysNotModified,
}

#[derive(Debug, Clone)]
pub struct Behaviour {
    pub heartbeat_ms: u64,
    /// Answer every device request with this status (unsigned JSON error).
    pub fail_with: Option<u16>,
    /// `Retry-After` seconds on those errors.
    pub retry_after: Option<u64>,
    /// The raw body of those errors (default: a JSON error body).
    pub fail_body: Option<Bytes>,
    /// Close connections without answering.
    pub drop_connections: bool,
    pub tamper: Tamper,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            heartbeat_ms: 10_000,
            fail_with: None,
            retry_after: None,
            fail_body: None,
            drop_connections: false,
            tamper: Tamper::None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    /// A desired-state request was answered.
    Desired {
        arrived: Instant,
        if_none_match: Option<String>,
        wait: Option<Duration>,
        status: u16,
    },
    /// A long poll is being held.
    Held { arrived: Instant },
    /// A report was answered.
    Report {
        arrived: Instant,
        report: Report,
        status: u16,
    },
    /// A request failed authentication.
    AuthFailed { reason: &'static str },
    /// A connection was dropped on purpose.
    Dropped { arrived: Instant },
    /// A TLS handshake failed.
    TlsFailed,
}

struct Shared {
    ring: MasterKeyRing,
    replay: ReplayCache,
    doc: watch::Sender<EncodedDocument>,
    behaviour: Mutex<Behaviour>,
    events: mpsc::UnboundedSender<Event>,
}

pub struct FakeGateway {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

pub fn process(name: &str, hash: &str, generation: i64) -> DesiredProcess {
    DesiredProcess {
        namespace: "default".into(),
        name: name.into(),
        generation,
        spec_hash: hash.into(),
        spec: serde_json::json!({"deviceRef": {"name": DEVICE}, "artifact": {"type": "oci", "url": "alpine:3.19"}}),
    }
}

pub fn document(processes: Vec<DesiredProcess>) -> EncodedDocument {
    DesiredDocument::encode(DEVICE, processes)
}

impl FakeGateway {
    pub async fn start(doc: EncodedDocument, behaviour: Behaviour) -> FakeGateway {
        Self::start_with(doc, behaviour, None).await
    }

    /// As [`FakeGateway::start`], serving TLS with `tls` when given.
    pub async fn start_with(
        doc: EncodedDocument,
        behaviour: Behaviour,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> FakeGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            ring: MasterKeyRing::from(master()),
            replay: ReplayCache::new(Duration::from_secs(60), 100_000),
            doc: watch::Sender::new(doc),
            behaviour: Mutex::new(behaviour),
            events: tx,
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if s.behaviour.lock().unwrap().drop_connections {
                    let _ = s.events.send(Event::Dropped {
                        arrived: Instant::now(),
                    });
                    drop(stream);
                    continue;
                }
                let s = s.clone();
                let tls = tls.clone();
                let s2 = s.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let s = s.clone();
                        async move {
                            // Dropping a kept-alive connection mid-request: a service
                            // error makes hyper close it without an answer.
                            if s.behaviour.lock().unwrap().drop_connections {
                                let _ = s.events.send(Event::Dropped {
                                    arrived: Instant::now(),
                                });
                                return Err(std::io::Error::other("dropping the connection"));
                            }
                            Ok(handle(s, req).await)
                        }
                    });
                    match tls {
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                let _ = s2.events.send(Event::TlsFailed);
                                return;
                            };
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        FakeGateway {
            addr,
            shared,
            events: rx,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// An agent configuration with short test intervals.
    pub fn config(&self) -> Config {
        let mut c = Config::new(DEVICE, &self.url(), device_key());
        c.long_poll = Duration::from_secs(30);
        c.heartbeat_min = Duration::from_millis(10);
        c.backoff_initial = Duration::from_millis(50);
        c.backoff_max = Duration::from_millis(400);
        c.request_timeout = Duration::from_secs(5);
        c.min_poll_gap = Duration::from_millis(10);
        c
    }

    pub fn set_document(&self, doc: EncodedDocument) {
        self.shared.doc.send_replace(doc);
    }

    pub fn set_behaviour(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.shared.behaviour.lock().unwrap());
    }

    /// The next event, or a panic naming `what` after `within`.
    pub async fn next(&mut self, within: Duration, what: &str) -> Event {
        tokio::time::timeout(within, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {within:?} waiting for {what}"))
            .expect("fake gateway stopped")
    }

    /// Skip events until one matches; return it.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Event {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.next(left, what).await;
            if pred(&e) {
                return e;
            }
        }
    }

    /// The next `n` reports (skipping other events).
    pub async fn reports(&mut self, n: usize, within: Duration) -> Vec<(Instant, Report)> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Event::Report {
                arrived, report, ..
            } = self
                .wait_for(within, &format!("report {} of {n}", out.len() + 1), |e| {
                    matches!(e, Event::Report { .. })
                })
                .await
            {
                out.push((arrived, report));
            }
        }
        out
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_error(code: u16, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .header("date", "Thu, 01 Jan 2026 00:00:00 GMT")
        .body(Full::new(ErrorBody::new(code, message).to_bytes()))
        .unwrap()
}

async fn handle(s: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let arrived = Instant::now();
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return json_error(400, "unreadable body");
    };
    let Some(route) = wire::parse_device_route(parts.uri.path()) else {
        return json_error(404, "no such route");
    };
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    let now = auth::unix_now();
    let verified = match auth::verify_request(
        &s.ring,
        route.device(),
        parts.method.as_str(),
        pq,
        &parts.headers,
        &body,
        now,
        auth::DEFAULT_SKEW_SECS,
    ) {
        Ok(v) => v,
        Err(e) => {
            let _ = s.events.send(Event::AuthFailed {
                reason: e.reason_label(),
            });
            return json_error(e.status(), e.client_message());
        }
    };
    if !s
        .replay
        .check_and_insert(&verified.device, &verified.nonce, verified.timestamp, now)
    {
        let _ = s.events.send(Event::AuthFailed { reason: "replay" });
        return json_error(401, "authentication failed");
    }
    let behaviour = s.behaviour.lock().unwrap().clone();
    if let Some(code) = behaviour.fail_with {
        let mut response = json_error(code, "failing on purpose");
        if let Some(raw) = &behaviour.fail_body {
            *response.body_mut() = Full::new(raw.clone());
        }
        if let Some(secs) = behaviour.retry_after {
            response
                .headers_mut()
                .insert("retry-after", http::HeaderValue::from(secs));
        }
        match route {
            wire::DeviceRoute::Desired(_) => {
                let _ = s.events.send(Event::Desired {
                    arrived,
                    if_none_match: None,
                    wait: None,
                    status: code,
                });
            }
            wire::DeviceRoute::Report(_) => {
                let _ = s.events.send(Event::Report {
                    arrived,
                    report: serde_json::from_slice(&body).unwrap(),
                    status: code,
                });
            }
        }
        return response;
    }

    let (status, etag, payload) = match route {
        wire::DeviceRoute::Desired(_) => {
            let inm = parts
                .headers
                .get("if-none-match")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let wait = wire::parse_wait(parts.uri.query()).unwrap();
            let mut rx = s.doc.subscribe();
            let mut current = rx.borrow_and_update().clone();
            let unchanged = |doc: &EncodedDocument| {
                inm.as_deref()
                    .is_some_and(|h| wire::if_none_match_matches(h, &doc.etag))
            };
            if unchanged(&current)
                && let Some(wait) = wait
            {
                let _ = s.events.send(Event::Held { arrived });
                let deadline = tokio::time::sleep(wait);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        r = rx.changed() => {
                            if r.is_err() { break; }
                            current = rx.borrow_and_update().clone();
                            if !unchanged(&current) { break; }
                        }
                    }
                }
            }
            let answer = if unchanged(&current) || behaviour.tamper == Tamper::AlwaysNotModified {
                (304u16, Some(current.etag.clone()), Bytes::new())
            } else {
                (200, Some(current.etag.clone()), current.body.clone())
            };
            let _ = s.events.send(Event::Desired {
                arrived,
                if_none_match: inm,
                wait,
                status: answer.0,
            });
            answer
        }
        wire::DeviceRoute::Report(_) => {
            let report: Report = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return json_error(400, &e.to_string()),
            };
            let ack = ReportAck {
                revision: s.doc.borrow().revision.clone(),
                heartbeat_interval_ms: behaviour.heartbeat_ms,
            };
            let _ = s.events.send(Event::Report {
                arrived,
                report,
                status: 200,
            });
            (200, None, Bytes::from(serde_json::to_vec(&ack).unwrap()))
        }
    };

    let etag = match (behaviour.tamper, etag) {
        (Tamper::MismatchedEtag, Some(_)) => Some("\"0000\"".to_string()),
        (_, etag) => etag,
    };
    let (sign_nonce, sign_key) = match behaviour.tamper {
        Tamper::OtherNonce => (auth::generate_nonce(), verified.device_key.clone()),
        Tamper::OtherDevice => (verified.nonce.clone(), master().derive("tor1-02")),
        _ => (verified.nonce.clone(), verified.device_key.clone()),
    };
    let signature = auth::sign_response_versioned(
        &sign_key,
        verified.version,
        status,
        &sign_nonce,
        etag.as_deref(),
        &payload,
        verified.if_none_match.as_deref(),
    );
    let payload = if behaviour.tamper == Tamper::Body && !payload.is_empty() {
        let mut v = payload.to_vec();
        // Flip a byte inside the JSON (keeps it parseable where it matters less).
        let i = v.len() / 2;
        v[i] = if v[i] == b'0' { b'1' } else { b'0' };
        Bytes::from(v)
    } else {
        payload
    };
    let mut builder = Response::builder().status(StatusCode::from_u16(status).unwrap());
    if let Some(etag) = &etag {
        builder = builder.header("etag", etag);
    }
    if !payload.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    if behaviour.tamper != Tamper::Unsigned {
        builder = builder.header(auth::HEADER_SIGNATURE, signature);
    }
    builder.body(Full::new(payload)).unwrap()
}
