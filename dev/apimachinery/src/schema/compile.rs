//! Compilation: a CRD version's openAPIV3Schema into the structural schema tree, refusing what the
//! apiserver refuses.

use super::*;

pub(crate) fn invalid(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: path.to_string(),
        message: message.into(),
    }
}

pub(crate) fn get_bool(m: &Map<String, Value>, key: &str, path: &str) -> Result<bool, SchemaError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(path, format!("{key} must be a boolean"))),
    }
}

pub(crate) fn get_f64(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<f64>, SchemaError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(invalid(path, format!("{key} must be a number"))),
    }
}

pub(crate) fn get_i64(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<i64>, SchemaError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| invalid(path, format!("{key} must be an integer"))),
        Some(_) => Err(invalid(path, format!("{key} must be an integer"))),
    }
}

pub(crate) fn get_str(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, SchemaError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(path, format!("{key} must be a string"))),
    }
}

pub(crate) fn compile_list(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Vec<Node>, SchemaError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, s)| compile(s, &format!("{path}.{key}[{i}]")))
            .collect(),
        Some(_) => Err(invalid(path, format!("{key} must be an array"))),
    }
}

pub(crate) fn compile(schema: &Value, path: &str) -> Result<Node, SchemaError> {
    let m = match schema {
        Value::Object(m) => m,
        Value::Bool(true) | Value::Null => return Ok(Node::default()),
        _ => return Err(invalid(path, "schema must be an object")),
    };
    let mut n = Node {
        ty: get_str(m, "type", path)?,
        ..Node::default()
    };
    if let Some(t) = &n.ty
        && !matches!(
            t.as_str(),
            "object" | "array" | "string" | "integer" | "number" | "boolean"
        )
    {
        return Err(invalid(
            path,
            format!("type: Unsupported value: {}", gofmt::quote(t)),
        ));
    }
    match m.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(props)) => {
            for (k, v) in props {
                n.properties
                    .push((k.clone(), compile(v, &format!("{path}.properties[{k}]"))?));
            }
        }
        Some(_) => return Err(invalid(path, "properties must be an object")),
    }
    match m.get("additionalProperties") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(true)) => n.additional = Some(Box::default()),
        Some(Value::Bool(false)) => n.additional_false = true,
        Some(v @ Value::Object(_)) => {
            n.additional = Some(Box::new(compile(
                v,
                &format!("{path}.additionalProperties"),
            )?))
        }
        Some(_) => {
            return Err(invalid(
                path,
                "additionalProperties must be an object or boolean",
            ));
        }
    }
    match m.get("items") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => {
            n.items = Some(Box::new(compile(v, &format!("{path}.items"))?))
        }
        Some(Value::Array(a)) if a.len() == 1 => {
            n.items = Some(Box::new(compile(&a[0], &format!("{path}.items"))?))
        }
        Some(_) => return Err(invalid(path, "items must be a schema")),
    }
    match m.get("required") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for r in a {
                match r {
                    Value::String(s) => n.required.push(s.clone()),
                    _ => return Err(invalid(path, "required must be a list of strings")),
                }
            }
        }
        Some(_) => return Err(invalid(path, "required must be a list of strings")),
    }
    match m.get("enum") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => n.enum_values = Some(a.clone()),
        Some(_) => return Err(invalid(path, "enum must be a list")),
    }
    n.nullable = get_bool(m, "nullable", path)?;
    if let Some(f) = get_str(m, "format", path)? {
        n.format = formats::effective(n.ty.as_deref(), &f);
    }
    if let Some(p) = get_str(m, "pattern", path)? {
        let re = Regex::new(&p).map_err(|e| {
            invalid(
                path,
                format!("pattern: Invalid value: {}: {e}", gofmt::quote(&p)),
            )
        })?;
        n.pattern = Some((p, re));
    }
    n.maximum = get_f64(m, "maximum", path)?;
    n.exclusive_maximum = get_bool(m, "exclusiveMaximum", path)?;
    n.minimum = get_f64(m, "minimum", path)?;
    n.exclusive_minimum = get_bool(m, "exclusiveMinimum", path)?;
    n.multiple_of = get_f64(m, "multipleOf", path)?;
    n.max_length = get_i64(m, "maxLength", path)?;
    n.min_length = get_i64(m, "minLength", path)?;
    n.max_items = get_i64(m, "maxItems", path)?;
    n.min_items = get_i64(m, "minItems", path)?;
    n.unique_items = get_bool(m, "uniqueItems", path)?;
    n.max_properties = get_i64(m, "maxProperties", path)?;
    n.min_properties = get_i64(m, "minProperties", path)?;
    n.preserve_unknown = get_bool(m, "x-kubernetes-preserve-unknown-fields", path)?;
    n.embedded = get_bool(m, "x-kubernetes-embedded-resource", path)?;
    n.int_or_string = get_bool(m, "x-kubernetes-int-or-string", path)?;
    n.list_type = get_str(m, "x-kubernetes-list-type", path)?;
    if let Some(t) = &n.list_type
        && !matches!(t.as_str(), "atomic" | "set" | "map")
    {
        return Err(invalid(
            path,
            format!(
                "x-kubernetes-list-type: Unsupported value: {}",
                gofmt::quote(t)
            ),
        ));
    }
    match m.get("x-kubernetes-list-map-keys") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for k in a {
                match k {
                    Value::String(s) => n.list_map_keys.push(s.clone()),
                    _ => {
                        return Err(invalid(
                            path,
                            "x-kubernetes-list-map-keys must be a list of strings",
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                path,
                "x-kubernetes-list-map-keys must be a list of strings",
            ));
        }
    }
    if n.list_type.as_deref() == Some("map") && n.list_map_keys.is_empty() {
        return Err(invalid(
            path,
            "x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map",
        ));
    }
    n.map_type = get_str(m, "x-kubernetes-map-type", path)?;
    n.all_of = compile_list(m, "allOf", path)?;
    n.any_of = compile_list(m, "anyOf", path)?;
    n.one_of = compile_list(m, "oneOf", path)?;
    if let Some(v) = m.get("not").filter(|v| !v.is_null()) {
        n.not = Some(Box::new(compile(v, &format!("{path}.not"))?));
    }
    if let Some(d) = m.get("default").filter(|d| !d.is_null()) {
        // Defaults are pruned against their own schema when the CRD is loaded.
        let mut d = d.clone();
        let mut ignored = Vec::new();
        let embedded = n.embedded;
        prune_value(&mut d, Some(&n), &mut String::new(), &mut ignored, embedded);
        n.default = Some(d);
    }
    Ok(n)
}
