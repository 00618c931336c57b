//! Structural schemas of CustomResourceDefinitions: pruning, defaulting and validation.
//!
//! A [`Structural`] is compiled once from a CRD version's `schema.openAPIV3Schema` and then
//! applied to objects the way kube-apiserver's apiextensions code does:
//!
//! * [`Structural::prune`] is the decoder's *schema coercion*: unknown `metadata` fields and
//!   fields not in the schema are dropped and their paths returned (for
//!   `strict decoding error: unknown field "spec.bogusField"` and `Warning` headers; see
//!   [`strict_decoding_message`] and [`unknown_field_warning`]), then `null` values of
//!   non-nullable fields without a default are dropped.
//! * [`Structural::apply_defaults`] is the structural defaulting algorithm.
//! * [`Structural::validate`] is the kube-openapi schema validation of the whole object as done
//!   on create and update of the main resource, followed by the embedded-resource checks and
//!   the `x-kubernetes-list-type` uniqueness checks; [`Structural::validate_status`] is the
//!   variant used for writes to the `/status` subresource (only `status` is validated and
//!   messages name paths relative to `status`, as the real server does).
//!
//! Messages are rendered exactly like `k8s.io/apimachinery/pkg/util/validation/field` does,
//! e.g. `spec.execution.backend: Unsupported value: "x": supported values: "container",
//! "systemd"`. [`invalid_message`] builds the 422 `Status.message`.

use serde_json::{Map, Value};

use crate::formats;
use crate::gofmt;
use regex::Regex;

/// Errors compiling a schema.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// The schema is malformed (wrong JSON type of a keyword, invalid pattern, ...).
    #[error("invalid schema at {path}: {message}")]
    Invalid { path: String, message: String },
}

/// One compiled schema node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    pub(crate) ty: Option<String>,
    pub(crate) properties: Vec<(String, Node)>,
    pub(crate) additional: Option<Box<Node>>,
    pub(crate) additional_false: bool,
    pub(crate) items: Option<Box<Node>>,
    pub(crate) required: Vec<String>,
    pub(crate) enum_values: Option<Vec<Value>>,
    pub(crate) default: Option<Value>,
    pub(crate) nullable: bool,
    /// The effective format (unsupported formats are stripped, as the apiserver does).
    pub(crate) format: Option<String>,
    pub(crate) pattern: Option<(String, Regex)>,
    pub(crate) maximum: Option<f64>,
    pub(crate) exclusive_maximum: bool,
    pub(crate) minimum: Option<f64>,
    pub(crate) exclusive_minimum: bool,
    pub(crate) multiple_of: Option<f64>,
    pub(crate) max_length: Option<i64>,
    pub(crate) min_length: Option<i64>,
    pub(crate) max_items: Option<i64>,
    pub(crate) min_items: Option<i64>,
    pub(crate) unique_items: bool,
    pub(crate) max_properties: Option<i64>,
    pub(crate) min_properties: Option<i64>,
    pub(crate) preserve_unknown: bool,
    pub(crate) embedded: bool,
    pub(crate) int_or_string: bool,
    pub(crate) list_type: Option<String>,
    pub(crate) list_map_keys: Vec<String>,
    pub(crate) map_type: Option<String>,
    pub(crate) all_of: Vec<Node>,
    pub(crate) any_of: Vec<Node>,
    pub(crate) one_of: Vec<Node>,
    pub(crate) not: Option<Box<Node>>,
}

impl Node {
    pub(crate) fn prop(&self, name: &str) -> Option<&Node> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, n)| n)
    }

    /// The schema of a map entry `key`: a declared property, else additionalProperties.
    pub(crate) fn field(&self, key: &str) -> Option<&Node> {
        self.prop(key).or(self.additional.as_deref())
    }

    fn types(&self) -> Vec<&str> {
        if self.int_or_string {
            vec!["integer", "string"]
        } else {
            self.ty.as_deref().into_iter().collect()
        }
    }
}

/// A CRD version's `schema.openAPIV3Schema`, compiled once.
#[derive(Debug, Clone, Default)]
pub struct Structural {
    pub(crate) root: Node,
}

impl Structural {
    /// Compiles a schema (the value of `schema.openAPIV3Schema`).
    pub fn from_json(schema: &Value) -> Result<Self, SchemaError> {
        let root = compile(schema, "openAPIV3Schema")?;
        Ok(Structural { root })
    }

    /// Removes fields not in the schema (honouring x-kubernetes-preserve-unknown-fields,
    /// additionalProperties, x-kubernetes-embedded-resource; never apiVersion/kind/metadata at
    /// the root) and unknown ObjectMeta fields, then drops `null`s of non-nullable fields that
    /// have no default. Returns the dotted paths removed, e.g. `["spec.bogusField"]`, in the
    /// order the apiserver reports them (metadata first, then sorted schema paths).
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(meta) = obj.get_mut("metadata") {
            let mut m = Vec::new();
            prune_object_meta(meta, "metadata", &mut m);
            normalize_object_meta(meta, false);
            m.sort();
            out.extend(m);
        }
        let mut paths = Vec::new();
        prune_value(obj, Some(&self.root), &mut String::new(), &mut paths, true);
        paths.sort();
        out.extend(paths);
        prune_nulls(obj, Some(&self.root));
        let mut embedded = Vec::new();
        coerce_embedded(obj, Some(&self.root), "", &mut embedded);
        embedded.sort();
        out.extend(embedded);
        out
    }

    /// Applies `default:` values as the apiserver does (on read and write): a property's
    /// default is set when the property is absent (or `null` and not nullable) and its parent
    /// object exists; list items and map values that are `null` get the item default.
    pub fn apply_defaults(&self, obj: &mut Value) {
        default_value(obj, &self.root);
    }

    /// Validates the whole object (create and update of the main resource): type, enum,
    /// required, pattern, format, minimum/maximum, multipleOf, min/maxLength, min/maxItems,
    /// uniqueItems, min/maxProperties, allOf/anyOf/oneOf/not, embedded resources'
    /// apiVersion/kind, and list-type set/map uniqueness.
    pub fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let ctx = Ctx { prefix: "" };
        validate_node(&self.root, obj, None, "", &ctx, &mut errs);
        validate_embedded(obj, Some(&self.root), "", false, &mut errs);
        validate_list_types(obj, Some(&self.root), "", &mut errs);
        dedup(errs)
    }

    /// Validates an update of the main resource with validation ratcheting (GA since
    /// Kubernetes 1.33): errors in values unchanged from `old` (correlated through map keys
    /// and list-map keys) are dropped; list-type uniqueness errors only count when `old` had
    /// none. An unchanged object is always valid.
    pub fn validate_update(&self, old: &Value, new: &Value) -> Vec<FieldError> {
        if old == new {
            return Vec::new();
        }
        let mut errs = Vec::new();
        let ctx = Ctx { prefix: "" };
        validate_node(&self.root, new, Some(old), "", &ctx, &mut errs);
        validate_embedded(new, Some(&self.root), "", false, &mut errs);
        ratchet_list_types(&self.root, old, new, &mut errs);
        dedup(errs)
    }

    /// [`Structural::validate_status`] with validation ratcheting against `old` (see
    /// [`Structural::validate_update`]).
    pub fn validate_status_update(&self, old: &Value, new: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let (Some(status), Some(node)) = (new.get("status"), self.root.prop("status")) {
            let old_status = old.get("status");
            if old_status != Some(status) {
                let ctx = Ctx { prefix: "status" };
                validate_node(node, status, old_status, "", &ctx, &mut errs);
                validate_embedded(status, Some(node), "status", false, &mut errs);
            }
        }
        ratchet_list_types(&self.root, old, new, &mut errs);
        dedup(errs)
    }

    /// Validates a write to the `/status` subresource: only `status` is checked against the
    /// `status` property's schema, with messages naming paths relative to it (e.g.
    /// `status.observedGeneration: Invalid value: "string": observedGeneration in body must
    /// be of type integer: "string"`), plus list-type uniqueness.
    pub fn validate_status(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let (Some(status), Some(node)) = (obj.get("status"), self.root.prop("status")) {
            let ctx = Ctx { prefix: "status" };
            validate_node(node, status, None, "", &ctx, &mut errs);
            validate_embedded(status, Some(node), "status", false, &mut errs);
        }
        validate_list_types(obj, Some(&self.root), "", &mut errs);
        dedup(errs)
    }

    /// Whether `path` (e.g. `["status","conditions"]`) is a list-map and its keys (for SSA).
    /// Array levels are transparent: `["spec","ports","protocols"]` looks into items.
    pub fn list_map_keys(&self, path: &[&str]) -> Option<Vec<String>> {
        let node = self.node_at(path)?;
        if node.list_type.as_deref() == Some("map") {
            Some(node.list_map_keys.clone())
        } else {
            None
        }
    }

    /// The `x-kubernetes-list-type` of the list at `path` (`atomic` when unset, as the
    /// apiserver treats lists of CRDs), or `None` when `path` is not a list in the schema.
    pub fn list_type(&self, path: &[&str]) -> Option<String> {
        let node = self.node_at(path)?;
        if node.ty.as_deref() == Some("array") || node.items.is_some() {
            Some(node.list_type.clone().unwrap_or_else(|| "atomic".into()))
        } else {
            None
        }
    }

    fn node_at(&self, path: &[&str]) -> Option<&Node> {
        let mut node = &self.root;
        for seg in path {
            while node.ty.as_deref() == Some("array") {
                node = node.items.as_deref()?;
            }
            node = node.field(seg)?;
        }
        Some(node)
    }
}

// ---------------------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------------------

fn invalid(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: path.to_string(),
        message: message.into(),
    }
}

fn get_bool(m: &Map<String, Value>, key: &str, path: &str) -> Result<bool, SchemaError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(path, format!("{key} must be a boolean"))),
    }
}

fn get_f64(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<f64>, SchemaError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(invalid(path, format!("{key} must be a number"))),
    }
}

fn get_i64(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<i64>, SchemaError> {
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

fn get_str(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, SchemaError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(path, format!("{key} must be a string"))),
    }
}

fn compile_list(m: &Map<String, Value>, key: &str, path: &str) -> Result<Vec<Node>, SchemaError> {
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

fn compile(schema: &Value, path: &str) -> Result<Node, SchemaError> {
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

// ---------------------------------------------------------------------------------------
// Pruning
// ---------------------------------------------------------------------------------------

const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn append_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn record(path: &str, key: &str, out: &mut Vec<String>) {
    if path.is_empty() {
        out.push(key.to_string());
    } else {
        out.push(format!("{path}.{key}"));
    }
}

/// Structural pruning; `as_embedded` treats `s` as an embedded resource (the root is).
fn prune_value(
    x: &mut Value,
    s: Option<&Node>,
    path: &mut String,
    out: &mut Vec<String>,
    as_embedded: bool,
) {
    if let Some(s) = s
        && s.preserve_unknown
    {
        skip_prune(x, s, path, out, as_embedded);
        return;
    }
    let orig = path.len();
    match x {
        Value::Object(m) => {
            let Some(s) = s else {
                for k in m.keys() {
                    record(path, k, out);
                }
                m.clear();
                return;
            };
            let embedded = s.embedded || as_embedded;
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(prop) = s.prop(&k) {
                    append_key(path, &k);
                    if let Some(v) = m.get_mut(&k) {
                        prune_value(v, Some(prop), path, out, false);
                    }
                    path.truncate(orig);
                } else if let Some(add) = s.additional.as_deref() {
                    append_key(path, &k);
                    if let Some(v) = m.get_mut(&k) {
                        prune_value(v, Some(add), path, out, false);
                    }
                    path.truncate(orig);
                } else {
                    if !(META_FIELDS.contains(&k.as_str()) && path.is_empty()) {
                        record(path, &k, out);
                    }
                    m.remove(&k);
                }
            }
        }
        Value::Array(a) => {
            let items = s.and_then(|s| s.items.as_deref());
            for (i, v) in a.iter_mut().enumerate() {
                path.push_str(&format!("[{i}]"));
                prune_value(v, items, path, out, false);
                path.truncate(orig);
            }
        }
        _ => {}
    }
}

fn skip_prune(
    x: &mut Value,
    s: &Node,
    path: &mut String,
    out: &mut Vec<String>,
    as_embedded: bool,
) {
    let orig = path.len();
    match x {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if (s.embedded || as_embedded) && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(prop) = s.prop(k) {
                    append_key(path, k);
                    prune_value(v, Some(prop), path, out, false);
                    path.truncate(orig);
                } else if let Some(add) = s.additional.as_deref() {
                    append_key(path, k);
                    prune_value(v, Some(add), path, out, false);
                    path.truncate(orig);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for (i, v) in a.iter_mut().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    skip_prune(v, items, path, out, false);
                    path.truncate(orig);
                }
            }
        }
        _ => {}
    }
}

/// Removes `null`s of non-nullable fields without a default (they would be dropped by a Go
/// struct decode; non-nullable nulls with a default are defaulted later).
fn prune_nulls(x: &mut Value, s: Option<&Node>) {
    match x {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let schema = s.and_then(|s| s.field(&k));
                let drop = matches!(m.get(&k), Some(Value::Null))
                    && schema.is_some_and(|sc| !sc.nullable && sc.default.is_none());
                if drop {
                    m.remove(&k);
                } else if let Some(v) = m.get_mut(&k) {
                    prune_nulls(v, schema);
                }
            }
        }
        Value::Array(a) => {
            let items = s.and_then(|s| s.items.as_deref());
            for v in a.iter_mut() {
                prune_nulls(v, items);
            }
        }
        _ => {}
    }
}

const OBJECT_META_FIELDS: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];
const OWNER_REFERENCE_FIELDS: [&str; 6] = [
    "apiVersion",
    "kind",
    "name",
    "uid",
    "controller",
    "blockOwnerDeletion",
];
const MANAGED_FIELDS_ENTRY_FIELDS: [&str; 7] = [
    "manager",
    "operation",
    "apiVersion",
    "time",
    "fieldsType",
    "fieldsV1",
    "subresource",
];

/// Drops ObjectMeta fields a strict Go decode would not know, recording `prefix.field`.
fn prune_object_meta(meta: &mut Value, prefix: &str, out: &mut Vec<String>) {
    let Value::Object(m) = meta else { return };
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if !OBJECT_META_FIELDS.contains(&k.as_str()) {
            out.push(format!("{prefix}.{k}"));
            m.remove(&k);
        }
    }
    for (list, known) in [
        ("ownerReferences", &OWNER_REFERENCE_FIELDS[..]),
        ("managedFields", &MANAGED_FIELDS_ENTRY_FIELDS[..]),
    ] {
        if let Some(Value::Array(items)) = m.get_mut(list) {
            for (i, item) in items.iter_mut().enumerate() {
                if let Value::Object(im) = item {
                    let keys: Vec<String> = im.keys().cloned().collect();
                    for k in keys {
                        if !known.contains(&k.as_str()) {
                            out.push(format!("{prefix}.{list}[{i}].{k}"));
                            im.remove(&k);
                        }
                    }
                }
            }
        }
    }
}

/// The ObjectMeta round trip of the apiserver's decoder (Go struct, `omitempty`): empty
/// strings, zero generation, empty or null maps and lists and null pointers disappear. For
/// embedded resources a null `creationTimestamp` is dropped too.
fn normalize_object_meta(meta: &mut Value, embedded: bool) {
    let Value::Object(m) = meta else { return };
    m.retain(|k, v| match k.as_str() {
        "name" | "generateName" | "namespace" | "selfLink" | "uid" | "resourceVersion" => {
            !(v.is_null() || v.as_str() == Some(""))
        }
        "generation" => !(v.is_null() || v.as_i64() == Some(0)),
        "labels" | "annotations" => !(v.is_null() || v.as_object().is_some_and(Map::is_empty)),
        "ownerReferences" | "finalizers" | "managedFields" => {
            !(v.is_null() || v.as_array().is_some_and(Vec::is_empty))
        }
        "deletionTimestamp" | "deletionGracePeriodSeconds" => !v.is_null(),
        "creationTimestamp" => !(embedded && v.is_null()),
        _ => true,
    });
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `field.Path.Key`: `parent[key]`.
fn key_path(parent: &str, key: &str) -> String {
    format!("{parent}[{key}]")
}

/// Prunes unknown ObjectMeta fields of embedded resources (not the root).
fn coerce_embedded(x: &mut Value, s: Option<&Node>, path: &str, out: &mut Vec<String>) {
    let Some(s) = s else { return };
    match x {
        Value::Object(m) => {
            if s.embedded
                && !path.is_empty()
                && let Some(meta) = m.get_mut("metadata")
            {
                prune_object_meta(meta, &child_path(path, "metadata"), out);
                normalize_object_meta(meta, true);
            }
            for (k, v) in m.iter_mut() {
                if let Some(prop) = s.prop(k) {
                    coerce_embedded(v, Some(prop), &child_path(path, k), out);
                } else if let Some(add) = s.additional.as_deref() {
                    coerce_embedded(v, Some(add), &key_path(path, k), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                coerce_embedded(v, s.items.as_deref(), &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------------------

fn is_non_nullable_null(x: &Value, s: &Node) -> bool {
    x.is_null() && !s.nullable
}

fn default_value(x: &mut Value, s: &Node) {
    match x {
        Value::Object(m) => {
            for (k, prop) in &s.properties {
                let Some(d) = &prop.default else { continue };
                let missing = match m.get(k) {
                    None => true,
                    Some(v) => is_non_nullable_null(v, prop),
                };
                if missing {
                    m.insert(k.clone(), d.clone());
                }
            }
            for (k, v) in m.iter_mut() {
                if let Some(prop) = s.prop(k) {
                    default_value(v, prop);
                } else if let Some(add) = s.additional.as_deref() {
                    if is_non_nullable_null(v, add)
                        && let Some(d) = &add.default
                    {
                        *v = d.clone();
                    }
                    default_value(v, add);
                }
            }
        }
        Value::Array(a) => {
            let Some(items) = s.items.as_deref() else {
                return;
            };
            for v in a.iter_mut() {
                if is_non_nullable_null(v, items)
                    && let Some(d) = &items.default
                {
                    *v = d.clone();
                }
                default_value(v, items);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Field errors
// ---------------------------------------------------------------------------------------

/// One field error, as in `k8s.io/apimachinery/pkg/util/validation/field`.
///
/// `value` is the bad value (`None` where the real server omits it, e.g. for `Required`);
/// `detail` is the explanation after the value.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub value: Option<Value>,
    pub detail: String,
}

/// The kind of a field error (`metav1.CauseType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `FieldValueInvalid`, "Invalid value".
    Invalid,
    /// `FieldValueRequired`, "Required value".
    Required,
    /// `FieldValueNotSupported`, "Unsupported value" (enum).
    Unsupported,
    /// `FieldValueTooLong`, "Too long" (maxLength).
    TooLong,
    /// `FieldValueTooMany`, "Too many" (maxItems, maxProperties).
    TooMany,
    /// `FieldValueForbidden`, "Forbidden".
    Forbidden,
    /// `FieldValueTypeInvalid`, rendered "Invalid value" (schema type and format errors).
    TypeInvalid,
    /// `FieldValueDuplicate`, "Duplicate value" (list-type set/map duplicates).
    Duplicate,
}

impl FieldErrorKind {
    fn text(self) -> &'static str {
        match self {
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid => "Invalid value",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Unsupported => "Unsupported value",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::Duplicate => "Duplicate value",
        }
    }
}

impl FieldError {
    /// `field.Required(path, detail)`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            value: None,
            detail: detail.into(),
        }
    }

    /// `field.Invalid(path, value, detail)`.
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            value: Some(value),
            detail: detail.into(),
        }
    }

    /// `field.Forbidden(path, detail)`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            value: None,
            detail: detail.into(),
        }
    }

    /// `field.NotSupported(path, value, supported)`: detail `supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[String]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let q: Vec<String> = supported.iter().map(|s| gofmt::quote(s)).collect();
            format!("supported values: {}", q.join(", "))
        };
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Unsupported,
            value: Some(value),
            detail,
        }
    }

    /// The `StatusCause.reason` of this error.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Unsupported => "FieldValueNotSupported",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
        }
    }

    /// The message without the field (Go's `ErrorBody`), used as `StatusCause.message`.
    pub fn body(&self) -> String {
        let mut s = self.kind.text().to_string();
        let shows_value = !matches!(
            self.kind,
            FieldErrorKind::Required | FieldErrorKind::Forbidden | FieldErrorKind::TooLong
        );
        if shows_value && let Some(v) = &self.value {
            s.push_str(": ");
            s.push_str(&gofmt::bad_value(v));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// The `metav1.StatusCause` of this error: `{"reason", "message", "field"}`.
    pub fn cause(&self) -> Value {
        serde_json::json!({"reason": self.reason(), "message": self.body(), "field": self.field})
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl std::error::Error for FieldError {}

/// The `message` of a 422 Invalid Status, as `apierrors.NewInvalid` builds it:
/// `DeviceProcess.azure.com "x" is invalid: spec.deviceRef: Required value` (several errors
/// in brackets, comma-separated, duplicates removed). `group` may be empty (core kinds).
pub fn invalid_message(kind: &str, group: &str, name: &str, errs: &[FieldError]) -> String {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut msgs: Vec<String> = Vec::new();
    for e in errs {
        let m = e.to_string();
        if !msgs.contains(&m) {
            msgs.push(m);
        }
    }
    match msgs.len() {
        0 => format!("{qualified} {} is invalid", gofmt::quote(name)),
        1 => format!("{qualified} {} is invalid: {}", gofmt::quote(name), msgs[0]),
        _ => format!(
            "{qualified} {} is invalid: [{}]",
            gofmt::quote(name),
            msgs.join(", ")
        ),
    }
}

/// The 400 BadRequest message for unknown fields under `fieldValidation=Strict`:
/// `strict decoding error: unknown field "spec.bogusField", unknown field "spec.x"`.
pub fn strict_decoding_message(paths: &[String]) -> String {
    let parts: Vec<String> = paths.iter().map(|p| unknown_field_warning(p)).collect();
    format!("strict decoding error: {}", parts.join(", "))
}

/// The text of one unknown field, as used in `Warning: 299 - "unknown field \"spec.x\""`
/// headers (fieldValidation=Warn) and in the strict decoding error.
pub fn unknown_field_warning(path: &str) -> String {
    format!("unknown field {}", gofmt::quote(path))
}

fn dedup(errs: Vec<FieldError>) -> Vec<FieldError> {
    let mut out: Vec<FieldError> = Vec::with_capacity(errs.len());
    for e in errs {
        if !out
            .iter()
            .any(|o| o.field == e.field && o.body() == e.body())
        {
            out.push(e);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// kube-openapi validation
// ---------------------------------------------------------------------------------------

struct Ctx<'a> {
    /// The field path the validator is rooted at ("" for the object, "status" for /status).
    prefix: &'a str,
}

impl Ctx<'_> {
    /// The field path of an error whose openapi name is `name`.
    fn err_path(&self, name: &str) -> String {
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
    fn plain(&self, msg: String) -> FieldError {
        let field = if self.prefix.is_empty() {
            "<nil>".to_string()
        } else {
            self.prefix.to_string()
        };
        FieldError::invalid(field, Value::String(String::new()), msg)
    }
}

fn type_name(v: &Value) -> &'static str {
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

fn as_f64(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn is_json_integer(f: f64) -> bool {
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

fn in_body(name: &str) -> String {
    format!("{name} in body")
}

/// Validates `data` against `s`; `old` is the correlated old value on updates (ratcheting).
fn validate_node(
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
fn validate_child(
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
fn correlate_item<'a>(list: &Node, old: &'a Value, item: &Value) -> Option<&'a Value> {
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

fn type_error(ctx: &Ctx<'_>, path: &str, expected: &str, actual: &str) -> FieldError {
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

fn json_equal(a: &Value, b: &Value) -> bool {
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

fn enum_matches(data: &Value, e: &Value) -> bool {
    match (data, e) {
        (Value::Null, _) | (_, Value::Null) => false,
        // Enum numbers are float64 in the apiserver; data numbers convert to float64.
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => json_equal(data, e),
    }
}

fn validate_enum(s: &Node, data: &Value, path: &str, ctx: &Ctx<'_>, errs: &mut Vec<FieldError>) {
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
fn format_float_f(f: f64) -> String {
    let r = format!("{f}");
    r.strip_suffix(".0").map(str::to_string).unwrap_or(r)
}

/// kube-openapi's numberValidator (range of the declared type/format, multipleOf, minimum,
/// maximum), including its quirks: an integer value is compared against bounds truncated to
/// integers, and a bound that does not fit the declared type is reported and then compared
/// as a float.
fn validate_number(
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

fn validate_schema_props(
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

// ---------------------------------------------------------------------------------------
// Embedded resources and list types
// ---------------------------------------------------------------------------------------

fn validate_embedded(
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

fn validate_list_types(x: &Value, s: Option<&Node>, path: &str, errs: &mut Vec<FieldError>) {
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
fn ratchet_list_types(root: &Node, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
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
fn non_unique(a: &[Value]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, x) in a.iter().enumerate() {
        let earlier = a[..i].iter().filter(|y| json_equal(x, y)).count();
        if earlier == 1 {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests;
