//! Floods of unauthenticated traffic: unfinished request heads, partial bodies on reports and
//! bodies on GETs, from many connections of one address, while a legitimate device (another
//! address) keeps being served. Memory is measured as the RSS of this process (the gateway runs
//! in it) before and during the flood; the bounds are generous (no timing asserts) and sit far
//! below what the same flood cost before the limits (≈ 400 KiB per unfinished head, 64 KiB per
//! partial body).

#[path = "it/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const T: Duration = Duration::from_secs(20);

/// The tests of this file measure the RSS of their process, so they run one at a time even
/// where one process runs several tests at once (`cargo test`; nextest gives each its own
/// process anyway): another test's connections would count as this one's.
/// (An async lock: each test has a runtime of its own, and the guard is held across awaits.)
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// A connection from `source` (another loopback address than the legitimate device's).
async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// Writes as much of `bytes` as the peer takes (errors: the gateway closed it) and keeps the
/// connection open.
async fn push(mut stream: TcpStream, bytes: std::sync::Arc<Vec<u8>>) -> TcpStream {
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&bytes)).await;
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_floods_stay_bounded() {
    let _alone = ALONE.lock().await;
    const CONNECTIONS: usize = 300;
    let mut h = Harness::start_with(|s| {
        // Long enough that the flood is held while it is measured.
        s.header_timeout = Duration::from_secs(30);
        s.body_timeout = Duration::from_secs(30);
        s.max_connections_per_address = 2 * CONNECTIONS + 10;
        s.unauthenticated_body_budget = 1024 * 1024;
    })
    .await;
    h.create_dp("dp-legit", "dev-legit", "x").await;
    let legit = h.device("dev-legit");
    assert_eq!(legit.get(None, None).await.status, 200);
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let addr = h.addr;
    let before = rss_bytes();

    // Unfinished heads of 100 KiB each (hyper's default buffer took up to ~400 KiB; the head
    // limit cuts them at 8 KiB).
    let mut head = b"GET /v1/devices/dev-legit/desired HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    head.resize(100 * 1024, b'a');
    // Partial report bodies: 60 KiB declared, 40 KiB sent.
    let body_head = |len: usize| {
        format!(
            "POST /v1/devices/dev-legit/report HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
        .into_bytes()
    };
    let mut partial = body_head(60 * 1024);
    partial.resize(partial.len() + 40 * 1024, b' ');
    // Shared, so the client side adds no copies of its own to the measurement.
    let head = std::sync::Arc::new(head);
    let partial = std::sync::Arc::new(partial);
    let mut tasks = Vec::new();
    for i in 0..CONNECTIONS {
        let bytes = if i % 2 == 0 {
            head.clone()
        } else {
            partial.clone()
        };
        tasks.push(tokio::spawn(async move {
            match connect_from(attacker, addr).await {
                Ok(s) => Some(push(s, bytes).await),
                Err(_) => None,
            }
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        if let Some(s) = t.await.unwrap() {
            held.push(s);
        }
    }
    // A GET with a body is refused without being read.
    let mut get_body =
        b"GET /v1/devices/dev-legit/desired HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"
            .to_vec();
    get_body.resize(get_body.len() + 1000, b'x');
    let mut s = connect_from(attacker, addr).await.unwrap();
    s.write_all(&get_body).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(T, s.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // The legitimate device is served throughout (reports too: the flood holds at most the
    // body budget, and a full budget answers 503, never waits).
    for i in 0..5 {
        assert_eq!(legit.get(None, None).await.status, 200, "GET {i}");
        let r = legit.report(&format!("legit-{i}"), &[]).await;
        assert!(matches!(r.status, 200 | 503), "report {i}: {}", r.status);
    }
    let mut peak = 0;
    for _ in 0..10 {
        peak = peak.max(rss_bytes());
        assert_eq!(legit.get(None, None).await.status, 200);
    }
    let grown = peak.saturating_sub(before);
    eprintln!(
        "RSS before {} KiB, peak during the flood {} KiB (+{} KiB for {} connections held)",
        before / 1024,
        peak / 1024,
        grown / 1024,
        held.len()
    );
    // Before the limits this flood held ≈ 150 × 100 KiB + 150 × 40 KiB ≈ 21 MiB in buffers
    // alone; now ≤ 150 × 8 KiB heads + 1 MiB of bodies, plus per-connection state.
    assert!(
        grown < 12 * 1024 * 1024,
        "RSS grew by {} KiB during the flood",
        grown / 1024
    );
    drop(held);
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// One address cannot hold more than its share of connections; others are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_address() {
    let _alone = ALONE.lock().await;
    let mut h = Harness::start_with(|s| {
        s.header_timeout = Duration::from_secs(30);
        s.max_connections_per_address = 20;
    })
    .await;
    h.create_dp("dp-legit", "dev-legit", "x").await;
    let legit = h.device("dev-legit");
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut idle = Vec::new();
    for _ in 0..40 {
        let mut s = connect_from(attacker, h.addr).await.unwrap();
        let _ = s.write_all(b"GET /v1/devices/x/desired HTTP/1.1\r\n").await;
        idle.push(s);
    }
    // Over the cap: closed at once by the gateway (a read sees the end of the stream).
    let mut closed = vec![false; idle.len()];
    wait_until("20 connections closed", T, || {
        for (s, c) in idle.iter().zip(closed.iter_mut()) {
            let mut buf = [0u8; 64];
            match s.try_read(&mut buf) {
                Ok(0) => *c = true,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => *c = true,
                _ => {}
            }
        }
        let n = closed.iter().filter(|c| **c).count();
        async move { n >= 20 }
    })
    .await;
    assert_eq!(
        closed.iter().filter(|c| **c).count(),
        20,
        "exactly the connections past the cap of 20 are closed"
    );
    // Another address is served meanwhile.
    assert_eq!(legit.get(None, None).await.status, 200);
    drop(idle);
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// What one held, unauthenticated connection costs (an unfinished head just under the head
/// buffer): within the per-connection budget the `--max-connections` default is computed with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_cost_is_within_the_budget() {
    let _alone = ALONE.lock().await;
    const CONNECTIONS: usize = 400;
    let mut h = Harness::start_with(|s| {
        s.header_timeout = Duration::from_secs(30);
        s.max_connections_per_address = CONNECTIONS + 10;
    })
    .await;
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
    let mut head = b"GET /v1/devices/d/desired HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    head.resize(7 * 1024, b'a');
    let head = std::sync::Arc::new(head);
    // Warm up (runtime, allocator arenas) with a few connections first.
    let mut held = Vec::new();
    for _ in 0..10 {
        let s = connect_from(attacker, h.addr).await.unwrap();
        held.push(push(s, head.clone()).await);
    }
    let legit = h.device("dev-any");
    assert_eq!(legit.get(None, None).await.status, 200);
    let before = rss_bytes();
    for _ in 0..CONNECTIONS {
        let s = connect_from(attacker, h.addr).await.unwrap();
        held.push(push(s, head.clone()).await);
    }
    // Every connection is open (nothing answered or closed) once a request behind them is served.
    assert_eq!(legit.get(None, None).await.status, 200);
    let mut peak = 0;
    for _ in 0..10 {
        peak = peak.max(rss_bytes());
        assert_eq!(legit.get(None, None).await.status, 200);
    }
    for s in &held {
        let mut buf = [0u8; 16];
        assert!(
            matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "held connections stay open"
        );
    }
    let per_connection = peak.saturating_sub(before) / CONNECTIONS as u64;
    eprintln!(
        "{} B per held connection ({} connections, budget {} B)",
        per_connection,
        CONNECTIONS,
        apollo_gateway::limits::CONNECTION_COST
    );
    assert!(
        per_connection <= apollo_gateway::limits::CONNECTION_COST,
        "{per_connection} B per held connection is over the budget"
    );
    drop(held);
    h.stop_gateway().await;
    h.env.cleanup().await;
}
