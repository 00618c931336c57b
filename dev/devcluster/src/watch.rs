//! Watches: resourceVersion semantics, initial events, field/label-selected transitions,
//! bookmarks, timeouts, 410 Expired, and fan-out of shared (Arc) change records.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use apollo_apimachinery::schema::FieldError;
use apollo_apiquery::table::{self, IncludeObject};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::handlers::{self, Ctx, Output, Selectors, include_object, output_mode, present};
use crate::registry::{Flavor, ResourceDef};
use crate::server::{Body, Shared};
use crate::status::ApiError;
use crate::store::{Change, ChangeType};

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    typ: &'a str,
    object: &'a Value,
}

fn encode(typ: &str, object: &Value) -> Bytes {
    let mut buf = serde_json::to_vec(&Event { typ, object }).unwrap_or_default();
    buf.push(b'\n');
    Bytes::from(buf)
}

enum Start {
    Initial {
        objects: Vec<Arc<Value>>,
        rv: u64,
        end_bookmark: bool,
    },
    Backlog(Vec<Arc<Change>>, u64),
    Expired {
        requested: u64,
        oldest: u64,
    },
}

struct Watcher {
    shared: Arc<Shared>,
    def: Arc<ResourceDef>,
    selectors: Selectors,
    everything: bool,
    output: Output,
    include: IncludeObject,
    bookmarks: bool,
    last_rv: u64,
    tx: mpsc::Sender<Bytes>,
}

fn invalid_watch(field: &str, detail: String) -> ApiError {
    ApiError::invalid(
        "ListOptions",
        "meta.k8s.io",
        "",
        &[FieldError::forbidden(field, detail)],
    )
}

pub(crate) fn serve(
    ctx: &Ctx,
    def: Arc<ResourceDef>,
    ns: &str,
) -> Result<Response<Body>, ApiError> {
    let selectors = Selectors::parse(&def, &ctx.query)?;
    let everything = ctx.query.get("labelSelector").is_none_or(|s| s.is_empty())
        && ctx.query.get("fieldSelector").is_none_or(|s| s.is_empty());
    let q = |k: &str| {
        ctx.query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let bookmarks = matches!(q("allowWatchBookmarks"), Some("true") | Some("1"));
    let send_initial = q("sendInitialEvents").map(|v| v == "true" || v == "1");
    let rv_match = q("resourceVersionMatch");
    if let Some(si) = send_initial {
        if rv_match != Some("NotOlderThan") {
            return Err(invalid_watch(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan".to_string(),
            ));
        }
        if si && !bookmarks {
            return Err(invalid_watch(
                "allowWatchBookmarks",
                "allowWatchBookmarks must be set to true when sendInitialEvents is set to true"
                    .to_string(),
            ));
        }
    } else if let Some(m) = rv_match {
        return Err(invalid_watch(
            "resourceVersionMatch",
            format!(
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided (\"{m}\")"
            ),
        ));
    }
    let timeout = match q("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
        Some(t) if t > 0 => Duration::from_secs(t),
        _ => Duration::from_secs(1800 + rand::rng().random_range(0..1800)),
    };
    let rv_param = q("resourceVersion");
    let ns_filter = if ns.is_empty() { None } else { Some(ns) };

    let mut store = ctx.shared.lock();
    let start = if send_initial == Some(true) || rv_param.is_none() || rv_param == Some("0") {
        let mut objects = Vec::new();
        let _ = store.scan(&def.storage, ns_filter, None, None, |_, v| {
            if everything || selectors.matches(&def, v) {
                objects.push(v.clone());
            }
            true
        });
        Start::Initial {
            objects,
            rv: store.rv,
            end_bookmark: send_initial == Some(true),
        }
    } else {
        let requested = rv_param.unwrap_or("0").parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resource version: {}",
                rv_param.unwrap_or("")
            ))
        })?;
        if requested > store.rv {
            let mut e = ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {}", store.rv),
            )
            .with_details(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            }));
            e.retry_after = Some(1);
            return Err(e);
        }
        match store.changes_since(&def.storage, requested, ns_filter) {
            Ok(backlog) => Start::Backlog(backlog, requested),
            Err(e) => Start::Expired {
                requested,
                oldest: e.oldest,
            },
        }
    };
    let rx = match start {
        Start::Expired { .. } => None,
        _ => Some(store.subscribe(&def.storage, ns_filter)),
    };
    drop(store);

    let (tx, body_rx) = mpsc::channel::<Bytes>(1024);
    let watcher = Watcher {
        shared: ctx.shared.clone(),
        def,
        selectors,
        everything,
        output: output_mode(&ctx.accept),
        include: include_object(&ctx.query),
        bookmarks,
        last_rv: 0,
        tx,
    };
    tokio::spawn(watcher.run(start, rx, timeout));

    let stream = futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

impl Watcher {
    fn render(&self, obj: &Value) -> Value {
        match self.output {
            Output::Full => present(&self.def, obj),
            Output::Meta => handlers::partial_metadata(&present(&self.def, obj)),
            Output::Table => table::render(
                &self.def.columns,
                &[present(&self.def, obj)],
                self.include,
                &self.last_rv.to_string(),
                None,
                jiff::Timestamp::now(),
            ),
        }
    }

    fn event_bytes(&self, typ: &str, obj: &Value) -> Bytes {
        if self.sends_stored_form(obj) {
            encode(typ, obj)
        } else {
            encode(typ, &self.render(obj))
        }
    }

    async fn send(&mut self, bytes: Bytes) -> bool {
        self.tx.send(bytes).await.is_ok()
    }

    /// Translates a committed change into this watcher's event, if any.
    /// Whether this watcher sends stored objects as they are (so encodings can be shared).
    fn sends_stored_form(&self, obj: &Value) -> bool {
        self.output == Output::Full
            && self.def.flavor != Flavor::EventsV1
            && obj.get("apiVersion").and_then(Value::as_str)
                == Some(self.def.api_version().as_str())
    }

    /// The change as an event of its own type, encoded once per change when possible.
    fn same_type_event(&self, c: &Change) -> Bytes {
        if self.sends_stored_form(&c.obj) {
            return c
                .encoded
                .get_or_init(|| encode(c.typ.as_str(), &c.obj))
                .clone();
        }
        self.event_bytes(c.typ.as_str(), &c.obj)
    }

    fn translate(&self, c: &Change) -> Option<Bytes> {
        if self.everything {
            return Some(self.same_type_event(c));
        }
        let m = |v: &Value| self.selectors.matches(&self.def, v);
        match c.typ {
            ChangeType::Added => m(&c.obj).then(|| self.same_type_event(c)),
            ChangeType::Deleted => {
                let matched = c.prev.as_deref().map(m).unwrap_or_else(|| m(&c.obj));
                matched.then(|| self.same_type_event(c))
            }
            ChangeType::Modified => {
                let now = m(&c.obj);
                let before = c.prev.as_deref().is_some_and(m);
                match (before, now) {
                    (true, true) => Some(self.same_type_event(c)),
                    (false, true) => Some(self.event_bytes("ADDED", &c.obj)),
                    (true, false) => {
                        // The object as it last matched, at the change's resourceVersion.
                        let mut prev = c.prev.as_deref().cloned().unwrap_or(Value::Null);
                        if let Some(meta) = prev.get_mut("metadata").and_then(Value::as_object_mut)
                        {
                            meta.insert("resourceVersion".into(), json!(c.rv.to_string()));
                        }
                        Some(self.event_bytes("DELETED", &prev))
                    }
                    (false, false) => None,
                }
            }
        }
    }

    async fn deliver(&mut self, c: &Change) -> bool {
        let out = self.translate(c);
        self.last_rv = self.last_rv.max(c.rv);
        match out {
            Some(b) => self.send(b).await,
            None => true,
        }
    }

    fn bookmark_bytes(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (kind, api_version) = match self.output {
            Output::Full => (self.def.kind.clone(), self.def.api_version()),
            Output::Meta => (
                "PartialObjectMetadata".to_string(),
                "meta.k8s.io/v1".to_string(),
            ),
            Output::Table => ("Table".to_string(), "meta.k8s.io/v1".to_string()),
        };
        encode(
            "BOOKMARK",
            &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata}),
        )
    }

    async fn bookmark(&mut self, rx: &mut mpsc::UnboundedReceiver<Arc<Change>>) -> bool {
        let rv = self.shared.current_rv();
        // Everything committed up to `rv` is already queued: deliver it first.
        while let Ok(c) = rx.try_recv() {
            if !self.deliver(&c).await {
                return false;
            }
        }
        let rv = rv.max(self.last_rv);
        self.last_rv = rv;
        let b = self.bookmark_bytes(rv, false);
        self.send(b).await
    }

    async fn run(
        mut self,
        start: Start,
        rx: Option<mpsc::UnboundedReceiver<Arc<Change>>>,
        timeout: Duration,
    ) {
        let started = Instant::now();
        let deadline = started + timeout;
        let before = self.shared.opts.bookmark_before_timeout;
        let last_bookmark_at = if timeout > before {
            Some(deadline - before)
        } else {
            None
        };
        let mut drops = self.shared.faults.watch_drops();
        let mut shutdown = self.shared.shutdown.subscribe();
        match start {
            Start::Expired { requested, oldest } => {
                let status = json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": format!("too old resource version: {requested} ({oldest})"),
                    "reason": "Expired",
                    "code": 410,
                });
                let _ = self.send(encode("ERROR", &status)).await;
                return;
            }
            Start::Initial {
                objects,
                rv,
                end_bookmark,
            } => {
                for o in objects {
                    let b = self.event_bytes("ADDED", &o);
                    if !self.send(b).await {
                        return;
                    }
                }
                self.last_rv = rv;
                if end_bookmark {
                    let b = self.bookmark_bytes(rv, true);
                    if !self.send(b).await {
                        return;
                    }
                }
            }
            Start::Backlog(backlog, from) => {
                self.last_rv = from;
                for c in backlog {
                    if !self.deliver(&c).await {
                        return;
                    }
                }
            }
        }
        let Some(mut rx) = rx else { return };
        let interval = self
            .shared
            .opts
            .bookmark_interval
            .max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut final_bookmark_sent = false;
        loop {
            tokio::select! {
                biased;
                _ = drops.changed() => break,
                _ = shutdown.changed() => break,
                _ = self.tx.closed() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                c = rx.recv() => match c {
                    Some(c) => {
                        if !self.deliver(&c).await {
                            break;
                        }
                    }
                    None => break,
                },
                _ = ticker.tick(), if self.bookmarks => {
                    if !self.bookmark(&mut rx).await {
                        break;
                    }
                }
                _ = async {
                    match last_bookmark_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                }, if self.bookmarks && !final_bookmark_sent => {
                    final_bookmark_sent = true;
                    if !self.bookmark(&mut rx).await {
                        break;
                    }
                }
            }
        }
    }
}
