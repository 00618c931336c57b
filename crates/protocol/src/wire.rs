//! Wire types of protocol v1 (JSON, camelCase field names) and the helpers both sides need:
//! the deterministic desired-document encoding, ETag comparison, the long-poll `wait`
//! parameter and device-name validation.
//!
//! Receivers ignore unknown fields, so later versions can add fields without breaking v1
//! agents.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Content type of every JSON request and response body.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Longest long poll the gateway holds a request (`?wait=` values above are clamped).
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Body size limit for requests (`413` above it).
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// Hex characters of the SHA-256 digest kept as a document revision (128 bits).
pub const REVISION_LEN: usize = 32;

/// `GET /v1/devices/{device}/desired` → `200` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredDocument {
    /// The device this document is for (the name in the path).
    pub device: String,
    /// Content hash of the document; the ETag is `"<revision>"`. Opaque to agents.
    pub revision: String,
    /// Every DeviceProcess assigned to the device, sorted by namespace then name.
    #[serde(default)]
    pub processes: Vec<DesiredProcess>,
}

/// One DeviceProcess in a desired document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredProcess {
    pub namespace: String,
    pub name: String,
    /// `metadata.generation` of the DeviceProcess.
    pub generation: i64,
    /// The spec hash (the API crate's `spec_hash`), echoed back in reports.
    pub spec_hash: String,
    /// The DeviceProcess spec as JSON.
    pub spec: Value,
}

/// `POST /v1/devices/{device}/report` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The agent's version (its crate version).
    pub agent_version: String,
    /// Random per agent start; a change tells the gateway the agent restarted.
    pub instance_id: String,
    /// The revision of the desired document the agent holds (`null` before the first one).
    #[serde(default)]
    pub revision: Option<String>,
    /// The processes the agent observed (from the desired document it holds).
    #[serde(default)]
    pub observed: Vec<ObservedProcess>,
}

/// One observed DeviceProcess in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedProcess {
    pub name: String,
    pub spec_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// The answer to a report (`200`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportAck {
    /// The device's current desired revision; when it differs from the one the agent holds,
    /// the agent refetches.
    pub revision: String,
    /// How often the gateway wants a heartbeat report, in milliseconds.
    pub heartbeat_interval_ms: u64,
}

/// Every error body: `{"error":{"code":401,"reason":"Unauthorized","message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The HTTP status code.
    pub code: u16,
    /// The status' reason phrase (`Unauthorized`, `Not Found`, ...).
    pub reason: String,
    /// A human-readable message (never secrets, never which part of authentication failed).
    pub message: String,
}

impl ErrorBody {
    /// An error body for `code` with its canonical reason phrase.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        let reason = http::StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_string();
        ErrorBody {
            error: ErrorDetail {
                code,
                reason,
                message: message.into(),
            },
        }
    }

    /// The compact JSON encoding.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A desired document serialized once, with its revision and ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedDocument {
    pub revision: String,
    /// `"<revision>"` (a strong ETag, quotes included).
    pub etag: String,
    /// The `200` body.
    pub body: Bytes,
}

/// What the revision hashes: the document without its revision.
#[derive(Serialize)]
struct RevisionInput<'a> {
    device: &'a str,
    processes: &'a [DesiredProcess],
}

impl DesiredDocument {
    /// Serialize deterministically and compute the revision (content hash); the ETag is
    /// `"<revision>"`.
    ///
    /// Processes are sorted by (namespace, name) and every JSON object inside a spec gets its
    /// keys sorted, so the same content always gives the same bytes and revision — across
    /// gateway restarts and whatever order the objects arrived in.
    pub fn encode(device: &str, mut processes: Vec<DesiredProcess>) -> EncodedDocument {
        processes.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for p in &mut processes {
            p.spec = apollo_content_hash::canonicalize(std::mem::take(&mut p.spec));
        }
        let input = serde_json::to_vec(&RevisionInput {
            device,
            processes: &processes,
        })
        .unwrap_or_default();
        let revision = apollo_content_hash::sha256_hex(&input, REVISION_LEN);
        let doc = DesiredDocument {
            device: device.to_string(),
            revision: revision.clone(),
            processes,
        };
        let body = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        EncodedDocument {
            etag: etag_for(&revision),
            revision,
            body,
        }
    }
}

/// The strong ETag of a revision: the revision in double quotes.
pub fn etag_for(revision: &str) -> String {
    format!("\"{revision}\"")
}

/// The revision inside an ETag (`"abc"` or `W/"abc"` → `abc`), if it is well formed.
pub fn revision_from_etag(etag: &str) -> Option<&str> {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    let inner = etag.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('"')).then_some(inner)
}

/// Whether an `If-None-Match` header value matches `etag` (RFC 9110 §13.1.2: `*`, or a
/// comma-separated list compared with the weak comparison, i.e. ignoring `W/`).
pub fn if_none_match_matches(header: &str, etag: &str) -> bool {
    let Some(ours) = revision_from_etag(etag) else {
        return false;
    };
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || revision_from_etag(candidate).is_some_and(|theirs| theirs == ours)
    })
}

/// Whether `name` is a valid device name: a DNS-1123 subdomain (lowercase letters, digits,
/// `-` and `.`, each dot-separated label starting and ending with a letter or digit), at most
/// 253 characters.
pub fn valid_device_name(name: &str) -> bool {
    apollo_names::is_dns1123_subdomain(name)
}

/// `/v1/devices/{device}/desired`.
pub fn desired_path(device: &str) -> String {
    format!("/{}/devices/{device}/desired", crate::PROTOCOL_VERSION)
}

/// `/v1/devices/{device}/report`.
pub fn report_path(device: &str) -> String {
    format!("/{}/devices/{device}/report", crate::PROTOCOL_VERSION)
}

/// A device route parsed from a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRoute<'a> {
    Desired(&'a str),
    Report(&'a str),
}

impl<'a> DeviceRoute<'a> {
    /// The device name in the route (not validated: check [`valid_device_name`]).
    pub fn device(&self) -> &'a str {
        match self {
            DeviceRoute::Desired(d) | DeviceRoute::Report(d) => d,
        }
    }
}

/// Parse a request path (without the query) into a device route; `None` for any other path.
pub fn parse_device_route(path: &str) -> Option<DeviceRoute<'_>> {
    let rest = path.strip_prefix("/v1/devices/")?;
    let (device, tail) = rest.split_once('/')?;
    match tail {
        "desired" => Some(DeviceRoute::Desired(device)),
        "report" => Some(DeviceRoute::Report(device)),
        _ => None,
    }
}

/// Error of [`parse_wait`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid wait parameter {0:?}: expected seconds (30), or a duration like 30s, 500ms, 1m")]
pub struct InvalidWait(pub String);

/// The long-poll wait of a request's query string (`wait=30s`, `wait=500ms`, `wait=1m`,
/// `wait=30` meaning seconds), clamped to [`MAX_WAIT`]. `Ok(None)` when absent or zero.
pub fn parse_wait(query: Option<&str>) -> Result<Option<Duration>, InvalidWait> {
    let Some(query) = query else {
        return Ok(None);
    };
    let Some(value) = query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find_map(|(k, v)| (k == "wait").then_some(v))
    else {
        return Ok(None);
    };
    let bad = || InvalidWait(value.chars().take(32).collect());
    let (digits, unit_ms) = if let Some(d) = value.strip_suffix("ms") {
        (d, 1u64)
    } else if let Some(d) = value.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = value.strip_suffix('m') {
        (d, 60_000)
    } else {
        (value, 1_000)
    };
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let wait = Duration::from_millis(n.saturating_mul(unit_ms)).min(MAX_WAIT);
    Ok((!wait.is_zero()).then_some(wait))
}

/// The query-string form of a wait (`wait=30s`, or `wait=1500ms` when not whole seconds).
pub fn wait_query(wait: Duration) -> String {
    let ms = wait.as_millis();
    if ms.is_multiple_of(1000) {
        format!("wait={}s", ms / 1000)
    } else {
        format!("wait={ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proc(ns: &str, name: &str, spec: Value) -> DesiredProcess {
        DesiredProcess {
            namespace: ns.into(),
            name: name.into(),
            generation: 1,
            spec_hash: "0123456789abcdef".into(),
            spec,
        }
    }

    #[test]
    fn encode_is_deterministic_over_order_and_keys() {
        let a = DesiredDocument::encode(
            "tor1-01",
            vec![
                proc("default", "b", json!({"x": 1, "a": {"z": 1, "b": 2}})),
                proc("default", "a", json!({})),
            ],
        );
        let b = DesiredDocument::encode(
            "tor1-01",
            vec![
                proc("default", "a", json!({})),
                proc("default", "b", json!({"a": {"b": 2, "z": 1}, "x": 1})),
            ],
        );
        assert_eq!(a, b);
        assert_eq!(a.etag, format!("\"{}\"", a.revision));
        assert_eq!(a.revision.len(), REVISION_LEN);
        let doc: DesiredDocument = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(doc.revision, a.revision);
        assert_eq!(doc.processes[0].name, "a");
        // Any change of content changes the revision; so does the device.
        let c = DesiredDocument::encode("tor1-01", vec![proc("default", "a", json!({"x": 2}))]);
        assert_ne!(c.revision, a.revision);
        let d = DesiredDocument::encode("tor1-02", vec![]);
        let e = DesiredDocument::encode("tor1-01", vec![]);
        assert_ne!(d.revision, e.revision);
        assert!(
            e.body
                .starts_with(b"{\"device\":\"tor1-01\",\"revision\":\"")
        );
    }

    #[test]
    fn if_none_match_rules() {
        assert!(if_none_match_matches("\"abc\"", "\"abc\""));
        assert!(if_none_match_matches("W/\"abc\"", "\"abc\""));
        assert!(if_none_match_matches("\"x\", \"abc\"", "\"abc\""));
        assert!(if_none_match_matches("*", "\"abc\""));
        assert!(!if_none_match_matches("\"abd\"", "\"abc\""));
        assert!(!if_none_match_matches("abc", "\"abc\""));
        assert!(!if_none_match_matches("", "\"abc\""));
    }

    #[test]
    fn routes() {
        assert_eq!(
            parse_device_route("/v1/devices/tor1-01/desired"),
            Some(DeviceRoute::Desired("tor1-01"))
        );
        assert_eq!(
            parse_device_route("/v1/devices/x/report").map(|r| r.device()),
            Some("x")
        );
        assert_eq!(parse_device_route("/v1/devices/x/other"), None);
        assert_eq!(parse_device_route("/v1/devices/x/desired/more"), None);
        assert_eq!(parse_device_route("/v2/devices/x/desired"), None);
        assert_eq!(desired_path("d"), "/v1/devices/d/desired");
        assert_eq!(report_path("d"), "/v1/devices/d/report");
    }

    #[test]
    fn wait_parameter() {
        let s = Duration::from_secs;
        assert_eq!(parse_wait(None), Ok(None));
        assert_eq!(parse_wait(Some("x=1")), Ok(None));
        assert_eq!(parse_wait(Some("wait=30s")), Ok(Some(s(30))));
        assert_eq!(parse_wait(Some("a=b&wait=30")), Ok(Some(s(30))));
        assert_eq!(
            parse_wait(Some("wait=500ms")),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(parse_wait(Some("wait=1m")), Ok(Some(s(60))));
        assert_eq!(parse_wait(Some("wait=10m")), Ok(Some(MAX_WAIT)));
        assert_eq!(parse_wait(Some("wait=0")), Ok(None));
        for bad in [
            "wait=",
            "wait=-1",
            "wait=1h",
            "wait=abc",
            "wait=99999999999s",
        ] {
            assert!(parse_wait(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(wait_query(s(30)), "wait=30s");
        assert_eq!(wait_query(Duration::from_millis(1500)), "wait=1500ms");
    }

    #[test]
    fn error_body_shape() {
        let e = ErrorBody::new(401, "authentication failed");
        assert_eq!(
            String::from_utf8(e.to_bytes().to_vec()).unwrap(),
            r#"{"error":{"code":401,"reason":"Unauthorized","message":"authentication failed"}}"#
        );
    }

    #[test]
    fn report_json_shape() {
        let r = Report {
            agent_version: "0.1.0".into(),
            instance_id: "i".into(),
            revision: None,
            observed: vec![ObservedProcess {
                name: "p".into(),
                spec_hash: "h".into(),
                generation: Some(3),
            }],
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"agentVersion":"0.1.0","instanceId":"i","revision":null,"observed":[{"name":"p","specHash":"h","generation":3}]}"#
        );
        let ack: ReportAck =
            serde_json::from_str(r#"{"revision":"r","heartbeatIntervalMs":10000,"extra":1}"#)
                .unwrap();
        assert_eq!(ack.heartbeat_interval_ms, 10_000);
    }
}
