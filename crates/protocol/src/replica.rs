//! Authentication between gateway replicas: a replica that receives a report for a device
//! another replica owns forwards it to that replica over HTTP, signed with the **replica key**
//! ([`crate::keys::derive_replica_key`]: derived from the master key ring every replica already
//! holds, domain-separated from device keys).
//!
//! The request is signed like a device request (HMAC-SHA256 over a canonical string) with its
//! own label, and the body's SHA-256 travels in a header, so the receiver verifies the
//! signature, the timestamp and the key id **before reading the body**, then reads at most the
//! declared length and checks the hash. Canonical string, seven headers:
//!
//! ```text
//! APOLLO-HMAC-SHA256-REPLICA \n method \n path-and-query \n timestamp \n nonce \n
//! body-sha256-hex \n sender-id \n key-id \n v1
//! ```

use http::HeaderMap;
use ring::hmac;

use crate::PROTOCOL_VERSION;
use crate::auth::{
    AuthError, HEADER_KEY_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, body_sha256_hex,
    header, parse_timestamp, sign_hex, valid_nonce, verify_hex,
};
use crate::keys::{DeviceKey, MasterKeyRing, derive_replica_key};

/// Label of the canonical replica request.
pub const REPLICA_REQUEST_LABEL: &str = "APOLLO-HMAC-SHA256-REPLICA";
/// The sending replica's id.
pub const HEADER_REPLICA: &str = "x-apollo-replica";
/// Lowercase hex SHA-256 of the body, signed, checked after reading the body.
pub const HEADER_CONTENT_SHA256: &str = "x-apollo-content-sha256";
/// Longest replica id (a Kubernetes object name).
pub const MAX_REPLICA_ID: usize = 253;

/// Whether `id` is a valid replica id: 1–253 of `a-z 0-9 - .`, alphanumeric at both ends.
pub fn valid_replica_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REPLICA_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.as_bytes()[id.len() - 1].is_ascii_alphanumeric()
}

/// The canonical replica request string.
pub fn canonical_replica_request(
    method: &str,
    path_and_query: &str,
    unix_ts: i64,
    nonce: &str,
    body_sha256: &str,
    sender: &str,
    key_id: &str,
) -> String {
    [
        REPLICA_REQUEST_LABEL,
        method,
        path_and_query,
        &unix_ts.to_string(),
        nonce,
        body_sha256,
        sender,
        key_id,
        PROTOCOL_VERSION,
    ]
    .join("\n")
}

/// Signs a replica request with the replica key of the ring's current master key: the
/// headers to add.
pub fn sign_replica_request(
    ring: &MasterKeyRing,
    sender: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    unix_ts: i64,
    nonce: &str,
) -> Vec<(&'static str, String)> {
    let key = derive_replica_key(ring.current());
    let hash = body_sha256_hex(body);
    let canonical = canonical_replica_request(
        method,
        path_and_query,
        unix_ts,
        nonce,
        &hash,
        sender,
        key.key_id(),
    );
    vec![
        (HEADER_REPLICA, sender.to_string()),
        (HEADER_KEY_ID, key.key_id().to_string()),
        (HEADER_TIMESTAMP, unix_ts.to_string()),
        (HEADER_NONCE, nonce.to_string()),
        (HEADER_CONTENT_SHA256, hash),
        (HEADER_SIGNATURE, sign_hex(&key, &canonical)),
    ]
}

/// A replica request whose headers verified; its body is still to be checked with
/// [`VerifiedReplica::check_body`].
#[derive(Debug, Clone)]
pub struct VerifiedReplica {
    pub sender: String,
    pub nonce: String,
    pub timestamp: i64,
    body_sha256: String,
}

impl VerifiedReplica {
    /// Whether `body` is the body that was signed.
    pub fn check_body(&self, body: &[u8]) -> Result<(), AuthError> {
        let actual = body_sha256_hex(body);
        // Both are public hashes; compare in constant time anyway.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"apollo-replica-body");
        let tag = hmac::sign(&key, actual.as_bytes());
        hmac::verify(&key, self.body_sha256.as_bytes(), tag.as_ref())
            .map_err(|_| AuthError::BadSignature)
    }
}

/// Verifies a replica request's headers before its body is read: all present and well
/// formed, key id known, signature valid under the replica key, timestamp within the skew.
/// Replay checking is the caller's (nonce and timestamp of the result).
pub fn verify_replica_headers(
    ring: &MasterKeyRing,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    now_unix: i64,
    skew_secs: i64,
) -> Result<VerifiedReplica, AuthError> {
    let sender = header(headers, HEADER_REPLICA)?;
    let key_id = header(headers, HEADER_KEY_ID)?;
    let timestamp = header(headers, HEADER_TIMESTAMP)?;
    let nonce = header(headers, HEADER_NONCE)?;
    let hash = header(headers, HEADER_CONTENT_SHA256)?;
    let signature = header(headers, HEADER_SIGNATURE)?;
    if !valid_replica_id(sender)
        || !valid_nonce(nonce)
        || hash.len() != 64
        || !hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(AuthError::Malformed);
    }
    let timestamp = parse_timestamp(timestamp)?;
    let master = ring.get(key_id).ok_or(AuthError::UnknownKey)?;
    let key: DeviceKey = derive_replica_key(master);
    let canonical = canonical_replica_request(
        method,
        path_and_query,
        timestamp,
        nonce,
        hash,
        sender,
        key_id,
    );
    verify_hex(&key, &canonical, signature)?;
    if now_unix.abs_diff(timestamp) > skew_secs.unsigned_abs() {
        return Err(AuthError::Skew);
    }
    Ok(VerifiedReplica {
        sender: sender.to_string(),
        nonce: nonce.to_string(),
        timestamp,
        body_sha256: hash.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{sign_request, verify_request};
    use crate::keys::{MasterKey, derive_device_key};
    use http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn replica_requests_verify_before_the_body_and_nothing_else_does() {
        let ring = MasterKeyRing::from(MasterKey::new("k1", [3; 32]).unwrap());
        let body = br#"{"reports":[]}"#;
        let pq = "/v1/replicas/reports";
        let signed = sign_replica_request(
            &ring,
            "gw-a",
            "POST",
            pq,
            body,
            1000,
            "nonce-0123456789abcdef",
        );
        let h = headers(&signed);
        let v = verify_replica_headers(&ring, "POST", pq, &h, 1010, 60).unwrap();
        assert_eq!(v.sender, "gw-a");
        v.check_body(body).unwrap();
        assert_eq!(v.check_body(b"{}"), Err(AuthError::BadSignature));
        // Another path, another sender, a stale timestamp, another ring: refused.
        assert!(verify_replica_headers(&ring, "POST", "/v1/replicas/x", &h, 1010, 60).is_err());
        let mut other = signed.clone();
        other[0].1 = "gw-b".into();
        assert_eq!(
            verify_replica_headers(&ring, "POST", pq, &headers(&other), 1010, 60).unwrap_err(),
            AuthError::BadSignature
        );
        assert_eq!(
            verify_replica_headers(&ring, "POST", pq, &h, 2000, 60).unwrap_err(),
            AuthError::Skew
        );
        let ring2 = MasterKeyRing::from(MasterKey::new("k1", [4; 32]).unwrap());
        assert!(verify_replica_headers(&ring2, "POST", pq, &h, 1010, 60).is_err());
        // A device key, even for a device named like the replica identity, is not the
        // replica key, and the replica key does not verify on a device route.
        let master = ring.current();
        let dk = derive_device_key(master, crate::keys::REPLICA_IDENTITY);
        assert_ne!(dk, derive_replica_key(master));
        let dev = sign_request(
            &derive_replica_key(master),
            "POST",
            "/v1/devices/gateway-replicas/report",
            body,
            1000,
            "nonce-0123456789abcdef",
        );
        let dh = headers(&dev.pairs());
        assert!(
            verify_request(
                &ring,
                "gateway-replicas",
                "POST",
                "/v1/devices/gateway-replicas/report",
                &dh,
                body,
                1000,
                60
            )
            .is_err()
        );
        // Missing headers.
        assert_eq!(
            verify_replica_headers(&ring, "POST", pq, &HeaderMap::new(), 1010, 60).unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn replica_ids() {
        assert!(valid_replica_id("apollo-gateway-7d9f-abc"));
        assert!(valid_replica_id("gw.a"));
        for bad in ["", "-a", "a-", "A", "a b", "a_b", &"a".repeat(254)] {
            assert!(!valid_replica_id(bad), "{bad}");
        }
    }
}
