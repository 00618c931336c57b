//! `metav1.Status` errors, worded like the real apiserver's.

use apollo_apimachinery::schema::{FieldError, invalid_message};
use serde_json::{Value, json};

/// An API error, rendered as a `metav1.Status` body with its HTTP code.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<Value>>,
    pub retry_after: Option<u64>,
    /// Answered as Go's `http.NotFound` (text/plain `404 page not found`), not a Status.
    pub plain: bool,
}

/// The resource an error is about: `group` may be empty for the core group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct What<'a> {
    pub group: &'a str,
    pub resource: &'a str,
}

impl What<'_> {
    /// `deviceprocesses.azure.com` or `namespaces`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
            plain: false,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
        .with_details(json!({"causes": []}))
    }

    pub fn not_found(what: What<'_>, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", what.qualified(), name),
        )
        .with_details(json!({"name": name, "group": what.group, "kind": what.resource}))
    }

    pub fn not_found_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// A path no handler serves (an API group or version that does not exist, an unknown
    /// non-resource path): the real server's mux answers `http.NotFound`, a text/plain
    /// `404 page not found`, which kubectl reports as `the server could not find the
    /// requested resource`.
    pub fn page_not_found() -> Self {
        let mut e = Self::new(404, "NotFound", "404 page not found");
        e.plain = true;
        e
    }

    pub fn already_exists(what: What<'_>, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", what.qualified(), name),
        )
        .with_details(json!({"name": name, "group": what.group, "kind": what.resource}))
    }

    pub fn conflict(what: What<'_>, name: &str, msg: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                what.qualified(),
                name,
                msg
            ),
        )
        .with_details(json!({"name": name, "group": what.group, "kind": what.resource}))
    }

    pub fn stale(what: What<'_>, name: &str) -> Self {
        Self::conflict(
            what,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid: `Kind.group "name" is invalid: <errors>` ([`invalid_message`]), one
    /// [`FieldError::cause`] per error in `details.causes`.
    pub fn invalid(kind: &str, group: &str, name: &str, errs: &[FieldError]) -> Self {
        let causes: Vec<Value> = errs.iter().map(FieldError::cause).collect();
        Self::new(422, "Invalid", invalid_message(kind, group, name, errs))
            .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    pub fn forbidden(message: String, what: What<'_>, name: &str) -> Self {
        Self::new(403, "Forbidden", message)
            .with_details(json!({"name": name, "group": what.group, "kind": what.resource}))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn unsupported_media(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// The Status object.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        // StatusReasonUnknown ("") is omitted, as Go's omitempty does.
        if self.reason.is_empty()
            && let Some(map) = v.as_object_mut()
        {
            map.remove("reason");
        }
        if let (Some(details), Some(map)) = (&self.details, v.as_object_mut()) {
            let mut details = (**details).clone();
            // The real server omits empty strings in details.
            if let Some(d) = details.as_object_mut() {
                d.retain(|_, v| v.as_str() != Some(""));
            }
            if let Some(secs) = self.retry_after
                && let Some(d) = details.as_object_mut()
            {
                d.insert("retryAfterSeconds".into(), json!(secs));
            }
            // Keep the real field order: details before code.
            let code = map.remove("code");
            map.insert("details".into(), details);
            if let Some(code) = code {
                map.insert("code".into(), code);
            }
        }
        v
    }
}
