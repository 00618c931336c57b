//! kube-openapi validation of a value against its schema node: types, formats, enums, numbers,
//! strings, arrays, objects, with ratcheting of unchanged values.

use super::*;

pub(crate) struct Ctx<'a> {
    /// The field path the validator is rooted at ("" for the object, "status" for /status).
    pub(crate) prefix: &'a str,
}

impl Ctx<'_> {
    /// The field path of an error whose openapi name is `name`.
    pub(crate) fn err_path(&self, name: &str) -> String {
        let name = name.trim_start_matches('.');
        if name.is_empty() {
            if self.prefix.is_empty() {
                "<nil>".into()
            } else {
                self.prefix.into()
            }
        } else if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// An error that is not an openapi `Validation` (composite and range errors).
    pub(crate) fn plain(&self, msg: String) -> FieldError {
        let field = if self.prefix.is_empty() {
            "<nil>".to_string()
        } else {
            self.prefix.to_string()
        };
        FieldError::invalid(field, Value::String(String::new()), msg)
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Number(n) => {
            if n.is_f64() {
                "number"
            } else {
                "integer"
            }
        }
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(crate) fn as_f64(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

pub(crate) fn is_json_integer(f: f64) -> bool {
    if !f.is_finite() {
        return false;
    }
    if f == f.trunc() {
        return true;
    }
    let g = f.trunc();
    let diff = (f - g).abs();
    let sum = f.abs() + g.abs();
    if f.abs() < 1e-9 || g.abs() < 1e-9 {
        diff < 1e-9
    } else {
        diff / sum < 1e-9
    }
}

pub(crate) fn in_body(name: &str) -> String {
    format!("{name} in body")
}

/// Validates `data` against `s`; `old` is the correlated old value on updates (ratcheting).
pub(crate) fn validate_node(
    s: &Node,
    data: &Value,
    old: Option<&Value>,
    path: &str,
    ctx: &Ctx<'_>,
    errs: &mut Vec<FieldError>,
) {
    let types = s.types();
    let format = s.format.as_deref().unwrap_or("");
    // 1. type
    if !types.is_empty() || !format.is_empty() {
        if data.is_null() {
            if !types.is_empty() && !s.nullable {
                errs.push(type_error(ctx, path, &types.join(","), "null"));
            }
        } else {
            let sch = type_name(data);
            let contains = |t: &str| types.contains(&t);
            let is_float_int =
                sch == "number" && is_json_integer(as_f64(data)) && contains("integer");
            let is_int_float = sch == "integer" && contains("number");
            let is_str_or_slice = matches!(data, Value::String(_) | Value::Array(_));
            let data_format = match data {
                Value::Number(n) if n.is_f64() => "float64",
                Value::Number(_) => "int64",
                _ => "",
            };
            // Decoded JSON numbers are int64 or float64, so Go's "lower int/float" cases
            // (int32 data for int64, float32 data for float64) never apply.
            let type_ok = contains(sch) || is_float_int || is_int_float;
            let numeric = contains("number") || contains("integer");
            if !is_str_or_slice && !format.is_empty() && !type_ok && format != data_format {
                errs.push(type_error(ctx, path, format, data_format));
            } else if (numeric || format.is_empty() || !is_str_or_slice) && !type_ok {
                errs.push(type_error(ctx, path, &types.join(","), sch));
            }
        }
    }
    if data.is_null() {
        validate_enum(s, data, path, ctx, errs);
        return;
    }
    // 2. allOf / anyOf / oneOf / not
    validate_schema_props(s, data, old, path, ctx, errs);
    // 3. string, 4. format
    if let Value::String(str_val) = data {
        let len = str_val.chars().count() as i64;
        if let Some(max) = s.max_length.filter(|m| len > *m) {
            errs.push(FieldError {
                field: ctx.err_path(path),
                kind: FieldErrorKind::TooLong,
                value: None,
                detail: if max == 1 {
                    "may not be more than 1 byte".into()
                } else {
                    format!("may not be more than {max} bytes")
                },
            });
        } else if let Some(min) = s.min_length.filter(|m| len < *m) {
            errs.push(FieldError::invalid(
                ctx.err_path(path),
                data.clone(),
                format!("{} should be at least {min} chars long", in_body(path)),
            ));
        } else if let Some((p, re)) = &s.pattern
            && !re.is_match(str_val)
        {
            errs.push(FieldError::invalid(
                ctx.err_path(path),
                data.clone(),
                format!("{} should match '{p}'", in_body(path)),
            ));
        }
        if !format.is_empty()
            && formats::is_string_format(format)
            && !formats::validate(format, str_val)
        {
            errs.push(FieldError {
                field: ctx.err_path(path),
                kind: FieldErrorKind::TypeInvalid,
                value: Some(data.clone()),
                detail: format!(
                    "{} must be of type {format}: {}",
                    in_body(path),
                    gofmt::quote(str_val)
                ),
            });
        }
    }
    // 5. number
    if let Value::Number(n) = data {
        validate_number(s, n, data, path, ctx, errs);
    }
    // 6. slice
    if let Value::Array(a) = data {
        if let Some(items) = s.items.as_deref() {
            for (i, v) in a.iter().enumerate() {
                let old_item = old.and_then(|o| correlate_item(s, o, v));
                validate_child(items, v, old_item, &format!("{path}[{i}]"), ctx, errs);
            }
        }
        let size = a.len() as i64;
        if let Some(min) = s.min_items.filter(|m| size < *m) {
            errs.push(FieldError::invalid(
                ctx.err_path(path),
                Value::from(size),
                format!("{} should have at least {min} items", in_body(path)),
            ));
        }
        if let Some(max) = s.max_items.filter(|m| size > *m) {
            errs.push(FieldError {
                field: ctx.err_path(path),
                kind: FieldErrorKind::TooMany,
                value: Some(Value::from(size)),
                detail: if max == 1 {
                    "must have at most 1 item".into()
                } else {
                    format!("must have at most {max} items")
                },
            });
        }
        if s.unique_items {
            let dup = a
                .iter()
                .enumerate()
                .any(|(i, x)| a[..i].iter().any(|y| json_equal(x, y)));
            if dup {
                errs.push(FieldError::invalid(
                    ctx.err_path(path),
                    Value::String(String::new()),
                    format!("{} shouldn't contain duplicates", in_body(path)),
                ));
            }
        }
    }
    // 7. enum
    validate_enum(s, data, path, ctx, errs);
    // 8. object
    if let Value::Object(m) = data {
        let size = m.len() as i64;
        if let Some(min) = s.min_properties.filter(|x| size < *x) {
            errs.push(FieldError::invalid(
                ctx.err_path(path),
                Value::from(size),
                format!("{} should have at least {min} properties", in_body(path)),
            ));
        }
        if let Some(max) = s.max_properties.filter(|x| size > *x) {
            errs.push(FieldError {
                field: ctx.err_path(path),
                kind: FieldErrorKind::TooMany,
                value: Some(Value::from(size)),
                detail: if max == 1 {
                    "must have at most 1 item".into()
                } else {
                    format!("must have at most {max} items")
                },
            });
        }
        if s.additional_false {
            for k in m.keys() {
                if s.prop(k).is_none() {
                    errs.push(FieldError::invalid(
                        ctx.err_path(path),
                        Value::String(k.clone()),
                        format!("{path}.{k} in body is a forbidden property"),
                    ));
                }
            }
        } else if let Some(add) = s.additional.as_deref() {
            for (k, v) in m {
                if s.prop(k).is_none() {
                    let old_v = old.and_then(|o| o.get(k));
                    validate_child(add, v, old_v, &format!("{path}.{k}"), ctx, errs);
                }
            }
        }
        for (k, prop) in &s.properties {
            if let Some(v) = m.get(k) {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let old_v = old.and_then(|o| o.get(k));
                validate_child(prop, v, old_v, &child, ctx, errs);
            }
        }
        for r in &s.required {
            if !m.contains_key(r) {
                errs.push(FieldError::required(
                    ctx.err_path(&format!("{path}.{r}")),
                    "",
                ));
            }
        }
    }
}

/// Validates a property value or list item; on updates, errors of a value equal to its
/// correlated old value are dropped (CRD validation ratcheting).
pub(crate) fn validate_child(
    s: &Node,
    data: &Value,
    old: Option<&Value>,
    path: &str,
    ctx: &Ctx<'_>,
    errs: &mut Vec<FieldError>,
) {
    let mut e = Vec::new();
    validate_node(s, data, old, path, ctx, &mut e);
    if !e.is_empty() && old.is_some_and(|o| o == data) {
        return;
    }
    errs.extend(e);
}

/// The old item a new list item correlates with: by key for `x-kubernetes-list-type: map`;
/// atomic lists and sets do not correlate (as in k8s.io/apiserver's CorrelatedObject).
pub(crate) fn correlate_item<'a>(list: &Node, old: &'a Value, item: &Value) -> Option<&'a Value> {
    if list.list_type.as_deref() != Some("map") {
        return None;
    }
    let old_items = old.as_array()?;
    let item = item.as_object()?;
    old_items.iter().find(|o| {
        o.as_object()
            .is_some_and(|om| list.list_map_keys.iter().all(|k| om.get(k) == item.get(k)))
    })
}

pub(crate) fn type_error(ctx: &Ctx<'_>, path: &str, expected: &str, actual: &str) -> FieldError {
    FieldError {
        field: ctx.err_path(path),
        kind: FieldErrorKind::TypeInvalid,
        value: Some(Value::String(actual.to_string())),
        detail: format!(
            "{} must be of type {expected}: {}",
            in_body(path),
            gofmt::quote(actual)
        ),
    }
}

pub(crate) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() != y.is_f64() {
                // Go's reflect.DeepEqual distinguishes int64 from float64.
                false
            } else {
                x == y || x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

pub(crate) fn enum_matches(data: &Value, e: &Value) -> bool {
    match (data, e) {
        (Value::Null, _) | (_, Value::Null) => false,
        // Enum numbers are float64 in the apiserver; data numbers convert to float64.
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => json_equal(data, e),
    }
}

pub(crate) fn validate_enum(
    s: &Node,
    data: &Value,
    path: &str,
    ctx: &Ctx<'_>,
    errs: &mut Vec<FieldError>,
) {
    let Some(values) = &s.enum_values else { return };
    if values.is_empty() || values.iter().any(|e| enum_matches(data, e)) {
        return;
    }
    let supported: Vec<String> = values
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => gofmt::json(other),
        })
        .collect();
    errs.push(FieldError::not_supported(
        ctx.err_path(path),
        data.clone(),
        &supported,
    ));
}

/// swag.FormatFloat64: strconv 'f' with the shortest precision.
pub(crate) fn format_float_f(f: f64) -> String {
    let r = format!("{f}");
    r.strip_suffix(".0").map(str::to_string).unwrap_or(r)
}

/// kube-openapi's numberValidator (range of the declared type/format, multipleOf, minimum,
/// maximum), including its quirks: an integer value is compared against bounds truncated to
/// integers, and a bound that does not fit the declared type is reported and then compared
/// as a float.
pub(crate) fn validate_number(
    s: &Node,
    n: &serde_json::Number,
    data: &Value,
    path: &str,
    ctx: &Ctx<'_>,
    errs: &mut Vec<FieldError>,
) {
    let is_int = !n.is_f64();
    let f = n.as_f64().unwrap_or(0.0);
    let types = s.types();
    // Only a single numeric type (and a format valid for it) is passed to the validator.
    let ty = match types.as_slice() {
        [t @ ("integer" | "number")] => Some(*t),
        _ => None,
    };
    let format = match (ty, s.format.as_deref()) {
        (Some("integer"), Some(f @ ("int32" | "int64")))
        | (Some("number"), Some(f @ ("float" | "double"))) => f,
        _ => "",
    };
    // IsValueValidAgainstRange
    let range = |rep: &str, prefix: &str| -> Option<FieldError> {
        let ty = ty?;
        let bad = match ty {
            "integer" if format == "int32" => rep.parse::<i32>().is_err(),
            "integer" => rep.parse::<i64>().is_err(),
            _ if format == "float" => rep
                .parse::<f64>()
                .map(|x| x.abs() > f32::MAX as f64)
                .unwrap_or(true),
            _ => false,
        };
        bad.then(|| {
            ctx.plain(if format.is_empty() {
                format!("{prefix} value must be of type {ty} (default format) in {path}")
            } else {
                format!("{prefix} value must be of type {ty} with format {format} in {path}")
            })
        })
    };
    let value_rep = if is_int {
        gofmt::number(n)
    } else {
        format_float_f(f)
    };
    if let Some(e) = range(&value_rep, "Checked") {
        errs.push(e);
    }
    let int_value = n.as_i64();
    if let Some(m) = s.multiple_of {
        let range_err = range(&format_float_f(m), "MultipleOf");
        let native_int = range_err.is_none() && is_int;
        if let Some(e) = range_err {
            errs.push(e);
        }
        if native_int {
            let factor = m as i64;
            let v = int_value.unwrap_or(0);
            if factor <= 0 {
                errs.push(FieldError::invalid(
                    ctx.err_path(path),
                    Value::from(factor),
                    format!("factor MultipleOf declared for {path} must be positive: {factor}"),
                ));
            } else if v % factor != 0 {
                errs.push(FieldError::invalid(
                    ctx.err_path(path),
                    data.clone(),
                    format!("{} should be a multiple of {factor}", in_body(path)),
                ));
            }
        } else if m <= 0.0 {
            errs.push(FieldError::invalid(
                ctx.err_path(path),
                serde_json::Number::from_f64(m)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                format!(
                    "factor MultipleOf declared for {path} must be positive: {}",
                    gofmt::float(m)
                ),
            ));
        } else {
            let mult = if m < 1.0 { 1.0 / m * f } else { f / m };
            if !is_json_integer(mult) {
                errs.push(FieldError::invalid(
                    ctx.err_path(path),
                    data.clone(),
                    format!(
                        "{} should be a multiple of {}",
                        in_body(path),
                        gofmt::float(m)
                    ),
                ));
            }
        }
    }
    for (bound, exclusive, is_min) in [
        (s.minimum, s.exclusive_minimum, true),
        (s.maximum, s.exclusive_maximum, false),
    ] {
        let Some(b) = bound else { continue };
        let range_err = range(
            &format_float_f(b),
            if is_min {
                "Minimum boundary"
            } else {
                "Maximum boundary"
            },
        );
        let native_int = range_err.is_none() && is_int && int_value.is_some();
        if let Some(e) = range_err {
            errs.push(e);
        }
        let (fails, shown) = if native_int {
            let v = int_value.unwrap_or(0);
            let bi = b as i64;
            let fails = match (is_min, exclusive) {
                (true, false) => v < bi,
                (true, true) => v <= bi,
                (false, false) => v > bi,
                (false, true) => v >= bi,
            };
            (fails, bi.to_string())
        } else {
            let fails = match (is_min, exclusive) {
                (true, false) => f < b,
                (true, true) => f <= b,
                (false, false) => f > b,
                (false, true) => f >= b,
            };
            (fails, gofmt::float(b))
        };
        if fails {
            let rel = match (is_min, exclusive) {
                (true, false) => "greater than or equal to",
                (true, true) => "greater than",
                (false, false) => "less than or equal to",
                (false, true) => "less than",
            };
            errs.push(FieldError::invalid(
                ctx.err_path(path),
                data.clone(),
                format!("{} should be {rel} {shown}", in_body(path)),
            ));
        }
    }
}

pub(crate) fn validate_schema_props(
    s: &Node,
    data: &Value,
    old: Option<&Value>,
    path: &str,
    ctx: &Ctx<'_>,
    errs: &mut Vec<FieldError>,
) {
    let run = |n: &Node| {
        let mut e = Vec::new();
        validate_node(n, data, old, path, ctx, &mut e);
        e
    };
    let quoted = gofmt::quote(path);
    if !s.any_of.is_empty() {
        let mut best: Option<Vec<FieldError>> = None;
        let mut ok = false;
        for alt in &s.any_of {
            let e = run(alt);
            if e.is_empty() {
                ok = true;
                break;
            }
            if best.as_ref().is_none_or(|b| e.len() < b.len()) {
                best = Some(e);
            }
        }
        if !ok {
            errs.push(ctx.plain(format!(
                "{quoted} must validate at least one schema (anyOf)"
            )));
            errs.extend(best.unwrap_or_default());
        }
    }
    if !s.one_of.is_empty() {
        let mut valid = 0;
        let mut best: Option<Vec<FieldError>> = None;
        for alt in &s.one_of {
            let e = run(alt);
            if e.is_empty() {
                valid += 1;
            } else if valid == 0 && best.as_ref().is_none_or(|b| e.len() < b.len()) {
                best = Some(e);
            }
        }
        if valid != 1 {
            let extra = if valid == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {valid} valid alternatives")
            };
            errs.push(ctx.plain(format!(
                "{quoted} must validate one and only one schema (oneOf). {extra}"
            )));
            if valid == 0 {
                errs.extend(best.unwrap_or_default());
            }
        }
    }
    if !s.all_of.is_empty() {
        let mut validated = 0;
        for alt in &s.all_of {
            let e = run(alt);
            if e.is_empty() {
                validated += 1;
            }
            errs.extend(e);
        }
        if validated != s.all_of.len() {
            let extra = if validated == 0 {
                ". None validated"
            } else {
                ""
            };
            errs.push(ctx.plain(format!(
                "{quoted} must validate all the schemas (allOf){extra}"
            )));
        }
    }
    if let Some(not) = &s.not
        && run(not).is_empty()
    {
        errs.push(ctx.plain(format!("{quoted} must not validate the schema (not)")));
    }
}
