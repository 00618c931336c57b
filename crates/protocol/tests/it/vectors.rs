//! Checks every test vector in `docs/PROTOCOL.md` against this crate, so the specification and
//! the code cannot drift apart. Vectors are fenced blocks tagged `apollo-vector`, one
//! `field: value` per line; in values, `\n` stands for a newline and `\\` for a backslash.

use std::collections::BTreeMap;

use apollo_protocol::auth::{
    self, AuthVersion, HEADER_AUTH_VERSION, HEADER_DEVICE, HEADER_KEY_ID, HEADER_NONCE,
    HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use apollo_protocol::keys::{DeviceKey, MasterKey, MasterKeyRing, derive_replica_key};
use apollo_protocol::replica;
use apollo_protocol::wire::{DesiredDocument, DesiredProcess};
use http::{HeaderMap, HeaderValue};

type Vector = BTreeMap<String, String>;

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => panic!("unknown escape \\{other} in {value:?}"),
                None => panic!("dangling backslash in {value:?}"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let mut out = Vec::new();
    let mut current: Option<Vector> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim() == "```apollo-vector" => current = Some(Vector::new()),
            None => {}
            Some(_) if line.trim() == "```" => out.push(current.take().unwrap()),
            Some(v) => {
                let (k, val) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("vector line without `:`: {line:?}"));
                let val = val.strip_prefix(' ').unwrap_or(val);
                let prev = v.insert(k.trim().to_string(), unescape(val));
                assert!(prev.is_none(), "duplicate field {k} in a vector");
            }
        }
    }
    assert!(current.is_none(), "unterminated apollo-vector block");
    out
}

fn field<'v>(v: &'v Vector, k: &str) -> &'v str {
    v.get(k)
        .unwrap_or_else(|| panic!("vector {:?} lacks {k}", v.get("name")))
}

fn opt<'v>(v: &'v Vector, k: &str) -> Option<&'v str> {
    v.get(k).map(String::as_str).filter(|s| !s.is_empty())
}

/// Compares and reports every mismatch of a vector at once (so fixing the doc is one pass).
struct Check<'v> {
    name: &'v str,
    failures: Vec<String>,
}

impl Check<'_> {
    fn eq(&mut self, what: &str, doc: &str, code: &str) {
        if doc != code {
            self.failures.push(format!(
                "[{}] {what}:\n  doc:  {:?}\n  code: {:?}",
                self.name, doc, code
            ));
        }
    }
}

/// `auth_version: v2` (absent: v1).
fn version(v: &Vector) -> AuthVersion {
    match opt(v, "auth_version") {
        None | Some("v1") => AuthVersion::V1,
        Some("v2") => AuthVersion::V2,
        Some(other) => panic!("unknown auth_version {other:?}"),
    }
}

fn check_vector(v: &Vector, c: &mut Check<'_>) {
    let kind = field(v, "kind");
    match kind {
        "device-key" => {
            let master: MasterKey = field(v, "master_key").parse().expect("master key");
            let epoch: u32 = opt(v, "epoch").map_or(0, |e| e.parse().expect("epoch"));
            let key = master.derive_at(field(v, "device"), epoch);
            c.eq(
                "device_key_hex",
                field(v, "device_key_hex"),
                &key.secret_hex(),
            );
            c.eq("device_key", field(v, "device_key"), &key.to_string());
            let parsed: DeviceKey = field(v, "device_key").parse().expect("device key");
            c.eq(
                "device_key parses back",
                &parsed.to_string(),
                &key.to_string(),
            );
        }
        "request" => {
            let key: DeviceKey = field(v, "device_key").parse().expect("device key");
            let body = field(v, "body").as_bytes();
            let ts: i64 = field(v, "timestamp").parse().expect("timestamp");
            let (method, pq, nonce) = (
                field(v, "method"),
                field(v, "path_and_query"),
                field(v, "nonce"),
            );
            c.eq(
                "body_sha256",
                field(v, "body_sha256"),
                &auth::body_sha256_hex(body),
            );
            let inm = opt(v, "if_none_match");
            let (canonical, signed) = match version(v) {
                AuthVersion::V1 => (
                    auth::canonical_request(
                        method,
                        pq,
                        ts,
                        nonce,
                        body,
                        key.device(),
                        key.key_id(),
                    ),
                    auth::sign_request(&key, method, pq, body, ts, nonce),
                ),
                AuthVersion::V2 => (
                    auth::canonical_request_v2(
                        method,
                        pq,
                        ts,
                        nonce,
                        body,
                        key.device(),
                        key.key_id(),
                        inm,
                    ),
                    auth::sign_request_v2(&key, method, pq, inm, body, ts, nonce),
                ),
            };
            c.eq(
                "canonical_request",
                field(v, "canonical_request"),
                &canonical,
            );
            c.eq("signature", field(v, "signature"), &signed.signature);
            // And the documented headers verify on the gateway side.
            if let Some(master) = v.get("master_key") {
                let ring = MasterKeyRing::parse(master).expect("master key");
                let mut headers = HeaderMap::new();
                for (name, value) in [
                    (HEADER_DEVICE, key.device().to_string()),
                    (HEADER_KEY_ID, key.key_id().to_string()),
                    (HEADER_TIMESTAMP, field(v, "timestamp").to_string()),
                    (HEADER_NONCE, nonce.to_string()),
                    (HEADER_SIGNATURE, field(v, "signature").to_string()),
                ] {
                    headers.insert(name, HeaderValue::from_str(&value).expect("header"));
                }
                if version(v) == AuthVersion::V2 {
                    headers.insert(HEADER_AUTH_VERSION, HeaderValue::from_static("v2"));
                }
                if let Some(inm) = inm {
                    headers.insert("if-none-match", HeaderValue::from_str(inm).expect("header"));
                }
                let verified = auth::verify_request(
                    &ring,
                    key.device(),
                    method,
                    pq,
                    &headers,
                    body,
                    ts,
                    auth::DEFAULT_SKEW_SECS,
                );
                c.eq(
                    "verify_request",
                    "ok",
                    &verified
                        .map(|_| "ok".to_string())
                        .unwrap_or_else(|e| e.to_string()),
                );
            }
        }
        "response" => {
            let key: DeviceKey = field(v, "device_key").parse().expect("device key");
            let status: u16 = field(v, "status").parse().expect("status");
            let (nonce, etag, body) = (
                field(v, "request_nonce"),
                opt(v, "etag"),
                field(v, "body").as_bytes(),
            );
            c.eq(
                "body_sha256",
                field(v, "body_sha256"),
                &auth::body_sha256_hex(body),
            );
            let inm = opt(v, "request_if_none_match");
            let canonical = match version(v) {
                AuthVersion::V1 => {
                    auth::canonical_response(status, nonce, etag, body, key.device(), key.key_id())
                }
                AuthVersion::V2 => auth::canonical_response_v2(
                    status,
                    nonce,
                    etag,
                    body,
                    key.device(),
                    key.key_id(),
                    inm,
                ),
            };
            c.eq(
                "canonical_response",
                field(v, "canonical_response"),
                &canonical,
            );
            let sig =
                auth::sign_response_versioned(&key, version(v), status, nonce, etag, body, inm);
            c.eq("signature", field(v, "signature"), &sig);
            c.eq(
                "verify_response",
                "ok",
                &auth::verify_response_versioned(
                    &key,
                    version(v),
                    status,
                    nonce,
                    etag,
                    body,
                    inm,
                    Some(field(v, "signature")),
                )
                .map(|_| "ok".to_string())
                .unwrap_or_else(|e| e.to_string()),
            );
        }
        "document" => {
            let processes: Vec<DesiredProcess> =
                serde_json::from_str(field(v, "processes")).expect("processes JSON");
            let encoded = DesiredDocument::encode(field(v, "device"), processes);
            c.eq("revision", field(v, "revision"), &encoded.revision);
            c.eq("etag", field(v, "etag"), &encoded.etag);
            c.eq(
                "encoded_body",
                field(v, "encoded_body"),
                std::str::from_utf8(&encoded.body).expect("utf-8"),
            );
        }
        "replica-key" => {
            let master: MasterKey = field(v, "master_key").parse().expect("master key");
            let key = derive_replica_key(&master);
            c.eq(
                "replica_key_hex",
                field(v, "replica_key_hex"),
                &key.secret_hex(),
            );
            c.eq("replica key id", master.id(), key.key_id());
        }
        "replica-request" => {
            let ring = MasterKeyRing::parse(field(v, "master_key")).expect("master key");
            let body = field(v, "body").as_bytes();
            let ts: i64 = field(v, "timestamp").parse().expect("timestamp");
            let (sender, method, pq, nonce) = (
                field(v, "sender"),
                field(v, "method"),
                field(v, "path_and_query"),
                field(v, "nonce"),
            );
            let key = derive_replica_key(ring.current());
            c.eq(
                "replica_key_hex",
                field(v, "replica_key_hex"),
                &key.secret_hex(),
            );
            c.eq(
                "body_sha256",
                field(v, "body_sha256"),
                &auth::body_sha256_hex(body),
            );
            c.eq(
                "canonical_request",
                field(v, "canonical_request"),
                &replica::canonical_replica_request(
                    method,
                    pq,
                    ts,
                    nonce,
                    field(v, "body_sha256"),
                    sender,
                    key.key_id(),
                ),
            );
            // What the sending replica puts on the wire, header by header.
            let signed: BTreeMap<&str, String> =
                replica::sign_replica_request(&ring, sender, method, pq, body, ts, nonce)
                    .into_iter()
                    .collect();
            let documented: BTreeMap<&str, String> = [
                (replica::HEADER_REPLICA, sender.to_string()),
                (HEADER_KEY_ID, key.key_id().to_string()),
                (HEADER_TIMESTAMP, field(v, "timestamp").to_string()),
                (HEADER_NONCE, nonce.to_string()),
                (
                    replica::HEADER_CONTENT_SHA256,
                    field(v, "body_sha256").to_string(),
                ),
                (HEADER_SIGNATURE, field(v, "signature").to_string()),
            ]
            .into_iter()
            .collect();
            c.eq(
                "signed headers",
                &format!("{documented:?}"),
                &format!("{signed:?}"),
            );
            // And the documented headers verify on the receiving replica, body included.
            let mut headers = HeaderMap::new();
            for (name, value) in &documented {
                headers.insert(*name, HeaderValue::from_str(value).expect("header"));
            }
            let verified = replica::verify_replica_headers(
                &ring,
                method,
                pq,
                &headers,
                ts,
                auth::DEFAULT_SKEW_SECS,
            )
            .and_then(|r| r.check_body(body).map(|()| r.sender));
            c.eq(
                "verify_replica_headers",
                sender,
                &verified.unwrap_or_else(|e| format!("refused: {e}")),
            );
            // A device key derived for a device named like the sender is not the replica key.
            let device_key = ring.current().derive(sender);
            c.eq(
                "device key differs from the replica key",
                "different",
                if device_key.secret_hex() == key.secret_hex() {
                    "equal"
                } else {
                    "different"
                },
            );
        }
        other => c.failures.push(format!("unknown vector kind {other:?}")),
    }
}

#[test]
fn every_vector_in_protocol_md_matches_the_code() {
    let vectors = vectors();
    let mut kinds = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for v in &vectors {
        kinds.insert(field(v, "kind").to_string());
        let mut c = Check {
            name: field(v, "name"),
            failures: Vec::new(),
        };
        check_vector(v, &mut c);
        failures.extend(c.failures);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    for kind in [
        "device-key",
        "request",
        "response",
        "document",
        "replica-key",
        "replica-request",
    ] {
        assert!(
            kinds.contains(kind),
            "docs/PROTOCOL.md has no {kind} vector"
        );
    }
    assert!(vectors.len() >= 7, "only {} vectors", vectors.len());
    assert!(
        vectors.iter().any(|v| version(v) == AuthVersion::V2
            && field(v, "kind") == "request"
            && opt(v, "if_none_match").is_some()),
        "docs/PROTOCOL.md has no v2 request vector with If-None-Match"
    );
    assert!(
        vectors.iter().any(|v| opt(v, "epoch").is_some()),
        "docs/PROTOCOL.md has no device-key vector with an epoch"
    );
}
