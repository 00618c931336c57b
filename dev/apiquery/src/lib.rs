//! How the Kubernetes API server selects and presents objects (pure, no I/O), for the
//! development API server (`apollo-devcluster`). Each module pins the behaviour of the real
//! kube-apiserver / apimachinery code it mirrors:
//!
//! * [`labels`] — the label selector string grammar of `labels.Parse` (`=`, `==`, `!=`, `in`,
//!   `notin`, exists, `!`, `>`, `<`), with key/value validation and the real parser's error
//!   messages; matching on `metadata.labels`.
//! * [`fields`] — the field selector grammar of `fields.ParseSelector` (`=`, `==`, `!=`,
//!   comma-separated, `\,` `\=` `\\` escapes) and matching through a field getter.
//! * [`jsonpath`] — the client-go JSONPath subset used by printer columns and
//!   `selectableFields`, with missing keys allowed.
//! * [`table`] — `meta.k8s.io/v1` `Table` responses for CRDs (additionalPrinterColumns) and the
//!   built-in kinds the dev server serves.
//!
//! Errors: [`SelectorError`] (its `Display` is the real message; the server answers a
//! selector that does not parse with **400 BadRequest** carrying exactly that message) and
//! [`JsonPathError`] for malformed JSONPath expressions.
//!
//! Not implemented here: deciding which field labels a resource supports (the server answers
//! `field label not supported: <field>`), `metav1.LabelSelector` objects
//! (matchLabels/matchExpressions), set-based field selectors.

pub mod fields;
pub mod jsonpath;
pub mod labels;
pub mod table;

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
