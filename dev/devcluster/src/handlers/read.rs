//! Reads: get and list (label and field selectors, pagination with continue tokens,
//! resourceVersion semantics).

use super::*;

pub(crate) fn get(ctx: &Ctx, def: &ResourceDef, ns: &str, name: &str) -> Result<Response<Body>> {
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

pub(crate) const EVENT_FIELDS: [&str; 7] = [
    "kind",
    "namespace",
    "name",
    "uid",
    "apiVersion",
    "resourceVersion",
    "fieldPath",
];

pub(crate) fn field_supported(def: &ResourceDef, field: &str) -> bool {
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

pub(crate) fn encode_continue(rv: u64, key: &Key) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [key.0, key.1]});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

pub(crate) fn decode_continue(token: &str) -> Result<(u64, Key)> {
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

pub(crate) fn parse_rv(s: &str) -> Result<u64> {
    s.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid value: \"{s}\": resourceVersion: Invalid value"
        ))
        .with_details(json!({}))
    })
}

pub(crate) fn list(ctx: &Ctx, def: &ResourceDef, ns: &str) -> Result<Response<Body>> {
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
