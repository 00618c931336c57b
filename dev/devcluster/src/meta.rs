//! Object metadata helpers: names, timestamps, uids, generateName, comparisons, and the
//! ObjectMeta checks (the name and label rules themselves are `apollo-names`').

use apollo_apimachinery::schema::{FieldError, FieldErrorKind};
use apollo_names::messages::{self, LenUnit, label_value_errors, qualified_name_errors};
use rand::Rng;
use serde_json::{Map, Value};

/// RFC 3339 time with second precision, as metav1.Time serializes.
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `generateName` suffix: 5 characters from the apiserver's alphabet, prefix cut to fit 63.
pub(crate) fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    let max_prefix = 63 - 5;
    let prefix: String = if prefix.len() > max_prefix {
        prefix.chars().take(max_prefix).collect()
    } else {
        prefix.to_string()
    };
    format!("{prefix}{suffix}")
}

/// The generateName prefix check: like the name check with a trailing dash allowed.
pub(crate) fn generate_name_errors(prefix: &str, label: bool) -> Vec<String> {
    let masked = match prefix.strip_suffix('-') {
        Some(p) => format!("{p}a"),
        None => prefix.to_string(),
    };
    if label {
        messages::dns1123_label_errors(&masked)
    } else {
        messages::dns1123_subdomain_errors(&masked, LenUnit::Characters)
    }
}

pub(crate) fn str_at<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn set_finalizers(obj: &mut Value, fins: &[String]) {
    if let Some(meta) = meta_mut(obj) {
        if fins.is_empty() {
            meta.remove("finalizers");
        } else {
            meta.insert(
                "finalizers".into(),
                Value::Array(fins.iter().map(|f| Value::String(f.clone())).collect()),
            );
        }
    }
}

/// A copy without metadata (and without status when `drop_status`), for generation decisions.
pub(crate) fn without_meta(obj: &Value, drop_status: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if drop_status {
            m.remove("status");
        }
    }
    v
}

/// Equality ignoring resourceVersion and managedFields (a no-op write check).
pub(crate) fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        if let Some(m) = v.as_object_mut() {
            m.remove("apiVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// A field path value rendered for field selectors.
pub(crate) fn field_string(obj: &Value, dotted: &str) -> Option<String> {
    let mut cur = obj;
    for part in dotted.split('.') {
        cur = cur.get(part)?;
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// ObjectMeta rules every object passes (labels, annotations, ownerReferences, finalizers),
/// as 422 field errors.
pub(crate) fn object_meta_errors(obj: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    fn invalid(out: &mut Vec<FieldError>, field: &str, value: &str, msg: &str) {
        out.push(FieldError::invalid(
            field,
            Value::String(value.to_string()),
            msg,
        ))
    }
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            for m in qualified_name_errors(k) {
                invalid(&mut out, "metadata.labels", k, &m);
            }
            let v = v.as_str().unwrap_or("");
            for m in label_value_errors(v) {
                invalid(&mut out, "metadata.labels", v, &m);
            }
        }
    }
    if let Some(ann) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0usize;
        for (k, v) in ann {
            for m in qualified_name_errors(&k.to_lowercase()) {
                invalid(&mut out, "metadata.annotations", k, &m);
            }
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
        }
        if total > 262_144 {
            out.push(FieldError {
                field: "metadata.annotations".to_string(),
                kind: FieldErrorKind::TooLong,
                value: None,
                detail: "must have at most 262144 bytes".to_string(),
            });
        }
    }
    if let Some(refs) = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
    {
        let mut controllers = Vec::new();
        for r in refs {
            for (key, what) in [
                ("apiVersion", "version"),
                ("kind", "kind"),
                ("name", "name"),
                ("uid", "uid"),
            ] {
                if r.get(key).and_then(Value::as_str).unwrap_or("").is_empty() {
                    let field = format!("metadata.ownerReferences.{key}");
                    out.push(FieldError::invalid(
                        field,
                        Value::String(String::new()),
                        format!("{what} must not be empty"),
                    ));
                }
            }
            if r.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers.push(format!(
                    "{}/{}",
                    r.get("kind").and_then(Value::as_str).unwrap_or(""),
                    r.get("name").and_then(Value::as_str).unwrap_or("")
                ));
            }
        }
        if controllers.len() > 1 {
            out.push(FieldError::invalid(
                "metadata.ownerReferences",
                Value::Array(refs.clone()),
                format!(
                    "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                    controllers.join(" and ")
                ),
            ));
        }
    }
    if let Some(fins) = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
    {
        for f in fins {
            let f = f.as_str().unwrap_or("");
            for m in qualified_name_errors(f) {
                invalid(&mut out, "metadata.finalizers", f, &m);
            }
        }
    }
    out
}
