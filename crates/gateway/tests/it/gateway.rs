//! End-to-end tests of the gateway over real HTTP on 127.0.0.1, against the development API
//! server, with the gateway running under its own ServiceAccount and `k8s/rbac/gateway.yaml`.

use crate::common;

use std::time::Duration;

use apollo_api::conditions::{AGENT_CONNECTED, SPEC_OBSERVED};
use apollo_api::{Phase, spec_hash};
use apollo_protocol::wire::{DesiredDocument, ReportAck};
use common::*;

const T: Duration = Duration::from_secs(20);

fn connected(dp: &apollo_api::DeviceProcess) -> bool {
    cond_status(dp, AGENT_CONNECTED).as_deref() == Some("True")
}

fn observed(dp: &apollo_api::DeviceProcess) -> bool {
    let want = spec_hash(&dp.spec);
    dp.status.as_ref().is_some_and(|s| {
        s.phase == Some(Phase::Pending)
            && s.observed_spec_hash.as_deref() == Some(want.as_str())
            && s.is_true(AGENT_CONNECTED)
            && s.is_true(SPEC_OBSERVED)
    })
}

/// The runbook: two DeviceProcesses, two agents, 304s, a spec change, a quiet period without
/// writes, a stale agent with exactly one Warning, and a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_flow() {
    let mut h = Harness::start().await;
    h.create_dp("demo-logger-tor1-01", "tor1-01", "hello").await;
    h.create_dp("demo-logger-tor1-02", "tor1-02", "hello").await;
    // Before any agent: Pending, never connected.
    h.wait_status("demo-logger-tor1-01", "Pending/Unknown", T, |dp| {
        dp.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Pending))
            && cond_status(dp, AGENT_CONNECTED).as_deref() == Some("Unknown")
    })
    .await;

    let a1 = RunningAgent::start(&h.base_url(), h.master.derive("tor1-01"));
    let a2 = RunningAgent::start(&h.base_url(), h.master.derive("tor1-02"));
    let started = tokio::time::Instant::now();
    for name in ["demo-logger-tor1-01", "demo-logger-tor1-02"] {
        h.wait_status(name, "connected and observed", T, observed)
            .await;
    }
    let dp1 = h.get_dp("demo-logger-tor1-01").await;
    let status = dp1.status.clone().unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status.agent.as_ref().unwrap().instance_id,
        a1.agent.instance_id()
    );
    eprintln!("status within {:?} of agent start", started.elapsed());
    for name in ["demo-logger-tor1-01", "demo-logger-tor1-02"] {
        assert_eq!(h.events(name, "AgentConnected").await.len(), 1, "{name}");
    }
    wait_until("SpecObserved events", T, || async {
        h.events("demo-logger-tor1-01", "SpecObserved").await.len() == 1
    })
    .await;

    // A GET with the ETag is a 304; the document lists the DeviceProcess with its hash.
    let dev = h.device("tor1-01");
    let first = dev.get(None, None).await;
    assert_eq!(first.status, 200);
    let doc: DesiredDocument = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(doc.processes.len(), 1);
    assert_eq!(doc.processes[0].spec_hash, spec_hash(&dp1.spec));
    let etag = first.header("etag").unwrap().to_string();
    let second = dev.get(Some(&etag), None).await;
    assert_eq!(second.status, 304);
    assert!(second.body.is_empty());

    // Spec change: the new hash is observed.
    let changed = h.set_arg("demo-logger-tor1-01", "updated").await;
    let new_hash = spec_hash(&changed.spec);
    h.wait_status("demo-logger-tor1-01", "new hash observed", T, |dp| {
        observed(dp)
            && dp.status.as_ref().unwrap().observed_spec_hash.as_deref() == Some(new_hash.as_str())
            && dp.status.as_ref().unwrap().observed_generation == Some(2)
    })
    .await;
    let third = dev.get(Some(&etag), None).await;
    assert_eq!(third.status, 200, "old ETag no longer matches");

    // Quiet period: heartbeats only, no status writes at all.
    wait_until("status writes drained", T, || async {
        h.gw().status().converged() && h.gw().status().pending() == 0
    })
    .await;
    let before = h.status_patches();
    let attempted_before = h.gateway_writes();
    let heartbeats_before = h.gw().metrics().encode();
    tokio::time::sleep(HEARTBEAT * 8).await;
    assert_eq!(
        h.status_patches(),
        before,
        "no status writes while only heartbeats arrive"
    );
    assert_eq!(h.gateway_writes(), attempted_before);
    assert_ne!(
        h.gw().metrics().encode(),
        heartbeats_before,
        "requests kept flowing"
    );

    // Agent 2 stops: AgentConnected=False after the window, exactly one Warning even after
    // three windows.
    let stopped_at = tokio::time::Instant::now();
    a2.stop().await;
    h.wait_status("demo-logger-tor1-02", "stale", T, |dp| {
        cond_status(dp, AGENT_CONNECTED).as_deref() == Some("False")
    })
    .await;
    let took = stopped_at.elapsed();
    // Silence counts from the agent's last report, at most one heartbeat before the stop.
    assert!(
        took >= STALE - HEARTBEAT,
        "not stale before the window ({took:?})"
    );
    eprintln!("stale after {took:?}");
    tokio::time::sleep(STALE * 3).await;
    assert_eq!(h.events("demo-logger-tor1-02", "AgentStale").await.len(), 1);
    assert!(
        h.events("demo-logger-tor1-01", "AgentStale")
            .await
            .is_empty()
    );
    let dp2 = h.get_dp("demo-logger-tor1-02").await;
    let c = dp2
        .status
        .as_ref()
        .unwrap()
        .condition(AGENT_CONNECTED)
        .unwrap();
    assert_eq!(c.reason, "HeartbeatMissed");
    // The other device stays connected.
    assert!(connected(&h.get_dp("demo-logger-tor1-01").await));

    // Restarted with no desired change: True again, with a Normal event.
    let a2b = RunningAgent::start(&h.base_url(), h.master.derive("tor1-02"));
    h.wait_status("demo-logger-tor1-02", "reconnected", T, observed)
        .await;
    wait_until("AgentReconnected event", T, || async {
        h.events("demo-logger-tor1-02", "AgentReconnected")
            .await
            .len()
            == 1
    })
    .await;
    assert_eq!(h.events("demo-logger-tor1-02", "AgentStale").await.len(), 1);

    // One list of DeviceProcesses for the whole run, whatever the device traffic.
    if let Some(dev) = h.env.dev() {
        let list = dev.requests().count(
            Some(&h.gateway_user()),
            Some("list"),
            Some("deviceprocesses"),
            None,
        );
        assert_eq!(list, 1, "{:?}", dev.requests());
    }
    let metrics = h.gw().metrics().encode();
    assert!(
        metrics.contains("apollo_gateway_api_requests_total{verb=\"list\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("apollo_gateway_stale_transitions_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("apollo_gateway_connected_devices 2"),
        "{metrics}"
    );

    a1.stop().await;
    a2b.stop().await;
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// A gateway restart: live agents neither flap nor cause events, their next GET is a 304; an
/// agent that died meanwhile goes stale one window after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_restart_keeps_status_and_etags() {
    let mut h = Harness::start().await;
    h.create_dp("dp-a", "dev-a", "x").await;
    h.create_dp("dp-b", "dev-b", "x").await;
    let agent_a = RunningAgent::start(&h.base_url(), h.master.derive("dev-a"));
    let agent_b = RunningAgent::start(&h.base_url(), h.master.derive("dev-b"));
    h.wait_status("dp-a", "observed", T, observed).await;
    h.wait_status("dp-b", "observed", T, observed).await;
    wait_until("converged", T, || async { h.gw().status().converged() }).await;
    let etag_before = h.device("dev-a").etag().await;
    let dp_a_before = h.get_dp("dp-a").await;
    let patches_before = h.status_patches();
    let documents_before = agent_a.agent.subscribe().borrow().documents;

    // Agent b dies while the gateway is down.
    let addr = h.addr;
    h.stop_gateway().await;
    agent_b.stop().await;
    let restarted = tokio::time::Instant::now();
    h.start_gateway(Some(addr)).await;

    // Agent a reconnects and gets 304s: no new document adopted.
    let acked = agent_a.agent.subscribe().borrow().reports_acked;
    wait_until("agent a reports to the new gateway", T, || async {
        agent_a.agent.subscribe().borrow().reports_acked > acked + 2
    })
    .await;
    assert_eq!(
        agent_a.agent.subscribe().borrow().documents,
        documents_before
    );
    let m = h.gw().metrics().encode();
    assert!(
        !m.contains("apollo_gateway_http_requests_total{route=\"desired\",code=\"200\"}"),
        "no 200 for desired after the restart:\n{m}"
    );
    // The agent's first long poll on the new gateway ends with a 304 (nothing changed).
    wait_until("agent a gets a 304", T, || async {
        h.gw()
            .metrics()
            .encode()
            .contains("apollo_gateway_http_requests_total{route=\"desired\",code=\"304\"}")
    })
    .await;
    assert_eq!(
        agent_a.agent.subscribe().borrow().documents,
        documents_before
    );
    assert!(
        !h.gw()
            .metrics()
            .encode()
            .contains("apollo_gateway_http_requests_total{route=\"desired\",code=\"200\"}")
    );
    assert_eq!(
        h.device("dev-a").get(Some(&etag_before), None).await.status,
        304,
        "ETags survive restarts"
    );

    // Agent b goes stale one window after the restart; a never flaps.
    h.wait_status("dp-b", "stale after restart", T, |dp| {
        cond_status(dp, AGENT_CONNECTED).as_deref() == Some("False")
    })
    .await;
    assert!(restarted.elapsed() >= STALE);
    let dp_a_after = h.get_dp("dp-a").await;
    assert_eq!(
        dp_a_after
            .status
            .as_ref()
            .unwrap()
            .condition(AGENT_CONNECTED),
        dp_a_before
            .status
            .as_ref()
            .unwrap()
            .condition(AGENT_CONNECTED),
        "no flap, same lastTransitionTime"
    );
    assert_eq!(dp_a_after.status, dp_a_before.status);
    assert_eq!(h.events("dp-a", "AgentConnected").await.len(), 1);
    assert!(h.events("dp-a", "AgentReconnected").await.is_empty());
    assert!(h.events("dp-a", "AgentStale").await.is_empty());
    assert_eq!(h.events("dp-b", "AgentStale").await.len(), 1);
    // The only status write after the restart is b's stale transition.
    wait_until("converged", T, || async { h.gw().status().converged() }).await;
    assert_eq!(h.status_patches(), patches_before.map(|n| n + 1));

    agent_a.stop().await;
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// An API outage while agents report: the gateway keeps serving, and once the API server is
/// back the status converges to the last reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_converges_to_last_reports() {
    let h = Harness::start().await;
    h.create_dp("dp-1", "dev-1", "x").await;
    h.create_dp("dp-2", "dev-2", "x").await;
    let agent1 = RunningAgent::start(&h.base_url(), h.master.derive("dev-1"));
    let agent2 = RunningAgent::start(&h.base_url(), h.master.derive("dev-2"));
    h.wait_status("dp-1", "observed", T, observed).await;
    h.wait_status("dp-2", "observed", T, observed).await;

    if h.skip_on_real_cluster("needs fault injection") {
        return;
    }
    let faults = h.env.dev().unwrap().faults();
    faults.fail_share(1.0, 503);
    faults.drop_watches();
    // During the outage: agent 1 restarts (new instance), agent 2 dies.
    agent1.stop().await;
    let agent1b = RunningAgent::start(&h.base_url(), h.master.derive("dev-1"));
    agent2.stop().await;
    let new_instance = agent1b.agent.instance_id().to_string();
    wait_until("device 2 stale in memory", T, || async {
        h.gw().liveness().get("dev-2").is_some_and(|a| a.stale)
    })
    .await;
    wait_until("agent 1b acked", T, || async {
        agent1b.agent.subscribe().borrow().reports_acked > 0
    })
    .await;
    // Writes are failing but the gateway keeps serving devices.
    let m = h.gw().metrics();
    wait_until("failed writes counted", T, || async {
        m.status_writes_of("error") > 0
    })
    .await;
    let dev = h.device("dev-1");
    assert_eq!(dev.get(None, None).await.status, 200);
    let health = raw_request(h.metrics_addr, &build_request("GET", "/healthz", &[], b""))
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    faults.clear();
    h.wait_status("dp-1", "new instance recorded", T, |dp| {
        observed(dp)
            && dp
                .status
                .as_ref()
                .unwrap()
                .agent
                .as_ref()
                .map(|a| a.instance_id.as_str())
                == Some(new_instance.as_str())
    })
    .await;
    h.wait_status("dp-2", "stale recorded", T, |dp| {
        cond_status(dp, AGENT_CONNECTED).as_deref() == Some("False")
    })
    .await;
    wait_until("converged", T, || async { h.gw().status().converged() }).await;
    // Events of the outage arrive once the API server is back.
    wait_until("stale event", T, || async {
        h.events("dp-2", "AgentStale").await.len() == 1
    })
    .await;

    agent1b.stop().await;
    let mut h = h;
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// Authentication failures: every one the same 401 (status, body, headers), the reason counted
/// only on the metrics listener, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_change_nothing() {
    use apollo_protocol::auth::{generate_nonce, unix_now};
    use apollo_protocol::keys::MasterKey;

    let mut h = Harness::start().await;
    h.create_dp("dp-auth", "dev-auth", "x").await;
    h.wait_status("dp-auth", "initial status", T, |dp| {
        cond_status(dp, AGENT_CONNECTED).as_deref() == Some("Unknown")
    })
    .await;
    wait_until("converged", T, || async { h.gw().status().converged() }).await;
    let patches = h.status_patches();
    let dev = h.device("dev-auth");
    let report_pq = dev.report_path();
    let body = br#"{"agentVersion":"x","instanceId":"evil","observed":[]}"#.to_vec();
    let json_ct = ("Content-Type".to_string(), "application/json".to_string());
    let send = |headers: Vec<(String, String)>, body: Vec<u8>| {
        let addr = h.addr;
        let pq = report_pq.clone();
        async move {
            raw_request(addr, &build_request("POST", &pq, &headers, &body))
                .await
                .unwrap()
        }
    };
    let now = unix_now();
    let signed = |key: &apollo_protocol::keys::DeviceKey, ts: i64, nonce: &str, b: &[u8]| {
        let mut hs = auth_headers(key, "POST", &report_pq, b, ts, nonce);
        hs.push(json_ct.clone());
        hs
    };

    // Every failure answers exactly this (but for the Date header).
    let same = |r: &HttpResp| {
        let mut headers: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("date"))
            .cloned()
            .collect();
        headers.sort();
        (r.status, headers, r.body.clone())
    };
    let reference = send(vec![json_ct.clone()], body.clone()).await;
    assert_eq!(reference.status, 401);
    assert_eq!(
        reference.json()["error"]["message"],
        "authentication failed"
    );
    let reference = same(&reference);
    // Wrong master key.
    let other_master = MasterKey::new("ktest", [9; 32]).unwrap();
    let r = send(
        signed(
            &other_master.derive("dev-auth"),
            now,
            &generate_nonce(),
            &body,
        ),
        body.clone(),
    )
    .await;
    assert_eq!(same(&r), reference);
    assert!(r.header("x-apollo-signature").is_none());
    // Another device's (valid) key on this device's path.
    let r = send(
        signed(&h.master.derive("dev-other"), now, &generate_nonce(), &body),
        body.clone(),
    )
    .await;
    assert_eq!(same(&r), reference);
    // Expired timestamp.
    let r = send(
        signed(&dev.key, now - 3600, &generate_nonce(), &body),
        body.clone(),
    )
    .await;
    assert_eq!(same(&r), reference);
    // Tampered body.
    let mut tampered = body.clone();
    tampered[20] ^= 1;
    let r = send(signed(&dev.key, now, &generate_nonce(), &body), tampered).await;
    assert_eq!(same(&r), reference);
    // Missing header.
    let mut hs = signed(&dev.key, now, &generate_nonce(), &body);
    hs.retain(|(k, _)| !k.eq_ignore_ascii_case("x-apollo-nonce"));
    let r = send(hs, body.clone()).await;
    assert_eq!(same(&r), reference);
    // Unknown key id.
    let unknown = MasterKey::new("knope", [7; 32]).unwrap();
    let r = send(
        signed(&unknown.derive("dev-auth"), now, &generate_nonce(), &body),
        body.clone(),
    )
    .await;
    assert_eq!(same(&r), reference);
    // Replay: the first use is accepted, the same request again is refused.
    let nonce = generate_nonce();
    let desired_pq = dev.desired_path();
    let hs = auth_headers(&dev.key, "GET", &desired_pq, b"", now, &nonce);
    let req = build_request("GET", &desired_pq, &hs, b"");
    assert_eq!(raw_request(h.addr, &req).await.unwrap().status, 200);
    let again = raw_request(h.addr, &req).await.unwrap();
    assert_eq!(again.status, 401);
    assert_eq!(
        again.body, reference.2,
        "a replay reads like any other failure"
    );
    // The device listener serves nothing but the device API: no metrics oracle there.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = raw_request(h.addr, &build_request("GET", path, &[], b""))
            .await
            .unwrap();
        assert_eq!(r.status, 404, "{path} on the device listener");
    }

    // Nothing changed: no agent, no status write, no event.
    assert!(h.gw().liveness().get("dev-auth").is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.status_patches(), patches);
    assert_eq!(
        cond_status(&h.get_dp("dp-auth").await, AGENT_CONNECTED).as_deref(),
        Some("Unknown")
    );
    // The reasons are counted on the metrics listener.
    let m = raw_request(h.metrics_addr, &build_request("GET", "/metrics", &[], b""))
        .await
        .unwrap();
    assert_eq!(m.status, 200);
    let m = String::from_utf8_lossy(&m.body).to_string();
    for reason in [
        "bad_signature",
        "wrong_device",
        "skew",
        "missing",
        "unknown_key",
        "replay",
    ] {
        assert!(
            m.contains(&format!(
                "apollo_gateway_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason} in\n{m}"
        );
    }

    // A good report works, and its signed answer carries the revision and heartbeat. A
    // device cannot speak for another device's DeviceProcess by naming it.
    let victim = h.create_dp("dp-victim", "dev-victim", "x").await;
    let victim_hash = spec_hash(&victim.spec);
    let ok = dev.report("good", &[("dp-victim", &victim_hash)]).await;
    assert_eq!(ok.status, 200);
    let ack: ReportAck = serde_json::from_slice(&ok.body).unwrap();
    assert_eq!(ack.heartbeat_interval_ms, HEARTBEAT.as_millis() as u64);
    let doc = dev.get(None, None).await;
    let doc: DesiredDocument = serde_json::from_slice(&doc.body).unwrap();
    assert_eq!(ack.revision, doc.revision);
    h.wait_status("dp-auth", "connected", T, connected).await;
    h.wait_status("dp-victim", "initial status", T, |dp| {
        cond_status(dp, AGENT_CONNECTED).as_deref() == Some("Unknown")
    })
    .await;
    wait_until("converged", T, || async { h.gw().status().converged() }).await;
    let v = h.get_dp("dp-victim").await;
    assert_eq!(cond_status(&v, AGENT_CONNECTED).as_deref(), Some("Unknown"));
    assert!(v.status.unwrap().observed_spec_hash.is_none());
    // A tampered response does not verify with the device key.
    let nonce = generate_nonce();
    let hs = auth_headers(&dev.key, "GET", &desired_pq, b"", unix_now(), &nonce);
    let resp = raw_request(h.addr, &build_request("GET", &desired_pq, &hs, b""))
        .await
        .unwrap();
    let mut body = resp.body.clone();
    body[5] ^= 1;
    assert!(
        apollo_protocol::auth::verify_response(
            &dev.key,
            resp.status,
            &nonce,
            resp.header("etag"),
            &body,
            resp.header("x-apollo-signature"),
        )
        .is_err()
    );
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// Bad input gets its documented error, and the gateway keeps serving others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_table() {
    use tokio::io::AsyncWriteExt;

    let mut h = Harness::start().await;
    h.create_dp("dp-in", "dev-in", "x").await;
    let dev = h.device("dev-in");
    let addr = h.addr;

    // A slow client: headers never finished; another holds a body half-sent.
    let mut slow_headers = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow_headers
        .write_all(b"GET /v1/devices/dev-in/desired HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut slow_body = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = br#"{"agentVersion":"x","instanceId":"i","observed":[]}"#;
    let mut hs = auth_headers(
        &dev.key,
        "POST",
        &dev.report_path(),
        body,
        apollo_protocol::auth::unix_now(),
        &apollo_protocol::auth::generate_nonce(),
    );
    hs.push(("Content-Type".into(), "application/json".into()));
    let req = build_request("POST", &dev.report_path(), &hs, body);
    slow_body.write_all(&req[..req.len() - 10]).await.unwrap();

    // Meanwhile everything else is served.
    let report = |ct: &'static str, body: Vec<u8>| {
        let key = dev.key.clone();
        let pq = dev.report_path();
        async move {
            let mut hs = auth_headers(
                &key,
                "POST",
                &pq,
                &body,
                apollo_protocol::auth::unix_now(),
                &apollo_protocol::auth::generate_nonce(),
            );
            hs.push(("Content-Type".into(), ct.into()));
            raw_request(addr, &build_request("POST", &pq, &hs, &body))
                .await
                .unwrap()
        }
    };
    let cases: Vec<(&str, HttpResp, u16)> = vec![
        (
            "malformed JSON",
            report("application/json", b"{not json".to_vec()).await,
            400,
        ),
        (
            "wrong content type",
            report("text/plain", b"{}".to_vec()).await,
            415,
        ),
        (
            "oversized body",
            report("application/json", vec![b' '; 70 * 1024]).await,
            413,
        ),
        (
            "unknown route",
            raw_request(addr, &build_request("GET", "/v2/nothing", &[], b""))
                .await
                .unwrap(),
            404,
        ),
        (
            "unknown device subroute",
            raw_request(
                addr,
                &build_request("GET", "/v1/devices/dev-in/other", &[], b""),
            )
            .await
            .unwrap(),
            404,
        ),
        (
            "wrong method",
            raw_request(
                addr,
                &build_request("DELETE", &dev.desired_path(), &[], b""),
            )
            .await
            .unwrap(),
            405,
        ),
        (
            "bad device name",
            raw_request(
                addr,
                &build_request("GET", "/v1/devices/Bad_Name/desired", &[], b""),
            )
            .await
            .unwrap(),
            400,
        ),
        (
            "bad device name (dots)",
            raw_request(
                addr,
                &build_request("GET", "/v1/devices/a..b/desired", &[], b""),
            )
            .await
            .unwrap(),
            400,
        ),
        ("bad wait", dev.get(None, Some("soon")).await, 400),
        ("good request", dev.get(None, None).await, 200),
        (
            "GET with a body",
            dev.send("GET", &dev.desired_path(), &[], b"{}").await,
            400,
        ),
        (
            "instance id with an escape sequence and a newline",
            report(
                "application/json",
                br#"{"agentVersion":"1","instanceId":"a[31m
INFO forged","observed":[]}"#
                    .to_vec(),
            )
            .await,
            400,
        ),
        (
            "empty agent version",
            report(
                "application/json",
                br#"{"agentVersion":"","instanceId":"i","observed":[]}"#.to_vec(),
            )
            .await,
            400,
        ),
        (
            "negative observed generation",
            report(
                "application/json",
                br#"{"agentVersion":"1","instanceId":"i","observed":[{"name":"dp-in","specHash":"ab12","generation":-5}]}"#
                    .to_vec(),
            )
            .await,
            400,
        ),
    ];
    for (what, resp, want) in &cases {
        assert_eq!(
            resp.status,
            *want,
            "{what}: {:?}",
            String::from_utf8_lossy(&resp.body)
        );
        if *want != 200 {
            let err = resp.json();
            assert_eq!(err["error"]["code"], *want, "{what}: JSON error body");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{what}"
            );
            assert_eq!(
                resp.header("content-type"),
                Some("application/json"),
                "{what}"
            );
        }
    }
    let wrong_method = &cases[5].1;
    assert_eq!(wrong_method.header("allow"), Some("GET"));
    // The malformed report changed nothing.
    assert!(h.gw().liveness().get("dev-in").is_none());

    // The slow body gets 408; the slow headers get the connection closed.
    let mut buf = Vec::new();
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut slow_body, &mut buf),
    )
    .await
    .expect("slow body answered");
    assert!(n.is_ok());
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut slow_headers, &mut buf),
    )
    .await;
    assert!(
        closed.is_ok(),
        "slow headers: connection closed by the header timeout"
    );

    // Long polls: held until the document changes.
    let first = dev.get(None, None).await;
    let etag = first.header("etag").unwrap().to_string();
    let held = {
        let dev = h.device("dev-in");
        let etag = etag.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let r = dev.get(Some(&etag), Some("10s")).await;
            (r, started.elapsed())
        })
    };
    wait_until("long poll held", T, || async {
        h.gw().metrics().long_polls_held.get() == 1
    })
    .await;
    h.set_arg("dp-in", "changed").await;
    let (resp, took) = held.await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        took < Duration::from_secs(5),
        "woken by the change, took {took:?}"
    );
    assert_ne!(resp.header("etag"), Some(etag.as_str()));
    // A long poll on an unchanged document ends with 304 when the wait ends.
    let etag = resp.header("etag").unwrap().to_string();
    let started = tokio::time::Instant::now();
    let r = dev.get(Some(&etag), Some("500ms")).await;
    assert_eq!(r.status, 304);
    assert!(started.elapsed() >= Duration::from_millis(450));
    // Unassigned devices get an empty document (no existence oracle).
    let nobody = h.device("nobody").get(None, None).await;
    assert_eq!(nobody.status, 200);
    let doc: DesiredDocument = serde_json::from_slice(&nobody.body).unwrap();
    assert!(doc.processes.is_empty());
    // Health endpoints and metrics, on their own listener only.
    for (path, want) in [("/healthz", 200), ("/readyz", 200), ("/metrics", 200)] {
        let r = raw_request(h.metrics_addr, &build_request("GET", path, &[], b""))
            .await
            .unwrap();
        assert_eq!(r.status, want, "{path}");
        let r = raw_request(addr, &build_request("GET", path, &[], b""))
            .await
            .unwrap();
        assert_eq!(r.status, 404, "{path} on the device listener");
    }
    let r = raw_request(
        h.metrics_addr,
        &build_request("GET", &dev.desired_path(), &[], b""),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404, "no device API on the metrics listener");
    let m = raw_request(h.metrics_addr, &build_request("GET", "/metrics", &[], b""))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("apollo_gateway_desired_not_modified_ratio"),
        "{text}"
    );
    assert!(!text.contains("dev-in"), "no per-device labels");

    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// Not ready (503) until the cache has synced; at shutdown held long polls are answered with
/// 304 at once and the gateway stops within its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_graceful_shutdown() {
    use apollo_gateway::Gateway;

    let mut h = Harness::start().await;
    h.create_dp("dp-r", "dev-r", "x").await;
    h.stop_gateway().await;

    // The API server is unreachable when the gateway starts.
    if h.skip_on_real_cluster("needs fault injection") {
        return;
    }
    let clients = h.gateway_clients().await;
    let faults = h.env.dev().unwrap().faults();
    faults.refuse_connections(Duration::from_secs(2));
    let gw = Gateway::start(settings(&h.master, h.env.namespace()), clients)
        .await
        .expect("starts without the API server");
    let addr = gw.local_addr();
    let metrics_addr = gw.metrics_addr();
    let get = |path: &'static str| async move {
        raw_request(metrics_addr, &build_request("GET", path, &[], b""))
            .await
            .unwrap()
    };
    assert_eq!(get("/healthz").await.status, 200);
    let r = get("/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    let dev = TestDevice {
        addr,
        key: h.master.derive("dev-r"),
    };
    assert_eq!(dev.get(None, None).await.status, 503);
    wait_until("ready once the API server is back", T, || async {
        get("/readyz").await.status == 200
    })
    .await;
    let first = dev.get(None, None).await;
    assert_eq!(first.status, 200);
    let doc: DesiredDocument = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(doc.processes.len(), 1);

    // A held long poll is answered with 304 when the gateway shuts down.
    let etag = first.header("etag").unwrap().to_string();
    let held = tokio::spawn(async move {
        let r = dev.get(Some(&etag), Some("60s")).await;
        (r.status, tokio::time::Instant::now())
    });
    wait_until("long poll held", T, || async {
        gw.metrics().long_polls_held.get() == 1
    })
    .await;
    let stopping = tokio::time::Instant::now();
    gw.shutdown().await;
    let stopped = stopping.elapsed();
    let (status, answered) = held.await.unwrap();
    assert_eq!(status, 304);
    assert!(answered.duration_since(stopping) < Duration::from_secs(2));
    assert!(
        stopped < Duration::from_secs(3),
        "shutdown took {stopped:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
    assert!(
        tokio::net::TcpStream::connect(metrics_addr).await.is_err(),
        "metrics listener closed"
    );
    h.env.cleanup().await;
}

/// The connection bound holds further connections in the backlog until one frees up; the
/// long-poll bound answers 429 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_long_poll_limits() {
    use tokio::io::AsyncWriteExt;

    let mut h = Harness::start_with(|s| {
        s.max_connections = 2;
        s.max_long_polls = 1;
    })
    .await;
    h.create_dp("dp-l", "dev-l", "x").await;
    let addr = h.addr;
    // Two idle connections (headers never sent) take both slots.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /v1/devices/x/desired HTTP/1.1\r\n")
            .await
            .unwrap();
        idle.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let r = raw_request(
        addr,
        &build_request("GET", "/v1/devices/x/desired", &[], b""),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401, "answered (unauthenticated)");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "served only once the header timeout freed a slot ({waited:?})"
    );
    drop(idle);

    // One long poll at a time.
    let dev = h.device("dev-l");
    let etag = dev.etag().await;
    let held = {
        let dev = h.device("dev-l");
        let etag = etag.clone();
        tokio::spawn(async move { dev.get(Some(&etag), Some("3s")).await.status })
    };
    wait_until("long poll held", T, || async {
        h.gw().metrics().long_polls_held.get() == 1
    })
    .await;
    let r = dev.get(Some(&etag), Some("3s")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        r.header("x-apollo-signature").is_some(),
        "429 after auth is signed"
    );
    assert_eq!(
        dev.get(Some(&etag), None).await.status,
        304,
        "plain GETs still served"
    );
    assert_eq!(held.await.unwrap(), 304);
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// A man in the middle rewrites the desired document (same length): the agent refuses the
/// response, never adopts it, and so never reports the forged spec as observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_response_is_refused_by_the_agent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut h = Harness::start().await;
    h.create_dp("dp-t", "dev-t", "x").await;
    let upstream = h.addr;
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let tampered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = tampered.clone();
    let proxy_task = tokio::spawn(async move {
        while let Ok((client, _)) = proxy.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                };
                let down = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &mut buf[..n];
                        let needle = b"alpine:3.19";
                        if let Some(i) = chunk.windows(needle.len()).position(|w| w == needle) {
                            chunk[i..i + needle.len()].copy_from_slice(b"evil:666.66");
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        if cw.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::join!(up, down);
            });
        }
    });
    let agent = RunningAgent::start(&format!("http://{proxy_addr}"), h.master.derive("dev-t"));
    let mut state = agent.agent.subscribe();
    wait_until("agent refuses forged documents", T, || {
        let s = state.borrow_and_update().clone();
        async move { s.responses_refused >= 2 }
    })
    .await;
    assert!(tampered.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    // The forged content is never adopted. (The proxy rewrites within one read; a response
    // split across reads right inside the needle passes unmodified and is rightly accepted.)
    let held = agent.agent.subscribe_document().borrow().clone();
    if let Some(held) = &held {
        let text = serde_json::to_string(&held.document).unwrap();
        assert!(!text.contains("evil"), "forged document adopted: {text}");
    }
    // Reports (untampered) get through: connected; nothing forged is ever observed.
    h.wait_status("dp-t", "connected", T, |dp| {
        cond_status(dp, AGENT_CONNECTED).as_deref() == Some("True")
    })
    .await;
    let dp = h.get_dp("dp-t").await;
    let genuine = spec_hash(&dp.spec);
    if let Some(seen) = dp.status.as_ref().unwrap().observed_spec_hash.as_deref() {
        assert_eq!(seen, genuine);
    }
    agent.stop().await;
    proxy_task.abort();
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// Key rotation: with the ring [new, old] both key ids are accepted and each response is
/// signed with the key the request used; after the old key leaves the ring it gets 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_overlap() {
    use apollo_protocol::keys::{MasterKey, MasterKeyRing};

    fn new_key() -> MasterKey {
        MasterKey::new("knew", [8; 32]).unwrap()
    }
    let mut h = Harness::start_with(|s| {
        let old = s.keys.current().clone();
        s.keys = MasterKeyRing::from_keys(vec![new_key(), old]).unwrap();
    })
    .await;
    h.create_dp("dp-k", "dev-k", "x").await;
    let old_dev = h.device("dev-k");
    let new_dev = TestDevice {
        addr: h.addr,
        key: new_key().derive("dev-k"),
    };
    // `send` verifies each 200 with the requesting key.
    assert_eq!(old_dev.get(None, None).await.status, 200);
    assert_eq!(new_dev.get(None, None).await.status, 200);
    assert_eq!(new_dev.report("i-new", &[]).await.status, 200);

    // Rotation done: only the new key.
    let addr = h.addr;
    h.stop_gateway().await;
    h.tweak = |s| s.keys = MasterKeyRing::from(new_key());
    h.start_gateway(Some(addr)).await;
    assert_eq!(new_dev.get(None, None).await.status, 200);
    let r = old_dev.get(None, None).await;
    assert_eq!(r.status, 401);
    assert!(h.gw().metrics().encode().contains("reason=\"unknown_key\""));
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// One device's key cannot take every long-poll slot: past the per-device cap it gets 429,
/// while another device's long poll is still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_are_capped_per_device() {
    let mut h = Harness::start_with(|s| {
        s.max_long_polls_per_device = 2;
    })
    .await;
    h.create_dp("dp-greedy", "dev-greedy", "x").await;
    h.create_dp("dp-fair", "dev-fair", "x").await;
    let greedy = h.device("dev-greedy");
    let etag = greedy.etag().await;
    // Long enough to stay held however slow the machine; a change ends them.
    let mut held = Vec::new();
    for _ in 0..2 {
        let dev = h.device("dev-greedy");
        let etag = etag.clone();
        held.push(tokio::spawn(async move {
            dev.get(Some(&etag), Some("60s")).await.status
        }));
    }
    wait_until("two long polls held", T, || async {
        h.gw().metrics().long_polls_held.get() == 2
    })
    .await;
    let r = greedy.get(Some(&etag), Some("3s")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.header("x-apollo-signature").is_some(), "signed");
    // Another device is not affected.
    let fair = h.device("dev-fair");
    let fair_etag = fair.etag().await;
    let fair_poll = {
        let dev = h.device("dev-fair");
        tokio::spawn(async move { dev.get(Some(&fair_etag), Some("60s")).await.status })
    };
    wait_until("the other device's long poll held", T, || async {
        h.gw().metrics().long_polls_held.get() == 3
    })
    .await;
    h.set_arg("dp-fair", "changed").await;
    assert_eq!(fair_poll.await.unwrap(), 200);
    // The greedy device's polls are still held (the other device's change did not end them),
    // until its own document changes.
    wait_until("the greedy device's two polls held alone", T, || async {
        h.gw().metrics().long_polls_held.get() == 2
    })
    .await;
    h.set_arg("dp-greedy", "changed").await;
    for p in held {
        assert_eq!(p.await.unwrap(), 200);
    }
    // Slots are given back: the device can long-poll again.
    let etag = greedy.etag().await;
    let again = {
        let dev = h.device("dev-greedy");
        tokio::spawn(async move { dev.get(Some(&etag), Some("300ms")).await.status })
    };
    assert_eq!(again.await.unwrap(), 304);
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// A flapping device (a new instance id and an alternating observed hash on every report,
/// many times a second) costs a bounded number of status writes and Events; the last state
/// is written; another device's events still land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_device_is_coalesced() {
    let mut h = Harness::start_with(|s| {
        s.status_write_interval = Duration::from_millis(500);
        s.event_interval = Duration::from_millis(500);
    })
    .await;
    let dp = h.create_dp("dp-flap", "dev-flap", "x").await;
    let hash = spec_hash(&dp.spec);
    h.create_dp("dp-calm", "dev-calm", "x").await;
    wait_until("converged", T, || async { h.gw().status().converged() }).await;
    let writes_before = h.gateway_writes();
    let flap = h.device("dev-flap");
    let reports = 120;
    let started = tokio::time::Instant::now();
    for i in 0..reports {
        let observed = if i % 2 == 0 {
            hash.as_str()
        } else {
            "0000000000000000"
        };
        let r = flap
            .report(&format!("instance-{i}"), &[("dp-flap", observed)])
            .await;
        assert_eq!(r.status, 200);
    }
    let took = started.elapsed();
    // The last state lands.
    let last = format!("instance-{}", reports - 1);
    h.wait_status("dp-flap", "the last report written", T, |dp| {
        dp.status
            .as_ref()
            .and_then(|s| s.agent.as_ref())
            .is_some_and(|a| a.instance_id == last)
    })
    .await;
    wait_until("converged", T, || async { h.gw().status().converged() }).await;
    let writes = h.gateway_writes() - writes_before;
    // One write per 500 ms interval (plus the first and the last).
    let bound = took.as_millis() as u64 / 500 + 3;
    assert!(
        writes <= bound,
        "{writes} status writes for {reports} reports in {took:?} (bound {bound})"
    );
    assert!(
        writes < reports as u64 / 4,
        "{writes} writes for {reports} reports"
    );
    // Another device's events land meanwhile.
    let calm = h.device("dev-calm");
    assert_eq!(calm.report("calm-1", &[]).await.status, 200);
    wait_until("the calm device's event", T, || async {
        h.events("dp-calm", "AgentConnected").await.len() == 1
    })
    .await;
    // Restarts of the flapping device: one Event, aggregated: its series counts every
    // restart (updated at most once per event interval).
    let restarts = reports - 1;
    wait_until("the restart event counts every restart", T, || async {
        h.events("dp-flap", "AgentRestarted")
            .await
            .iter()
            .any(|e| e.series.as_ref().is_some_and(|s| s.count == restarts))
    })
    .await;
    let restarted = h.events("dp-flap", "AgentRestarted").await;
    assert_eq!(restarted.len(), 1, "one Event for all restarts");
    let updates = h
        .gw()
        .metrics()
        .events
        .get_or_create(&apollo_gateway::metrics::EventLabels {
            kind: "Normal",
            result: "updated",
        })
        .get();
    let posts_bound = took.as_millis() as u64 / 500 + 3;
    assert!(
        updates <= 2 * posts_bound,
        "{updates} series updates for {reports} reports in {took:?}"
    );
    let mut events = 0;
    for reason in ["AgentConnected", "AgentRestarted", "SpecObserved"] {
        events += h.events("dp-flap", reason).await.len();
    }
    // AgentConnected once, AgentRestarted once, SpecObserved once (its repeats aggregated).
    assert!(
        events <= 3,
        "{events} Events for {reports} flapping reports"
    );
    h.stop_gateway().await;
    h.env.cleanup().await;
}

/// A DeviceProcess at arg `v1` whose device has reported it (instance `i1`).
async fn observed_at_v1(h: &Harness, name: &str, device: &str) -> TestDevice {
    let dp = h.create_dp(name, device, "v1").await;
    let dev = h.device(device);
    assert_eq!(
        dev.report("i1", &[(name, &spec_hash(&dp.spec))])
            .await
            .status,
        200
    );
    h.wait_status(name, "observed v1", T, observed).await;
    dev
}

/// A spec change costs one status write when the connected agent reports the new hash within
/// the observe grace: the `SpecObserved=False` is held, then replaced by the observation. An
/// agent that does not report gets the mismatch written once the grace is over.
#[tokio::test]
async fn a_spec_change_observed_within_the_grace_costs_one_status_write() {
    let mut h = Harness::start_with(|s| {
        // No write interval: only the observe grace can hold a write.
        s.status_write_interval = Duration::ZERO;
        // Long enough that a loaded machine cannot make the report miss it.
        s.observe_grace = Duration::from_secs(20);
    })
    .await;
    let dev = observed_at_v1(&h, "dp-roll", "dev-roll").await;
    wait_until("converged", T, || async { h.gw().status().converged() }).await;
    let before = h.gateway_writes();

    let dp = h.set_arg("dp-roll", "v2").await;
    let new_hash = spec_hash(&dp.spec);
    // The gateway has seen the new spec: its mismatch waits in the delay queue, unwritten.
    wait_until("the mismatch is held", T, || async {
        let status = h.gw().status();
        status.target("dp-roll").is_some_and(|v| v.awaits_agent()) && status.delayed() == 1
    })
    .await;
    assert_eq!(h.gateway_writes(), before, "nothing written while held");
    assert_eq!(
        dev.report("i1", &[("dp-roll", &new_hash)]).await.status,
        200
    );
    h.wait_status("dp-roll", "observed v2", T, |dp| {
        observed(dp)
            && dp.status.as_ref().unwrap().observed_spec_hash.as_deref() == Some(new_hash.as_str())
    })
    .await;
    wait_until("converged", T, || async { h.gw().status().converged() }).await;
    assert_eq!(
        h.gateway_writes() - before,
        1,
        "one write for the spec change"
    );
    h.stop_gateway().await;
    h.env.cleanup().await;
}

#[tokio::test]
async fn a_spec_change_the_agent_does_not_report_is_written_after_the_grace() {
    let mut h = Harness::start_with(|s| {
        s.status_write_interval = Duration::from_millis(100);
        s.observe_grace = Duration::from_millis(300);
    })
    .await;
    observed_at_v1(&h, "dp-slow", "dev-slow").await;
    h.set_arg("dp-slow", "v2").await;
    h.wait_status("dp-slow", "SpecObserved=False, SpecHashMismatch", T, |dp| {
        dp.status
            .as_ref()
            .and_then(|s| s.condition(SPEC_OBSERVED))
            .is_some_and(|c| c.status == "False" && c.reason == "SpecHashMismatch")
    })
    .await;
    h.stop_gateway().await;
    h.env.cleanup().await;
}
