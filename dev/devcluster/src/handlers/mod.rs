//! The REST verbs over storage: discovery, get, list, create, update, patch, delete,
//! deletecollection and the `/status` subresource, with the real apiserver's semantics.
//!
//! This module routes a request (discovery, non-resource paths, resource verbs); one
//! submodule per concern does the work: `present`, `read`, `prepare` (the write
//! pipelines), `write`, `crd`, `delete`, `review`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use apollo_apimachinery::apply::{self, ApplyError, ApplyRequest};
use apollo_apimachinery::schema::{self, FieldError, Structural};
use apollo_apiquery::fields::FieldSelector;
use apollo_apiquery::labels::LabelSelector;
use apollo_apiquery::table::{self, IncludeObject};
use apollo_names::messages::{self, LenUnit};
use apollo_rbac::{Attributes, UserInfo};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use serde_json::{Map, Value, json};

use crate::events;
use crate::meta::{self, str_at};
use crate::openapi;
use crate::registry::{self, Flavor, ResourceDef};
use crate::server::{Body, RequestInfo, Shared, error_response, json_response, text_response};
use crate::status::ApiError;
use crate::store::{Key, Store};
use crate::watch;
use crate::workloads;

mod crd;
mod delete;
mod prepare;
mod present;
mod read;
mod review;
mod write;

pub(crate) use crd::*;
pub(crate) use delete::*;
pub(crate) use prepare::*;
pub(crate) use present::*;
pub(crate) use read::*;
pub(crate) use review::*;
pub(crate) use write::*;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// One authenticated, authorized request.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub user: UserInfo,
    pub method: Method,
    pub info: RequestInfo,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub accept: String,
    pub body: Bytes,
    pub now: String,
}

impl Ctx {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1"))
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }

    fn content_type(&self) -> String {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    /// The field manager of a non-apply write: the parameter, else the user agent's prefix.
    fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        let ua = self
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        ua.split('/').next().unwrap_or("").to_string()
    }

    fn field_validation(&self) -> Result<FieldValidation> {
        match self.q("fieldValidation") {
            None | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

/// How a response renders objects (from the Accept header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Full,
    Table,
    Meta,
}

pub(crate) fn output_mode(accept: &str) -> Output {
    for part in accept.split(',') {
        let p = part.trim();
        if p.contains("as=Table") && p.contains("g=meta.k8s.io") {
            return Output::Table;
        }
        if p.contains("as=PartialObjectMetadata") && p.contains("g=meta.k8s.io") {
            return Output::Meta;
        }
        if p.starts_with("application/json") || p.starts_with("*/*") || p.is_empty() {
            return Output::Full;
        }
    }
    Output::Full
}

pub(crate) fn include_object(query: &HashMap<String, String>) -> IncludeObject {
    match query.get("includeObject").map(String::as_str) {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

/// A namespace object as the apiserver creates it.
pub(crate) fn new_namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": meta::uid(),
            "creationTimestamp": meta::now(),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

pub(crate) async fn dispatch(ctx: Ctx) -> Response<Body> {
    if !ctx.info.resource_request {
        return match non_resource(&ctx) {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
    }
    match resource(ctx).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn non_resource(ctx: &Ctx) -> Result<Response<Body>> {
    let path = ctx.info.path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if ctx.method != Method::GET && ctx.method != Method::HEAD {
        if matches!(
            segs.first(),
            Some(&"api") | Some(&"apis") | Some(&"version")
        ) {
            return Err(ApiError::method_not_allowed());
        }
        return Err(ApiError::not_found_path());
    }
    let store = ctx.shared.lock();
    let kube_version = ctx.shared.opts.version;
    if let (["api"] | ["apis"], Some(version)) = (segs.as_slice(), aggregated_version(&ctx.accept))
    {
        let body = store
            .registry
            .aggregated(segs == ["api"], &format!("apidiscovery.k8s.io/{version}"));
        let mut resp = json_response(200, &body, &[]);
        if let Ok(v) = http::HeaderValue::from_str(&format!(
            "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
        )) {
            resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        return Ok(resp);
    }
    match segs.as_slice() {
        ["version"] => Ok(json_response(200, &ctx.shared.opts.version.document(), &[])),
        ["api"] => Ok(json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": ctx.shared.addr.to_string()}
                ],
            }),
            &[],
        )),
        ["apis"] => {
            let groups: Vec<Value> = store
                .registry
                .groups()
                .into_iter()
                .map(|(g, versions)| group_json(&g, &versions))
                .collect();
            Ok(json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                &[],
            ))
        }
        ["apis", g] => {
            let found = store
                .registry
                .groups()
                .into_iter()
                .find(|(name, _)| name == g);
            match found {
                Some((g, versions)) => {
                    let mut v = group_json(&g, &versions);
                    v["kind"] = json!("APIGroup");
                    v["apiVersion"] = json!("v1");
                    Ok(json_response(200, &v, &[]))
                }
                None => Err(ApiError::page_not_found()),
            }
        }
        ["api", v] => store
            .registry
            .resource_list("", v)
            .map(|l| json_response(200, &l, &[]))
            .ok_or_else(ApiError::page_not_found),
        ["apis", g, v] => store
            .registry
            .resource_list(g, v)
            .map(|l| json_response(200, &l, &[]))
            .ok_or_else(ApiError::page_not_found),
        ["healthz", ..] | ["livez", ..] | ["readyz", ..] => Ok(text_response(200, "ok")),
        ["metrics"] => {
            let mut resp = text_response(200, &ctx.shared.api_metrics.render());
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(resp)
        }
        ["openapi", "v3"] => Ok(json_response(200, &openapi::root(&store.registry), &[])),
        ["openapi", "v3", "api", v] => openapi::group_version(&store.registry, "", v, kube_version)
            .map(|d| json_response(200, &d, &[]))
            .ok_or_else(ApiError::not_found_path),
        ["openapi", "v3", "apis", g, v] => {
            openapi::group_version(&store.registry, g, v, kube_version)
                .map(|d| json_response(200, &d, &[]))
                .ok_or_else(ApiError::not_found_path)
        }
        _ => Err(ApiError::page_not_found()),
    }
}

/// The aggregated discovery version the client asks for first (`v2` or `v2beta1`), if any.
fn aggregated_version(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        if !params.contains(&"as=APIGroupDiscoveryList")
            || !params.contains(&"g=apidiscovery.k8s.io")
        {
            if params
                .first()
                .is_some_and(|t| *t == "application/json" || *t == "*/*")
                && params.len() == 1
            {
                return None;
            }
            continue;
        }
        if params.contains(&"v=v2") {
            return Some("v2");
        }
        if params.contains(&"v=v2beta1") {
            return Some("v2beta1");
        }
    }
    None
}

fn group_json(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": g, "versions": vs, "preferredVersion": preferred})
}

async fn resource(ctx: Ctx) -> Result<Response<Body>> {
    let info = ctx.info.clone();
    let def = {
        let store = ctx.shared.lock();
        match store
            .registry
            .lookup(&info.group, &info.version, &info.resource)
        {
            Some(def) => def,
            // A served group/version answers an unknown resource with a Status; a group or
            // version nobody serves falls through to the mux's plain 404.
            None if store.registry.serves(&info.group, &info.version) => {
                return Err(ApiError::not_found_path());
            }
            None => return Err(ApiError::page_not_found()),
        }
    };
    if !info.extra.is_empty() {
        return Err(ApiError::not_found_path());
    }
    let sub = if info.subresource.is_empty() {
        None
    } else if info.subresource == "status" && def.status_subresource {
        Some("status")
    } else {
        return Err(ApiError::not_found_path());
    };
    let ns: String = if def.namespaced {
        if info.namespace.is_empty() && !info.name.is_empty() {
            return Err(ApiError::not_found_path());
        }
        info.namespace.clone()
    } else {
        if !info.namespace.is_empty() && def.flavor != Flavor::Namespace {
            return Err(ApiError::not_found_path());
        }
        String::new()
    };
    if !def.verbs.contains(&info.verb.as_str()) {
        return Err(ApiError::method_not_allowed());
    }
    if sub.is_some() && !matches!(info.verb.as_str(), "get" | "update" | "patch") {
        return Err(ApiError::method_not_allowed());
    }
    let name = info.name.clone();
    match info.verb.as_str() {
        "get" => get(&ctx, &def, &ns, &name),
        "list" => list(&ctx, &def, &ns),
        "watch" => {
            // The deprecated `/watch/.../<name>` form watches one object.
            let mut ctx = ctx;
            if !name.is_empty() {
                let by_name = format!("metadata.name={name}");
                let fs = match ctx.query.get("fieldSelector").filter(|f| !f.is_empty()) {
                    Some(f) => format!("{f},{by_name}"),
                    None => by_name,
                };
                ctx.query.insert("fieldSelector".into(), fs);
            }
            watch::serve(&ctx, def.clone(), &ns)
        }
        "create" => {
            if !name.is_empty() {
                return Err(ApiError::method_not_allowed());
            }
            if def.flavor == Flavor::SelfSubjectAccessReview {
                return self_subject_access_review(&ctx);
            }
            if def.flavor == Flavor::SelfSubjectRulesReview {
                return self_subject_rules_review(&ctx);
            }
            create(&ctx, &def, &ns)
        }
        "update" => update(&ctx, &def, &ns, &name, sub),
        "patch" => patch(&ctx, &def, &ns, &name, sub),
        "delete" => delete(&ctx, &def, &ns, &name),
        "deletecollection" => delete_collection(&ctx, &def, &ns),
        _ => Err(ApiError::method_not_allowed()),
    }
}
