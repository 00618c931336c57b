//! The agent loop against a fake gateway over real HTTP on 127.0.0.1: fetch then 304 with
//! the ETag, report on change, heartbeat at the acked interval, refusal of tampered
//! responses, backoff and recovery, plain polling, clean shutdown.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use apollo_agent::{Agent, AgentState, Config};
use common::{Behaviour, Event, FakeGateway, Tamper, document, process};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(10);

struct Running {
    agent: Arc<Agent>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn spawn(config: Config) -> Running {
    let agent = Arc::new(Agent::new(config));
    let (stop, stopped) = oneshot::channel::<()>();
    let a = agent.clone();
    let task = tokio::spawn(async move {
        a.run(async {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        agent,
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(T, self.task)
            .await
            .expect("agent did not stop")
            .unwrap();
    }
}

async fn wait_state(
    rx: &mut watch::Receiver<AgentState>,
    what: &str,
    pred: impl FnMut(&AgentState) -> bool,
) -> AgentState {
    tokio::time::timeout(T, rx.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for agent state: {what}"))
        .unwrap()
        .clone()
}

#[tokio::test]
async fn fetches_then_304_and_reports_each_new_revision() {
    let doc_a = document(vec![process("hello-tor1-01", "aaaaaaaaaaaaaaaa", 1)]);
    let mut gw = FakeGateway::start(doc_a.clone(), Behaviour::default()).await;
    let mut config = gw.config();
    config.long_poll = Duration::from_millis(300);
    let agent = spawn(config);

    // First GET: no If-None-Match, 200.
    let e = gw.next(T, "first GET").await;
    let Event::Desired {
        if_none_match,
        status,
        wait,
        ..
    } = e
    else {
        panic!("expected a GET first, got {e:?}")
    };
    assert_eq!((if_none_match, status, wait), (None, 200, None));

    // A report with the observed hash follows at once (not after the 10 s default heartbeat).
    let reports = gw.reports(1, Duration::from_secs(3)).await;
    let r = &reports[0].1;
    assert_eq!(r.revision.as_deref(), Some(doc_a.revision.as_str()));
    assert_eq!(r.observed.len(), 1);
    assert_eq!(r.observed[0].name, "hello-tor1-01");
    assert_eq!(r.observed[0].spec_hash, "aaaaaaaaaaaaaaaa");
    assert_eq!(r.observed[0].generation, Some(1));
    assert_eq!(r.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(r.instance_id, agent.agent.instance_id());

    // Next GETs carry the ETag as a long poll and get 304 when the wait ends.
    let e = gw
        .wait_for(T, "a 304", |e| {
            matches!(e, Event::Desired { status: 304, .. })
        })
        .await;
    let Event::Desired {
        if_none_match,
        wait,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(if_none_match.as_deref(), Some(doc_a.etag.as_str()));
    assert_eq!(wait, Some(Duration::from_millis(300)));

    // A change reaches the agent, which reports the new hash at once.
    let doc_b = document(vec![process("hello-tor1-01", "bbbbbbbbbbbbbbbb", 2)]);
    gw.set_document(doc_b.clone());
    let e = gw
        .wait_for(T, "200 with the new document", |e| {
            matches!(e, Event::Desired { status: 200, .. })
        })
        .await;
    let Event::Desired { if_none_match, .. } = e else {
        unreachable!()
    };
    assert_eq!(if_none_match.as_deref(), Some(doc_a.etag.as_str()));
    let reports = gw.reports(1, Duration::from_secs(3)).await;
    assert_eq!(
        reports[0].1.revision.as_deref(),
        Some(doc_b.revision.as_str())
    );
    assert_eq!(reports[0].1.observed[0].spec_hash, "bbbbbbbbbbbbbbbb");
    let mut state = agent.agent.subscribe();
    let s = wait_state(&mut state, "observed revision b", |s| {
        s.reported_revision.as_deref() == Some(doc_b.revision.as_str())
    })
    .await;
    assert_eq!(s.revision.as_deref(), Some(doc_b.revision.as_str()));
    assert_eq!(s.documents, 2);
    assert!(s.connected);
    agent.shutdown().await;
}

#[tokio::test]
async fn heartbeats_follow_the_interval_in_the_ack() {
    let doc = document(vec![]);
    let behaviour = Behaviour {
        heartbeat_ms: 150,
        ..Behaviour::default()
    };
    let mut gw = FakeGateway::start(doc.clone(), behaviour).await;
    let agent = spawn(gw.config());

    let ms = Duration::from_millis;
    // The first report comes with the first document; later ones every 150 ms from the ack.
    let reports = gw.reports(4, T).await;
    for pair in reports.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= ms(150), "heartbeat too early: {gap:?}");
        assert!(gap < ms(2000), "heartbeat too late: {gap:?}");
        assert_eq!(pair[1].1.revision.as_deref(), Some(doc.revision.as_str()));
        assert_eq!(pair[1].1.instance_id, agent.agent.instance_id());
    }

    // The gateway asks for a slower heartbeat: the agent follows after the next ack.
    gw.set_behaviour(|b| b.heartbeat_ms = 500);
    let reports = gw.reports(4, T).await;
    // reports[0] may have been scheduled under the old interval; the gaps after it not.
    for pair in reports[1..].windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= ms(500), "heartbeat too early: {gap:?}");
    }

    // An interval below the agent's floor is clamped to it.
    gw.set_behaviour(|b| b.heartbeat_ms = 1);
    let mut state = agent.agent.subscribe();
    let s = wait_state(&mut state, "clamped interval", |s| {
        s.heartbeat_interval == ms(10)
    })
    .await;
    assert!(s.reports_acked >= 8);
    agent.shutdown().await;
}

#[tokio::test]
async fn tampered_unsigned_or_replayed_responses_are_refused() {
    for tamper in [
        Tamper::Body,
        Tamper::Unsigned,
        Tamper::OtherNonce,
        Tamper::OtherDevice,
    ] {
        let doc = document(vec![process("p", "1111111111111111", 1)]);
        let behaviour = Behaviour {
            tamper,
            ..Behaviour::default()
        };
        let mut gw = FakeGateway::start(doc.clone(), behaviour).await;
        let agent = spawn(gw.config());
        let mut state = agent.agent.subscribe();

        // The agent retries (with backoff) and refuses every answer.
        for i in 0..3 {
            gw.wait_for(T, &format!("GET {i} ({tamper:?})"), |e| {
                matches!(e, Event::Desired { status: 200, .. })
            })
            .await;
        }
        let s = wait_state(&mut state, "refusals counted", |s| s.responses_refused >= 3).await;
        assert_eq!(s.revision, None, "{tamper:?}: adopted a bad document");
        assert_eq!(s.documents, 0);
        assert!(!s.connected);
        assert!(
            s.last_error.as_deref().unwrap_or("").contains("signature"),
            "{:?}",
            s.last_error
        );

        // The same gateway behaving again: the agent adopts the document and reports it.
        gw.set_behaviour(|b| b.tamper = Tamper::None);
        let reports = gw.reports(1, T).await;
        assert_eq!(
            reports[0].1.revision.as_deref(),
            Some(doc.revision.as_str()),
            "{tamper:?}"
        );
        wait_state(&mut state, "recovered", |s| {
            s.connected && s.revision.as_deref() == Some(doc.revision.as_str())
        })
        .await;
        agent.shutdown().await;
    }
}

#[tokio::test]
async fn tampered_report_ack_is_refused() {
    let doc = document(vec![]);
    let behaviour = Behaviour {
        heartbeat_ms: 100,
        ..Behaviour::default()
    };
    let mut gw = FakeGateway::start(doc.clone(), behaviour).await;
    let agent = spawn(gw.config());
    let mut state = agent.agent.subscribe();
    wait_state(&mut state, "first ack", |s| s.reports_acked == 1).await;
    gw.set_behaviour(|b| b.tamper = Tamper::Unsigned);
    // Reports now get unsigned acks: refused, retried with backoff, never counted as acked.
    gw.reports(3, T).await;
    let s = wait_state(&mut state, "refused acks", |s| s.responses_refused >= 2).await;
    assert_eq!(s.reports_acked, 1, "only the first, signed ack counts");
    agent.shutdown().await;
}

#[tokio::test]
async fn backs_off_on_errors_and_recovers() {
    let doc = document(vec![process("p", "2222222222222222", 3)]);
    let behaviour = Behaviour {
        fail_with: Some(503),
        ..Behaviour::default()
    };
    let mut gw = FakeGateway::start(doc.clone(), behaviour).await;
    let agent = spawn(gw.config()); // backoff 50 ms doubling to 400 ms, jittered to 50–100 %
    let mut state = agent.agent.subscribe();

    let mut arrivals = Vec::new();
    while arrivals.len() < 6 {
        if let Event::Desired {
            arrived, status, ..
        } = gw
            .wait_for(T, "failing GETs", |e| matches!(e, Event::Desired { .. }))
            .await
        {
            assert_eq!(status, 503);
            arrivals.push(arrived);
        }
    }
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    let ms = Duration::from_millis;
    // Bases 50, 100, 200, 400, 400 ms; each delay is at least half its base.
    for (gap, base) in gaps.iter().zip([50u64, 100, 200, 400, 400]) {
        assert!(
            *gap >= ms(base / 2),
            "gap {gap:?} below half of {base} ms: {gaps:?}"
        );
        assert!(
            *gap < ms(base + 2000),
            "gap {gap:?} far above {base} ms: {gaps:?}"
        );
    }
    assert!(gaps[4] > gaps[0], "no growth: {gaps:?}");
    let s = state.borrow().clone();
    assert!(!s.connected);
    assert!(s.consecutive_failures >= 5);
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("503"),
        "{:?}",
        s.last_error
    );

    // Now the gateway drops connections: still an error, another kind.
    gw.set_behaviour(|b| {
        b.fail_with = None;
        b.drop_connections = true;
    });
    gw.wait_for(T, "dropped connection", |e| {
        matches!(e, Event::Dropped { .. })
    })
    .await;
    wait_state(&mut state, "unreachable error", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot reach the gateway"))
    })
    .await;

    // Recovery: the document arrives, is reported, and the state says connected.
    gw.set_behaviour(|b| b.drop_connections = false);
    let reports = gw.reports(1, T).await;
    assert_eq!(
        reports[0].1.revision.as_deref(),
        Some(doc.revision.as_str())
    );
    let s = wait_state(&mut state, "connected", |s| {
        s.connected && s.reports_acked >= 1
    })
    .await;
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(s.last_error, None);
    agent.shutdown().await;
}

#[tokio::test]
async fn wrong_key_gets_401_and_adopts_nothing() {
    let doc = document(vec![]);
    let mut gw = FakeGateway::start(doc, Behaviour::default()).await;
    let mut config = gw.config();
    config.key = apollo_protocol::keys::MasterKey::new("k1", [7; 32])
        .unwrap()
        .derive(common::DEVICE);
    let agent = spawn(config);
    let mut state = agent.agent.subscribe();
    let e = gw
        .wait_for(T, "auth failure", |e| matches!(e, Event::AuthFailed { .. }))
        .await;
    assert!(
        matches!(
            e,
            Event::AuthFailed {
                reason: "bad_signature"
            }
        ),
        "{e:?}"
    );
    let s = wait_state(&mut state, "401 seen", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("401"))
    })
    .await;
    assert_eq!(s.revision, None);
    // The hint to compare clocks is there for 401s.
    assert!(s.last_error.unwrap().contains("gateway clock"));
    agent.shutdown().await;
}

#[tokio::test]
async fn plain_polling_without_wait() {
    let doc = document(vec![]);
    let behaviour = Behaviour {
        heartbeat_ms: 100,
        ..Behaviour::default()
    };
    let mut gw = FakeGateway::start(doc.clone(), behaviour).await;
    let mut config = gw.config();
    config.long_poll = Duration::ZERO;
    let agent = spawn(config);
    let mut states = agent.agent.subscribe();
    wait_state(&mut states, "interval from ack", |s| {
        s.heartbeat_interval == Duration::from_millis(100)
    })
    .await;
    // Polls without wait, with the ETag, answered 304, spaced by the heartbeat interval.
    let mut arrivals = Vec::new();
    while arrivals.len() < 3 {
        if let Event::Desired {
            arrived,
            wait,
            status,
            if_none_match,
        } = gw
            .wait_for(T, "plain polls", |e| matches!(e, Event::Desired { .. }))
            .await
        {
            assert_eq!(wait, None);
            if if_none_match.is_some() {
                assert_eq!(status, 304);
                arrivals.push(arrived);
            }
        }
    }
    // Arrival times at the gateway: each poll leaves one interval after the last, and its
    // transit time varies by a few milliseconds on a loaded machine (seen: 99.6 ms). A
    // missing spacing shows as gaps near zero.
    for w in arrivals.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(90),
            "{:?}",
            w[1] - w[0]
        );
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn shutdown_during_a_held_long_poll_is_prompt() {
    let doc = document(vec![]);
    let mut gw = FakeGateway::start(doc, Behaviour::default()).await;
    let agent = spawn(gw.config()); // long poll 30 s
    gw.wait_for(T, "a held long poll", |e| matches!(e, Event::Held { .. }))
        .await;
    let started = tokio::time::Instant::now();
    agent.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown waited for the long poll: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_signed_document_whose_etag_is_not_its_revision_is_refused() {
    let doc = document(vec![process("p", "3333333333333333", 1)]);
    let behaviour = Behaviour {
        tamper: Tamper::MismatchedEtag,
        ..Behaviour::default()
    };
    let gw = FakeGateway::start(doc, behaviour).await;
    let agent = spawn(gw.config());
    let mut state = agent.agent.subscribe();
    let s = wait_state(&mut state, "malformed-document error", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("does not name its revision"))
    })
    .await;
    assert_eq!(s.revision, None);
    agent.shutdown().await;
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_the_backoff_cap() {
    let doc = document(vec![]);
    let behaviour = Behaviour {
        fail_with: Some(429),
        retry_after: Some(1),
        ..Behaviour::default()
    };
    let mut gw = FakeGateway::start(doc.clone(), behaviour).await;
    let mut config = gw.config(); // backoff 50 ms .. 400 ms
    config.backoff_max = Duration::from_secs(2);
    let agent = spawn(config);
    let mut arrivals = Vec::new();
    while arrivals.len() < 3 {
        if let Event::Desired {
            arrived, status, ..
        } = gw
            .wait_for(T, "429s", |e| matches!(e, Event::Desired { .. }))
            .await
        {
            assert_eq!(status, 429);
            arrivals.push(arrived);
        }
    }
    for w in arrivals.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_secs(1), "{:?}", w[1] - w[0]);
    }
    gw.set_behaviour(|b| b.fail_with = None);
    let reports = gw.reports(1, T).await;
    assert_eq!(
        reports[0].1.revision.as_deref(),
        Some(doc.revision.as_str())
    );
    agent.shutdown().await;
}

/// A signed 304 proves only that the ETag the agent *sent* is current; one for another
/// document, or one while holding none, is refused, counted, and retried with backoff —
/// the agent neither adopts nothing silently nor reports itself connected.
#[tokio::test]
async fn a_304_for_another_document_or_while_holding_none_is_refused() {
    // Holding nothing: a first fetch answered 304.
    let doc_a = document(vec![process("p", "5555555555555555", 1)]);
    let behaviour = Behaviour {
        tamper: Tamper::AlwaysNotModified,
        ..Behaviour::default()
    };
    let mut gw = FakeGateway::start(doc_a.clone(), behaviour).await;
    let agent = spawn(gw.config());
    let mut state = agent.agent.subscribe();
    for i in 0..3 {
        gw.wait_for(T, &format!("304 {i}"), |e| {
            matches!(
                e,
                Event::Desired {
                    status: 304,
                    if_none_match: None,
                    ..
                }
            )
        })
        .await;
    }
    let s = wait_state(&mut state, "304s refused", |s| s.responses_refused >= 3).await;
    assert_eq!(s.revision, None);
    assert!(!s.connected);
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("no document"),
        "{:?}",
        s.last_error
    );
    // The gateway behaving: the document is adopted.
    gw.set_behaviour(|b| b.tamper = Tamper::None);
    wait_state(&mut state, "adopted A", |s| {
        s.connected && s.revision.as_deref() == Some(doc_a.revision.as_str())
    })
    .await;

    // Holding A while the gateway answers 304 for B: refused, A kept, not connected.
    let doc_b = document(vec![process("p", "6666666666666666", 2)]);
    gw.set_behaviour(|b| b.tamper = Tamper::AlwaysNotModified);
    gw.set_document(doc_b.clone());
    let before = state.borrow().responses_refused;
    let s = wait_state(&mut state, "304 for B refused", |s| {
        s.responses_refused >= before + 2
    })
    .await;
    assert_eq!(s.revision.as_deref(), Some(doc_a.revision.as_str()));
    assert!(!s.connected);
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains(&doc_b.revision),
        "{:?}",
        s.last_error
    );
    gw.set_behaviour(|b| b.tamper = Tamper::None);
    wait_state(&mut state, "adopted B", |s| {
        s.connected && s.revision.as_deref() == Some(doc_b.revision.as_str())
    })
    .await;
    agent.shutdown().await;
}
