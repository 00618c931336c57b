//! The REST verbs over storage: discovery, get, list, create, update, patch, delete,
//! deletecollection and the `/status` subresource, with the real apiserver's semantics.

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

// ---------------------------------------------------------------------------------------------
// Presentation

/// The object as served through `def` (version, event view).
pub(crate) fn present(def: &ResourceDef, obj: &Value) -> Value {
    match def.flavor {
        Flavor::EventsV1 => events::core_to_v1(obj),
        _ => {
            let mut v = obj.clone();
            set_type(&mut v, def);
            v
        }
    }
}

fn set_type(v: &mut Value, def: &ResourceDef) {
    if let Some(m) = v.as_object_mut() {
        let api_version = def.api_version();
        if m.get("apiVersion").and_then(Value::as_str) != Some(api_version.as_str()) {
            m.insert("apiVersion".into(), Value::String(api_version));
        }
        if m.get("kind").and_then(Value::as_str) != Some(def.kind.as_str()) {
            m.insert("kind".into(), Value::String(def.kind.clone()));
        }
    }
}

pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

fn render_one(ctx: &Ctx, def: &ResourceDef, obj: &Value, rv: &str) -> Value {
    let presented = present(def, obj);
    match output_mode(&ctx.accept) {
        Output::Full => presented,
        Output::Meta => partial_metadata(&presented),
        Output::Table => table::render(
            &def.columns,
            std::slice::from_ref(&presented),
            include_object(&ctx.query),
            rv,
            None,
            jiff::Timestamp::now(),
        ),
    }
}

/// Decodes a request body by its Content-Type: JSON, YAML, or (built-ins) Kubernetes protobuf.
fn decode_body(ctx: &Ctx, custom: bool) -> Result<Value> {
    let ct = ctx.content_type();
    match ct.as_str() {
        "application/vnd.kubernetes.protobuf" if !custom => crate::protobuf::decode(&ctx.body)
            .ok_or_else(|| {
                ApiError::bad_request("unable to decode the protobuf body of the request (kind not supported by the development server)")
            }),
        "application/vnd.kubernetes.protobuf" | "application/cbor" => Err(ApiError::unsupported_media(
            if custom {
                &["application/json", "application/yaml"]
            } else {
                &["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
            },
        )),
        "application/yaml" => {
            let text = std::str::from_utf8(&ctx.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        _ => serde_json::from_slice(&ctx.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
    }
}

fn body_json(ctx: &Ctx) -> Result<Value> {
    let custom = ctx.info.api_prefix == "apis"
        && !matches!(
            ctx.info.group.as_str(),
            "apiextensions.k8s.io"
                | "rbac.authorization.k8s.io"
                | "coordination.k8s.io"
                | "events.k8s.io"
                | "authorization.k8s.io"
        );
    let v: Value = decode_body(ctx, custom)?;
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            json_type(&v)
        )));
    }
    Ok(v)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks apiVersion and kind of a body against the endpoint.
fn check_type(def: &ResourceDef, v: &Value) -> Result<()> {
    let kind = str_at(v, "/kind");
    let api_version = str_at(v, "/apiVersion");
    if kind.is_empty() {
        let text = serde_json::to_string(v).unwrap_or_default();
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{text}'"
        )));
    }
    if !api_version.is_empty() && api_version != def.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            def.api_version()
        )));
    }
    if kind != def.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            def.kind
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads

fn get(ctx: &Ctx, def: &ResourceDef, ns: &str, name: &str) -> Result<Response<Body>> {
    let store = ctx.shared.lock();
    let obj = store
        .get(&def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def.what(), name))?;
    let rv = store.rv.to_string();
    drop(store);
    Ok(json_response(200, &render_one(ctx, def, &obj, &rv), &[]))
}

/// Parsed label and field selectors of a list or watch.
pub(crate) struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(def: &ResourceDef, query: &HashMap<String, String>) -> Result<Selectors> {
        let labels = match query.get("labelSelector").map(String::as_str) {
            None | Some("") => LabelSelector::everything(),
            Some(s) => {
                LabelSelector::from_str(s).map_err(|e| ApiError::bad_request(e.to_string()))?
            }
        };
        let fields = match query.get("fieldSelector").map(String::as_str) {
            None | Some("") => FieldSelector::everything(),
            Some(s) => {
                FieldSelector::from_str(s).map_err(|e| ApiError::bad_request(e.to_string()))?
            }
        };
        for r in &fields.requirements {
            if !field_supported(def, &r.field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    r.field
                )));
            }
        }
        Ok(Selectors { labels, fields })
    }

    /// Whether a stored object matches.
    pub fn matches(&self, def: &ResourceDef, obj: &Value) -> bool {
        let empty = Map::new();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if !self.labels.matches(labels) {
            return false;
        }
        if self.fields.requirements.is_empty() {
            return true;
        }
        self.fields.matches(|f| field_value(def, obj, f))
    }
}

const EVENT_FIELDS: [&str; 7] = [
    "kind",
    "namespace",
    "name",
    "uid",
    "apiVersion",
    "resourceVersion",
    "fieldPath",
];

fn field_supported(def: &ResourceDef, field: &str) -> bool {
    if field == "metadata.name" || field == "metadata.namespace" {
        return true;
    }
    match def.flavor {
        Flavor::Custom => def.selectable_fields.iter().any(|f| f == field),
        Flavor::CoreEvent => {
            matches!(field, "reason" | "reportingComponent" | "source" | "type")
                || field
                    .strip_prefix("involvedObject.")
                    .is_some_and(|f| EVENT_FIELDS.contains(&f))
        }
        Flavor::EventsV1 => {
            matches!(field, "reason" | "reportingController" | "type")
                || field
                    .strip_prefix("regarding.")
                    .is_some_and(|f| EVENT_FIELDS.contains(&f))
        }
        Flavor::Namespace => field == "status.phase",
        Flavor::Generic => def.kind == "Secret" && field == "type",
        _ => false,
    }
}

/// The value of a supported field of a stored object.
pub(crate) fn field_value(def: &ResourceDef, obj: &Value, field: &str) -> Option<String> {
    let s = |p: &str| Some(meta::field_string(obj, p).unwrap_or_default());
    match field {
        "metadata.name" => return s("metadata.name"),
        "metadata.namespace" => return s("metadata.namespace"),
        _ => {}
    }
    match def.flavor {
        Flavor::CoreEvent => match field {
            "source" => s("source.component"),
            other => s(other),
        },
        Flavor::EventsV1 => match field {
            "reportingController" => s("reportingComponent"),
            other => match other.strip_prefix("regarding.") {
                Some(f) => s(&format!("involvedObject.{f}")),
                None => s(other),
            },
        },
        _ => s(field),
    }
}

fn encode_continue(rv: u64, key: &Key) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [key.0, key.1]});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, Key)> {
    let bad = |m: &str| ApiError::bad_request(format!("continue key is not valid: {m}"));
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|e| bad(&e.to_string()))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| bad(&e.to_string()))?;
    let rv = v
        .get("rv")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let start = v
        .get("start")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no start key"))?;
    let part = |i: usize| {
        start
            .get(i)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Ok((rv, (part(0), part(1))))
}

fn parse_rv(s: &str) -> Result<u64> {
    s.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid value: \"{s}\": resourceVersion: Invalid value"
        ))
        .with_details(json!({}))
    })
}

fn list(ctx: &Ctx, def: &ResourceDef, ns: &str) -> Result<Response<Body>> {
    let selectors = Selectors::parse(def, &ctx.query)?;
    let limit: usize = match ctx.q("limit") {
        Some(l) => l.parse::<i64>().unwrap_or(0).max(0) as usize,
        None => 0,
    };
    let store = ctx.shared.lock();
    let (at, after) = if let Some(token) = ctx.q("continue") {
        let (rv, key) = decode_continue(token)?;
        store.check_rv(&def.storage, rv).map_err(|_| {
            ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
        })?;
        (Some(rv), Some(key))
    } else {
        match (ctx.q("resourceVersion"), ctx.q("resourceVersionMatch")) {
            (Some(rv), Some("Exact")) => {
                let rv = parse_rv(rv)?;
                if rv > store.rv {
                    let mut e = ApiError::new(504, "Timeout", format!("Too large resource version: {rv}, current: {}", store.rv))
                        .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}));
                    e.retry_after = Some(1);
                    return Err(e);
                }
                (Some(rv), None)
            }
            (None, Some(m)) => {
                return Err(ApiError::invalid(
                    "ListOptions",
                    "meta.k8s.io",
                    "",
                    &[FieldError::forbidden(
                        "resourceVersionMatch",
                        format!(
                            "resourceVersionMatch \"{m}\" is forbidden unless resourceVersion is provided"
                        ),
                    )],
                ));
            }
            (Some(rv), _) => {
                parse_rv(rv)?;
                (None, None)
            }
            _ => (None, None),
        }
    };
    let list_rv = at.unwrap_or(store.rv);
    let ns_filter = if ns.is_empty() { None } else { Some(ns) };
    let mut items: Vec<Arc<Value>> = Vec::new();
    let mut more = false;
    let mut last_key: Option<Key> = None;
    store
        .scan(&def.storage, ns_filter, at, after.as_ref(), |k, v| {
            if !selectors.matches(def, v) {
                return true;
            }
            if limit > 0 && items.len() >= limit {
                more = true;
                return false;
            }
            items.push(v.clone());
            last_key = Some(k.clone());
            true
        })
        .map_err(|_| ApiError::expired("The resourceVersion for the provided list is too old."))?;
    drop(store);
    let continue_token = match (more, last_key) {
        (true, Some(k)) => Some(encode_continue(list_rv, &k)),
        _ => None,
    };
    let rv = list_rv.to_string();
    let body = match output_mode(&ctx.accept) {
        Output::Table => {
            let presented: Vec<Value> = items.iter().map(|o| present(def, o)).collect();
            table::render(
                &def.columns,
                &presented,
                include_object(&ctx.query),
                &rv,
                continue_token.as_deref(),
                jiff::Timestamp::now(),
            )
        }
        Output::Meta => {
            let metas: Vec<Value> = items
                .iter()
                .map(|o| partial_metadata(&present(def, o)))
                .collect();
            let mut m = json!({"resourceVersion": rv});
            if let Some(c) = &continue_token {
                m["continue"] = json!(c);
            }
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": m, "items": metas})
        }
        Output::Full => {
            // Serialized item by item, straight from the shared stored objects when their
            // apiVersion already matches (no deep copy of the list).
            let mut m = json!({"resourceVersion": rv});
            if let Some(c) = &continue_token {
                m["continue"] = json!(c);
            }
            let head = json!({"apiVersion": def.api_version(), "kind": format!("{}List", def.kind), "metadata": m});
            let mut buf = serde_json::to_vec(&head).unwrap_or_default();
            buf.pop(); // the closing brace
            buf.extend_from_slice(b",\"items\":[");
            let api_version = def.api_version();
            for (i, o) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                let fast = def.flavor != Flavor::EventsV1
                    && o.get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str())
                    && o.get("kind").and_then(Value::as_str) == Some(def.kind.as_str());
                let r = if fast {
                    serde_json::to_writer(&mut buf, &**o)
                } else {
                    serde_json::to_writer(&mut buf, &present(def, o))
                };
                if r.is_err() {
                    return Err(ApiError::internal("encoding list"));
                }
            }
            buf.extend_from_slice(b"]}");
            return Ok(crate::server::bytes_response(200, buf));
        }
    };
    Ok(json_response(200, &body, &[]))
}

// ---------------------------------------------------------------------------------------------
// Writes

/// How managedFields are maintained for a write.
#[derive(Clone, Copy)]
enum Managed<'a> {
    /// Non-apply write by this manager.
    Update(&'a str),
    /// Already computed by server-side apply.
    Applied,
}

struct Prepared {
    obj: Value,
    warnings: Vec<String>,
}

fn schema_of(def: &ResourceDef) -> Option<&Structural> {
    def.schema.as_deref()
}

fn invalid(def: &ResourceDef, name: &str, errs: Vec<FieldError>) -> ApiError {
    ApiError::invalid(&def.kind, &def.group, name, &errs)
}

/// events.k8s.io/v1 validates the internal (core) Event, so the 422 names the kind plain
/// `Event "x.1" is invalid: ...` without the group, as a v1.36 server answers.
fn events_invalid(name: &str, errs: Vec<FieldError>) -> ApiError {
    ApiError::invalid("Event", "", name, &errs)
}

fn strict_error(def: &ResourceDef, removed: &[String]) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {}",
        def.kind,
        def.version,
        def.kind,
        schema::strict_decoding_message(removed)
    ))
}

/// Decoding into the typed struct of a built-in kind (and typed `metadata` for custom
/// resources): unknown fields per `fieldValidation`, wrong JSON types are 400.
fn typed_pipeline(
    ctx: &Ctx,
    def: &ResourceDef,
    obj: &mut Value,
    mode: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let checked = match def.flavor {
        Flavor::Generic | Flavor::Namespace | Flavor::CoreEvent | Flavor::EventsV1 => {
            crate::typed::check_builtin(&def.kind, &def.group, obj)
        }
        Flavor::Custom => crate::typed::check_metadata(obj),
        // Fields of the CRD API that the pretended minor lacks (`--version 1.29`).
        Flavor::Crd => Ok(ctx.shared.opts.version.gate_crd(obj)),
        _ => Ok(Vec::new()),
    };
    let removed = checked.map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            def.kind, def.version, def.kind
        ))
    })?;
    if !removed.is_empty() {
        match mode {
            FieldValidation::Strict => return Err(strict_error(def, &removed)),
            FieldValidation::Warn => warnings.extend(
                removed
                    .iter()
                    .map(|p| apollo_apimachinery::schema::unknown_field_warning(p)),
            ),
            FieldValidation::Ignore => {}
        }
    }
    Ok(())
}

/// Structural pruning, defaulting and validation of a custom resource: `old` is the stored
/// object of an update (validation ratcheting), `sub` the subresource (`/status` writes
/// validate only status, as the real status strategy does).
fn schema_pipeline(
    def: &ResourceDef,
    obj: &mut Value,
    old: Option<&Value>,
    sub: Option<&str>,
    mode: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let Some(schema) = schema_of(def) else {
        return Ok(());
    };
    let removed = schema.prune(obj);
    if !removed.is_empty() {
        match mode {
            FieldValidation::Strict => return Err(strict_error(def, &removed)),
            FieldValidation::Warn => warnings.extend(
                removed
                    .iter()
                    .map(|p| apollo_apimachinery::schema::unknown_field_warning(p)),
            ),
            FieldValidation::Ignore => {}
        }
    }
    schema.apply_defaults(obj);
    let status = sub == Some("status");
    let errors = match (old, status) {
        (None, false) => schema.validate(obj),
        (None, true) => schema.validate_status(obj),
        (Some(old), false) => schema.validate_update(old, obj),
        (Some(old), true) => schema.validate_status_update(old, obj),
    };
    if !errors.is_empty() {
        let name = str_at(obj, "/metadata/name").to_string();
        return Err(invalid(def, &name, errors));
    }
    Ok(())
}

fn name_errors(def: &ResourceDef, name: &str, generate: bool) -> Vec<FieldError> {
    let (field, errs) = if generate {
        let label = def.flavor == Flavor::Namespace;
        (
            "metadata.generateName",
            meta::generate_name_errors(name, label),
        )
    } else {
        let errs = match def.flavor {
            Flavor::CoreEvent => Vec::new(),
            Flavor::Namespace => messages::dns1123_label_errors(name),
            Flavor::Generic if def.group == "rbac.authorization.k8s.io" => {
                if name.contains('/') || name.contains('%') || name == "." || name == ".." {
                    vec!["may not contain '/' or '%'".to_string()]
                } else {
                    Vec::new()
                }
            }
            _ => messages::dns1123_subdomain_errors(name, LenUnit::Characters),
        };
        ("metadata.name", errs)
    };
    errs.into_iter()
        .map(|m| FieldError::invalid(field, Value::String(name.to_string()), m))
        .collect()
}

/// Namespace must exist and not be terminating for creates.
fn check_namespace(store: &Store, def: &ResourceDef, ns: &str, name: &str) -> Result<()> {
    if !def.namespaced {
        return Ok(());
    }
    match store.get("namespaces", "", ns) {
        None => Err(ApiError::not_found(
            crate::status::What {
                group: "",
                resource: "namespaces",
            },
            ns,
        )),
        Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::forbidden(
            format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                def.what().qualified(),
                name,
                ns
            ),
            def.what(),
            name,
        )
        .with_details(json!({"name": name, "group": def.group, "kind": def.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}))),
        Some(_) => Ok(()),
    }
}

/// Creating instances of a CRD that is being deleted is refused.
fn check_crd_not_terminating(store: &Store, def: &ResourceDef) -> Result<()> {
    if !def.is_custom() {
        return Ok(());
    }
    let terminating = store
        .get(
            "customresourcedefinitions.apiextensions.k8s.io",
            "",
            &def.storage,
        )
        .is_some_and(|crd| crd.pointer("/metadata/deletionTimestamp").is_some());
    if terminating {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "create not allowed while custom resource definition is terminating",
        )
        .with_details(json!({})));
    }
    Ok(())
}

fn strip_system_fields(obj: &mut Value) {
    if let Some(m) = meta::meta_mut(obj) {
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
}

/// Create-time preparation of a body in the endpoint's form; returns the storage form.
fn prepare_create(
    store: &Store,
    ctx: &Ctx,
    def: &ResourceDef,
    ns: &str,
    mut obj: Value,
    managed: Managed<'_>,
    mode: FieldValidation,
) -> Result<Prepared> {
    let mut warnings = Vec::new();
    typed_pipeline(ctx, def, &mut obj, mode, &mut warnings)?;
    {
        let m = meta::meta_mut(&mut obj).ok_or_else(|| ApiError::bad_request("object expected"))?;
        if def.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        if m.get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        m.remove("resourceVersion");
    }
    let mut name = str_at(&obj, "/metadata/name").to_string();
    let generate = str_at(&obj, "/metadata/generateName").to_string();
    if name.is_empty() {
        if generate.is_empty() {
            return Err(invalid(
                def,
                "",
                vec![FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        let mut errs = if def.flavor == Flavor::CoreEvent {
            Vec::new()
        } else {
            name_errors(def, &generate, true)
        };
        name = meta::generate_name(&generate);
        errs.extend(name_errors(def, &name, false));
        if !errs.is_empty() {
            return Err(invalid(def, &name, errs));
        }
        if let Some(m) = meta::meta_mut(&mut obj) {
            m.insert("name".into(), json!(name));
        }
    } else {
        let mut errs = name_errors(def, &name, false);
        if !generate.is_empty() && def.flavor != Flavor::CoreEvent {
            errs.extend(name_errors(def, &generate, true));
        }
        if !errs.is_empty() {
            return Err(invalid(def, &name, errs));
        }
    }
    strip_system_fields(&mut obj);
    if def.flavor != Flavor::CoreEvent {
        let errs = meta::object_meta_errors(&obj);
        if !errs.is_empty() {
            return Err(invalid(def, &name, errs));
        }
    }
    if matches!(managed, Managed::Update(_))
        && let Some(m) = meta::meta_mut(&mut obj)
    {
        m.remove("managedFields");
    }
    if let Some(m) = meta::meta_mut(&mut obj) {
        m.insert("uid".into(), json!(meta::uid()));
        m.insert("creationTimestamp".into(), json!(ctx.now));
        if def.has_generation() {
            m.insert("generation".into(), json!(1));
        }
    }
    match def.flavor {
        Flavor::Custom => {
            if def.status_subresource
                && let Some(m) = obj.as_object_mut()
            {
                m.remove("status");
            }
            schema_pipeline(def, &mut obj, None, None, mode, &mut warnings)?;
        }
        Flavor::EventsV1 => {
            let core = events::v1_to_core(&obj);
            let errs = events::validate(&core, true);
            if !errs.is_empty() {
                return Err(events_invalid(&name, errs));
            }
            obj = core;
        }
        Flavor::CoreEvent => {
            events::normalize_core(&mut obj);
            let errs = events::validate(&obj, false);
            if !errs.is_empty() {
                return Err(invalid(def, &name, errs));
            }
        }
        Flavor::Namespace => {
            if let Some(m) = obj.as_object_mut() {
                m.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
                m.insert("status".into(), json!({"phase": "Active"}));
            }
            if let Some(m) = meta::meta_mut(&mut obj) {
                let labels = m.entry("labels").or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
        }
        Flavor::Crd => {
            registry::default_crd(&mut obj);
            registry::crd_defs(&obj).map_err(|p| invalid(def, &name, p))?;
            let stored: Vec<Value> = obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .filter_map(|v| v.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(m) = obj.as_object_mut() {
                m.insert(
                    "status".into(),
                    json!({"conditions": [], "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": stored}),
                );
            }
        }
        Flavor::Generic => {
            if def.status_subresource
                && let Some(m) = obj.as_object_mut()
            {
                m.remove("status");
            }
            generic_defaults(def, &mut obj);
            workloads::create_defaults(&def.group, &def.kind, &mut obj, store)
                .map_err(|errs| invalid(def, &name, errs))?;
        }
        Flavor::SelfSubjectAccessReview | Flavor::SelfSubjectRulesReview => {}
    }
    set_type(&mut obj, storage_def(store, def).as_deref().unwrap_or(def));
    if let Managed::Update(manager) = managed {
        apply::record_update(None, &mut obj, manager, None, schema_of(def), &ctx.now);
    }
    Ok(Prepared { obj, warnings })
}

/// The def whose apiVersion objects are stored with (core events for the events.k8s.io view).
fn storage_def(store: &Store, def: &ResourceDef) -> Option<Arc<ResourceDef>> {
    if def.flavor == Flavor::EventsV1 {
        store.registry.lookup("", "v1", "events")
    } else {
        None
    }
}

/// Defaults of simple built-ins (Secret stringData → data, type Opaque).
fn generic_defaults(def: &ResourceDef, obj: &mut Value) {
    if def.kind == "Secret"
        && let Some(m) = obj.as_object_mut()
    {
        if let Some(Value::Object(sd)) = m.remove("stringData") {
            let data = m.entry("data").or_insert_with(|| json!({}));
            if let Some(d) = data.as_object_mut() {
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or("").to_string();
                    d.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(s)),
                    );
                }
            }
        }
        if m.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            m.insert("type".into(), json!("Opaque"));
        }
    }
}

/// Update-time preparation: `new` in the endpoint's form; returns the storage form.
#[allow(clippy::too_many_arguments)]
fn prepare_update(
    ctx: &Ctx,
    def: &ResourceDef,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
    managed: Managed<'_>,
    mode: FieldValidation,
    store: &Store,
) -> Result<Prepared> {
    let mut warnings = Vec::new();
    let name = str_at(old, "/metadata/name").to_string();
    typed_pipeline(ctx, def, &mut new, mode, &mut warnings)?;
    if def.flavor == Flavor::EventsV1 {
        new = events::v1_to_core(&new);
    }
    // The status subresource: only status from a /status write, never status from the main one.
    let status_sub = def.status_subresource;
    if sub == Some("status") {
        let mut merged = old.clone();
        if let Some(m) = merged.as_object_mut() {
            match new.get("status") {
                Some(s) => {
                    m.insert("status".into(), s.clone());
                }
                None => {
                    m.remove("status");
                }
            }
        }
        if let (Some(mf), Some(m)) = (
            new.pointer("/metadata/managedFields").cloned(),
            meta::meta_mut(&mut merged),
        ) && matches!(managed, Managed::Applied)
        {
            m.insert("managedFields".into(), mf);
        }
        new = merged;
    } else if status_sub {
        if let Some(m) = new.as_object_mut() {
            match old.get("status") {
                Some(s) => {
                    m.insert("status".into(), s.clone());
                }
                None => {
                    m.remove("status");
                }
            }
        }
        if def.flavor == Flavor::Namespace
            && let (Some(m), Some(spec)) = (new.as_object_mut(), old.get("spec"))
        {
            m.insert("spec".into(), spec.clone());
        }
    }
    // Identity and system fields come from the stored object.
    {
        let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
        let m = meta::meta_mut(&mut new).ok_or_else(|| ApiError::bad_request("object expected"))?;
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(k) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
        m.remove("selfLink");
        if let Managed::Update(_) = managed {
            match old_meta.get("managedFields") {
                Some(v) => {
                    m.insert("managedFields".into(), v.clone());
                }
                None => {
                    m.remove("managedFields");
                }
            }
        }
    }
    if def.flavor != Flavor::CoreEvent {
        let errs = meta::object_meta_errors(&new);
        if !errs.is_empty() {
            return Err(invalid(def, &name, errs));
        }
    }
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let old_f = meta::finalizers(old);
        let added: Vec<String> = meta::finalizers(&new)
            .into_iter()
            .filter(|f| !old_f.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(invalid(
                def,
                &name,
                vec![FieldError::forbidden(
                    "metadata.finalizers",
                    format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{}\"}}",
                        added.join("\", \"")
                    ),
                )],
            ));
        }
    }
    match def.flavor {
        Flavor::Custom => schema_pipeline(def, &mut new, Some(old), sub, mode, &mut warnings)?,
        Flavor::EventsV1 => {
            events::normalize_core(&mut new);
            let errs = events::validate_update(&new, old, true);
            if !errs.is_empty() {
                return Err(events_invalid(&name, errs));
            }
        }
        Flavor::CoreEvent => {
            events::normalize_core(&mut new);
            let errs = events::validate_update(&new, old, false);
            if !errs.is_empty() {
                return Err(invalid(def, &name, errs));
            }
        }
        Flavor::Crd => {
            registry::default_crd(&mut new);
            registry::crd_defs(&new).map_err(|p| invalid(def, &name, p))?;
            let mut errs = Vec::new();
            for (ptr, field) in [("/spec/group", "spec.group"), ("/spec/scope", "spec.scope")] {
                let (o, n) = (str_at(old, ptr), str_at(&new, ptr));
                if o != n {
                    errs.push(FieldError::invalid(
                        field,
                        Value::String(n.to_string()),
                        "field is immutable",
                    ));
                }
            }
            if !errs.is_empty() {
                return Err(invalid(def, &name, errs));
            }
        }
        Flavor::Generic => {
            generic_defaults(def, &mut new);
            workloads::update_defaults(&def.group, &def.kind, old, &mut new, store)
                .map_err(|errs| invalid(def, &name, errs))?;
        }
        _ => {}
    }
    set_type(&mut new, storage_def(store, def).as_deref().unwrap_or(def));
    if let Managed::Update(manager) = managed {
        apply::record_update(Some(old), &mut new, manager, sub, schema_of(def), &ctx.now);
    }
    if def.has_generation() {
        let drop_status = status_sub;
        let changed = if workloads::is_deployment(&def.group, &def.kind) {
            workloads::deployment_generation_changes(old, &new)
        } else {
            meta::without_meta(old, drop_status) != meta::without_meta(&new, drop_status)
        };
        if changed {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if let Some(m) = meta::meta_mut(&mut new) {
                m.insert("generation".into(), json!(g + 1));
            }
        }
    }
    Ok(Prepared { obj: new, warnings })
}

/// Commits a create; runs CRD registration.
fn commit_create(
    store: &mut Store,
    def: &ResourceDef,
    obj: Value,
    now: &str,
) -> Result<Arc<Value>> {
    let (ns, name) = crate::store::key_of(&obj);
    if store.get(&def.storage, &ns, &name).is_some() {
        return Err(ApiError::already_exists(def.what(), &name));
    }
    let stored = store.put(&def.storage, obj);
    if def.flavor == Flavor::Crd {
        sync_crd(store, &stored, now);
    }
    Ok(stored)
}

/// Commits an update; a no-op keeps the resourceVersion; removing the last finalizer of an
/// object being deleted deletes it.
/// Stores a prepared update, or only returns it for a dry run.
fn store_update(
    ctx: &Ctx,
    store: &mut Store,
    def: &ResourceDef,
    old: &Arc<Value>,
    obj: Value,
) -> Arc<Value> {
    if ctx.dry_run() {
        Arc::new(obj)
    } else {
        commit_update(store, def, old, obj, &ctx.now)
    }
}

/// The answer to a write: the stored object, rendered as asked, at the store's current
/// resourceVersion (the lock is released before encoding).
fn written(
    ctx: &Ctx,
    def: &ResourceDef,
    store: std::sync::MutexGuard<'_, Store>,
    code: u16,
    stored: &Value,
    warnings: &[String],
) -> Response<Body> {
    let rv = store.rv.to_string();
    drop(store);
    json_response(code, &render_one(ctx, def, stored, &rv), warnings)
}

fn commit_update(
    store: &mut Store,
    def: &ResourceDef,
    old: &Arc<Value>,
    new: Value,
    now: &str,
) -> Arc<Value> {
    if meta::same_object(old, &new) {
        return old.clone();
    }
    let (ns, name) = crate::store::key_of(&new);
    if new.pointer("/metadata/deletionTimestamp").is_some() && meta::finalizers(&new).is_empty() {
        if def.flavor == Flavor::Namespace
            && new
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        {
            return store.put(&def.storage, new);
        }
        if def.flavor == Flavor::Crd {
            remove_crd(store, &name);
        }
        return store
            .remove(&def.storage, &ns, &name)
            .unwrap_or_else(|| Arc::new(new));
    }
    let stored = store.put(&def.storage, new);
    if def.flavor == Flavor::Crd {
        sync_crd(store, &stored, now);
    }
    stored
}

/// Serves a CRD's resources and sets its status as the apiextensions controllers do.
pub(crate) fn sync_crd(store: &mut Store, crd: &Value, now: &str) {
    let name = str_at(crd, "/metadata/name").to_string();
    let Ok(defs) = registry::crd_defs(crd) else {
        return;
    };
    let group = str_at(crd, "/spec/group").to_string();
    let kind = str_at(crd, "/spec/names/kind").to_string();
    // Names conflict: another CRD of the group already serves this kind.
    let conflict = store.registry.all().any(|d| {
        d.flavor == Flavor::Custom && d.group == group && d.kind == kind && d.storage != name
    });
    let old_conditions = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let cond = |t: &str, status: &str, reason: &str, message: &str| {
        let prev = old_conditions
            .iter()
            .find(|c| str_at(c, "/type") == t && str_at(c, "/status") == status);
        let ltt = prev
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        json!({"type": t, "status": status, "lastTransitionTime": ltt, "reason": reason, "message": message})
    };
    let mut status = crd.get("status").cloned().unwrap_or(json!({}));
    let conditions = if conflict {
        vec![
            cond(
                "NamesAccepted",
                "False",
                "KindConflict",
                &format!("\"{kind}\" is already in use"),
            ),
            cond(
                "Established",
                "False",
                "NotAccepted",
                "not all names are accepted",
            ),
        ]
    } else {
        store.registry.set_crd(&name, defs);
        let mut accepted = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
        if let Some(a) = accepted.as_object_mut() {
            a.retain(|_, v| !v.is_null());
        }
        status["acceptedNames"] = accepted;
        vec![
            cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            cond(
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ),
        ]
    };
    status["conditions"] = json!(conditions);
    let mut stored_versions: Vec<Value> = status
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(vs) = crd.pointer("/spec/versions").and_then(Value::as_array) {
        for v in vs {
            if v.get("storage").and_then(Value::as_bool) == Some(true)
                && let Some(n) = v.get("name")
                && !stored_versions.contains(n)
            {
                stored_versions.push(n.clone());
            }
        }
    }
    status["storedVersions"] = json!(stored_versions);
    if crd.get("status") != Some(&status) {
        let mut updated = crd.clone();
        updated["status"] = status;
        store.put("customresourcedefinitions.apiextensions.k8s.io", updated);
    }
}

pub(crate) const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Stops serving a CRD's resources and deletes its objects.
pub(crate) fn remove_crd(store: &mut Store, name: &str) {
    let storage = store
        .registry
        .crd_defs(name)
        .and_then(|d| d.first().map(|d| d.storage.clone()));
    if let Some(storage) = storage {
        let mut keys = Vec::new();
        let _ = store.scan(&storage, None, None, None, |k, _| {
            keys.push(k.clone());
            true
        });
        for (ns, n) in keys {
            store.remove(&storage, &ns, &n);
        }
    }
    store.registry.set_crd(name, Vec::new());
}

fn create(ctx: &Ctx, def: &ResourceDef, ns: &str) -> Result<Response<Body>> {
    let obj = body_json(ctx)?;
    check_type(def, &obj)?;
    let mode = ctx.field_validation()?;
    let manager = ctx.manager();
    let mut store = ctx.shared.lock();
    let name = str_at(&obj, "/metadata/name").to_string();
    check_namespace(&store, def, ns, &name)?;
    check_crd_not_terminating(&store, def)?;
    let prepared = prepare_create(&store, ctx, def, ns, obj, Managed::Update(&manager), mode)?;
    let stored = if ctx.dry_run() {
        let (pns, pname) = crate::store::key_of(&prepared.obj);
        if store.get(&def.storage, &pns, &pname).is_some() {
            return Err(ApiError::already_exists(def.what(), &pname));
        }
        Arc::new(prepared.obj)
    } else {
        commit_create(&mut store, def, prepared.obj, &ctx.now)?
    };
    Ok(written(ctx, def, store, 201, &stored, &prepared.warnings))
}

fn check_identity(def: &ResourceDef, obj: &Value, ns: &str, name: &str) -> Result<()> {
    let body_name = str_at(obj, "/metadata/name");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if def.namespaced {
        let body_ns = str_at(obj, "/metadata/namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

fn update(
    ctx: &Ctx,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>> {
    let obj = body_json(ctx)?;
    check_type(def, &obj)?;
    check_identity(def, &obj, ns, name)?;
    let mode = ctx.field_validation()?;
    let manager = ctx.manager();
    let mut store = ctx.shared.lock();
    let old = store
        .get(&def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def.what(), name))?;
    let body_rv = str_at(&obj, "/metadata/resourceVersion");
    if !body_rv.is_empty() && body_rv != str_at(&old, "/metadata/resourceVersion") {
        return Err(ApiError::stale(def.what(), name));
    }
    let prepared = prepare_update(
        ctx,
        def,
        &old,
        obj,
        sub,
        Managed::Update(&manager),
        mode,
        &store,
    )?;
    let stored = store_update(ctx, &mut store, def, &old, prepared.obj);
    Ok(written(ctx, def, store, 200, &stored, &prepared.warnings))
}

const PATCH_TYPES_CR: [&str; 3] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];
const PATCH_TYPES_BUILTIN: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

fn patch(
    ctx: &Ctx,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>> {
    let ct = ctx.content_type();
    let accepted: &[&str] = if def.is_custom() {
        &PATCH_TYPES_CR
    } else {
        &PATCH_TYPES_BUILTIN
    };
    let ct_ok = accepted.contains(&ct.as_str());
    if !ct_ok {
        return Err(ApiError::unsupported_media(accepted));
    }
    if ct == "application/apply-patch+yaml" {
        return apply_patch(ctx, def, ns, name, sub);
    }
    let mode = ctx.field_validation()?;
    let manager = ctx.manager();
    let mut store = ctx.shared.lock();
    let old = store
        .get(&def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def.what(), name))?;
    let mut doc = present(def, &old);
    match ct.as_str() {
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_slice(&ctx.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut doc, &ops.0).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
                .with_details(json!({}))
            })?;
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(&ctx.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: patch must be a JSON object",
                ));
            }
            if ct == "application/strategic-merge-patch+json" {
                doc = apollo_apimachinery::smp::strategic_merge(&def.group, &def.kind, &doc, &p)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            } else {
                json_patch::merge(&mut doc, &p);
            }
        }
        _ => return Err(ApiError::unsupported_media(accepted)),
    }
    if !doc.is_object() {
        return Err(ApiError::bad_request("patched object is not a JSON object"));
    }
    let old_rv = str_at(&old, "/metadata/resourceVersion").to_string();
    let new_rv = str_at(&doc, "/metadata/resourceVersion").to_string();
    if !new_rv.is_empty() && new_rv != old_rv {
        return Err(ApiError::stale(def.what(), name));
    }
    let old_uid = str_at(&old, "/metadata/uid");
    let new_uid = str_at(&doc, "/metadata/uid");
    if !new_uid.is_empty() && new_uid != old_uid {
        return Err(ApiError::conflict(
            def.what(),
            name,
            &format!(
                "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {old_uid}"
            ),
        ));
    }
    let prepared = prepare_update(
        ctx,
        def,
        &old,
        doc,
        sub,
        Managed::Update(&manager),
        mode,
        &store,
    )?;
    let stored = store_update(ctx, &mut store, def, &old, prepared.obj);
    Ok(written(ctx, def, store, 200, &stored, &prepared.warnings))
}

fn apply_patch(
    ctx: &Ctx,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>> {
    let Some(manager) = ctx.q("fieldManager").map(str::to_string) else {
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            &[FieldError::required(
                "fieldManager",
                "is required for apply patch",
            )],
        ));
    };
    let text = std::str::from_utf8(&ctx.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    let applied: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: object expected",
        ));
    }
    check_type(def, &applied)?;
    check_identity(def, &applied, ns, name)?;
    let mode = ctx.field_validation()?;
    let force = ctx.flag("force");
    let mut warnings = Vec::new();
    // Field validation on the applied configuration itself.
    let mut applied = applied;
    typed_pipeline(ctx, def, &mut applied, mode, &mut warnings)?;
    if let Some(schema) = schema_of(def) {
        let mut probe = applied.clone();
        let removed = schema.prune(&mut probe);
        if !removed.is_empty() {
            match mode {
                FieldValidation::Strict => return Err(strict_error(def, &removed)),
                FieldValidation::Warn => warnings.extend(
                    removed
                        .iter()
                        .map(|p| apollo_apimachinery::schema::unknown_field_warning(p)),
                ),
                FieldValidation::Ignore => {}
            }
            applied = probe;
        }
    }
    // What this endpoint may change.
    let mut status_dropped = None;
    match sub {
        Some(_) => {
            let mut only = Map::new();
            for k in ["apiVersion", "kind", "status"] {
                if let Some(v) = applied.get(k) {
                    only.insert(k.into(), v.clone());
                }
            }
            let mut m = Map::new();
            for k in ["name", "namespace"] {
                if let Some(v) = applied.pointer(&format!("/metadata/{k}")) {
                    m.insert(k.into(), v.clone());
                }
            }
            only.insert("metadata".into(), Value::Object(m));
            applied = Value::Object(only);
        }
        None => {
            if def.status_subresource
                && let Some(m) = applied.as_object_mut()
                && let Some(status) = m.remove("status")
            {
                status_dropped = Some(status);
            }
        }
    }
    // The configuration keeps the namespace it was sent with (often none): the real server
    // names the object in typed-patch errors from the body as sent, e.g. `(/w1; ...)`.
    // `prepare_create` fills the namespace from the path; an update keeps the live one.
    let mut store = ctx.shared.lock();
    let old = store.get(&def.storage, ns, name);
    let live = old.as_ref().map(|o| present(def, o));
    if live.is_none() && sub.is_some() {
        return Err(ApiError::not_found(def.what(), name));
    }
    // The real server types the whole configuration before it resets status: a status that
    // cannot be typed (duplicate list-map keys) fails the apply with 500 all the same.
    if let Some(status) = status_dropped {
        let mut whole = applied.clone();
        whole["status"] = status;
        if let Err(e) = apply::apply(ApplyRequest {
            live: None,
            applied: &whole,
            manager: &manager,
            subresource: None,
            force: true,
            schema: schema_of(def),
            now: &ctx.now,
        }) && e.code() == 500
        {
            return Err(apply_error(e));
        }
    }
    let result = apply::apply(ApplyRequest {
        live: live.as_ref(),
        applied: &applied,
        manager: &manager,
        subresource: sub,
        force,
        schema: schema_of(def),
        now: &ctx.now,
    })
    .map_err(apply_error)?;
    let (code, stored, more_warnings) = match old {
        None => {
            check_namespace(&store, def, ns, name)?;
            let prepared = prepare_create(
                &store,
                ctx,
                def,
                ns,
                result,
                Managed::Applied,
                FieldValidation::Ignore,
            )?;
            let stored = if ctx.dry_run() {
                Arc::new(prepared.obj)
            } else {
                commit_create(&mut store, def, prepared.obj, &ctx.now)?
            };
            (201, stored, prepared.warnings)
        }
        Some(old) => {
            let prepared = prepare_update(
                ctx,
                def,
                &old,
                result,
                sub,
                Managed::Applied,
                FieldValidation::Ignore,
                &store,
            )?;
            let stored = store_update(ctx, &mut store, def, &old, prepared.obj);
            (200, stored, prepared.warnings)
        }
    };
    warnings.extend(more_warnings);
    Ok(written(ctx, def, store, code, &stored, &warnings))
}

/// The Status of a failed apply: 409 Conflict with only `causes` in `details` (as the real
/// server answers), or the code [`ApplyError::code`] gives (400, or 500 for `failed to create
/// typed patch object ...`).
fn apply_error(e: ApplyError) -> ApiError {
    match &e {
        ApplyError::Conflicts(_) => ApiError::new(409, "Conflict", e.to_string())
            .with_details(json!({"causes": e.causes()})),
        ApplyError::Invalid(_) => match e.code() {
            // A plain Go error: ErrorToAPIStatus gives 500 with reason Unknown (omitted).
            500 => ApiError::new(500, "", e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Deletes

#[derive(Debug, Default, Clone)]
struct DeleteOptions {
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn delete_options(ctx: &Ctx) -> Result<DeleteOptions> {
    let mut o = DeleteOptions {
        propagation: ctx.q("propagationPolicy").map(str::to_string),
        dry_run: ctx.dry_run(),
        ..Default::default()
    };
    if let Some(orphan) = ctx.q("orphanDependents")
        && o.propagation.is_none()
    {
        o.propagation = Some(
            if orphan == "true" {
                "Orphan"
            } else {
                "Background"
            }
            .to_string(),
        );
    }
    if !ctx.body.is_empty() {
        let v: Value = if ctx.content_type() == "application/vnd.kubernetes.protobuf" {
            crate::protobuf::decode(&ctx.body)
                .ok_or_else(|| ApiError::bad_request("error decoding DeleteOptions"))?
        } else {
            serde_json::from_slice(&ctx.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        };
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.to_string());
        }
        if o.propagation.is_none()
            && let Some(b) = v.get("orphanDependents").and_then(Value::as_bool)
        {
            o.propagation = Some(if b { "Orphan" } else { "Background" }.to_string());
        }
        if let Some(u) = v.pointer("/preconditions/uid").and_then(Value::as_str) {
            o.uid = Some(u.to_string());
        }
        if let Some(r) = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            o.resource_version = Some(r.to_string());
        }
        if v.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            o.dry_run = true;
        }
    }
    if let Some(p) = &o.propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid(
            "DeleteOptions",
            "meta.k8s.io",
            "",
            &[FieldError::not_supported(
                "propagationPolicy",
                Value::String(p.clone()),
                &["Foreground", "Background", "Orphan", "nil"].map(String::from),
            )],
        ));
    }
    Ok(o)
}

/// Result of deleting one object.
enum Deleted {
    /// Removed from storage (the final state).
    Gone(Arc<Value>),
    /// Still present, waiting for finalizers.
    Pending(Arc<Value>),
}

/// Deletes one object with the apiserver's finalizer semantics.
pub(crate) fn delete_object(
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    propagation: Option<&str>,
    now: &str,
    dry_run: bool,
) -> Option<Result<Arc<Value>, Arc<Value>>> {
    let old = store.get(&def.storage, ns, name)?;
    let r = delete_stored(store, def, &old, propagation, now, dry_run);
    Some(match r {
        Deleted::Gone(v) => Ok(v),
        Deleted::Pending(v) => Err(v),
    })
}

fn delete_stored(
    store: &mut Store,
    def: &ResourceDef,
    old: &Arc<Value>,
    propagation: Option<&str>,
    now: &str,
    dry_run: bool,
) -> Deleted {
    let (ns, name) = crate::store::key_of(old);
    let mut obj = (**old).clone();
    let mut fins = meta::finalizers(&obj);
    match propagation {
        Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
        Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
            fins.push("foregroundDeletion".into())
        }
        _ => {}
    }
    if def.flavor == Flavor::Crd {
        // The apiextensions server adds its cleanup finalizer and a Terminating condition;
        // the instances are deleted in the background, then the CRD.
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            if let Some(m) = meta::meta_mut(&mut obj) {
                m.insert("deletionTimestamp".into(), json!(now));
            }
            if !fins.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                fins.push(CRD_CLEANUP_FINALIZER.to_string());
            }
            meta::set_finalizers(&mut obj, &fins);
            let mut conditions: Vec<Value> = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conditions.retain(|c| str_at(c, "/type") != "Terminating");
            conditions.push(json!({
                "type": "Terminating", "status": "True", "lastTransitionTime": now,
                "reason": "InstanceDeletionPending",
                "message": "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
            }));
            obj["status"]["conditions"] = json!(conditions);
            if dry_run {
                return Deleted::Pending(Arc::new(obj));
            }
            store.gc_dirty = true;
            return Deleted::Pending(store.put(&def.storage, obj));
        }
    }
    if def.flavor == Flavor::Namespace {
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            if let Some(m) = meta::meta_mut(&mut obj) {
                m.insert("deletionTimestamp".into(), json!(now));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            obj["status"] = json!({"phase": "Terminating"});
            meta::set_finalizers(&mut obj, &fins);
            if dry_run {
                return Deleted::Pending(Arc::new(obj));
            }
            store.gc_dirty = true;
            return Deleted::Pending(store.put(&def.storage, obj));
        }
        return Deleted::Pending(old.clone());
    }
    if fins.is_empty() {
        if dry_run {
            return Deleted::Gone(old.clone());
        }
        if def.flavor == Flavor::Crd {
            remove_crd(store, &name);
        }
        return match store.remove(&def.storage, &ns, &name) {
            Some(v) => Deleted::Gone(v),
            None => Deleted::Gone(old.clone()),
        };
    }
    let already = obj.pointer("/metadata/deletionTimestamp").is_some();
    if already && fins == meta::finalizers(old) {
        return Deleted::Pending(old.clone());
    }
    if !already && let Some(m) = meta::meta_mut(&mut obj) {
        m.insert("deletionTimestamp".into(), json!(now));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
    }
    meta::set_finalizers(&mut obj, &fins);
    if dry_run {
        return Deleted::Pending(Arc::new(obj));
    }
    store.gc_dirty = true;
    Deleted::Pending(store.put(&def.storage, obj))
}

fn success_status(def: &ResourceDef, obj: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": str_at(obj, "/metadata/name"),
            "group": if def.group.is_empty() { Value::Null } else { json!(def.group) },
            "kind": def.plural,
            "uid": str_at(obj, "/metadata/uid"),
        },
    })
}

fn delete(ctx: &Ctx, def: &ResourceDef, ns: &str, name: &str) -> Result<Response<Body>> {
    let opts = delete_options(ctx)?;
    let mut store = ctx.shared.lock();
    let old = store
        .get(&def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def.what(), name))?;
    if let Some(uid) = &opts.uid {
        let actual = str_at(&old, "/metadata/uid");
        if uid != actual {
            return Err(ApiError::conflict(
                def.what(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        let actual = str_at(&old, "/metadata/resourceVersion");
        if rv != actual {
            return Err(ApiError::conflict(
                def.what(),
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    let r = delete_stored(
        &mut store,
        def,
        &old,
        opts.propagation.as_deref(),
        &ctx.now,
        opts.dry_run,
    );
    let rv = store.rv.to_string();
    drop(store);
    let body = match r {
        Deleted::Pending(v) => render_one(ctx, def, &v, &rv),
        Deleted::Gone(v) => {
            // Stores with ReturnDeletedObject (namespaces, serviceaccounts) answer with the
            // object; every other store answers a Status naming the deleted object.
            if def.flavor == Flavor::Namespace || def.kind == "ServiceAccount" {
                render_one(ctx, def, &v, &rv)
            } else {
                success_status(def, &v)
            }
        }
    };
    Ok(json_response(200, &body, &[]))
}

fn delete_collection(ctx: &Ctx, def: &ResourceDef, ns: &str) -> Result<Response<Body>> {
    let opts = delete_options(ctx)?;
    let selectors = Selectors::parse(def, &ctx.query)?;
    let mut store = ctx.shared.lock();
    let ns_filter = if ns.is_empty() { None } else { Some(ns) };
    let mut targets = Vec::new();
    let _ = store.scan(&def.storage, ns_filter, None, None, |_, v| {
        if selectors.matches(def, v) {
            targets.push(v.clone());
        }
        true
    });
    let mut items = Vec::new();
    for old in targets {
        match delete_stored(
            &mut store,
            def,
            &old,
            opts.propagation.as_deref(),
            &ctx.now,
            opts.dry_run,
        ) {
            Deleted::Gone(v) | Deleted::Pending(v) => items.push(present(def, &v)),
        }
    }
    let rv = store.rv.to_string();
    drop(store);
    Ok(json_response(
        200,
        &json!({
            "apiVersion": def.api_version(),
            "kind": format!("{}List", def.kind),
            "metadata": {"resourceVersion": rv},
            "items": items,
        }),
        &[],
    ))
}

// ---------------------------------------------------------------------------------------------
// Authorization reviews

fn self_subject_access_review(ctx: &Ctx) -> Result<Response<Body>> {
    let mut obj = body_json(ctx)?;
    let ra = obj.pointer("/spec/resourceAttributes").cloned();
    let nra = obj.pointer("/spec/nonResourceAttributes").cloned();
    let s = |v: &Option<Value>, k: &str| -> String {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let attrs = if ra.is_some() {
        Attributes {
            user: ctx.user.clone(),
            verb: s(&ra, "verb"),
            api_group: s(&ra, "group"),
            resource: s(&ra, "resource"),
            subresource: s(&ra, "subresource"),
            namespace: s(&ra, "namespace"),
            name: s(&ra, "name"),
            resource_request: true,
            path: String::new(),
        }
    } else if nra.is_some() {
        Attributes {
            user: ctx.user.clone(),
            verb: s(&nra, "verb"),
            resource_request: false,
            path: s(&nra, "path"),
            ..Default::default()
        }
    } else {
        return Err(ApiError::invalid(
            "SelfSubjectAccessReview",
            "authorization.k8s.io",
            "",
            &[FieldError::required(
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )],
        ));
    };
    let decision = ctx.shared.policy().authorize_with_reason(&attrs);
    obj["status"] = if decision.reason.is_empty() {
        json!({"allowed": decision.allowed})
    } else {
        json!({"allowed": decision.allowed, "reason": decision.reason})
    };
    if let Some(m) = meta::meta_mut(&mut obj) {
        m.insert("creationTimestamp".into(), Value::Null);
    }
    Ok(json_response(201, &obj, &[]))
}

fn self_subject_rules_review(ctx: &Ctx) -> Result<Response<Body>> {
    let mut obj = body_json(ctx)?;
    let ns = str_at(&obj, "/spec/namespace").to_string();
    obj["status"] = ctx.shared.policy().rules_for(&ctx.user, &ns);
    if let Some(m) = meta::meta_mut(&mut obj) {
        m.insert("creationTimestamp".into(), Value::Null);
    }
    Ok(json_response(201, &obj, &[]))
}
