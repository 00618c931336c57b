//! meta.k8s.io/v1 `Table` rendering, as the apiserver answers
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! * CRDs ([`crd_columns`]): a `Name` column (`format: name`, ObjectMeta's description) first,
//!   then the version's `additionalPrinterColumns` (description defaulting to
//!   `Custom resource definition column (in JSONPath format): <path>`), or, when there are none,
//!   the apiextensions default `Age` column (`type: date`, `.metadata.creationTimestamp`).
//!   Cells are computed like the CRD table convertor: the first value the JSONPath yields (no
//!   value → `null`, which kubectl prints as `<none>`); `string` columns print that value the
//!   way client-go's JSONPath printer does (strings as-is, numbers and booleans as Go prints
//!   them, arrays and objects as compact JSON with sorted keys, JSON `null` as `<no value>`);
//!   `integer`, `number` and `boolean` columns pass matching JSON values through (a float in an
//!   `integer` column is truncated) and give `null` otherwise; `date` columns turn an RFC 3339
//!   string into a human duration since `now` (`45s`, `5m12s`, `3h4m`, `3d`, `2y3d`; `""` →
//!   `<unknown>`, unparsable → `<invalid>`, more than a second in the future → `<invalid>`).
//! * Built-in kinds ([`builtin_columns`]): the columns of kube-apiserver's printers for
//!   Namespace, Event (core/v1 and events.k8s.io/v1 shapes; all wide columns as the server
//!   sends them, kubectl shows those of priority 0: Last Seen, Type, Reason, Object, Message),
//!   Secret, ServiceAccount, Lease, Role/ClusterRole, RoleBinding/ClusterRoleBinding, and for
//!   anything else the apiserver's default convertor (`Name`, `Created At` as an RFC 3339
//!   string). Built-in columns have `json_path: None`; [`render`] computes their cells by
//!   column name.
//! * Rows carry `object` per `includeObject`: `PartialObjectMetadata` (meta.k8s.io/v1, the
//!   whole `metadata`) for [`IncludeObject::Metadata`] (the default, and what kubectl gets),
//!   the object itself for [`IncludeObject::Object`], `null` for [`IncludeObject::None`].
//! * `metadata` carries `resourceVersion` and `continue` (omitted when empty).
//!
//! Not implemented: `noHeaders`, `remainingItemCount`, row `conditions`, other built-in kinds'
//! printers.

use serde_json::{Map, Value, json};

/// ObjectMeta's swagger description of `name`.
pub const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
/// ObjectMeta's swagger description of `creationTimestamp`.
pub const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// A Table column definition plus the JSONPath that fills it (`None`: computed by name for
/// built-in kinds, see [`render`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: Option<String>,
}

impl Column {
    fn builtin(name: &str, type_: &str, format: &str, priority: i64, description: &str) -> Self {
        Column {
            name: name.to_string(),
            type_: type_.to_string(),
            format: format.to_string(),
            description: description.to_string(),
            priority,
            json_path: None,
        }
    }

    /// The `columnDefinitions[]` entry for this column.
    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

fn name_column() -> Column {
    Column::builtin("Name", "string", "name", 0, NAME_DESCRIPTION)
}

fn age_column() -> Column {
    Column::builtin("Age", "string", "", 0, CREATION_TIMESTAMP_DESCRIPTION)
}

/// Columns of a CRD version (`spec.versions[]` entry): `Name` first, then
/// `additionalPrinterColumns`, or the default `Age` column when there are none.
pub fn crd_columns(crd_version: &Value) -> Vec<Column> {
    let mut cols = vec![name_column()];
    let printer = crd_version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    let Some(printer) = printer else {
        cols.push(Column {
            name: "Age".to_string(),
            type_: "date".to_string(),
            format: String::new(),
            description: CREATION_TIMESTAMP_DESCRIPTION.to_string(),
            priority: 0,
            json_path: Some(".metadata.creationTimestamp".to_string()),
        });
        return cols;
    };
    for c in printer {
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let path = s("jsonPath");
        let description = match s("description") {
            d if d.is_empty() => {
                format!("Custom resource definition column (in JSONPath format): {path}")
            }
            d => d,
        };
        cols.push(Column {
            name: s("name"),
            type_: s("type"),
            format: s("format"),
            description,
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: Some(path),
        });
    }
    cols
}

/// Columns for built-in kinds, as kube-apiserver's printers define them.
pub fn builtin_columns(kind: &str) -> Vec<Column> {
    const EVENT_FIELD_PATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
    let b = Column::builtin;
    match kind {
        "Namespace" => vec![
            name_column(),
            b("Status", "string", "", 0, "The status of the namespace"),
            age_column(),
        ],
        "Event" => vec![
            b(
                "Last Seen",
                "string",
                "",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            b(
                "Type",
                "string",
                "",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            b(
                "Reason",
                "string",
                "",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            b(
                "Object",
                "string",
                "",
                0,
                "The object that this event is about.",
            ),
            b("Subobject", "string", "", 1, EVENT_FIELD_PATH),
            b(
                "Source",
                "string",
                "",
                1,
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            b(
                "Message",
                "string",
                "",
                0,
                "A human-readable description of the status of this operation.",
            ),
            b(
                "First Seen",
                "string",
                "",
                1,
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            b(
                "Count",
                "string",
                "",
                1,
                "The number of times this event has occurred.",
            ),
            b("Name", "string", "name", 1, NAME_DESCRIPTION),
        ],
        "Secret" => vec![
            name_column(),
            b(
                "Type",
                "string",
                "",
                0,
                "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
            ),
            b(
                "Data",
                "string",
                "",
                0,
                "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
            ),
            age_column(),
        ],
        "ServiceAccount" => vec![
            name_column(),
            b(
                "Secrets",
                "string",
                "",
                0,
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            age_column(),
        ],
        "Lease" => vec![
            name_column(),
            b(
                "Holder",
                "string",
                "",
                0,
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            age_column(),
        ],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            name_column(),
            b(
                "Role",
                "string",
                "",
                0,
                if kind == "RoleBinding" {
                    "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable."
                } else {
                    "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable."
                },
            ),
            age_column(),
            b(
                "Users",
                "string",
                "",
                1,
                &format!("Users in the {}", lower_first(kind)),
            ),
            b(
                "Groups",
                "string",
                "",
                1,
                &format!("Groups in the {}", lower_first(kind)),
            ),
            b(
                "ServiceAccounts",
                "string",
                "",
                1,
                &format!("ServiceAccounts in the {}", lower_first(kind)),
            ),
        ],
        // Role, ClusterRole and everything served by the default table convertor
        // (CustomResourceDefinition included).
        _ => vec![
            name_column(),
            b("Created At", "date", "", 0, CREATION_TIMESTAMP_DESCRIPTION),
        ],
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// What each row carries in `object` (`includeObject=`; default `Metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (`""` → `Metadata`); `None` for unknown values.
    pub fn from_query(v: &str) -> Option<Self> {
        match v {
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "None" => Some(IncludeObject::None),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// Renders a Table of `items` (one row each, in order).
pub fn render(
    columns: &[Column],
    items: &[Value],
    include: IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
    now: jiff::Timestamp,
) -> Value {
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert(
            "resourceVersion".into(),
            Value::String(resource_version.into()),
        );
    }
    if let Some(c) = continue_token.filter(|c| !c.is_empty()) {
        metadata.insert("continue".into(), Value::String(c.into()));
    }
    let paths: Vec<Option<crate::jsonpath::JsonPath>> = columns
        .iter()
        .map(|c| {
            c.json_path
                .as_deref()
                .and_then(|p| crate::jsonpath::parse(p).ok())
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let cells: Vec<Value> = columns
                .iter()
                .zip(&paths)
                .map(|(col, path)| match (&col.json_path, path) {
                    (Some(_), Some(path)) => crd_cell(&col.type_, &path.evaluate(item), now),
                    (Some(_), None) => Value::Null,
                    (None, _) => builtin_cell(&col.name, item, now),
                })
                .collect();
            let object = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Object => item.clone(),
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item.get("metadata").cloned().unwrap_or_else(|| json!({})),
                }),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns.iter().map(Column::definition).collect::<Vec<_>>(),
        "rows": rows,
    })
}

/// A CRD column's cell from the values its JSONPath yielded.
fn crd_cell(type_: &str, values: &[Value], now: jiff::Timestamp) -> Value {
    let Some(v) = values.first() else {
        return Value::Null;
    };
    match type_ {
        "string" => Value::String(print_value(v)),
        "integer" => match v {
            Value::Number(n) => match n.as_i64() {
                Some(i) => Value::from(i),
                // Go's int64(float64) truncates toward zero
                None => n
                    .as_f64()
                    .map_or(Value::Null, |f| Value::from(f.trunc() as i64)),
            },
            _ => Value::Null,
        },
        "number" => match v {
            Value::Number(_) => v.clone(),
            _ => Value::Null,
        },
        "boolean" => match v {
            Value::Bool(_) => v.clone(),
            _ => Value::Null,
        },
        "date" => match v {
            Value::String(s) if s.is_empty() || s == "null" => Value::String("<unknown>".into()),
            Value::String(s) => match parse_time(s) {
                Some(t) => Value::String(human_duration_since(t, now)),
                None => Value::String("<invalid>".into()),
            },
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// How client-go's JSONPath printer renders one value.
pub fn print_value(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => match n.as_u64() {
                Some(u) => u.to_string(),
                None => go_float(n.as_f64().unwrap_or(0.0)),
            },
        },
        Value::Array(_) | Value::Object(_) => {
            let mut out = String::new();
            go_json(v, &mut out);
            out
        }
    }
}

/// Go's `%v` for a float64.
fn go_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mant, exp)) => {
                let (sign, digits) = match exp.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', exp),
                };
                format!("{mant}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else {
        format!("{f}")
    }
}

/// `encoding/json.Marshal` of a decoded JSON value: sorted object keys, HTML-safe escaping.
fn go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n
            .as_i64()
            .map(|i| i.to_string())
            .or_else(|| n.as_u64().map(|u| u.to_string()))
        {
            Some(s) => out.push_str(&s),
            None => {
                let f = n.as_f64().unwrap_or(0.0);
                let abs = f.abs();
                if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
                    let s = go_float(f);
                    // encoding/json writes e-07 as e-7
                    out.push_str(&s.replace("e-0", "e-").replace("e+0", "e+"));
                } else {
                    out.push_str(&format!("{f}"));
                }
            }
        },
        Value::String(s) => go_json_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(k, out);
                out.push(':');
                go_json(&m[k], out);
            }
            out.push('}');
        }
    }
}

fn go_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse::<jiff::Timestamp>().ok()
}

/// `duration.HumanDuration` of `now - t` (what `kubectl get` shows as AGE).
pub fn human_duration_since(t: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let nanos = now.as_nanosecond() - t.as_nanosecond();
    human_duration_nanos(nanos)
}

/// `duration.HumanDuration` of a duration in nanoseconds.
pub fn human_duration_nanos(nanos: i128) -> String {
    const S: i128 = 1_000_000_000;
    let seconds = nanos / S;
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / (60 * S);
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / (3600 * S);
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

fn first_str<'a>(v: &'a Value, paths: &[&[&str]]) -> &'a str {
    paths
        .iter()
        .map(|p| str_at(v, p))
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

/// `translateTimestampSince`: `<unknown>` for a missing/zero time.
fn since(ts: &str, now: jiff::Timestamp) -> String {
    match parse_time(ts) {
        Some(t) if !ts.starts_with("0001-01-01") => human_duration_since(t, now),
        _ => "<unknown>".into(),
    }
}

fn rfc3339_utc(ts: &str) -> String {
    match parse_time(ts) {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

/// Cells of built-in columns, by column name.
fn builtin_cell(name: &str, item: &Value, now: jiff::Timestamp) -> Value {
    let s = |p: &[&str]| Value::String(str_at(item, p).to_string());
    match name {
        "Name" => s(&["metadata", "name"]),
        "Age" => Value::String(since(str_at(item, &["metadata", "creationTimestamp"]), now)),
        "Created At" => Value::String(rfc3339_utc(str_at(
            item,
            &["metadata", "creationTimestamp"],
        ))),
        "Status" => s(&["status", "phase"]),
        "Type" => s(&["type"]),
        "Reason" => s(&["reason"]),
        "Data" => Value::from(
            item.get("data")
                .and_then(Value::as_object)
                .map_or(0, Map::len) as i64,
        ),
        "Secrets" => Value::from(
            item.get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as i64,
        ),
        "Holder" => s(&["spec", "holderIdentity"]),
        "Role" => Value::String(format!(
            "{}/{}",
            str_at(item, &["roleRef", "kind"]),
            str_at(item, &["roleRef", "name"])
        )),
        "Users" | "Groups" | "ServiceAccounts" => {
            let want = match name {
                "Users" => "User",
                "Groups" => "Group",
                _ => "ServiceAccount",
            };
            let subjects = item
                .get("subjects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let names: Vec<String> = subjects
                .iter()
                .filter(|s| str_at(s, &["kind"]) == want)
                .map(|s| {
                    if want == "ServiceAccount" {
                        format!("{}/{}", str_at(s, &["namespace"]), str_at(s, &["name"]))
                    } else {
                        str_at(s, &["name"]).to_string()
                    }
                })
                .collect();
            Value::String(names.join(", "))
        }
        "Last Seen" | "First Seen" | "Count" | "Object" | "Subobject" | "Source" | "Message" => {
            event_cell(name, item, now)
        }
        _ => Value::Null,
    }
}

/// Event cells (printEvent), for both the core/v1 and events.k8s.io/v1 field names.
fn event_cell(name: &str, e: &Value, now: jiff::Timestamp) -> Value {
    let first_ts = first_str(e, &[&["firstTimestamp"], &["deprecatedFirstTimestamp"]]);
    let first_seen = if first_ts.is_empty() {
        since(str_at(e, &["eventTime"]), now)
    } else {
        since(first_ts, now)
    };
    let series = e.get("series").filter(|s| s.is_object());
    match name {
        "First Seen" => Value::String(first_seen),
        "Last Seen" => {
            if let Some(series) = series {
                return Value::String(since(str_at(series, &["lastObservedTime"]), now));
            }
            let last = first_str(e, &[&["lastTimestamp"], &["deprecatedLastTimestamp"]]);
            Value::String(if last.is_empty() {
                first_seen
            } else {
                since(last, now)
            })
        }
        "Count" => {
            let count = match series {
                Some(s) => s.get("count").and_then(Value::as_i64).unwrap_or(0),
                None => {
                    let c = e
                        .get("count")
                        .or_else(|| e.get("deprecatedCount"))
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    if c == 0 { 1 } else { c }
                }
            };
            Value::from(count)
        }
        "Object" => {
            let kind =
                first_str(e, &[&["involvedObject", "kind"], &["regarding", "kind"]]).to_lowercase();
            let obj = first_str(e, &[&["involvedObject", "name"], &["regarding", "name"]]);
            Value::String(if obj.is_empty() {
                kind
            } else {
                format!("{kind}/{obj}")
            })
        }
        "Subobject" => Value::String(
            first_str(
                e,
                &[
                    &["involvedObject", "fieldPath"],
                    &["regarding", "fieldPath"],
                ],
            )
            .to_string(),
        ),
        "Source" => {
            let component = first_str(
                e,
                &[
                    &["source", "component"],
                    &["deprecatedSource", "component"],
                    &["reportingComponent"],
                    &["reportingController"],
                ],
            );
            let instance = first_str(
                e,
                &[
                    &["source", "host"],
                    &["deprecatedSource", "host"],
                    &["reportingInstance"],
                ],
            );
            Value::String(if instance.is_empty() {
                component.to_string()
            } else {
                format!("{component}, {instance}")
            })
        }
        "Message" => Value::String(first_str(e, &[&["message"], &["note"]]).trim().to_string()),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-03-10T12:00:00Z".parse().unwrap()
    }

    fn dp_version() -> Value {
        json!({
            "name": "v1alpha1",
            "served": true,
            "storage": true,
            "additionalPrinterColumns": [
                {"name": "Device", "type": "string", "jsonPath": ".spec.deviceRef.name"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase"},
                {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts", "priority": 1},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
            ]
        })
    }

    fn dp(name: &str, created: &str, status: Value) -> Value {
        json!({
            "apiVersion": "azure.com/v1alpha1",
            "kind": "DeviceProcess",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                         "resourceVersion": "7", "uid": "u1", "labels": {"a": "b"}},
            "spec": {"deviceRef": {"name": "tor1-01"}},
            "status": status
        })
    }

    #[test]
    fn crd_columns_put_name_first_and_copy_printer_columns() {
        let cols = crd_columns(&dp_version());
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["Name", "Device", "Phase", "Ready", "Restarts", "Age"]
        );
        assert_eq!(cols[0].format, "name");
        assert_eq!(cols[0].description, NAME_DESCRIPTION);
        assert_eq!(cols[0].json_path, None);
        assert_eq!(
            cols[1].description,
            "Custom resource definition column (in JSONPath format): .spec.deviceRef.name"
        );
        assert_eq!(cols[2].description, "Lifecycle phase");
        assert_eq!(cols[4].priority, 1);
        assert_eq!(cols[4].type_, "integer");
        assert_eq!(
            cols[5].json_path.as_deref(),
            Some(".metadata.creationTimestamp")
        );
    }

    #[test]
    fn crd_without_printer_columns_gets_age() {
        for v in [
            json!({"name": "v1"}),
            json!({"name": "v1", "additionalPrinterColumns": []}),
        ] {
            let cols = crd_columns(&v);
            assert_eq!(cols.len(), 2);
            assert_eq!(cols[1].name, "Age");
            assert_eq!(cols[1].type_, "date");
            assert_eq!(cols[1].description, CREATION_TIMESTAMP_DESCRIPTION);
            let t = render(
                &cols,
                &[dp("a", "2026-03-10T11:00:00Z", json!({}))],
                IncludeObject::None,
                "1",
                None,
                now(),
            );
            assert_eq!(t["rows"][0]["cells"], json!(["a", "60m"]));
        }
    }

    #[test]
    fn render_crd_table() {
        let cols = crd_columns(&dp_version());
        let items = vec![
            dp(
                "a",
                "2026-03-10T11:54:48Z",
                json!({"phase": "Running", "restarts": 2,
                "conditions": [{"type": "Ready", "status": "True"}]}),
            ),
            dp("b", "2026-03-07T12:00:00Z", json!({})),
        ];
        let t = render(
            &cols,
            &items,
            IncludeObject::Metadata,
            "42",
            Some("tok"),
            now(),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "tok"})
        );
        assert_eq!(
            t["columnDefinitions"][0],
            json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0})
        );
        assert_eq!(t["columnDefinitions"][4]["priority"], 1);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["a", "tor1-01", "Running", "True", 2, "5m12s"])
        );
        // missing values are null cells (kubectl prints <none>)
        assert_eq!(
            t["rows"][1]["cells"],
            json!(["b", "tor1-01", null, null, null, "3d"])
        );
        let obj = &t["rows"][0]["object"];
        assert_eq!(obj["kind"], "PartialObjectMetadata");
        assert_eq!(obj["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(obj["metadata"]["name"], "a");
        assert_eq!(obj["metadata"]["labels"], json!({"a": "b"}));
        assert!(obj.get("spec").is_none());
    }

    #[test]
    fn include_object_modes_and_metadata() {
        let cols = crd_columns(&dp_version());
        let items = vec![dp("a", "2026-03-10T11:00:00Z", json!({}))];
        let t = render(&cols, &items, IncludeObject::Object, "", None, now());
        assert_eq!(t["rows"][0]["object"], items[0]);
        assert_eq!(t["metadata"], json!({}));
        let t = render(&cols, &items, IncludeObject::None, "5", Some(""), now());
        assert_eq!(t["rows"][0]["object"], Value::Null);
        assert_eq!(t["metadata"], json!({"resourceVersion": "5"}));
        let t = render(&cols, &[], IncludeObject::Metadata, "5", None, now());
        assert_eq!(t["rows"], json!([]));
        assert_eq!(IncludeObject::from_query(""), Some(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::from_query("Object"),
            Some(IncludeObject::Object)
        );
        assert_eq!(IncludeObject::from_query("None"), Some(IncludeObject::None));
        assert_eq!(IncludeObject::from_query("x"), None);
    }

    #[test]
    fn cell_types_follow_the_crd_convertor() {
        let now = now();
        assert_eq!(crd_cell("string", &[json!("x")], now), json!("x"));
        assert_eq!(crd_cell("string", &[json!(3)], now), json!("3"));
        assert_eq!(crd_cell("string", &[json!(1.5)], now), json!("1.5"));
        assert_eq!(crd_cell("string", &[json!(true)], now), json!("true"));
        assert_eq!(crd_cell("string", &[Value::Null], now), json!("<no value>"));
        assert_eq!(
            crd_cell("string", &[json!(["a", "b"])], now),
            json!("[\"a\",\"b\"]")
        );
        assert_eq!(
            crd_cell("string", &[json!({"z": 1, "a": "<x>"})], now),
            json!("{\"a\":\"\\u003cx\\u003e\",\"z\":1}")
        );
        assert_eq!(crd_cell("string", &[], now), Value::Null);
        assert_eq!(crd_cell("integer", &[json!(7)], now), json!(7));
        assert_eq!(crd_cell("integer", &[json!(7.9)], now), json!(7));
        assert_eq!(crd_cell("integer", &[json!("7")], now), Value::Null);
        assert_eq!(crd_cell("number", &[json!(2.5)], now), json!(2.5));
        assert_eq!(crd_cell("number", &[json!("x")], now), Value::Null);
        assert_eq!(crd_cell("boolean", &[json!(false)], now), json!(false));
        assert_eq!(crd_cell("boolean", &[json!("true")], now), Value::Null);
        assert_eq!(
            crd_cell("date", &[json!("2026-03-10T11:59:30Z")], now),
            json!("30s")
        );
        assert_eq!(crd_cell("date", &[json!("")], now), json!("<unknown>"));
        assert_eq!(
            crd_cell("date", &[json!("yesterday")], now),
            json!("<invalid>")
        );
        assert_eq!(crd_cell("date", &[json!(5)], now), Value::Null);
        assert_eq!(
            crd_cell("date", &[json!("2026-03-10T12:00:05Z")], now),
            json!("<invalid>")
        );
        assert_eq!(crd_cell("custom", &[json!("x")], now), Value::Null);
    }

    #[test]
    fn go_number_printing() {
        assert_eq!(print_value(&json!(1e21)), "1e+21");
        assert_eq!(print_value(&json!(0.00001)), "1e-05");
        assert_eq!(print_value(&json!(0.0001)), "0.0001");
        assert_eq!(print_value(&json!(-2.25)), "-2.25");
        assert_eq!(print_value(&json!(3.0)), "3");
        // inside arrays/objects numbers are printed the way encoding/json writes them
        assert_eq!(
            print_value(&json!([1e-7, 1.5, 1e21, 2, "s", null, true])),
            "[1e-7,1.5,1e+21,2,\"s\",null,true]"
        );
        assert_eq!(
            print_value(&json!({"b": {"d": 1, "c": 2}, "a": []})),
            "{\"a\":[],\"b\":{\"c\":2,\"d\":1}}"
        );
    }

    #[test]
    fn human_durations() {
        let s = 1_000_000_000i128;
        let cases = [
            (-3 * s, "<invalid>"),
            (-s, "0s"),
            (0, "0s"),
            (59 * s, "59s"),
            (119 * s, "119s"),
            (120 * s, "2m"),
            (312 * s, "5m12s"),
            (9 * 60 * s + 59 * s, "9m59s"),
            (10 * 60 * s + 30 * s, "10m"),
            (179 * 60 * s, "179m"),
            (3 * 3600 * s, "3h"),
            (3 * 3600 * s + 4 * 60 * s, "3h4m"),
            (8 * 3600 * s + 59 * 60 * s, "8h"),
            (47 * 3600 * s, "47h"),
            (48 * 3600 * s, "2d"),
            (3 * 86400 * s + 5 * 3600 * s, "3d5h"),
            (8 * 86400 * s, "8d"),
            (400 * 86400 * s, "400d"),
            (2 * 365 * 86400 * s, "2y"),
            ((3 * 365 + 10) * 86400 * s, "3y10d"),
            (9 * 365 * 86400 * s, "9y"),
        ];
        for (n, want) in cases {
            assert_eq!(human_duration_nanos(n), want, "{n}");
        }
    }

    #[test]
    fn namespace_table() {
        let cols = builtin_columns("Namespace");
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Name", "Status", "Age"]);
        assert!(cols.iter().all(|c| c.json_path.is_none()));
        assert_eq!(cols[2].type_, "string");
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2026-03-09T12:00:00Z"}, "status": {"phase": "Active"}});
        let t = render(&cols, &[ns], IncludeObject::Metadata, "9", None, now());
        assert_eq!(t["rows"][0]["cells"], json!(["default", "Active", "24h"]));
    }

    #[test]
    fn event_table_core_v1() {
        let cols = builtin_columns("Event");
        let names: Vec<&str> = cols
            .iter()
            .filter(|c| c.priority == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["Last Seen", "Type", "Reason", "Object", "Message"]);
        assert_eq!(cols.len(), 10);
        assert_eq!(cols[9].format, "name");
        let ev = json!({
            "metadata": {"name": "dp-a.1234", "namespace": "default", "creationTimestamp": "2026-03-10T11:00:00Z"},
            "involvedObject": {"kind": "DeviceProcess", "name": "dp-a", "fieldPath": "spec"},
            "type": "Warning", "reason": "Failed", "message": "  boom \n",
            "firstTimestamp": "2026-03-10T11:00:00Z", "lastTimestamp": "2026-03-10T11:58:00Z", "count": 3,
            "source": {"component": "apollo-controller"}
        });
        let t = render(&cols, &[ev], IncludeObject::None, "", None, now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "2m",
                "Warning",
                "Failed",
                "deviceprocess/dp-a",
                "spec",
                "apollo-controller",
                "boom",
                "60m",
                3,
                "dp-a.1234"
            ])
        );
    }

    #[test]
    fn event_table_events_k8s_io_shape() {
        let cols = builtin_columns("Event");
        let ev = json!({
            "metadata": {"name": "dp-a.abc", "creationTimestamp": "2026-03-10T11:00:00Z"},
            "regarding": {"kind": "DeviceProcess", "name": "dp-a"},
            "type": "Normal", "reason": "Started", "note": "ok",
            "eventTime": "2026-03-10T11:59:00.000000Z",
            "reportingController": "apollo.io/controller", "reportingInstance": "ctrl-0",
            "series": {"count": 4, "lastObservedTime": "2026-03-10T11:59:50.000000Z"}
        });
        let t = render(&cols, &[ev], IncludeObject::None, "", None, now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "10s",
                "Normal",
                "Started",
                "deviceprocess/dp-a",
                "",
                "apollo.io/controller, ctrl-0",
                "ok",
                "60s",
                4,
                "dp-a.abc"
            ])
        );
        // a singleton with no times at all
        let bare = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Node"}});
        let t = render(&cols, &[bare], IncludeObject::None, "", None, now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["<unknown>", "", "", "node", "", "", "", "<unknown>", 1, "e"])
        );
    }

    #[test]
    fn other_builtin_tables() {
        let secret = json!({"metadata": {"name": "s", "creationTimestamp": "2026-03-10T11:59:00Z"}, "type": "Opaque", "data": {"a": "eA==", "b": "eQ=="}});
        let t = render(
            &builtin_columns("Secret"),
            &[secret],
            IncludeObject::None,
            "",
            None,
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["s", "Opaque", 2, "60s"]));

        let sa =
            json!({"metadata": {"name": "default", "creationTimestamp": "2026-03-10T11:59:00Z"}});
        let t = render(
            &builtin_columns("ServiceAccount"),
            &[sa],
            IncludeObject::None,
            "",
            None,
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["default", 0, "60s"]));

        let lease = json!({"metadata": {"name": "apollo-leader", "creationTimestamp": "2026-03-10T11:59:00Z"}, "spec": {"holderIdentity": "pod-1"}});
        let t = render(
            &builtin_columns("Lease"),
            &[lease],
            IncludeObject::None,
            "",
            None,
            now(),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["apollo-leader", "pod-1", "60s"])
        );

        let rb = json!({"metadata": {"name": "rb", "creationTimestamp": "2026-03-10T11:59:00Z"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                         {"kind": "ServiceAccount", "name": "ctrl", "namespace": "apollo"}, {"kind": "User", "name": "bob"}]});
        let t = render(
            &builtin_columns("RoleBinding"),
            &[rb],
            IncludeObject::None,
            "",
            None,
            now(),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "rb",
                "ClusterRole/view",
                "60s",
                "alice, bob",
                "devs",
                "apollo/ctrl"
            ])
        );

        let role =
            json!({"metadata": {"name": "r", "creationTimestamp": "2026-03-10T11:59:00+01:00"}});
        let cols = builtin_columns("Role");
        assert_eq!(cols[1].name, "Created At");
        assert_eq!(cols[1].type_, "date");
        let t = render(&cols, &[role], IncludeObject::None, "", None, now());
        assert_eq!(t["rows"][0]["cells"], json!(["r", "2026-03-10T10:59:00Z"]));

        let generic = builtin_columns("CustomResourceDefinition");
        assert_eq!(
            generic.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["Name", "Created At"]
        );
    }
}
