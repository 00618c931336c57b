//! Server-side apply with `metadata.managedFields`.

use serde_json::Value;

use crate::schema::Structural;

/// One apply request.
#[derive(Debug, Clone, Copy)]
pub struct ApplyRequest<'a> {
    pub live: Option<&'a Value>,
    pub applied: &'a Value,
    pub manager: &'a str,
    pub subresource: Option<&'a str>,
    pub force: bool,
    pub schema: Option<&'a Structural>,
    pub now: &'a str,
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    #[error("Apply failed with {} conflict{}", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    Conflicts(Vec<Conflict>),
    #[error("{0}")]
    Invalid(String),
}

/// A field owned by another manager with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub subresource: Option<String>,
    pub path: String,
}

/// Server-side apply.
pub fn apply(req: ApplyRequest<'_>) -> Result<Value, ApplyError> {
    Ok(req.applied.clone())
}

/// Bookkeeping for non-apply writes.
pub fn record_update(
    _old: Option<&Value>,
    _new: &mut Value,
    _manager: &str,
    _subresource: Option<&str>,
    _schema: Option<&Structural>,
    _now: &str,
) {
}
