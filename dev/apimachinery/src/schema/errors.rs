//! Field errors: the apiserver's field.Error kinds and the messages it builds from them (422
//! Status.message, strict decoding, unknown-field warnings).

use super::*;

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
    pub(crate) fn text(self) -> &'static str {
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

pub(crate) fn dedup(errs: Vec<FieldError>) -> Vec<FieldError> {
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
