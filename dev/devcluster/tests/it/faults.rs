//! Fault injection and request counting (in-process server only; skipped on a real cluster).

use crate::common;

use std::time::{Duration, Instant};

use apollo_devcluster::User;
use apollo_testkit::TestEnv;
use common::*;
use kube::api::ListParams;
use serde_json::json;

#[tokio::test]
async fn error_share_latency_and_clear() {
    let env = TestEnv::new().await;
    let Some(dev) = env.dev() else { return };
    let api = widgets(&env).await;
    let plain = no_retry_admin(&env).await;
    dev.faults().fail_share(1.0, 500);
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 500),
        "{err:?}"
    );
    dev.faults().fail_share(1.0, 503);
    let r = raw(&plain, "GET", &widgets_path(&env), None, None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["kind"], "Status");
    dev.faults().fail_share(1.0, 429);
    let r = raw(&plain, "GET", &widgets_path(&env), None, None).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    dev.faults().clear();
    api.list(&ListParams::default())
        .await
        .expect("served again");
    dev.faults().latency(Duration::from_millis(300));
    let t = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    dev.faults().clear();
    env.cleanup().await;
}

#[tokio::test]
async fn refused_connections_come_back_with_state_intact() {
    let env = TestEnv::new().await;
    let Some(dev) = env.dev() else { return };
    let api = widgets(&env).await;
    create_widget(&api, "w1", "d").await;
    dev.faults().refuse_connections(Duration::from_millis(2500));
    let addr = dev.url().trim_start_matches("https://").to_string();
    let refused = eventually(Duration::from_secs(5), || {
        let addr = addr.clone();
        async move {
            tokio::net::TcpStream::connect(&addr)
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    assert!(refused.is_some(), "connections refused");
    let back = eventually(Duration::from_secs(20), || {
        let api = api.clone();
        async move { api.get("w1").await.ok() }
    })
    .await;
    assert!(back.is_some(), "server back with w1");
    env.cleanup().await;
}

#[tokio::test]
async fn requests_are_counted_by_user_verb_resource_subresource() {
    let env = TestEnv::new().await;
    let Some(dev) = env.dev() else { return };
    let api = widgets(&env).await;
    create_widget(&api, "w1", "d").await;
    dev.requests().reset();
    api.list(&ListParams::default()).await.unwrap();
    api.get_status("w1").await.unwrap();
    let log = dev.requests();
    assert_eq!(
        log.count(Some("admin"), Some("list"), Some(PLURAL), None),
        1
    );
    assert_eq!(
        log.count(Some("admin"), Some("get"), Some(PLURAL), Some("status")),
        1
    );
    assert_eq!(log.writes_by("admin"), 0);
    // Admin endpoints: admin only.
    let admin = env.admin().await;
    let r = raw(&admin, "GET", "/_devcluster/requests", None, None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["verb"] == "list" && row["resource"] == PLURAL)
    );
    let agent = env.as_user(User::Agent).await;
    let r = raw(&agent, "GET", "/_devcluster/requests", None, None).await;
    assert_eq!(r.status, 403);
    let r = raw(
        &admin,
        "POST",
        "/_devcluster/faults",
        Some("application/json"),
        Some(&json!({"errorShare": 1.0, "errorCode": 500})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        raw(&admin, "GET", &widgets_path(&env), None, None)
            .await
            .status,
        500
    );
    let r = raw(
        &admin,
        "POST",
        "/_devcluster/faults",
        Some("application/json"),
        Some(&json!({"clear": true})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        raw(&admin, "GET", &widgets_path(&env), None, None)
            .await
            .status,
        200
    );
    env.cleanup().await;
}
