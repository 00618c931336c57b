//! Embedded resources and list types: x-kubernetes-embedded-resource checks and the uniqueness
//! rules of list-type set and map (ratcheted).

use super::*;

pub(crate) fn validate_embedded(
    x: &Value,
    s: Option<&Node>,
    path: &str,
    is_root: bool,
    errs: &mut Vec<FieldError>,
) {
    let Some(s) = s else { return };
    match x {
        Value::Object(m) => {
            if s.embedded && !is_root {
                if !m.contains_key("apiVersion") {
                    errs.push(FieldError::required(child_path(path, "apiVersion"), ""));
                }
                if !m.contains_key("kind") {
                    errs.push(FieldError::required(child_path(path, "kind"), ""));
                }
                for key in ["apiVersion", "kind"] {
                    match m.get(key) {
                        None => {}
                        Some(Value::String(v)) if v.is_empty() => errs.push(FieldError::invalid(
                            child_path(path, key),
                            Value::String(String::new()),
                            "must not be empty",
                        )),
                        Some(Value::String(_)) => {}
                        Some(other) => errs.push(FieldError::invalid(
                            child_path(path, key),
                            other.clone(),
                            "must be a string",
                        )),
                    }
                }
            }
            for (k, v) in m {
                if let Some(prop) = s.prop(k) {
                    validate_embedded(v, Some(prop), &child_path(path, k), false, errs);
                } else if let Some(add) = s.additional.as_deref() {
                    validate_embedded(v, Some(add), &key_path(path, k), false, errs);
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                validate_embedded(v, s.items.as_deref(), &format!("{path}[{i}]"), false, errs);
            }
        }
        _ => {}
    }
}

pub(crate) fn validate_list_types(
    x: &Value,
    s: Option<&Node>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let Some(s) = s else { return };
    match x {
        Value::Object(m) => {
            if let Some(add) = s.additional.as_deref() {
                for (k, v) in m {
                    validate_list_types(v, Some(add), &key_path(path, k), errs);
                }
            }
            for (k, v) in m {
                if let Some(prop) = s.prop(k) {
                    validate_list_types(v, Some(prop), &child_path(path, k), errs);
                }
            }
        }
        Value::Array(a) => {
            match s.list_type.as_deref() {
                Some("set") => {
                    for i in non_unique(a) {
                        errs.push(FieldError {
                            field: format!("{path}[{i}]"),
                            kind: FieldErrorKind::Duplicate,
                            value: Some(a[i].clone()),
                            detail: String::new(),
                        });
                    }
                }
                Some("map") => {
                    let mut bad = false;
                    for (i, x) in a.iter().enumerate() {
                        if !x.is_null() && !x.is_object() {
                            errs.push(FieldError::invalid(
                                format!("{path}[{i}]"),
                                x.clone(),
                                "must be an object for an array of list-type map",
                            ));
                            bad = true;
                            break;
                        }
                    }
                    if !bad && a.len() > 1 {
                        // Keys of each item: only the key fields present.
                        let keys: Vec<Value> = a
                            .iter()
                            .map(|x| {
                                let mut k = Map::new();
                                for f in &s.list_map_keys {
                                    if let Some(v) = x.get(f) {
                                        k.insert(f.clone(), v.clone());
                                    }
                                }
                                Value::Object(k)
                            })
                            .collect();
                        for i in non_unique(&keys) {
                            errs.push(FieldError {
                                field: format!("{path}[{i}]"),
                                kind: FieldErrorKind::Duplicate,
                                value: Some(keys[i].clone()),
                                detail: String::new(),
                            });
                        }
                    }
                }
                _ => {}
            }
            if let Some(items) = s.items.as_deref() {
                for (i, v) in a.iter().enumerate() {
                    validate_list_types(v, Some(items), &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

/// List-type errors of `new`, reported only when `old` had none (the apiserver's ratcheting).
pub(crate) fn ratchet_list_types(
    root: &Node,
    old: &Value,
    new: &Value,
    errs: &mut Vec<FieldError>,
) {
    let mut new_errs = Vec::new();
    validate_list_types(new, Some(root), "", &mut new_errs);
    if new_errs.is_empty() {
        return;
    }
    let mut old_errs = Vec::new();
    validate_list_types(old, Some(root), "", &mut old_errs);
    if old_errs.is_empty() {
        errs.extend(new_errs);
    }
}

/// Indices of the second occurrence of each duplicated value.
pub(crate) fn non_unique(a: &[Value]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, x) in a.iter().enumerate() {
        let earlier = a[..i].iter().filter(|y| json_equal(x, y)).count();
        if earlier == 1 {
            out.push(i);
        }
    }
    out
}
