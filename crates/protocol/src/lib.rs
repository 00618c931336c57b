//! Apollo device protocol, version `v1`: the contract between the device gateway and the
//! agents on network devices. No Kubernetes dependency, so the agent (and a fleet simulator)
//! can use it without pulling in a Kubernetes client.
//!
//! - [`wire`]: the JSON documents (desired document, report, report ack, error body), the
//!   deterministic encoding of a desired document with its revision and ETag, `If-None-Match`
//!   and long-poll (`?wait=`) helpers, device-name validation.
//! - [`keys`]: master keys (with key ids, for rotation), master key rings, per-device keys
//!   derived with HMAC-SHA256 from a master key and the device name, and their text forms.
//! - [`auth`]: request signing and verification (HMAC-SHA256 over a canonical string),
//!   response signatures bound to the request nonce, and the bounded replay cache.
//! - [`replica`]: how gateway replicas authenticate to each other (forwarded reports), with a
//!   key derived from the same master key ring.
//!
//! The normative description, with test vectors, is `docs/PROTOCOL.md`; a test in this crate
//! parses that document and checks every vector against this code.

pub mod auth;
pub mod keys;
pub mod replica;
pub mod wire;

/// The protocol version: the first path segment and the last line of every canonical string.
pub const PROTOCOL_VERSION: &str = "v1";
