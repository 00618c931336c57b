//! Authentication hardening against a real gateway (on a development API server): a man in
//! the middle rewriting `If-None-Match` in front of a real agent, v1 agents during the v2
//! transition and `--min-auth-version v2`, revoking one device's key through the revocation
//! file without a restart, and TLS with certificate reload (with a real agent over HTTPS).

use crate::common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use apollo_gateway::tls::TlsFiles;
use common::{Harness, RunningAgent, TestDevice, ca_and_leaf, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(20);

/// A TCP proxy in front of `upstream` that, while `rewrite` is set, replaces the value of
/// every `If-None-Match` request header with `*` (what a man in the middle does to obtain a
/// genuine signed 304 for the current document). Returns its address and a rewrite counter.
async fn inm_rewriting_proxy(
    upstream: std::net::SocketAddr,
    rewrite: Arc<AtomicBool>,
) -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = proxy.local_addr().unwrap();
    let rewritten = Arc::new(AtomicUsize::new(0));
    let count = rewritten.clone();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = proxy.accept().await {
            let (count, rewrite) = (count.clone(), rewrite.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut chunk = buf[..n].to_vec();
                        if rewrite.load(Ordering::Relaxed) {
                            let text = String::from_utf8_lossy(&chunk).into_owned();
                            let lower = text.to_ascii_lowercase();
                            if let Some(start) = lower.find("\r\nif-none-match:") {
                                let value = start + "\r\nif-none-match:".len();
                                let end = value + text[value..].find("\r\n").unwrap_or(0);
                                chunk =
                                    format!("{} *{}", &text[..value], &text[end..]).into_bytes();
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if sw.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, rewritten, task)
}

/// The agent must not stay on an old document silently when a proxy rewrites its
/// `If-None-Match`: its v2 signature covers the header, so the gateway refuses the rewritten
/// request; the agent says so (not connected, an error) instead of reporting itself current,
/// and adopts the new document as soon as the proxy stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_rewriting_if_none_match_cannot_freeze_an_agent() {
    let mut h = Harness::start().await;
    h.create_dp("dp-m", "dev-m", "one").await;
    let rewrite = Arc::new(AtomicBool::new(false));
    let (proxy, rewritten, proxy_task) = inm_rewriting_proxy(h.addr, rewrite.clone()).await;
    let agent = RunningAgent::start(&format!("http://{proxy}"), h.master.derive("dev-m"));
    let mut state = agent.agent.subscribe();
    let first = tokio::time::timeout(T, state.wait_for(|s| s.connected && s.revision.is_some()))
        .await
        .expect("agent adopts the first document")
        .unwrap()
        .revision
        .clone()
        .unwrap();

    // The attack starts (the poll already held passes untouched; wait for a rewritten one),
    // then the desired state changes.
    rewrite.store(true, Ordering::Relaxed);
    wait_until("the proxy rewrites a request", T, || async {
        rewritten.load(Ordering::Relaxed) >= 1
    })
    .await;
    h.set_arg("dp-m", "two").await;
    let dev = h.device("dev-m");
    let mut current = first.clone();
    let deadline = tokio::time::Instant::now() + T;
    while current == first {
        assert!(
            tokio::time::Instant::now() < deadline,
            "document never changed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        current = dev.get(None, None).await.json()["revision"]
            .as_str()
            .unwrap()
            .to_string();
    }
    // Either the agent notices (refused / failing, not "connected"), or it got the new
    // document; never "connected on the old document" for good.
    let s = tokio::time::timeout(
        T,
        state.wait_for(|s| {
            (!s.connected && s.last_error.is_some()) || s.revision.as_deref() == Some(&current)
        }),
    )
    .await
    .expect("the agent stayed on the old document silently")
    .unwrap()
    .clone();
    assert_eq!(
        s.revision.as_deref(),
        Some(first.as_str()),
        "the old document is still held while attacked: {s:?}"
    );
    assert!(
        h.gw()
            .metrics()
            .encode()
            .contains("apollo_gateway_auth_failures_total{reason=\"bad_signature\"}"),
        "the gateway refused the rewritten requests"
    );
    // The attack ends: the agent catches up.
    rewrite.store(false, Ordering::Relaxed);
    tokio::time::timeout(
        T,
        state.wait_for(|s| s.connected && s.revision.as_deref() == Some(&current)),
    )
    .await
    .expect("agent adopts the current document after the attack")
    .unwrap();
    agent.stop().await;
    proxy_task.abort();
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// During the transition the gateway serves v1 (the test client signs v1) and v2 (the agent)
/// side by side, counting both; with `--min-auth-version v2`, v1 requests get 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_agents_work_until_the_minimum_version_is_raised() {
    let mut h = Harness::start().await;
    h.create_dp("dp-v", "dev-v", "x").await;
    let v1 = h.device("dev-v");
    assert_eq!(v1.get(None, None).await.status, 200);
    let agent = RunningAgent::start(&h.base_url(), h.master.derive("dev-v"));
    let mut state = agent.agent.subscribe();
    tokio::time::timeout(T, state.wait_for(|s| s.reports_acked >= 1))
        .await
        .unwrap()
        .unwrap();
    let metrics = h.gw().metrics().encode();
    assert!(
        metrics.contains("apollo_gateway_auth_requests_total{version=\"v1\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("apollo_gateway_auth_requests_total{version=\"v2\"}"),
        "{metrics}"
    );
    agent.stop().await;

    let addr = h.addr;
    h.stop_gateway().await;
    h.tweak = |s| s.min_auth_version = apollo_protocol::auth::AuthVersion::V2;
    h.start_gateway(Some(addr)).await;
    assert_eq!(v1.get(None, None).await.status, 401);
    let agent = RunningAgent::start(&h.base_url(), h.master.derive("dev-v"));
    let mut state = agent.agent.subscribe();
    let acked = state.borrow().reports_acked;
    tokio::time::timeout(
        T,
        state.wait_for(|s| s.connected && s.reports_acked > acked),
    )
    .await
    .expect("a v2 agent is served")
    .unwrap();
    assert!(h.gw().metrics().encode().contains("reason=\"old_version\""));
    agent.stop().await;
    h.stop_gateway().await;
    h.env.cleanup().await;
}

static REVOCATION_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Revoking one device's key: re-issue it at epoch 1, list `dev-r 1` in the revocation file;
/// without a restart the old key gets 401 within the reload interval, the new key works, and
/// another device is unaffected. The file may be absent at start (an optional ConfigMap not
/// created yet); a broken update keeps the previous list in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_one_device_key_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("revoked");
    REVOCATION_FILE.set(file.clone()).unwrap();
    let mut h = Harness::start_with(|s| {
        s.revocation_file = REVOCATION_FILE.get().cloned();
        s.reload_interval = Duration::from_millis(100);
    })
    .await;
    h.create_dp("dp-r", "dev-r", "x").await;
    h.create_dp("dp-o", "dev-o", "x").await;
    let old = h.device("dev-r");
    let new = TestDevice {
        addr: h.addr,
        key: h.master.derive_at("dev-r", 1),
    };
    let other = h.device("dev-o");
    for d in [&old, &new, &other] {
        assert_eq!(d.get(None, None).await.status, 200, "{}", d.key.key_id());
    }

    std::fs::write(&file, "dev-r 1\n").unwrap();
    wait_until("the old key of dev-r is refused", T, || async {
        old.get(None, None).await.status == 401
    })
    .await;
    assert_eq!(new.get(None, None).await.status, 200);
    assert_eq!(new.report("i-new", &[]).await.status, 200);
    assert_eq!(other.get(None, None).await.status, 200);
    assert!(h.gw().metrics().encode().contains("reason=\"revoked\""));

    // A broken update is not applied (and does not unrevoke).
    std::fs::write(&file, "dev-r one\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(old.get(None, None).await.status, 401);
    assert_eq!(new.get(None, None).await.status, 200);
    // Lifting the line (e.g. a mistake) restores the old key, still without a restart.
    std::fs::write(&file, "# nothing revoked\n").unwrap();
    wait_until("the old key works again", T, || async {
        old.get(None, None).await.status == 200
    })
    .await;
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// An unsigned device request over TLS trusting only `ca_pem` (the device listener answers
/// it `401`): the status line and the TLS version, or the error.
async fn https_probe(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    versions: &[&'static tokio_rustls::rustls::SupportedProtocolVersion],
) -> Result<(String, tokio_rustls::rustls::ProtocolVersion), String> {
    common::https_request(
        addr,
        ca_pem,
        versions,
        b"GET /v1/devices/dev-x/desired HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
}

static TLS_FILES: OnceLock<TlsFiles> = OnceLock::new();

/// TLS on the device listener: TLS 1.3 and 1.2 handshakes succeed with the configured
/// certificate, plain HTTP does not get an answer, and replacing the certificate files makes
/// new handshakes use the new certificate without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_certificate_reload() {
    use tokio_rustls::rustls::{ProtocolVersion, version};
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let (ca1, cert1, key1) = ca_and_leaf();
    std::fs::write(&files.cert, &cert1).unwrap();
    std::fs::write(&files.key, &key1).unwrap();
    TLS_FILES.set(files.clone()).unwrap();
    let mut h = Harness::start_with(|s| {
        s.tls = TLS_FILES.get().cloned();
        s.reload_interval = Duration::from_millis(100);
    })
    .await;
    let addr = h.addr;
    let (status, v) = https_probe(addr, &ca1, &[&version::TLS13]).await.unwrap();
    assert_eq!(
        (status.as_str(), v),
        ("HTTP/1.1 401 Unauthorized", ProtocolVersion::TLSv1_3)
    );
    let (status, v) = https_probe(addr, &ca1, &[&version::TLS12]).await.unwrap();
    assert_eq!(
        (status.as_str(), v),
        ("HTTP/1.1 401 Unauthorized", ProtocolVersion::TLSv1_2)
    );
    // A real agent (the `tls` build) trusting CA 1 fetches and reports over HTTPS.
    h.create_dp("dp-tls", "dev-tls", "x").await;
    let mut config = apollo_agent::Config::new(
        "dev-tls",
        &format!("https://localhost:{}", addr.port()),
        h.master.derive("dev-tls"),
    );
    config.gateway_ca = Some(ca1.clone().into_bytes());
    config.long_poll = Duration::from_secs(2);
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(300);
    config.min_poll_gap = Duration::from_millis(50);
    let agent = Arc::new(apollo_agent::Agent::new(config));
    let mut state = agent.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let a = agent.clone();
    let task = tokio::spawn(async move {
        a.run(async {
            let _ = stopped.await;
        })
        .await
    });
    tokio::time::timeout(
        T,
        state.wait_for(|s| s.revision.is_some() && s.reports_acked >= 1),
    )
    .await
    .expect("the agent is served over TLS")
    .unwrap();
    let _ = stop.send(());
    task.await.unwrap();
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = common::raw_request(
        addr,
        b"GET /v1/devices/dev-x/desired HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(
        plain.map(|r| r.status).unwrap_or(0),
        0,
        "plain HTTP answered"
    );

    // Renewal: a certificate from another CA replaces the files.
    let (ca2, cert2, key2) = ca_and_leaf();
    std::fs::write(&files.key, &key2).unwrap();
    std::fs::write(&files.cert, &cert2).unwrap();
    wait_until("new handshakes use the new certificate", T, || async {
        https_probe(addr, &ca2, &[&version::TLS13]).await.is_ok()
    })
    .await;
    assert!(https_probe(addr, &ca1, &[&version::TLS13]).await.is_err());
    // A broken update (key not matching) keeps the current certificate.
    let (_, _, key3) = ca_and_leaf();
    std::fs::write(&files.key, &key3).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(https_probe(addr, &ca2, &[&version::TLS13]).await.is_ok());
    h.stop_gateway().await;
    h.env.cleanup().await;
}
