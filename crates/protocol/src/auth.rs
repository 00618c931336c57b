//! Request and response signatures (HMAC-SHA256 with the device key) and the replay cache.
//!
//! A request carries five headers ([`HEADER_DEVICE`], [`HEADER_KEY_ID`], [`HEADER_TIMESTAMP`],
//! [`HEADER_NONCE`], [`HEADER_SIGNATURE`]); the signature is the lowercase hex HMAC-SHA256,
//! under the device key, of [`canonical_request`]. A response to an authenticated request
//! carries [`HEADER_SIGNATURE`] over [`canonical_response`], which binds it to the request's
//! nonce. Verification uses `ring::hmac::verify` (constant time). See `docs/PROTOCOL.md`.
//!
//! Two signature versions ([`AuthVersion`]): **v1** (nine-line request, eight-line response)
//! and **v2**, announced by the request header [`HEADER_AUTH_VERSION`]`: v2`, which adds the
//! request's `If-None-Match` to both canonical strings, so a proxy that rewrites it breaks the
//! request signature, and a `304` is bound to the ETag the agent said it holds. The version is
//! the last line of every canonical string, so removing or changing the header only makes the
//! signature fail. Gateways accept both during a transition; agents sign v2.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::PROTOCOL_VERSION;
use crate::keys::{DeviceKey, MasterKeyRing, derive_device_key_at, parse_credential_id};
use crate::wire::valid_device_name;

/// Request header: the device the credential belongs to.
pub const HEADER_DEVICE: &str = "x-apollo-device";
/// Request header: the id of the master key the device key was derived from.
pub const HEADER_KEY_ID: &str = "x-apollo-key-id";
/// Request header: Unix time in seconds, decimal, no sign, no leading zeros.
pub const HEADER_TIMESTAMP: &str = "x-apollo-timestamp";
/// Request header: a fresh random value per request (16–64 of `[A-Za-z0-9_-]`).
pub const HEADER_NONCE: &str = "x-apollo-nonce";
/// Request and response header: lowercase hex HMAC-SHA256 (64 characters).
pub const HEADER_SIGNATURE: &str = "x-apollo-signature";
/// Request header: the signature version, `v2`; absent means `v1`.
pub const HEADER_AUTH_VERSION: &str = "x-apollo-auth-version";

/// Longest `If-None-Match` value a v2 request may carry (a few ETags).
pub const MAX_IF_NONE_MATCH_LEN: usize = 1024;

/// The signature scheme of a request and of the response to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthVersion {
    /// Nine-line requests, eight-line responses; `If-None-Match` not signed.
    V1,
    /// As v1 plus the request's `If-None-Match` in both canonical strings.
    V2,
}

impl AuthVersion {
    /// The last line of the canonical strings and the value of [`HEADER_AUTH_VERSION`].
    pub fn as_str(self) -> &'static str {
        match self {
            AuthVersion::V1 => PROTOCOL_VERSION,
            AuthVersion::V2 => "v2",
        }
    }

    /// The version named by a request's [`HEADER_AUTH_VERSION`] (absent: v1).
    pub fn from_header(value: Option<&str>) -> Result<Self, AuthError> {
        match value {
            None => Ok(AuthVersion::V1),
            Some("v2") => Ok(AuthVersion::V2),
            Some(_) => Err(AuthError::Malformed),
        }
    }
}

/// First line of the canonical request string.
pub const REQUEST_LABEL: &str = "APOLLO-HMAC-SHA256-REQUEST";
/// First line of the canonical response string.
pub const RESPONSE_LABEL: &str = "APOLLO-HMAC-SHA256-RESPONSE";

/// Default accepted clock skew between agent and gateway, in seconds (see docs/PROTOCOL.md).
pub const DEFAULT_SKEW_SECS: i64 = 60;
/// Shortest accepted nonce.
pub const MIN_NONCE_LEN: usize = 16;
/// Longest accepted nonce.
pub const MAX_NONCE_LEN: usize = 64;

/// Why a request or response failed authentication. Carries no secrets and no header values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// An authentication header is missing.
    #[error("authentication header missing")]
    Missing,
    /// An authentication header is malformed.
    #[error("authentication header malformed")]
    Malformed,
    /// The key id is not in the gateway's key ring.
    #[error("unknown key id")]
    UnknownKey,
    /// The signature does not match.
    #[error("signature mismatch")]
    BadSignature,
    /// The timestamp is outside the skew window.
    #[error("timestamp outside the accepted window")]
    Skew,
    /// A valid credential of another device than the one in the path (→ 403).
    #[error("credential is for another device")]
    WrongDevice,
    /// The nonce was seen before within the window.
    #[error("nonce replayed")]
    Replay,
    /// The key's epoch is below the device's revocation floor (a revoked device key).
    #[error("device key revoked")]
    Revoked,
    /// A v1 signature where the gateway requires v2.
    #[error("signature version no longer accepted")]
    OldVersion,
}

impl AuthError {
    /// A label for metrics (`auth_failures_total{reason=...}`); never sent to clients.
    pub fn reason_label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::UnknownKey => "unknown_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::Skew => "skew",
            AuthError::WrongDevice => "wrong_device",
            AuthError::Replay => "replay",
            AuthError::Revoked => "revoked",
            AuthError::OldVersion => "old_version",
        }
    }

    /// The HTTP status for the client: 403 for [`AuthError::WrongDevice`], 401 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::WrongDevice => 403,
            _ => 401,
        }
    }

    /// The message for the client's error body: the same for every 401, so it never says
    /// which part failed.
    pub fn client_message(&self) -> &'static str {
        match self {
            AuthError::WrongDevice => "the credential does not grant access to this device",
            _ => "authentication failed",
        }
    }
}

/// Lowercase hex SHA-256 of `body` (the empty body hashes to `e3b0c442...b855`).
pub fn body_sha256_hex(body: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    push_hex(
        &mut out,
        ring::digest::digest(&ring::digest::SHA256, body).as_ref(),
    );
    out
}

/// Appends `bytes` in lowercase hex (what `hex::encode` gives, without its per-character
/// iterator: this runs several times per request).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Joins canonical lines with `\n` into one string allocated once.
fn join_lines(lines: &[&str]) -> String {
    let len = lines.iter().map(|l| l.len() + 1).sum::<usize>();
    let mut out = String::with_capacity(len);
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

/// The canonical request string: nine lines joined by `\n`, no trailing newline:
/// label, method, path and query as sent, timestamp, nonce, body SHA-256 (hex), device,
/// key id, protocol version.
pub fn canonical_request(
    method: &str,
    path_and_query: &str,
    unix_ts: i64,
    nonce: &str,
    body: &[u8],
    device: &str,
    key_id: &str,
) -> String {
    join_lines(&[
        REQUEST_LABEL,
        method,
        path_and_query,
        &unix_ts.to_string(),
        nonce,
        &body_sha256_hex(body),
        device,
        key_id,
        PROTOCOL_VERSION,
    ])
}

/// The canonical request string of signature version 2: ten lines joined by `\n`, no trailing
/// newline: the nine of [`canonical_request`] with the request's `If-None-Match` header value
/// (empty when absent) inserted before the last, and `v2` as the last line.
#[allow(clippy::too_many_arguments)]
pub fn canonical_request_v2(
    method: &str,
    path_and_query: &str,
    unix_ts: i64,
    nonce: &str,
    body: &[u8],
    device: &str,
    key_id: &str,
    if_none_match: Option<&str>,
) -> String {
    join_lines(&[
        REQUEST_LABEL,
        method,
        path_and_query,
        &unix_ts.to_string(),
        nonce,
        &body_sha256_hex(body),
        device,
        key_id,
        if_none_match.unwrap_or(""),
        AuthVersion::V2.as_str(),
    ])
}

/// The canonical response string of signature version 2: nine lines joined by `\n`, no
/// trailing newline: the eight of [`canonical_response`] with the *request's* `If-None-Match`
/// (empty when absent) inserted before the last, and `v2` as the last line.
pub fn canonical_response_v2(
    status: u16,
    request_nonce: &str,
    etag: Option<&str>,
    body: &[u8],
    device: &str,
    key_id: &str,
    request_if_none_match: Option<&str>,
) -> String {
    join_lines(&[
        RESPONSE_LABEL,
        &status.to_string(),
        request_nonce,
        etag.unwrap_or(""),
        &body_sha256_hex(body),
        device,
        key_id,
        request_if_none_match.unwrap_or(""),
        AuthVersion::V2.as_str(),
    ])
}

/// The canonical response string: eight lines joined by `\n`, no trailing newline:
/// label, status (3 digits), the request's nonce, the ETag header as sent (empty if none),
/// body SHA-256 (hex), device, key id, protocol version.
pub fn canonical_response(
    status: u16,
    request_nonce: &str,
    etag: Option<&str>,
    body: &[u8],
    device: &str,
    key_id: &str,
) -> String {
    join_lines(&[
        RESPONSE_LABEL,
        &status.to_string(),
        request_nonce,
        etag.unwrap_or(""),
        &body_sha256_hex(body),
        device,
        key_id,
        PROTOCOL_VERSION,
    ])
}

pub(crate) fn sign_hex(key: &DeviceKey, message: &str) -> String {
    let mut out = String::with_capacity(64);
    push_hex(
        &mut out,
        hmac::sign(key.hmac_key(), message.as_bytes()).as_ref(),
    );
    out
}

pub(crate) fn verify_hex(
    key: &DeviceKey,
    message: &str,
    signature_hex: &str,
) -> Result<(), AuthError> {
    if signature_hex.len() != 64
        || !signature_hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(AuthError::Malformed);
    }
    let tag = hex::decode(signature_hex).map_err(|_| AuthError::Malformed)?;
    hmac::verify(key.hmac_key(), message.as_bytes(), &tag).map_err(|_| AuthError::BadSignature)
}

/// Whether `nonce` is a valid nonce: 16–64 of `[A-Za-z0-9_-]`.
pub fn valid_nonce(nonce: &str) -> bool {
    (MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh nonce: 32 lowercase hex characters (128 random bits).
pub fn generate_nonce() -> String {
    let mut bytes = [0u8; 16];
    // The system generator failing is not recoverable in a meaningful way; a nonce of
    // zeros would be rejected as a replay by the gateway rather than weakening anything.
    let _ = SystemRandom::new().fill(&mut bytes);
    hex::encode(bytes)
}

/// The authentication headers of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub device: String,
    pub key_id: String,
    pub timestamp: i64,
    pub nonce: String,
    /// Lowercase hex HMAC-SHA256 of the canonical request.
    pub signature: String,
    /// The signature version; v2 adds the [`HEADER_AUTH_VERSION`] header.
    pub version: AuthVersion,
    /// The `If-None-Match` value a v2 signature covers (the caller sends it as the header).
    pub if_none_match: Option<String>,
}

impl SignedHeaders {
    /// The headers as (name, value) pairs (`If-None-Match` is not among them: the caller
    /// sends it, exactly as signed).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (HEADER_DEVICE, self.device.clone()),
            (HEADER_KEY_ID, self.key_id.clone()),
            (HEADER_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ];
        if self.version == AuthVersion::V2 {
            pairs.push((HEADER_AUTH_VERSION, AuthVersion::V2.as_str().to_string()));
        }
        pairs
    }

    /// Insert the headers into a header map (replacing any present).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in self.pairs() {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
    }
}

/// Signs requests with a device key.
#[derive(Debug, Clone, Copy)]
pub struct RequestSigner<'a> {
    key: &'a DeviceKey,
}

impl<'a> RequestSigner<'a> {
    pub fn new(key: &'a DeviceKey) -> Self {
        RequestSigner { key }
    }

    /// Sign (v1) with an explicit timestamp and nonce.
    pub fn sign(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        unix_ts: i64,
        nonce: &str,
    ) -> SignedHeaders {
        sign_request(self.key, method, path_and_query, body, unix_ts, nonce)
    }

    /// Sign (v1) with the current time and a fresh nonce.
    pub fn sign_now(&self, method: &str, path_and_query: &str, body: &[u8]) -> SignedHeaders {
        self.sign(method, path_and_query, body, unix_now(), &generate_nonce())
    }

    /// Sign (v2, binding `if_none_match`) with the current time and a fresh nonce.
    pub fn sign_now_v2(
        &self,
        method: &str,
        path_and_query: &str,
        if_none_match: Option<&str>,
        body: &[u8],
    ) -> SignedHeaders {
        sign_request_v2(
            self.key,
            method,
            path_and_query,
            if_none_match,
            body,
            unix_now(),
            &generate_nonce(),
        )
    }
}

/// The current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Sign a request with signature version 1: the headers to add.
pub fn sign_request(
    key: &DeviceKey,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    unix_ts: i64,
    nonce: &str,
) -> SignedHeaders {
    let canonical = canonical_request(
        method,
        path_and_query,
        unix_ts,
        nonce,
        body,
        key.device(),
        key.key_id(),
    );
    SignedHeaders {
        device: key.device().to_string(),
        key_id: key.key_id().to_string(),
        timestamp: unix_ts,
        nonce: nonce.to_string(),
        signature: sign_hex(key, &canonical),
        version: AuthVersion::V1,
        if_none_match: None,
    }
}

/// Sign a request with signature version 2, binding its `If-None-Match` (send the header
/// with exactly this value, or not at all when `None`): the headers to add.
pub fn sign_request_v2(
    key: &DeviceKey,
    method: &str,
    path_and_query: &str,
    if_none_match: Option<&str>,
    body: &[u8],
    unix_ts: i64,
    nonce: &str,
) -> SignedHeaders {
    let canonical = canonical_request_v2(
        method,
        path_and_query,
        unix_ts,
        nonce,
        body,
        key.device(),
        key.key_id(),
        if_none_match,
    );
    SignedHeaders {
        device: key.device().to_string(),
        key_id: key.key_id().to_string(),
        timestamp: unix_ts,
        nonce: nonce.to_string(),
        signature: sign_hex(key, &canonical),
        version: AuthVersion::V2,
        if_none_match: if_none_match.map(str::to_string),
    }
}

/// A request that passed [`verify_request`].
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    pub device: String,
    /// The key id as sent (with `.<epoch>` for a re-issued key).
    pub key_id: String,
    /// The device key's epoch (0 for the original key).
    pub epoch: u32,
    pub nonce: String,
    pub timestamp: i64,
    /// The signature version the request used; the response is signed with the same.
    pub version: AuthVersion,
    /// The request's `If-None-Match` as signed (v2 only; `None` for v1 or when absent).
    pub if_none_match: Option<String>,
    /// The device key, for signing the response.
    pub device_key: DeviceKey,
}

impl VerifiedRequest {
    /// The response signature (the value of [`HEADER_SIGNATURE`]) in the request's version.
    pub fn sign_response(&self, status: u16, etag: Option<&str>, body: &[u8]) -> String {
        sign_response_versioned(
            &self.device_key,
            self.version,
            status,
            &self.nonce,
            etag,
            body,
            self.if_none_match.as_deref(),
        )
    }
}

pub(crate) fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, AuthError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    value.to_str().map_err(|_| AuthError::Malformed)
}

fn optional_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, AuthError> {
    match header(headers, name) {
        Ok(v) => Ok(Some(v)),
        Err(AuthError::Missing) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parse a canonical decimal timestamp (no sign, no leading zeros).
pub(crate) fn parse_timestamp(text: &str) -> Result<i64, AuthError> {
    if text.is_empty()
        || text.len() > 18
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return Err(AuthError::Malformed);
    }
    text.parse().map_err(|_| AuthError::Malformed)
}

/// Gateway side: check a request's authentication headers.
///
/// Order: all five headers present ([`AuthError::Missing`]) and well formed
/// ([`AuthError::Malformed`]; for v2 also at most one `If-None-Match` of at most
/// [`MAX_IF_NONE_MATCH_LEN`] bytes), key id known ([`AuthError::UnknownKey`]), signature valid
/// under the key derived for the header's device and the key id's epoch
/// ([`AuthError::BadSignature`]), that device equals `path_device` ([`AuthError::WrongDevice`],
/// so only a valid credential learns 403), timestamp within `skew_secs` of `now_unix`
/// ([`AuthError::Skew`]). Replay checking, the revocation floor and the minimum version are the
/// caller's, with the returned request and a [`ReplayCache`].
#[allow(clippy::too_many_arguments)]
pub fn verify_request(
    ring: &MasterKeyRing,
    path_device: &str,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
    skew_secs: i64,
) -> Result<VerifiedRequest, AuthError> {
    let device = header(headers, HEADER_DEVICE)?;
    let key_id = header(headers, HEADER_KEY_ID)?;
    let timestamp = header(headers, HEADER_TIMESTAMP)?;
    let nonce = header(headers, HEADER_NONCE)?;
    let signature = header(headers, HEADER_SIGNATURE)?;
    let version = AuthVersion::from_header(optional_header(headers, HEADER_AUTH_VERSION)?)?;
    let if_none_match = match version {
        AuthVersion::V1 => None,
        AuthVersion::V2 => optional_header(headers, http::header::IF_NONE_MATCH.as_str())?,
    };
    if if_none_match.is_some_and(|v| v.len() > MAX_IF_NONE_MATCH_LEN) {
        return Err(AuthError::Malformed);
    }
    let Some((master_id, epoch)) = parse_credential_id(key_id) else {
        return Err(AuthError::Malformed);
    };
    if !valid_device_name(device) || !valid_nonce(nonce) {
        return Err(AuthError::Malformed);
    }
    let timestamp = parse_timestamp(timestamp)?;
    let master = ring.get(master_id).ok_or(AuthError::UnknownKey)?;
    let device_key = derive_device_key_at(master, device, epoch);
    let canonical = match version {
        AuthVersion::V1 => canonical_request(
            method,
            path_and_query,
            timestamp,
            nonce,
            body,
            device,
            key_id,
        ),
        AuthVersion::V2 => canonical_request_v2(
            method,
            path_and_query,
            timestamp,
            nonce,
            body,
            device,
            key_id,
            if_none_match,
        ),
    };
    verify_hex(&device_key, &canonical, signature)?;
    if device != path_device {
        return Err(AuthError::WrongDevice);
    }
    if now_unix.abs_diff(timestamp) > skew_secs.unsigned_abs() {
        return Err(AuthError::Skew);
    }
    Ok(VerifiedRequest {
        device: device.to_string(),
        key_id: key_id.to_string(),
        epoch,
        nonce: nonce.to_string(),
        timestamp,
        version,
        if_none_match: if_none_match.map(str::to_string),
        device_key,
    })
}

/// Sign a response to a v1 request: the value of the response's [`HEADER_SIGNATURE`].
pub fn sign_response(
    key: &DeviceKey,
    status: u16,
    request_nonce: &str,
    etag: Option<&str>,
    body: &[u8],
) -> String {
    let canonical = canonical_response(
        status,
        request_nonce,
        etag,
        body,
        key.device(),
        key.key_id(),
    );
    sign_hex(key, &canonical)
}

/// Sign a response in `version`; `request_if_none_match` is what the request sent (used by
/// v2 only).
pub fn sign_response_versioned(
    key: &DeviceKey,
    version: AuthVersion,
    status: u16,
    request_nonce: &str,
    etag: Option<&str>,
    body: &[u8],
    request_if_none_match: Option<&str>,
) -> String {
    sign_hex(
        key,
        &canonical_response_for(
            key,
            version,
            status,
            request_nonce,
            etag,
            body,
            request_if_none_match,
        ),
    )
}

fn canonical_response_for(
    key: &DeviceKey,
    version: AuthVersion,
    status: u16,
    request_nonce: &str,
    etag: Option<&str>,
    body: &[u8],
    request_if_none_match: Option<&str>,
) -> String {
    match version {
        AuthVersion::V1 => canonical_response(
            status,
            request_nonce,
            etag,
            body,
            key.device(),
            key.key_id(),
        ),
        AuthVersion::V2 => canonical_response_v2(
            status,
            request_nonce,
            etag,
            body,
            key.device(),
            key.key_id(),
            request_if_none_match,
        ),
    }
}

/// Agent side: check a v1 response's signature (`header_value` = its [`HEADER_SIGNATURE`]).
pub fn verify_response(
    key: &DeviceKey,
    status: u16,
    request_nonce: &str,
    etag: Option<&str>,
    body: &[u8],
    header_value: Option<&str>,
) -> Result<(), AuthError> {
    verify_response_versioned(
        key,
        AuthVersion::V1,
        status,
        request_nonce,
        etag,
        body,
        None,
        header_value,
    )
}

/// Agent side: check a response's signature in `version`; `request_if_none_match` is the
/// `If-None-Match` the request sent (v2 binds it).
#[allow(clippy::too_many_arguments)]
pub fn verify_response_versioned(
    key: &DeviceKey,
    version: AuthVersion,
    status: u16,
    request_nonce: &str,
    etag: Option<&str>,
    body: &[u8],
    request_if_none_match: Option<&str>,
    header_value: Option<&str>,
) -> Result<(), AuthError> {
    let signature = header_value.ok_or(AuthError::Missing)?;
    let canonical = canonical_response_for(
        key,
        version,
        status,
        request_nonce,
        etag,
        body,
        request_if_none_match,
    );
    verify_hex(key, &canonical, signature)
}

/// Outcome of a [`ReplayCache::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// First sight of this nonce for this device within the window: accept (now remembered).
    Fresh,
    /// Seen before within the window, or the timestamp is already outside it: reject (401).
    Replayed,
    /// The cache (or this device's share of it) is full: reject without remembering (429);
    /// failing closed keeps a full cache from letting replays through.
    Full,
}

const SHARDS: usize = 16;

struct Shard {
    /// (device, nonce) hash → expiry (Unix seconds).
    seen: HashMap<u64, i64>,
    /// Insertion order: (expiry, entry hash, device hash).
    order: VecDeque<(i64, u64, u64)>,
    /// Live entries per device hash.
    per_device: HashMap<u64, usize>,
}

impl Shard {
    fn prune(&mut self, now: i64) {
        while let Some(&(expiry, key, dev)) = self.order.front() {
            if expiry >= now {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
            if let Some(n) = self.per_device.get_mut(&dev) {
                *n -= 1;
                if *n == 0 {
                    self.per_device.remove(&dev);
                }
            }
        }
    }
}

/// Nonces seen within the skew window, bounded in memory: at most `capacity` entries in all
/// and `per_device_limit` per device, each kept until its timestamp leaves the window.
/// Entries are 64-bit keyed hashes of (device, nonce) (SipHash with a random per-process key,
/// so nobody can aim for collisions), pruned in insertion order: O(1) amortized per check.
pub struct ReplayCache {
    window: i64,
    shard_capacity: usize,
    per_device_limit: usize,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("window", &self.window)
            .field("len", &self.len())
            .finish()
    }
}

impl ReplayCache {
    /// Default per-device share: far above what an agent sends in two windows.
    pub const DEFAULT_PER_DEVICE_LIMIT: usize = 1024;

    /// A cache for a skew window (use the same as [`verify_request`]'s) holding at most
    /// `capacity` nonces.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self::with_per_device_limit(window, capacity, Self::DEFAULT_PER_DEVICE_LIMIT)
    }

    /// As [`ReplayCache::new`] with an explicit per-device limit.
    pub fn with_per_device_limit(window: Duration, capacity: usize, per_device: usize) -> Self {
        let shard_capacity = capacity.div_ceil(SHARDS).max(1);
        ReplayCache {
            window: window.as_secs() as i64,
            shard_capacity,
            per_device_limit: per_device.max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        seen: HashMap::new(),
                        order: VecDeque::new(),
                        per_device: HashMap::new(),
                    })
                })
                .collect(),
        }
    }

    /// `true` when the nonce is fresh (and now remembered); `false` for a replay or a full
    /// cache.
    pub fn check_and_insert(&self, device: &str, nonce: &str, ts: i64, now: i64) -> bool {
        self.check(device, nonce, ts, now) == ReplayVerdict::Fresh
    }

    /// Check a nonce of a request with timestamp `ts` at time `now`, remembering it if fresh.
    pub fn check(&self, device: &str, nonce: &str, ts: i64, now: i64) -> ReplayVerdict {
        let expiry = ts.saturating_add(self.window);
        if expiry < now {
            return ReplayVerdict::Replayed;
        }
        let dev = self.hasher.hash_one(device);
        let key = self.hasher.hash_one((device, nonce));
        let idx = (dev as usize) % SHARDS;
        let mut shard = match self.shards[idx].lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        shard.prune(now);
        if shard.seen.contains_key(&key) {
            return ReplayVerdict::Replayed;
        }
        let used = shard.per_device.get(&dev).copied().unwrap_or(0);
        if shard.seen.len() >= self.shard_capacity || used >= self.per_device_limit {
            return ReplayVerdict::Full;
        }
        shard.seen.insert(key, expiry);
        shard.order.push_back((expiry, key, dev));
        *shard.per_device.entry(dev).or_insert(0) += 1;
        ReplayVerdict::Fresh
    }

    /// Nonces currently remembered (including expired ones not yet pruned).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| match s.lock() {
                Ok(g) => g.seen.len(),
                Err(p) => p.into_inner().seen.len(),
            })
            .sum()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;

    const NOW: i64 = 1_764_115_200;
    const NONCE: &str = "0123456789abcdef0123456789abcdef";

    fn ring() -> MasterKeyRing {
        MasterKeyRing::from(MasterKey::new("k1", [1; 32]).unwrap())
    }

    fn signed(
        key: &DeviceKey,
        method: &str,
        pq: &str,
        body: &[u8],
        ts: i64,
        nonce: &str,
    ) -> HeaderMap {
        let mut h = HeaderMap::new();
        sign_request(key, method, pq, body, ts, nonce).apply(&mut h);
        h
    }

    fn verify(
        ring: &MasterKeyRing,
        dev: &str,
        method: &str,
        pq: &str,
        h: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<VerifiedRequest, AuthError> {
        verify_request(ring, dev, method, pq, h, body, now, DEFAULT_SKEW_SECS)
    }

    #[test]
    fn round_trip() {
        let ring = ring();
        let key = ring.current().derive("tor1-01");
        let pq = "/v1/devices/tor1-01/report";
        let h = signed(&key, "POST", pq, b"{}", NOW, NONCE);
        let v = verify(&ring, "tor1-01", "POST", pq, &h, b"{}", NOW + 5).unwrap();
        assert_eq!(v.device, "tor1-01");
        assert_eq!(v.key_id, "k1");
        assert_eq!(v.nonce, NONCE);
        assert_eq!(v.timestamp, NOW);
        assert_eq!(v.device_key, key);
    }

    #[test]
    fn wrong_key_and_unknown_key() {
        let ring = ring();
        let other = MasterKey::new("k1", [2; 32]).unwrap().derive("tor1-01");
        let pq = "/v1/devices/tor1-01/desired";
        let h = signed(&other, "GET", pq, b"", NOW, NONCE);
        assert_eq!(
            verify(&ring, "tor1-01", "GET", pq, &h, b"", NOW).unwrap_err(),
            AuthError::BadSignature
        );
        let unknown = MasterKey::new("k9", [1; 32]).unwrap().derive("tor1-01");
        let h = signed(&unknown, "GET", pq, b"", NOW, NONCE);
        assert_eq!(
            verify(&ring, "tor1-01", "GET", pq, &h, b"", NOW).unwrap_err(),
            AuthError::UnknownKey
        );
    }

    #[test]
    fn other_devices_credential_is_forbidden() {
        let ring = ring();
        let a = ring.current().derive("tor1-01");
        let pq = "/v1/devices/tor1-02/desired";
        let h = signed(&a, "GET", pq, b"", NOW, NONCE);
        let err = verify(&ring, "tor1-02", "GET", pq, &h, b"", NOW).unwrap_err();
        assert_eq!(err, AuthError::WrongDevice);
        assert_eq!(err.status(), 403);
        // Claiming to be B with A's key is just a bad signature (401), not 403.
        let mut h = signed(&a, "GET", pq, b"", NOW, NONCE);
        h.insert(HEADER_DEVICE, HeaderValue::from_static("tor1-02"));
        assert_eq!(
            verify(&ring, "tor1-02", "GET", pq, &h, b"", NOW).unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn skew_window() {
        let ring = ring();
        let key = ring.current().derive("d");
        let pq = "/v1/devices/d/desired";
        let h = signed(&key, "GET", pq, b"", NOW, NONCE);
        for now in [NOW - 60, NOW + 60] {
            assert!(verify(&ring, "d", "GET", pq, &h, b"", now).is_ok());
        }
        for now in [NOW - 61, NOW + 61, NOW + 3600] {
            assert_eq!(
                verify(&ring, "d", "GET", pq, &h, b"", now).unwrap_err(),
                AuthError::Skew
            );
        }
    }

    #[test]
    fn tampering_is_detected() {
        let ring = ring();
        let key = ring.current().derive("d");
        let pq = "/v1/devices/d/desired?wait=30s";
        let h = signed(&key, "GET", pq, b"body", NOW, NONCE);
        let bad = AuthError::BadSignature;
        let v = |m: &str, p: &str, h: &HeaderMap, b: &[u8]| {
            verify(&ring, "d", m, p, h, b, NOW).map(|_| ())
        };
        assert_eq!(v("GET", pq, &h, b"body"), Ok(()));
        assert_eq!(v("GET", pq, &h, b"bodY"), Err(bad));
        assert_eq!(v("POST", pq, &h, b"body"), Err(bad));
        assert_eq!(
            v("GET", "/v1/devices/d/report?wait=30s", &h, b"body"),
            Err(bad)
        );
        assert_eq!(
            v("GET", "/v1/devices/d/desired?wait=31s", &h, b"body"),
            Err(bad)
        );
        assert_eq!(v("GET", "/v1/devices/d/desired", &h, b"body"), Err(bad));
        let mut t = h.clone();
        t.insert(HEADER_TIMESTAMP, HeaderValue::from(NOW + 1));
        assert_eq!(v("GET", pq, &t, b"body"), Err(bad));
        let mut t = h.clone();
        t.insert(
            HEADER_NONCE,
            HeaderValue::from_static("ffffffffffffffffffffffff"),
        );
        assert_eq!(v("GET", pq, &t, b"body"), Err(bad));
        let mut t = h.clone();
        let sig = t
            .get(HEADER_SIGNATURE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let flipped = format!(
            "{}{}",
            if sig.starts_with('0') { "1" } else { "0" },
            &sig[1..]
        );
        t.insert(HEADER_SIGNATURE, HeaderValue::from_str(&flipped).unwrap());
        assert_eq!(v("GET", pq, &t, b"body"), Err(bad));
    }

    #[test]
    fn missing_and_malformed_headers() {
        let ring = ring();
        let key = ring.current().derive("d");
        let pq = "/v1/devices/d/desired";
        let h = signed(&key, "GET", pq, b"", NOW, NONCE);
        for name in [
            HEADER_DEVICE,
            HEADER_KEY_ID,
            HEADER_TIMESTAMP,
            HEADER_NONCE,
            HEADER_SIGNATURE,
        ] {
            let mut t = h.clone();
            t.remove(name);
            assert_eq!(
                verify(&ring, "d", "GET", pq, &t, b"", NOW).unwrap_err(),
                AuthError::Missing,
                "{name}"
            );
        }
        for (name, value) in [
            (HEADER_TIMESTAMP, "0123"),
            (HEADER_TIMESTAMP, "-5"),
            (HEADER_TIMESTAMP, "12a"),
            (HEADER_NONCE, "short"),
            (HEADER_NONCE, "has space in it, long enough"),
            (HEADER_DEVICE, "Not_A_Device"),
            (HEADER_KEY_ID, "bad id"),
            (HEADER_SIGNATURE, "zz"),
            (
                HEADER_SIGNATURE,
                "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
            ),
        ] {
            let mut t = h.clone();
            t.insert(name, HeaderValue::from_static(value));
            assert_eq!(
                verify(&ring, "d", "GET", pq, &t, b"", NOW).unwrap_err(),
                AuthError::Malformed,
                "{name}: {value}"
            );
        }
        let mut t = h.clone();
        t.append(HEADER_NONCE, HeaderValue::from_static(NONCE));
        assert_eq!(
            verify(&ring, "d", "GET", pq, &t, b"", NOW).unwrap_err(),
            AuthError::Malformed
        );
    }

    #[test]
    fn key_rotation_overlap() {
        let old = MasterKey::new("old", [1; 32]).unwrap();
        let new = MasterKey::new("new", [2; 32]).unwrap();
        let overlap = MasterKeyRing::from_keys(vec![new.clone(), old.clone()]).unwrap();
        let after = MasterKeyRing::from(new.clone());
        let pq = "/v1/devices/d/desired";
        let h_old = signed(&old.derive("d"), "GET", pq, b"", NOW, NONCE);
        let h_new = signed(&new.derive("d"), "GET", pq, b"", NOW, NONCE);
        assert!(verify(&overlap, "d", "GET", pq, &h_old, b"", NOW).is_ok());
        assert!(verify(&overlap, "d", "GET", pq, &h_new, b"", NOW).is_ok());
        assert!(verify(&after, "d", "GET", pq, &h_new, b"", NOW).is_ok());
        assert_eq!(
            verify(&after, "d", "GET", pq, &h_old, b"", NOW).unwrap_err(),
            AuthError::UnknownKey
        );
        // The response is signed with the key the request used.
        let v = verify(&overlap, "d", "GET", pq, &h_old, b"", NOW).unwrap();
        assert_eq!(v.device_key, old.derive("d"));
    }

    #[test]
    fn hex_and_lines_as_before() {
        // The canonical strings' building blocks give what `hex::encode` and `join` gave.
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = String::new();
        push_hex(&mut out, &bytes);
        assert_eq!(out, hex::encode(&bytes));
        assert_eq!(
            body_sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for lines in [&[][..], &["a"], &["a", "", "bc", ""]] {
            assert_eq!(join_lines(lines), lines.join("\n"));
        }
    }

    #[test]
    fn response_signatures() {
        let key = ring().current().derive("d");
        let sig = sign_response(&key, 200, NONCE, Some("\"r1\""), b"doc");
        let ok = |status, nonce, etag, body: &[u8], sig: Option<&str>| {
            verify_response(&key, status, nonce, etag, body, sig)
        };
        assert_eq!(ok(200, NONCE, Some("\"r1\""), b"doc", Some(&sig)), Ok(()));
        let bad = Err(AuthError::BadSignature);
        assert_eq!(ok(200, NONCE, Some("\"r1\""), b"dod", Some(&sig)), bad);
        assert_eq!(ok(304, NONCE, Some("\"r1\""), b"doc", Some(&sig)), bad);
        assert_eq!(ok(200, NONCE, Some("\"r2\""), b"doc", Some(&sig)), bad);
        assert_eq!(ok(200, NONCE, None, b"doc", Some(&sig)), bad);
        // Replayed onto another request: another nonce.
        assert_eq!(
            ok(
                200,
                "ffffffffffffffffffffffff",
                Some("\"r1\""),
                b"doc",
                Some(&sig)
            ),
            bad
        );
        assert_eq!(
            ok(200, NONCE, Some("\"r1\""), b"doc", None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            ok(200, NONCE, Some("\"r1\""), b"doc", Some("nothex")),
            Err(AuthError::Malformed)
        );
        // Another device's key does not verify it.
        let other = ring().current().derive("e");
        assert_eq!(
            verify_response(&other, 200, NONCE, Some("\"r1\""), b"doc", Some(&sig)),
            bad
        );
        // A request signature never passes as a response signature (domain separation).
        let req = sign_request(&key, "GET", "/", b"doc", NOW, NONCE);
        assert_eq!(
            ok(200, NONCE, Some("\"r1\""), b"doc", Some(&req.signature)),
            bad
        );
    }

    fn signed_v2(key: &DeviceKey, pq: &str, inm: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        let s = sign_request_v2(key, "GET", pq, inm, b"", NOW, NONCE);
        s.apply(&mut h);
        if let Some(v) = inm {
            h.insert(
                http::header::IF_NONE_MATCH,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn v2_binds_if_none_match_and_cannot_be_downgraded() {
        let ring = ring();
        let key = ring.current().derive("d");
        let pq = "/v1/devices/d/desired?wait=30s";
        let h = signed_v2(&key, pq, Some("\"r1\""));
        let v = verify(&ring, "d", "GET", pq, &h, b"", NOW).unwrap();
        assert_eq!(v.version, AuthVersion::V2);
        assert_eq!(v.if_none_match.as_deref(), Some("\"r1\""));
        let bad = Err(AuthError::BadSignature);
        let check = |h: &HeaderMap| verify(&ring, "d", "GET", pq, h, b"", NOW).map(|_| ());
        // A proxy rewriting, adding or removing If-None-Match breaks the signature.
        for forged in ["*", "\"r2\"", "W/\"r1\"", "\"r1\", \"r2\""] {
            let mut t = h.clone();
            t.insert(
                http::header::IF_NONE_MATCH,
                HeaderValue::from_static(forged),
            );
            assert_eq!(check(&t), bad, "{forged}");
        }
        let mut t = h.clone();
        t.remove(http::header::IF_NONE_MATCH);
        assert_eq!(check(&t), bad);
        let none = signed_v2(&key, pq, None);
        assert!(check(&none).is_ok());
        let mut t = none.clone();
        t.insert(http::header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(check(&t), bad);
        // Stripping the version header (a downgrade to v1) breaks it too.
        let mut t = h.clone();
        t.remove(HEADER_AUTH_VERSION);
        assert_eq!(check(&t), bad);
        // Two If-None-Match headers or an unknown version are malformed.
        let mut t = h.clone();
        t.append(http::header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(check(&t), Err(AuthError::Malformed));
        let mut t = h.clone();
        t.insert(HEADER_AUTH_VERSION, HeaderValue::from_static("v3"));
        assert_eq!(check(&t), Err(AuthError::Malformed));
        // v1 requests still verify, with If-None-Match unsigned (and not reported).
        let mut v1 = signed(&key, "GET", pq, b"", NOW, NONCE);
        v1.insert(http::header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        let v = verify(&ring, "d", "GET", pq, &v1, b"", NOW).unwrap();
        assert_eq!((v.version, v.if_none_match), (AuthVersion::V1, None));
    }

    #[test]
    fn v2_responses_bind_the_requests_if_none_match() {
        let ring = ring();
        let key = ring.current().derive("d");
        let pq = "/v1/devices/d/desired";
        let h = signed_v2(&key, pq, Some("\"r1\""));
        let v = verify(&ring, "d", "GET", pq, &h, b"", NOW).unwrap();
        let sig = v.sign_response(304, Some("\"r1\""), b"");
        let check = |inm: Option<&str>, etag: Option<&str>, version| {
            verify_response_versioned(&key, version, 304, NONCE, etag, b"", inm, Some(&sig))
        };
        assert_eq!(
            check(Some("\"r1\""), Some("\"r1\""), AuthVersion::V2),
            Ok(())
        );
        let bad = Err(AuthError::BadSignature);
        assert_eq!(check(Some("*"), Some("\"r1\""), AuthVersion::V2), bad);
        assert_eq!(check(None, Some("\"r1\""), AuthVersion::V2), bad);
        assert_eq!(check(Some("\"r1\""), Some("\"r2\""), AuthVersion::V2), bad);
        // A v1 signature never passes as v2 and the reverse.
        assert_eq!(check(Some("\"r1\""), Some("\"r1\""), AuthVersion::V1), bad);
        let v1 = sign_response(&key, 304, NONCE, Some("\"r1\""), b"");
        assert_eq!(
            verify_response_versioned(
                &key,
                AuthVersion::V2,
                304,
                NONCE,
                Some("\"r1\""),
                b"",
                None,
                Some(&v1)
            ),
            bad
        );
    }

    #[test]
    fn epochs_verify_with_their_own_key_only() {
        let ring = ring();
        let pq = "/v1/devices/d/desired";
        let e2 = ring.current().derive_at("d", 2);
        let h = signed(&e2, "GET", pq, b"", NOW, NONCE);
        let v = verify(&ring, "d", "GET", pq, &h, b"", NOW).unwrap();
        assert_eq!((v.key_id.as_str(), v.epoch), ("k1.2", 2));
        assert_eq!(v.device_key, e2);
        // Claiming another epoch with this key's signature fails.
        let mut t = h.clone();
        t.insert(HEADER_KEY_ID, HeaderValue::from_static("k1.3"));
        assert_eq!(
            verify(&ring, "d", "GET", pq, &t, b"", NOW).unwrap_err(),
            AuthError::BadSignature
        );
        t.insert(HEADER_KEY_ID, HeaderValue::from_static("k1.02"));
        assert_eq!(
            verify(&ring, "d", "GET", pq, &t, b"", NOW).unwrap_err(),
            AuthError::Malformed
        );
        t.insert(HEADER_KEY_ID, HeaderValue::from_static("k9.2"));
        assert_eq!(
            verify(&ring, "d", "GET", pq, &t, b"", NOW).unwrap_err(),
            AuthError::UnknownKey
        );
    }

    #[test]
    fn replay_cache_rejects_replays_and_expires() {
        let cache = ReplayCache::new(Duration::from_secs(60), 1000);
        assert!(cache.check_and_insert("d", NONCE, NOW, NOW));
        assert!(!cache.check_and_insert("d", NONCE, NOW, NOW + 1));
        assert_eq!(
            cache.check("d", NONCE, NOW, NOW + 60),
            ReplayVerdict::Replayed
        );
        // Same nonce, another device: independent.
        assert!(cache.check_and_insert("e", NONCE, NOW, NOW));
        // Timestamps already out of the window are never fresh.
        assert!(!cache.check_and_insert("d", "zzzzzzzzzzzzzzzz", NOW - 61, NOW));
        // Once the entry's timestamp has left the window, it is pruned.
        assert_eq!(cache.len(), 2);
        // (Pruning is per shard, and which shard a device lands in is random: touch both
        // devices' shards so the count does not depend on whether they share one.)
        assert!(cache.check_and_insert("d", "other-nonce-0001", NOW + 61, NOW + 61));
        assert_eq!(
            cache.check("e", "x", NOW + 200, NOW + 200),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            cache.check("d", "y", NOW + 200, NOW + 200),
            ReplayVerdict::Fresh
        );
        assert_eq!(cache.len(), 2, "old entries pruned");
    }

    #[test]
    fn replay_cache_is_bounded_and_fails_closed() {
        let cache = ReplayCache::with_per_device_limit(Duration::from_secs(60), 10_000, 3);
        for i in 0..3 {
            assert!(cache.check_and_insert("d", &format!("nonce-{i:011}"), NOW, NOW));
        }
        assert_eq!(
            cache.check("d", "nonce-99999999999", NOW, NOW),
            ReplayVerdict::Full
        );
        // Another device is unaffected.
        assert!(cache.check_and_insert("e", "nonce-99999999999", NOW, NOW));
        // Global bound: 16 shards × 1 entry.
        let small = ReplayCache::new(Duration::from_secs(60), 16);
        let mut fresh = 0;
        for i in 0..1000 {
            if small.check_and_insert(&format!("dev{i}"), NONCE, NOW, NOW) {
                fresh += 1;
            }
        }
        assert!(fresh <= 16, "{fresh}");
        assert!(small.len() <= 16);
        // After the window, space frees up again.
        assert!(small.check_and_insert("dev0", "another-nonce-xx", NOW + 61, NOW + 61));
    }

    #[test]
    fn errors_never_reveal_which_part_to_clients() {
        for e in [
            AuthError::Missing,
            AuthError::Malformed,
            AuthError::UnknownKey,
            AuthError::BadSignature,
            AuthError::Skew,
            AuthError::Replay,
            AuthError::Revoked,
            AuthError::OldVersion,
        ] {
            assert_eq!(e.status(), 401);
            assert_eq!(e.client_message(), "authentication failed");
        }
        assert_eq!(AuthError::WrongDevice.reason_label(), "wrong_device");
    }
}
