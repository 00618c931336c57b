//! Moderate scale: thousands of objects, many watchers; per-request work stays proportional.

use crate::common;

use std::time::{Duration, Instant};

use apollo_testkit::TestEnv;
use common::*;
use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

/// Objects to create; `APOLLO_SCALE_N` overrides (e.g. 100000 for a manual run).
fn n() -> usize {
    std::env::var("APOLLO_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_objects_and_many_watchers() {
    let env = TestEnv::new().await;
    if env.is_real() {
        return;
    }
    let api = widgets(&env).await;
    let n = n();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                create_widget(&api, &format!("w{i:05}"), &format!("tor{}", i % 100)).await;
            }
        })
        .await;
    let create_time = started.elapsed();
    let t = Instant::now();
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), n);
    let list_time = t.elapsed();
    let t = Instant::now();
    let one = api
        .list(&ListParams::default().fields("spec.deviceRef.name=tor7"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), n / 100 + usize::from(n % 100 > 7));
    let select_time = t.elapsed();
    let t = Instant::now();
    let page = api.list(&ListParams::default().limit(50)).await.unwrap();
    assert_eq!(page.items.len(), 50);
    let page_time = t.elapsed();
    // 50 watchers from the list's resourceVersion, one change each must reach all of them.
    let rv = all.metadata.resource_version.clone().unwrap();
    let client = env.admin().await;
    let mut watchers = Vec::new();
    for _ in 0..50 {
        let client = client.clone();
        let path = format!(
            "{}?watch=true&resourceVersion={rv}&timeoutSeconds=30",
            widgets_path(&env)
        );
        watchers.push(tokio::spawn(async move {
            watch_events(&client, &path, Duration::from_secs(30), |e| !e.is_empty()).await
        }));
    }
    api.patch(
        "w00001",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"command": ["x"]}})),
    )
    .await
    .unwrap();
    let t = Instant::now();
    for w in watchers {
        let (status, events) = w.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(events[0]["type"], "MODIFIED");
    }
    let fanout_time = t.elapsed();
    eprintln!(
        "create {n}: {create_time:?}, list all: {list_time:?}, field-selected list: {select_time:?}, page of 50: {page_time:?}, 50-watcher fan-out: {fanout_time:?}"
    );
    assert!(
        page_time < list_time,
        "a page costs less than the whole list"
    );
    env.cleanup().await;
}
