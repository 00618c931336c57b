//! Discovery documents, Table and PartialObjectMetadata output, errors for unknown paths.

use crate::common;

use apollo_testkit::TestEnv;
use common::*;
use serde_json::Value;

#[tokio::test]
async fn discovery_lists_builtins_and_crds() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let c = env.admin().await;
    let v = raw(&c, "GET", "/version", None, None).await;
    assert_eq!(v.status, 200);
    assert!(
        v.body["gitVersion"]
            .as_str()
            .is_some_and(|s| s.starts_with('v'))
    );
    let api = raw(&c, "GET", "/api", None, None).await;
    assert_eq!(api.body["versions"][0], "v1");
    let core = raw(&c, "GET", "/api/v1", None, None).await;
    let names: Vec<&str> = core.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for want in [
        "namespaces",
        "events",
        "secrets",
        "serviceaccounts",
        "configmaps",
        "namespaces/status",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let groups = raw(&c, "GET", "/apis", None, None).await;
    let group_names: Vec<&str> = groups.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for want in [
        "apiextensions.k8s.io",
        "rbac.authorization.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
        GROUP,
    ] {
        assert!(group_names.contains(&want), "{want} in {group_names:?}");
    }
    let gv = raw(&c, "GET", &format!("/apis/{GROUP}/{VERSION}"), None, None).await;
    assert_eq!(gv.status, 200);
    let res = gv.body["resources"].as_array().unwrap();
    let w = res.iter().find(|r| r["name"] == PLURAL).expect("widgets");
    assert_eq!(w["kind"], KIND);
    assert_eq!(w["namespaced"], true);
    assert_eq!(w["singularName"], "widget");
    assert_eq!(w["shortNames"], serde_json::json!(["wdg"]));
    assert_eq!(w["categories"], serde_json::json!(["apollo-conformance"]));
    let verbs: Vec<&str> = w["verbs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for verb in [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ] {
        assert!(verbs.contains(&verb));
    }
    assert!(res.iter().any(|r| r["name"] == format!("{PLURAL}/status")));
    for path in ["/healthz", "/readyz", "/livez"] {
        let h = raw(&c, "GET", path, None, None).await;
        assert_eq!(h.status, 200);
        assert_eq!(h.text, "ok");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn crd_gets_established_and_names_accepted() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let c = env.admin().await;
    let crd = raw(
        &c,
        "GET",
        &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"),
        None,
        None,
    )
    .await;
    let conds = crd.body["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for t in ["Established", "NamesAccepted"] {
        assert!(
            conds
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True"),
            "{t}: {conds:?}"
        );
    }
    assert_eq!(crd.body["status"]["acceptedNames"]["kind"], KIND);
    env.cleanup().await;
}

#[tokio::test]
async fn table_output_renders_printer_columns() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    create_widget(&api, "w1", "tor1-01").await;
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let r = raw_bytes(
        &env.admin().await,
        "GET",
        &widgets_path(&env),
        None,
        Vec::new(),
        Some(accept),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["kind"], "Table");
    let cols: Vec<&str> = r.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(cols, ["Name", "Device", "Phase", "Age"]);
    let cells = &r.body["rows"][0]["cells"];
    assert_eq!(cells[0], "w1");
    assert_eq!(cells[1], "tor1-01");
    assert_eq!(r.body["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    // Metadata-only lists (kube-rs metadata watchers).
    let accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let r = raw_bytes(
        &env.admin().await,
        "GET",
        &widgets_path(&env),
        None,
        Vec::new(),
        Some(accept),
    )
    .await;
    assert_eq!(r.body["kind"], "PartialObjectMetadataList");
    assert_eq!(r.body["items"][0]["metadata"]["name"], "w1");
    assert!(r.body["items"][0].get("spec").is_none());
    env.cleanup().await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let env = TestEnv::new().await;
    let c = env.admin().await;
    // A group nobody serves falls through to the mux: a plain-text 404, not a Status.
    for path in [
        "/apis/nope.example.com/v1/things",
        "/apis/nope.example.com/v1/namespaces/default/things/x",
        "/apis/nope.example.com/v1",
        "/apis/nope.example.com",
    ] {
        let r = raw(&c, "GET", path, None, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.headers["content-type"], "text/plain; charset=utf-8",
            "{path}"
        );
        assert_eq!(r.text, "404 page not found\n", "{path}");
    }
    // A served group/version answers an unknown resource with a Status.
    let r = raw(&c, "GET", "/api/v1/things", None, None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.reason(), "NotFound");
    assert_eq!(
        r.message(),
        "the server could not find the requested resource"
    );
    let r = raw(
        &c,
        "GET",
        &format!("/api/v1/namespaces/{}/configmaps/missing", env.namespace()),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.message(), "configmaps \"missing\" not found");
    let r = raw(
        &c,
        "POST",
        &format!("/api/v1/namespaces/{}/configmaps/x", env.namespace()),
        Some("application/json"),
        Some(&serde_json::json!({})),
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.reason(), "MethodNotAllowed");
    let r = raw(&c, "POST", "/api/v1/namespaces/does-not-exist/configmaps", Some("application/json"), Some(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}))).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.message(), "namespaces \"does-not-exist\" not found");
    env.cleanup().await;
}

#[tokio::test]
async fn table_watch_as_kubectl_get_watch_uses_it() {
    let env = TestEnv::new().await;
    let api = widgets(&env).await;
    create_widget(&api, "w1", "tor1-01").await;
    let client = env.admin().await;
    let req = http::Request::builder()
        .uri(format!(
            "{}?watch=true&timeoutSeconds=5",
            widgets_path(&env)
        ))
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(kube::client::Body::from(Vec::new()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = http_body_util::BodyExt::into_data_stream(resp.into_body());
    let first = futures::StreamExt::next(&mut body).await.unwrap().unwrap();
    let line: Value = serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["type"], "ADDED");
    assert_eq!(line["object"]["kind"], "Table");
    assert_eq!(line["object"]["rows"][0]["cells"][1], "tor1-01");
    env.cleanup().await;
}

#[tokio::test]
async fn aggregated_discovery_as_kube_rs_and_kubectl_use_it() {
    let env = TestEnv::new().await;
    widgets(&env).await;
    let discovery = kube::Discovery::new(env.admin().await)
        .run_aggregated()
        .await
        .expect("aggregated discovery");
    let group = discovery.get(GROUP).expect("widget group");
    let (ar, caps) = group
        .recommended_resources()
        .into_iter()
        .find(|(ar, _)| ar.plural == PLURAL)
        .expect("widgets");
    assert_eq!(ar.kind, KIND);
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == format!("{PLURAL}/status") || s.plural == "status")
    );
    let core = discovery.get("").expect("core group");
    assert!(
        core.recommended_resources()
            .iter()
            .any(|(ar, _)| ar.plural == "namespaces")
    );
    env.cleanup().await;
}
