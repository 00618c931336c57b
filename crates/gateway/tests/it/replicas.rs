//! The replica route (`POST /v1/replicas/reports`, forwarded reports) is attack surface on
//! the device listener, or on the peer listener with `--peer-addr`: authentication from the
//! headers before any body byte is read, bounded bodies, replay protection, a device key is
//! not a replica key, and a valid batch reaches the owner's liveness and status. With a peer
//! listener the device listener no longer serves the route, the peer listener serves nothing
//! else, and it has the device listener's pre-authentication bounds.

use crate::common;

use std::time::{Duration, Instant};

use apollo_gateway::forward::{Batch, FORWARD_PATH, Forwarded, MAX_BATCH};
use apollo_protocol::auth::{generate_nonce, unix_now};
use apollo_protocol::keys::MasterKeyRing;
use apollo_protocol::replica::sign_replica_request;
use apollo_protocol::wire::{ObservedProcess, Report};
use common::*;

fn signed(ring: &MasterKeyRing, body: &[u8], nonce: &str) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = sign_replica_request(
        ring,
        "gw-peer",
        "POST",
        FORWARD_PATH,
        body,
        unix_now(),
        nonce,
    )
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    h.push(("Content-Type".into(), "application/json".into()));
    h
}

fn report(instance: &str, observed: Vec<ObservedProcess>) -> Report {
    Report {
        agent_version: "0.1.0".into(),
        instance_id: instance.into(),
        revision: None,
        observed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_route_refuses_hostile_input_and_accepts_a_peer() {
    let h = Harness::start().await;
    assert_eq!(h.gw().peer_addr(), None);
    hostile_input_and_a_peer(&h, h.addr).await;
    h.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_listener_alone_serves_the_replica_route_with_the_same_bounds() {
    let h = Harness::start_with(|s| s.peer_addr = Some(([127, 0, 0, 1], 0).into())).await;
    let peer = h.gw().peer_addr().expect("a peer listener");
    assert_ne!(peer, h.addr);
    // The device listener: the replica route is an unknown route, even correctly signed.
    let ring = MasterKeyRing::from(h.master.clone());
    let body = br#"{"reports":[]}"#;
    let headers = signed(&ring, body, &generate_nonce());
    let r = raw_request(h.addr, &build_request("POST", FORWARD_PATH, &headers, body))
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    // ... and the same signed request is accepted on the peer listener.
    let r = raw_request(peer, &build_request("POST", FORWARD_PATH, &headers, body))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The peer listener serves nothing else: no device API, no metrics.
    let dev = h.device("dev-x");
    let path = dev.desired_path();
    let auth = auth_headers(&dev.key, "GET", &path, b"", unix_now(), &generate_nonce());
    for (method, path, headers) in [
        ("GET", path.as_str(), auth),
        ("GET", "/metrics", vec![]),
        ("GET", "/healthz", vec![]),
    ] {
        let r = raw_request(peer, &build_request(method, path, &headers, b""))
            .await
            .unwrap();
        assert_eq!(r.status, 404, "{method} {path} on the peer listener");
    }
    // Pre-authentication bounds: a head over the 8 KiB buffer is refused...
    let huge = format!(
        "POST {FORWARD_PATH} HTTP/1.1\r\nHost: gw\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(apollo_gateway::limits::HEAD_BUFFER)
    );
    let r = raw_request(peer, huge.as_bytes()).await.unwrap();
    assert_eq!(r.status, 431);
    // ... and a head never finished is cut at the header timeout (800 ms in these tests).
    let mut slow = tokio::net::TcpStream::connect(peer).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    slow.write_all(b"POST /v1/replicas/reports HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "an unfinished head keeps the connection open"
    );
    // The whole hostile-input suite, on the peer listener.
    hostile_input_and_a_peer(&h, peer).await;
    h.env.cleanup().await;
}

/// Hostile batches refused, a valid one accepted and applied, on the listener at `addr`.
async fn hostile_input_and_a_peer(h: &Harness, addr: std::net::SocketAddr) {
    let ring = MasterKeyRing::from(h.master.clone());
    let dp = h.create_dp("dp-fw", "dev-fw", "x").await;
    let hash = apollo_api::spec_hash(&dp.spec);

    // No credentials, a large declared body never sent: 401 at once, nothing read.
    let started = Instant::now();
    let mut req = format!(
        "POST {FORWARD_PATH} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(b"{");
    let r = raw_request(addr, &req).await.unwrap();
    assert_eq!(r.status, 401);
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "answered before the body"
    );

    // A device's credentials are not a replica's.
    let body = br#"{"reports":[]}"#;
    let dev = auth_headers(
        &h.master.derive("dev-fw"),
        "POST",
        FORWARD_PATH,
        body,
        unix_now(),
        &generate_nonce(),
    );
    let r = raw_request(addr, &build_request("POST", FORWARD_PATH, &dev, body))
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    // Wrong method.
    let r = raw_request(addr, &build_request("GET", FORWARD_PATH, &[], b""))
        .await
        .unwrap();
    assert_eq!(r.status, 405);

    // Signed, but over the size limit (by Content-Length): 413 unread.
    let big = vec![b' '; apollo_gateway::forward::MAX_FORWARD_BODY + 1];
    let r = raw_request(
        addr,
        &build_request(
            "POST",
            FORWARD_PATH,
            &signed(&ring, &big, &generate_nonce()),
            &big,
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413);

    // Signed for another body: 401.
    let r = raw_request(
        addr,
        &build_request(
            "POST",
            FORWARD_PATH,
            &signed(&ring, b"{\"reports\":[]} ", &generate_nonce()),
            body,
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);

    // Too many reports in one batch: 400.
    let many = Batch {
        reports: (0..=MAX_BATCH)
            .map(|i| Forwarded {
                device: format!("d{i}"),
                age_ms: 0,
                report: report("i", vec![]),
            })
            .collect(),
    };
    let many = serde_json::to_vec(&many).unwrap();
    let r = raw_request(
        addr,
        &build_request(
            "POST",
            FORWARD_PATH,
            &signed(&ring, &many, &generate_nonce()),
            &many,
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);

    // A valid batch: the bad entry is skipped, the good one reaches liveness and status.
    let batch = Batch {
        reports: vec![
            Forwarded {
                device: "Not A Device".into(),
                age_ms: 0,
                report: report("x", vec![]),
            },
            Forwarded {
                device: "dev-fw".into(),
                age_ms: 20,
                report: report(
                    "fw-instance",
                    vec![ObservedProcess {
                        name: "dp-fw".into(),
                        spec_hash: hash.clone(),
                        generation: Some(1),
                    }],
                ),
            },
        ],
    };
    let body = serde_json::to_vec(&batch).unwrap();
    let nonce = generate_nonce();
    let headers = signed(&ring, &body, &nonce);
    let r = raw_request(addr, &build_request("POST", FORWARD_PATH, &headers, &body))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["accepted"], 1);
    h.wait_status(
        "dp-fw",
        "connected by a forwarded report",
        Duration::from_secs(10),
        |dp| {
            cond_status(dp, "AgentConnected").as_deref() == Some("True")
                && dp
                    .status
                    .as_ref()
                    .and_then(|s| s.agent.as_ref())
                    .map(|a| a.instance_id.as_str())
                    == Some("fw-instance")
        },
    )
    .await;
    // The same request again: a replay.
    let r = raw_request(addr, &build_request("POST", FORWARD_PATH, &headers, &body))
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let metrics = h.gw().metrics().encode();
    assert!(
        metrics.contains("apollo_gateway_forwarded_reports_total{result=\"received\"} 1"),
        "{metrics}"
    );
}

/// Membership has its own API client (its own connection pool): with every request of the
/// main client hanging (its API server address is a socket that accepts and never answers),
/// the Lease is still renewed round after round and the write fence holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewals_proceed_while_every_main_client_request_hangs() {
    use k8s_openapi::api::coordination::v1::Lease;
    let mut h = Harness::start().await;
    h.stop_gateway().await;
    if h.skip_on_real_cluster("rewrites the in-process cluster's kubeconfig") {
        return;
    }
    // A black hole: accepts connections, holds them, never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hole.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let kubeconfig = h
        .env
        .dev()
        .unwrap()
        .kubeconfig(apollo_devcluster::User::Gateway);
    let (text, server) = common::kubeconfig_server(&kubeconfig);
    let dir = tempfile::tempdir().unwrap();
    let hung = dir.path().join("hung.kubeconfig");
    std::fs::write(
        &hung,
        text.replace(&server, &format!("https://{hole_addr}")),
    )
    .unwrap();
    let clients = apollo_gateway::kubeapi::Clients {
        api: apollo_gateway::kubeapi::client(Some(hung.to_str().unwrap()))
            .await
            .unwrap(),
        membership: apollo_gateway::kubeapi::client(Some(kubeconfig.to_str().unwrap()))
            .await
            .unwrap(),
    };
    let mut s = settings(&h.master, h.env.namespace());
    s.id = Some("gw-hung".into());
    s.lease_duration = Duration::from_secs(1);
    let gw = apollo_gateway::Gateway::start(s, clients).await.unwrap();
    let leases: kube::Api<Lease> = kube::Api::namespaced(h.env.admin().await, h.env.namespace());
    let name = apollo_gateway::membership::MembershipConfig::lease_name("gw-hung");
    let renewals = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    wait_until(
        "three renewals of the Lease while the main client hangs",
        Duration::from_secs(10),
        || {
            let (leases, name, renewals) = (leases.clone(), name.clone(), renewals.clone());
            async move {
                if let Ok(Some(l)) = leases.get_opt(&name).await
                    && let Some(t) = l.spec.and_then(|s| s.renew_time)
                {
                    renewals.lock().unwrap().insert(t.0.to_string());
                }
                renewals.lock().unwrap().len() >= 3
            }
        },
    )
    .await;
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the main client never tried: the test would prove nothing"
    );
    assert!(
        !gw.is_ready(),
        "the watch cannot have synced through the black hole"
    );
    assert!(
        gw.ownership().write_deadline().is_some(),
        "the write fence lapsed"
    );
    gw.shutdown().await;
    holder.abort();
    h.env.cleanup().await;
}
