//! HTTPS listener, connections, authentication, request classification, counting, faults and
//! authorization in front of the handlers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_rbac::{Attributes, Policy, UserInfo};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::faults::Faults;
use crate::requests::RequestLog;
use crate::status::ApiError;
use crate::store::Store;
use crate::{Error, Options, User, admin, gc, handlers, kubeconfig, meta, tls};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;

/// State shared by every connection.
pub(crate) struct Shared {
    pub opts: Options,
    pub store: Arc<Mutex<Store>>,
    pub faults: Faults,
    pub requests: RequestLog,
    pub api_metrics: crate::apimetrics::ApiMetrics,
    pub tokens: HashMap<String, UserInfo>,
    policy: Mutex<Option<(u64, Arc<Policy>)>>,
    pub shutdown: watch::Sender<bool>,
    pub addr: SocketAddr,
}

impl Shared {
    pub fn current_rv(&self) -> u64 {
        self.store.lock().map(|s| s.rv).unwrap_or(0)
    }

    /// Locks the store; a poisoned lock (a panic elsewhere) is recovered, never propagated.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        match self.store.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The RBAC policy built from the current Role/Binding objects (cached per RBAC write).
    pub fn policy(&self) -> Arc<Policy> {
        let store = self.lock();
        let generation = store.rbac_gen;
        if let Ok(cache) = self.policy.lock()
            && let Some((g, p)) = cache.as_ref()
            && *g == generation
        {
            return p.clone();
        }
        let collect = |storage: &str| -> Vec<Value> {
            let mut out = Vec::new();
            let _ = store.scan(storage, None, None, None, |_, v| {
                out.push((**v).clone());
                true
            });
            out
        };
        let policy = Arc::new(Policy::new(
            collect("roles.rbac.authorization.k8s.io"),
            collect("clusterroles.rbac.authorization.k8s.io"),
            collect("rolebindings.rbac.authorization.k8s.io"),
            collect("clusterrolebindings.rbac.authorization.k8s.io"),
        ));
        drop(store);
        if let Ok(mut cache) = self.policy.lock() {
            *cache = Some((generation, policy.clone()));
        }
        policy
    }
}

/// Handle to stop the server.
pub(crate) struct ServerHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for ServerHandle {
    /// A dropped cluster stops serving (its connections and watches end).
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

pub(crate) async fn start(opts: Options) -> Result<(Arc<Shared>, String, ServerHandle), Error> {
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| Error::io(format!("creating {}", opts.dir.display()), e))?;
    let tls = tls::generate(&opts.tls_sans)?;
    let listener =
        bind(opts.listen).map_err(|e| Error::io(format!("binding {}", opts.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("local address", e))?;
    let url = match addr {
        SocketAddr::V4(a) => format!("https://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("https://[{}]:{}", a.ip(), a.port()),
    };
    // What the kubeconfig files tell clients; the server still listens where it listens.
    let kubeconfig_url = opts.advertise_url.clone().unwrap_or_else(|| url.clone());
    let ca_path = opts.dir.join("ca.crt");
    std::fs::write(&ca_path, &tls.ca_pem)
        .map_err(|e| Error::io(format!("writing {}", ca_path.display()), e))?;
    let mut tokens = HashMap::new();
    for user in User::ALL {
        let t = token();
        let name = user.username(&opts.namespace);
        let text = kubeconfig::render(
            &kubeconfig_url,
            &tls.ca_pem,
            user.file_stem(),
            &t,
            &opts.namespace,
        );
        let path = opts.dir.join(format!("{}.kubeconfig", user.file_stem()));
        std::fs::write(&path, text)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        tokens.insert(
            t,
            UserInfo {
                name,
                groups: user.groups(&opts.namespace),
            },
        );
    }
    let mut store = Store::new(opts.history_limit);
    for ns in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        opts.namespace.as_str(),
    ] {
        if store.get("namespaces", "", ns).is_none() {
            store.put("namespaces", handlers::new_namespace(ns));
        }
    }
    for (storage, objs) in [
        (
            "clusterroles.rbac.authorization.k8s.io",
            apollo_rbac::bootstrap_cluster_roles(),
        ),
        (
            "clusterrolebindings.rbac.authorization.k8s.io",
            apollo_rbac::bootstrap_cluster_role_bindings(),
        ),
    ] {
        for mut o in objs {
            if let Some(m) = meta::meta_mut(&mut o) {
                m.insert("uid".into(), Value::String(meta::uid()));
                m.insert("creationTimestamp".into(), Value::String(meta::now()));
            }
            store.put(storage, o);
        }
    }
    let store = Arc::new(Mutex::new(store));
    let (shutdown, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        faults: Faults::new(store.clone()),
        opts,
        store,
        requests: RequestLog::default(),
        api_metrics: Default::default(),
        tokens,
        policy: Mutex::new(None),
        shutdown: shutdown.clone(),
        addr,
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let accept_task = tokio::spawn(accept_loop(shared.clone(), listener, acceptor));
    let gc_task = tokio::spawn(gc::run(shared.clone()));
    Ok((
        shared,
        url,
        ServerHandle {
            shutdown,
            tasks: vec![accept_task, gc_task],
        },
    ))
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    let mut listener = Some(listener);
    let mut refusals = shared.faults.refusals();
    let mut shutdown = shared.shutdown.subscribe();
    let (kill, _) = watch::channel(0u64);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let until = *refusals.borrow_and_update();
        if let Some(until) = until
            && until > tokio::time::Instant::now()
        {
            listener = None;
            kill.send_modify(|n| *n += 1);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = shutdown.changed() => break,
            }
            continue;
        }
        let l = match listener.as_ref() {
            Some(l) => l,
            None => {
                match bind(shared.addr) {
                    Ok(l) => listener = Some(l),
                    Err(e) => {
                        tracing::warn!("rebinding {}: {e}", shared.addr);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                continue;
            }
        };
        tokio::select! {
            accepted = l.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                let mut killed = kill.subscribe();
                let mut stop = shared.shutdown.subscribe();
                tokio::spawn(async move {
                    let tls = tokio::select! {
                        r = acceptor.accept(tcp) => match r { Ok(t) => t, Err(_) => return },
                        _ = killed.changed() => return,
                        _ = stop.changed() => return,
                    };
                    let svc_shared = shared.clone();
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = svc_shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = killed.changed() => {}
                        _ = stop.changed() => {}
                    }
                });
            }
            _ = refusals.changed() => {}
            _ = shutdown.changed() => break,
        }
    }
    kill.send_modify(|n| *n += 1);
}

/// Classified request, as the apiserver's RequestInfo.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    pub resource_request: bool,
    pub path: String,
    pub verb: String,
    pub api_prefix: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// Extra path segments after the subresource (unsupported; 404).
    pub extra: Vec<String>,
}

pub(crate) fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode_path)
        .collect()
}

fn percent_decode_path(s: &str) -> String {
    if s.contains('%') {
        percent_decode(&s.replace('+', "%2B"))
    } else {
        s.to_string()
    }
}

pub(crate) fn classify(
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.as_str().to_lowercase(),
        ..Default::default()
    };
    let segs = segments(path);
    let (prefix, rest) = match segs.first().map(String::as_str) {
        Some("api") if segs.len() >= 2 => ("api", &segs[1..]),
        Some("apis") if segs.len() >= 3 => ("apis", &segs[1..]),
        _ => return info,
    };
    let mut parts: Vec<String> = rest.to_vec();
    if prefix == "api" {
        info.group = String::new();
        info.version = parts.remove(0);
    } else {
        info.group = parts.remove(0);
        info.version = parts.remove(0);
    }
    if parts.is_empty() {
        return info; // discovery document of a group version
    }
    info.api_prefix = prefix.to_string();
    info.resource_request = true;
    let mut watch_path = false;
    if parts[0] == "watch" {
        watch_path = true;
        parts.remove(0);
    }
    if parts.first().map(String::as_str) == Some("namespaces") && parts.len() > 1 {
        info.namespace = parts[1].clone();
        if parts.len() > 2 && parts[2] != "status" && parts[2] != "finalize" {
            parts.drain(0..2);
        }
    }
    if let Some(r) = parts.first() {
        info.resource = r.clone();
    }
    if let Some(n) = parts.get(1) {
        info.name = n.clone();
    }
    if let Some(s) = parts.get(2) {
        info.subresource = s.clone();
    }
    if parts.len() > 3 {
        info.extra = parts[3..].to_vec();
    }
    let is_watch = watch_path || query.get("watch").is_some_and(|v| v == "true" || v == "1");
    info.verb = match *method {
        Method::GET | Method::HEAD => {
            if is_watch && (info.name.is_empty() || watch_path) {
                "watch"
            } else if info.name.is_empty() {
                "list"
            } else {
                "get"
            }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => {
            if info.name.is_empty() {
                "deletecollection"
            } else {
                "delete"
            }
        }
        _ => "",
    }
    .to_string();
    // A list/watch selecting one name is authorized for that name.
    if (info.verb == "list" || info.verb == "watch")
        && info.name.is_empty()
        && let Some(fs) = query.get("fieldSelector")
    {
        for req in fs.split(',') {
            let req = req.trim();
            if let Some(v) = req
                .strip_prefix("metadata.name==")
                .or_else(|| req.strip_prefix("metadata.name="))
            {
                info.name = v.to_string();
            }
        }
    }
    info
}

/// A JSON response from already serialized bytes.
pub(crate) fn bytes_response(code: u16, bytes: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_warnings(resp.headers_mut(), warnings);
    resp
}

pub(crate) fn add_warnings(headers: &mut HeaderMap, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            headers.append("warning", v);
        }
    }
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    if e.plain {
        let mut resp = text_response(e.code, &format!("{}\n", e.message));
        resp.headers_mut().insert(
            http::header::HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        return resp;
    }
    let mut resp = json_response(e.code, &e.to_status(), &[]);
    if let Some(secs) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    resp
}

pub(crate) fn text_response(code: u16, text: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(text.to_string())).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn authenticate<'a>(shared: &'a Shared, headers: &HeaderMap) -> Option<&'a UserInfo> {
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))?
        .trim();
    shared.tokens.get(token)
}

fn injected_error(code: u16) -> ApiError {
    match code {
        429 => {
            let mut e = ApiError::new(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
            )
            .with_details(json!({}));
            e.retry_after = Some(1);
            e
        }
        503 => ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request (injected fault)",
        ),
        500 => ApiError::internal("injected fault"),
        other => ApiError::new(other, "InternalError", format!("injected fault ({other})")),
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let query = parse_query(uri.query());
    let info = classify(&method, uri.path(), &query);
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let metrics = shared.api_metrics.clone();
    let resp = serve(shared, req).await;
    let code = resp.status().as_u16();
    if code != 401 {
        metrics.record(
            &info,
            &content_type,
            query.get("dryRun").is_some_and(|v| v == "All"),
            code,
        );
    }
    tracing::debug!(
        method = %method,
        uri = %uri,
        status = resp.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query());
    let info = classify(&parts.method, &path, &query);
    let Some(user) = authenticate(&shared, &parts.headers).cloned() else {
        shared
            .requests
            .record("", &info.verb, &req_resource(&info), &info.subresource);
        return error_response(&ApiError::unauthorized());
    };
    shared.requests.record(
        &user.name,
        &info.verb,
        &req_resource(&info),
        &info.subresource,
    );

    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                "Request entity too large: limit is 3145728",
            ));
        }
    };

    let is_admin = user.groups.iter().any(|g| g == "system:masters");
    if path.starts_with("/_devcluster/") {
        if !is_admin {
            return error_response(&ApiError::new(
                403,
                "Forbidden",
                format!(
                    "forbidden: User \"{}\" cannot {} path \"{}\"",
                    user.name, info.verb, path
                ),
            ));
        }
        return admin::handle(&shared, &parts.method, &path, &body);
    }

    let latency = shared.faults.latency_now();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(code) = shared.faults.pick_error() {
        return error_response(&injected_error(code));
    }

    let attrs = Attributes {
        user: user.clone(),
        verb: info.verb.clone(),
        api_group: info.group.clone(),
        resource: info.resource.clone(),
        subresource: info.subresource.clone(),
        namespace: info.namespace.clone(),
        name: info.name.clone(),
        resource_request: info.resource_request,
        path: path.clone(),
    };
    if !is_admin {
        let decision = shared.policy().authorize_with_reason(&attrs);
        if !decision.allowed {
            let body = apollo_rbac::forbidden_status(&attrs, &decision.reason);
            return json_response(403, &body, &[]);
        }
    }
    let accepted = parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ctx = handlers::Ctx {
        shared: shared.clone(),
        user,
        method: parts.method.clone(),
        info,
        query,
        headers: parts.headers,
        accept: accepted,
        body,
        now: meta::now(),
    };
    handlers::dispatch(ctx).await
}

fn req_resource(info: &RequestInfo) -> String {
    if info.resource_request {
        info.resource.clone()
    } else {
        info.path.clone()
    }
}
