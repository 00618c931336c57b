//! How the Kubernetes API server selects and presents objects (pure, no I/O).
//!
//! Work in progress: see the module docs.

pub mod fields;
pub mod jsonpath;
pub mod labels;
pub mod table;
mod validation;

pub use jsonpath::JsonPathError;

/// A label or field selector string that the real apiserver would refuse (the server answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SelectorError {
    /// Human-readable message, worded like the real apiserver's.
    pub message: String,
}

impl SelectorError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        SelectorError {
            message: message.into(),
        }
    }
}
