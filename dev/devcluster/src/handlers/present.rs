//! Presentation: the object as a client sees it (version, event view, metadata-only, Table) and
//! decoding request bodies (JSON, YAML, protobuf) with the apiserver's errors.

use super::*;

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

pub(crate) fn set_type(v: &mut Value, def: &ResourceDef) {
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

pub(crate) fn render_one(ctx: &Ctx, def: &ResourceDef, obj: &Value, rv: &str) -> Value {
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
pub(crate) fn decode_body(ctx: &Ctx, custom: bool) -> Result<Value> {
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

pub(crate) fn body_json(ctx: &Ctx) -> Result<Value> {
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

pub(crate) fn json_type(v: &Value) -> &'static str {
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
pub(crate) fn check_type(def: &ResourceDef, v: &Value) -> Result<()> {
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
