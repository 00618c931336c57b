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
//!
//! Layout: this module holds the schema tree and its entry points; `compile`, `prune`,
//! `default`, `errors` (public: [`FieldError`] and the message builders), `validate` and
//! `lists` are its parts.

use serde_json::{Map, Value};

use crate::formats;
use crate::gofmt;
use regex::Regex;

mod compile;
mod default;
mod errors;
mod lists;
mod prune;
mod validate;

use compile::*;
use default::*;
pub use errors::*;
use lists::*;
use prune::*;
use validate::*;

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

#[cfg(test)]
mod tests;
