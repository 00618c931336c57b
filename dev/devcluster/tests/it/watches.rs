//! Watch semantics: resourceVersion, initial events, bookmarks, timeouts, 410 Expired, and a
//! kube-rs watcher/reflector staying in sync across dropped watches and compaction.

use crate::common;

use std::time::Duration;

use apollo_devcluster::Options;
use apollo_testkit::TestEnv;
use common::*;
use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

#[tokio::test]
async fn watch_from_zero_and_unset_starts_with_synthetic_added() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    create_widget(&api, "a", "d").await;
    create_widget(&api, "b", "d").await;
    let client = env.admin().await;
    for rv in ["&resourceVersion=0", ""] {
        let path = format!("{}?watch=true&timeoutSeconds=5{rv}", widgets_path(&env));
        let (status, events) =
            watch_events(&client, &path, Duration::from_secs(5), |e| e.len() >= 2).await;
        assert_eq!(status, 200);
        let types: Vec<_> = events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(types, ["ADDED", "ADDED"], "rv {rv}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn watch_from_resource_version_sends_modified_and_deleted() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    let a = create_widget(&api, "a", "d").await;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"command": ["x"]}})),
    )
    .await
    .unwrap();
    api.delete("a", &Default::default()).await.unwrap();
    let path = format!(
        "{}?watch=true&timeoutSeconds=5&resourceVersion={}",
        widgets_path(&env),
        rv_of(&a)
    );
    let (_, events) = watch_events(&env.admin().await, &path, Duration::from_secs(5), |e| {
        e.len() >= 2
    })
    .await;
    let types: Vec<_> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["MODIFIED", "DELETED"]);
    let rvs: Vec<u64> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        rvs[0] < rvs[1],
        "DELETED carries the deletion's resourceVersion"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn send_initial_events_ends_with_annotated_bookmark() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    create_widget(&api, "a", "d").await;
    create_widget(&api, "b", "d").await;
    let path = format!(
        "{}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=10",
        widgets_path(&env)
    );
    let (_, events) = watch_events(&env.admin().await, &path, Duration::from_secs(10), |e| {
        e.len() >= 3
    })
    .await;
    let types: Vec<_> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["ADDED", "ADDED", "BOOKMARK"]);
    assert_eq!(
        events[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(events[2]["object"]["kind"], KIND);
    env.cleanup().await;
}

#[tokio::test]
async fn too_old_resource_version_gets_one_410_error_event() {
    let env = TestEnv::new().await;
    let Some(dev) = env.dev() else { return };
    let api = widgets(&env).await;
    let a = create_widget(&api, "a", "d").await;
    create_widget(&api, "b", "d").await;
    dev.faults().compact();
    let path = format!(
        "{}?watch=true&resourceVersion={}",
        widgets_path(&env),
        rv_of(&a)
    );
    let (status, events) =
        watch_events(&env.admin().await, &path, Duration::from_secs(5), |_| false).await;
    assert_eq!(status, 200);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["reason"], "Expired");
    assert_eq!(events[0]["object"]["code"], 410);
    assert!(
        events[0]["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {} (", rv_of(&a)))
    );
    // An Exact list at a compacted resourceVersion is 410 too.
    let r = raw(
        &env.admin().await,
        "GET",
        &format!(
            "{}?resourceVersion={}&resourceVersionMatch=Exact",
            widgets_path(&env),
            rv_of(&a)
        ),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 410, "{}", r.text);
    assert_eq!(r.reason(), "Expired");
    assert_eq!(
        r.message(),
        "The resourceVersion for the provided list is too old."
    );
    env.cleanup().await;
}

#[tokio::test]
async fn exact_list_at_recent_resource_version_is_served() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    create_widget(&api, "a", "d").await;
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();
    create_widget(&api, "b", "d").await;
    api.delete("a", &Default::default()).await.unwrap();
    let r = raw(
        &env.admin().await,
        "GET",
        &format!(
            "{}?resourceVersion={rv}&resourceVersionMatch=Exact",
            widgets_path(&env)
        ),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let names: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a"], "the list as it was at {rv}");
    env.cleanup().await;
}

#[tokio::test]
async fn bookmarks_at_interval_and_before_timeout() {
    let env = TestEnv::with_options(Options {
        bookmark_interval: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let api = widgets(&env).await;
    let a = create_widget(&api, "a", "d").await;
    let path = format!(
        "{}?watch=true&allowWatchBookmarks=true&timeoutSeconds=3&resourceVersion={}",
        widgets_path(&env),
        rv_of(&a)
    );
    let started = std::time::Instant::now();
    let (_, events) = watch_events(&env.admin().await, &path, Duration::from_secs(10), |_| {
        false
    })
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2900) && elapsed < Duration::from_secs(20),
        "{elapsed:?}"
    );
    let bookmarks: Vec<_> = events.iter().filter(|e| e["type"] == "BOOKMARK").collect();
    // In-process: every 300 ms plus one before the timeout; a real server only guarantees
    // the one about 2 s before timeoutSeconds (its interval is about a minute).
    let min = if env.is_real() { 1 } else { 3 };
    assert!(bookmarks.len() >= min, "{events:?}");
    for b in &bookmarks {
        assert_eq!(b["object"]["kind"], KIND);
        assert!(
            b["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= rv_of(&a).parse::<u64>().unwrap()
        );
    }
    // Without allowWatchBookmarks: none.
    let path = format!(
        "{}?watch=true&timeoutSeconds=1&resourceVersion={}",
        widgets_path(&env),
        rv_of(&a)
    );
    let (_, events) =
        watch_events(&env.admin().await, &path, Duration::from_secs(5), |_| false).await;
    assert!(events.iter().all(|e| e["type"] != "BOOKMARK"));
    env.cleanup().await;
}

#[tokio::test]
async fn kube_rs_reflector_stays_in_sync_across_dropped_watches_and_410() {
    let env = TestEnv::new().await;
    let Some(dev) = env.dev() else { return };
    let api = widgets(&env).await;
    let writer = reflector::store::Writer::<DynamicObject>::new(widget_resource());
    let reader = writer.as_reader();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().any_semantic()).default_backoff(),
    )
    .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    let names = |reader: &reflector::Store<DynamicObject>| {
        let mut v: Vec<String> = reader
            .state()
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        v.sort();
        v
    };
    let wait_for = |want: Vec<&'static str>| {
        let reader = reader.clone();
        async move {
            let want: Vec<String> = want.into_iter().map(str::to_string).collect();
            eventually(Duration::from_secs(20), || {
                let got = names(&reader);
                let want = want.clone();
                async move { (got == want).then_some(()) }
            })
            .await
            .unwrap_or_else(|| {
                panic!("reflector never reached {want:?}; has {:?}", names(&reader))
            });
        }
    };
    create_widget(&api, "a", "d").await;
    wait_for(vec!["a"]).await;
    // Dropped watch: the watcher resumes from its resourceVersion.
    dev.faults().drop_watches();
    create_widget(&api, "b", "d").await;
    wait_for(vec!["a", "b"]).await;
    // Dropped watch plus compaction: the resume gets 410, the watcher relists.
    api.delete("a", &Default::default()).await.unwrap();
    create_widget(&api, "c", "d").await;
    wait_for(vec!["b", "c"]).await;
    let lists_before = dev.requests().count(None, Some("list"), Some(PLURAL), None);
    dev.faults().compact();
    dev.faults().drop_watches();
    create_widget(&api, "e", "d").await;
    wait_for(vec!["b", "c", "e"]).await;
    let lists_after = dev.requests().count(None, Some("list"), Some(PLURAL), None);
    assert!(
        lists_after > lists_before,
        "the 410 made the watcher relist ({lists_before} → {lists_after})"
    );
    // Still live afterwards.
    create_widget(&api, "f", "d").await;
    wait_for(vec!["b", "c", "e", "f"]).await;
    task.abort();
    env.cleanup().await;
}

#[tokio::test]
async fn kube_rs_streaming_list_watcher() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    create_widget(&api, "a", "d").await;
    let writer = reflector::store::Writer::<DynamicObject>::new(widget_resource());
    let reader = writer.as_reader();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().streaming_lists()),
    )
    .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    create_widget(&api, "b", "d").await;
    let ok = eventually(Duration::from_secs(10), || {
        let n = reader.state().len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    assert!(
        ok.is_some(),
        "streaming list + watch delivered both objects"
    );
    task.abort();
    let _: Api<DynamicObject> = api;
    env.cleanup().await;
}

#[tokio::test]
async fn continue_token_after_compaction_is_410() {
    let env = TestEnv::new().await;
    let Some(dev) = env.dev() else { return };
    let api = widgets(&env).await;
    for i in 0..3 {
        create_widget(&api, &format!("w{i}"), "d").await;
    }
    let first = api.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    dev.faults().compact();
    let err = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 410 && s.reason == "Expired"),
        "{err:?}"
    );
    env.cleanup().await;
}
