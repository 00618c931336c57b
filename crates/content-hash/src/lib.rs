//! # apollo-content-hash
//!
//! Content-derived identifiers: the same content always gives the same bytes and the same
//! hash, whatever order its JSON object keys arrived in. Used for the spec hash
//! (`apollo-api`: 16 hex characters over a spec's canonical JSON) and for the desired
//! document's revision (`apollo-protocol`: 32 hex characters over the document with every
//! spec canonicalized).
//!
//! - [`Canonical`] serializes a borrowed value with object keys sorted (by their UTF-8 bytes)
//!   at every level and arrays in their order; [`canonicalize`] turns a value into that
//!   order, and [`canonical_json`] is its compact text: no insignificant whitespace, strings
//!   escaped as `serde_json` escapes them.
//! - [`sha256_hex`] is the first `len` hex characters of SHA-256 over some bytes;
//!   [`hash_json`] the same over a value's canonical JSON.
//!
//! Both forms are pinned by golden vectors (the spec hash in `apollo-api`, the revisions in
//! `docs/PROTOCOL.md` and the protocol crate's vector files): changing either changes every
//! ETag and observed hash in the field.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// A borrowed JSON value that serializes with the keys of every object sorted by their UTF-8
/// bytes, at every level; arrays keep their order.
#[derive(Debug, Clone, Copy)]
pub struct Canonical<'a>(pub &'a Value);

impl Serialize for Canonical<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    out.serialize_entry(k, &Canonical(v))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Canonical(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// `value` with the keys of every object sorted by their UTF-8 bytes (arrays keep their
/// order): the [`Canonical`] order as a value, so that it serializes canonically too.
pub fn canonicalize(value: Value) -> Value {
    // A `Value` serializer keeps the order it is given (`preserve_order`) or sorts the same
    // way (`BTreeMap`); serializing a `Value` cannot fail.
    serde_json::to_value(Canonical(&value)).unwrap_or(value)
}

/// The canonical JSON text of `value`: keys sorted at every level, compact separators.
pub fn canonical_json(value: &Value) -> String {
    // Serializing a `Value` (string keys only, no custom serializers) cannot fail.
    serde_json::to_string(&Canonical(value)).unwrap_or_default()
}

/// The first `len` hex characters (at most 64) of SHA-256 over `bytes`.
pub fn sha256_hex(bytes: &[u8], len: usize) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut hex = hex::encode(digest.as_ref());
    hex.truncate(len);
    hex
}

/// [`sha256_hex`] over the [`canonical_json`] of `value`.
pub fn hash_json(value: &Value, len: usize) -> String {
    sha256_hex(canonical_json(value).as_bytes(), len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_level_and_arrays_keep_order() {
        let v = json!({"x": 1, "a": {"z": 1, "b": [{"d": 1, "c": 2}, 3]}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"b":[{"c":2,"d":1},3],"z":1},"x":1}"#
        );
        // The owned and the borrowed form agree.
        assert_eq!(
            serde_json::to_string(&canonicalize(v.clone())).unwrap(),
            canonical_json(&v)
        );
        // Sorting is by UTF-8 bytes: uppercase before lowercase, `é` after `z`.
        assert_eq!(
            canonical_json(&json!({"é": 1, "z": 2, "Z": 3})),
            r#"{"Z":3,"z":2,"é":1}"#
        );
    }

    #[test]
    fn escaping_is_stable() {
        let v = json!({"b": "quote\" and \\ and \n", "a": [1, 2.5, true, null]});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":[1,2.5,true,null],"b":"quote\" and \\ and \n"}"#
        );
    }

    #[test]
    fn truncated_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(sha256_hex(b"abc", 16), "ba7816bf8f01cfea");
        assert_eq!(
            sha256_hex(b"abc", 64),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_hex(b"abc", 100).len(), 64);
        assert_eq!(
            hash_json(&json!({"b": 1, "a": 2}), 32),
            hash_json(&json!({"a": 2, "b": 1}), 32)
        );
        assert_eq!(
            hash_json(&json!({"b": 1, "a": 2}), 32),
            sha256_hex(br#"{"a":2,"b":1}"#, 32)
        );
    }
}
