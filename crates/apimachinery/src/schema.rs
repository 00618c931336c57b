//! Structural schemas of CustomResourceDefinitions.

use serde_json::Value;

/// Errors compiling a schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The schema is not structurally valid.
    #[error("invalid schema at {path}: {message}")]
    Invalid { path: String, message: String },
}

/// A CRD version's `schema.openAPIV3Schema`, compiled once.
#[derive(Debug, Clone, Default)]
pub struct Structural {}

impl Structural {
    /// Compiles a schema.
    pub fn from_json(_schema: &Value) -> Result<Self, SchemaError> {
        Ok(Structural {})
    }

    /// Removes fields not in the schema; returns the dotted paths removed.
    pub fn prune(&self, _obj: &mut Value) -> Vec<String> {
        Vec::new()
    }

    /// Applies `default:` values as the apiserver does.
    pub fn apply_defaults(&self, _obj: &mut Value) {}

    /// Validates an object.
    pub fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Whether `path` is a list-map, and its keys.
    pub fn list_map_keys(&self, _path: &[&str]) -> Option<Vec<String>> {
        None
    }
}

/// One field error, as in `k8s.io/apimachinery/pkg/util/validation/field`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub value: Option<Value>,
    pub detail: String,
}

/// The kind of a field error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Invalid,
    Required,
    Unsupported,
    TooLong,
    TooMany,
    Forbidden,
}

impl FieldError {
    /// The `StatusCause.reason` of this error.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Unsupported => "FieldValueNotSupported",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

impl std::error::Error for FieldError {}
