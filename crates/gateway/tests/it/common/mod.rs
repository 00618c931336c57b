//! Test harness: a development API server with the project's CRDs and the gateway's own RBAC,
//! the gateway in-process under its ServiceAccount identity, and a small signed HTTP client
//! built from apollo-protocol (raw HTTP/1.1 over TCP, so malformed and slow requests can be
//! sent too).

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apollo_api::{DeviceProcess, DeviceProcessSpec};
use apollo_devcluster::User;
use apollo_gateway::{Gateway, Settings};
use apollo_protocol::auth::{
    HEADER_SIGNATURE, generate_nonce, sign_request, unix_now, verify_response,
};
use apollo_protocol::keys::{DeviceKey, MasterKey, MasterKeyRing};
use apollo_protocol::wire::{ObservedProcess, Report};
use apollo_testkit::{TestEnv, poll_until};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const HEARTBEAT: Duration = Duration::from_millis(250);
pub const STALE: Duration = Duration::from_millis(1200);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls `check` until it returns true; panics after `timeout` with `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let done = poll_until(timeout, || {
        let check = check();
        async move { if check.await { Ok(()) } else { Err(()) } }
    });
    if done.await.is_err() {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}

pub struct Harness {
    pub env: TestEnv,
    pub master: MasterKey,
    pub gateway: Option<Gateway>,
    pub addr: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Applied to the settings of every gateway start.
    pub tweak: fn(&mut Settings),
}

pub fn settings(master: &MasterKey, namespace: &str) -> Settings {
    let mut s = Settings::new(MasterKeyRing::from(master.clone()));
    s.namespace = Some(namespace.to_string());
    s.heartbeat_interval = HEARTBEAT;
    s.stale_after = STALE;
    s.header_timeout = Duration::from_millis(800);
    s.body_timeout = Duration::from_millis(800);
    s.shutdown_grace = Duration::from_secs(2);
    s.status_workers = 2;
    s.instance = Some("gateway-test".into());
    s
}

impl Harness {
    /// Cluster with CRDs and the gateway RBAC applied, gateway started and ready.
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    /// Like [`Harness::start`] with adjusted gateway settings.
    pub async fn start_with(tweak: fn(&mut Settings)) -> Harness {
        let env = TestEnv::new().await;
        let root = repo_root();
        let crds = env.crd_dir(&root).await;
        env.apply_manifest_file(&crds.join("deviceprocesses.azure.com.yaml"))
            .await
            .expect("apply CRD");
        env.apply_manifest_file(&root.join("k8s/rbac/gateway.yaml"))
            .await
            .expect("apply gateway RBAC");
        // A real API server's authorizer sees the new binding a moment later: wait for it.
        for (verb, group, resource) in [
            ("list", "azure.com", "deviceprocesses"),
            ("watch", "azure.com", "deviceprocesses"),
            ("patch", "azure.com", "deviceprocesses/status"),
            ("create", "events.k8s.io", "events"),
        ] {
            env.wait_allowed(
                User::Gateway,
                verb,
                group,
                resource,
                Duration::from_secs(30),
            )
            .await
            .expect("gateway RBAC in effect");
        }
        let master = MasterKey::new("ktest", [7; 32]).unwrap();
        let mut h = Harness {
            env,
            master,
            gateway: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tweak,
        };
        h.start_gateway(None).await;
        h
    }

    /// Starts (or restarts on `addr`) the gateway and waits for readiness.
    pub async fn start_gateway(&mut self, addr: Option<SocketAddr>) {
        let mut s = settings(&self.master, self.env.namespace());
        (self.tweak)(&mut s);
        if let Some(a) = addr {
            s.addr = a;
        }
        let clients = self.gateway_clients().await;
        let gw = Gateway::start(s, clients).await.expect("gateway starts");
        self.addr = gw.local_addr();
        self.metrics_addr = gw.metrics_addr();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !gw.is_ready() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway never ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.gateway = Some(gw);
    }

    /// Clients as the gateway's ServiceAccount, built the way the binary builds them.
    /// On a real cluster (`APOLLO_TEST_KUBECONFIG`): admin impersonating the ServiceAccount.
    pub async fn gateway_clients(&self) -> apollo_gateway::kubeapi::Clients {
        let Some(dev) = self.env.dev() else {
            return apollo_gateway::kubeapi::Clients {
                api: self.env.as_user(User::Gateway).await,
                membership: self.env.as_user(User::Gateway).await,
            };
        };
        let kubeconfig = dev.kubeconfig(User::Gateway);
        apollo_gateway::kubeapi::clients(Some(&kubeconfig.display().to_string()))
            .await
            .expect("gateway clients")
    }

    /// Whether the in-process cluster (request counters, fault injection) is available.
    pub fn skip_on_real_cluster(&self, why: &str) -> bool {
        if self.env.is_real() {
            eprintln!("skipped on a real cluster: {why}");
            return true;
        }
        false
    }

    pub async fn stop_gateway(&mut self) {
        if let Some(gw) = self.gateway.take() {
            gw.shutdown().await;
        }
    }

    pub fn gw(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway running")
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn device(&self, name: &str) -> TestDevice {
        TestDevice {
            addr: self.addr,
            key: self.master.derive(name),
        }
    }

    pub async fn dps(&self) -> Api<DeviceProcess> {
        Api::namespaced(self.env.admin().await, self.env.namespace())
    }

    pub async fn create_dp(&self, name: &str, device: &str, arg: &str) -> DeviceProcess {
        let dp = DeviceProcess::new(name, spec(device, arg));
        self.dps()
            .await
            .create(&PostParams::default(), &dp)
            .await
            .expect("create DeviceProcess")
    }

    pub async fn set_arg(&self, name: &str, arg: &str) -> DeviceProcess {
        let patch = serde_json::json!({"spec": {"execution": {"args": [arg]}}});
        self.dps()
            .await
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch spec")
    }

    pub async fn get_dp(&self, name: &str) -> DeviceProcess {
        self.dps().await.get(name).await.expect("get DeviceProcess")
    }

    /// Events about `object` with `reason` (both API groups share one store).
    pub async fn events(&self, object: &str, reason: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.env.admin().await, self.env.namespace());
        api.list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
                    && e.reason.as_deref() == Some(reason)
            })
            .collect()
    }

    pub fn gateway_user(&self) -> String {
        self.env.username(User::Gateway)
    }

    /// Status patches the API server received from the gateway's identity (None on a real
    /// cluster, which has no request counters).
    pub fn status_patches(&self) -> Option<u64> {
        Some(self.env.dev()?.requests().count(
            Some(&self.gateway_user()),
            Some("patch"),
            Some("deviceprocesses"),
            Some("status"),
        ))
    }

    /// Status writes the running gateway attempted (its own metric).
    pub fn gateway_writes(&self) -> u64 {
        let m = self.gw().metrics();
        ["success", "conflict", "error", "gone"]
            .iter()
            .map(|r| m.status_writes_of(r))
            .sum()
    }

    pub async fn wait_status<F>(&self, name: &str, what: &str, timeout: Duration, mut pred: F)
    where
        F: FnMut(&DeviceProcess) -> bool,
    {
        let api = self.dps().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let dp = api.get(name).await.expect("get DeviceProcess");
            if pred(&dp) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {name}: {what}; status: {}",
                    serde_json::to_string(&dp.status).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn spec(device: &str, arg: &str) -> DeviceProcessSpec {
    apollo_api::samples::shell_process(device, arg)
}

/// The status of a DeviceProcess's condition (the testkit's, under the name these tests use).
#[allow(unused_imports)] // not every test binary that includes this module reads conditions
pub use apollo_testkit::condition_status as cond_status;

/// A raw HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn parse_response(raw: &[u8]) -> Option<HttpResp> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(HttpResp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Sends raw bytes (which should ask for `Connection: close`) and reads the whole answer.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> std::io::Result<HttpResp> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    parse_response(&buf).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unparsable answer: {:?}", String::from_utf8_lossy(&buf)),
        )
    })
}

/// A request's bytes.
pub fn build_request(method: &str, pq: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {pq} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The five auth headers.
pub fn auth_headers(
    key: &DeviceKey,
    method: &str,
    pq: &str,
    body: &[u8],
    ts: i64,
    nonce: &str,
) -> Vec<(String, String)> {
    sign_request(key, method, pq, body, ts, nonce)
        .pairs()
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A device talking to the gateway with its key.
pub struct TestDevice {
    pub addr: SocketAddr,
    pub key: DeviceKey,
}

impl TestDevice {
    pub fn desired_path(&self) -> String {
        format!("/v1/devices/{}/desired", self.key.device())
    }

    pub fn report_path(&self) -> String {
        format!("/v1/devices/{}/report", self.key.device())
    }

    /// Sends a signed request and checks the response signature when the status says it
    /// must be signed.
    pub async fn send(
        &self,
        method: &str,
        pq: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResp {
        let nonce = generate_nonce();
        let mut headers = auth_headers(&self.key, method, pq, body, unix_now(), &nonce);
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let resp = raw_request(self.addr, &build_request(method, pq, &headers, body))
            .await
            .expect("request");
        if matches!(resp.status, 200 | 304) {
            verify_response(
                &self.key,
                resp.status,
                &nonce,
                resp.header("etag"),
                &resp.body,
                resp.header(HEADER_SIGNATURE),
            )
            .expect("response signature verifies");
        }
        resp
    }

    pub async fn get(&self, etag: Option<&str>, wait: Option<&str>) -> HttpResp {
        let pq = match wait {
            Some(w) => format!("{}?wait={w}", self.desired_path()),
            None => self.desired_path(),
        };
        let extra: Vec<(&str, &str)> = etag.map(|e| ("If-None-Match", e)).into_iter().collect();
        self.send("GET", &pq, &extra, b"").await
    }

    /// The device's current ETag, from a GET without `If-None-Match`.
    pub async fn etag(&self) -> String {
        let r = self.get(None, None).await;
        assert_eq!(r.status, 200, "GET of the desired document");
        r.header("etag").expect("an ETag").to_string()
    }

    pub async fn report(&self, instance: &str, observed: &[(&str, &str)]) -> HttpResp {
        let report = Report {
            agent_version: "test".into(),
            instance_id: instance.into(),
            revision: None,
            observed: observed
                .iter()
                .map(|(n, h)| ObservedProcess {
                    name: n.to_string(),
                    spec_hash: h.to_string(),
                    generation: None,
                })
                .collect(),
        };
        let body = serde_json::to_vec(&report).unwrap();
        self.send(
            "POST",
            &self.report_path(),
            &[("Content-Type", "application/json")],
            &body,
        )
        .await
    }
}

/// A kubeconfig's text and the API server URL it names (`server:`), for tests that point a
/// copy of it somewhere else.
pub fn kubeconfig_server(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .expect("a server: line")
        .trim()
        .trim_matches('"')
        .to_string();
    (text, server)
}

/// A CA and a "localhost" certificate signed by it, as PEM (ca, cert, key).
pub fn ca_and_leaf() -> (String, String, String) {
    let ca = apollo_testca::TestCa::new();
    (ca.ca_pem, ca.cert_pem, ca.key_pem)
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) over TLS to "localhost" at
/// `addr`, trusting only `ca_pem`: the response's status line and the TLS version, or the
/// error.
pub async fn https_request(
    addr: SocketAddr,
    ca_pem: &str,
    versions: &[&'static tokio_rustls::rustls::SupportedProtocolVersion],
    request: &[u8],
) -> Result<(String, tokio_rustls::rustls::ProtocolVersion), String> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let version = tls.get_ref().1.protocol_version().unwrap();
    tls.write_all(request).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    Ok((text.lines().next().unwrap_or("").to_string(), version))
}

/// An apollo-agent running in-process.
pub struct RunningAgent {
    pub agent: std::sync::Arc<apollo_agent::Agent>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningAgent {
    pub fn start(base_url: &str, key: DeviceKey) -> RunningAgent {
        Self::start_with_ca(base_url, key, None)
    }

    /// [`RunningAgent::start`] trusting `ca_pem` for `https://` URLs.
    pub fn start_with_ca(base_url: &str, key: DeviceKey, ca_pem: Option<&str>) -> RunningAgent {
        let device = key.device().to_string();
        let mut config = apollo_agent::Config::new(&device, base_url, key);
        config.gateway_ca = ca_pem.map(|c| c.as_bytes().to_vec());
        config.long_poll = Duration::from_secs(5);
        config.initial_heartbeat = HEARTBEAT;
        config.heartbeat_min = Duration::from_millis(50);
        config.backoff_initial = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(300);
        config.min_poll_gap = Duration::from_millis(50);
        config.request_timeout = Duration::from_secs(3);
        let agent = std::sync::Arc::new(apollo_agent::Agent::new(config));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let a = agent.clone();
        let task = tokio::spawn(async move {
            a.run(async move {
                let _ = rx.await;
            })
            .await;
        });
        RunningAgent {
            agent,
            stop: Some(tx),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}
