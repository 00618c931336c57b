//! The spec hash: one short, content-derived identifier of a DeviceProcess spec.
//!
//! `spec_hash(spec)` = the first 16 hex characters (64 bits) of SHA-256 over the spec's
//! canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace,
//! strings escaped as `serde_json` escapes them, fields that serialize as absent left out.
//! Key order in the source document therefore never changes the hash, and any change of a
//! value does. The gateway uses it for ETags and `SpecObserved`, the controller for
//! up-to-date counts, and kubectl shows it in the `Observed` column.

use serde::Serialize;
use serde_json::Value;

use crate::DeviceProcessSpec;

/// Hex characters kept from the SHA-256 digest.
pub const SPEC_HASH_LEN: usize = 16;

/// The spec hash of a DeviceProcess spec.
pub fn spec_hash(spec: &DeviceProcessSpec) -> String {
    hash_value(&to_value(spec))
}

/// The spec hash of an arbitrary JSON value (for specs held as untyped JSON).
pub fn hash_value(value: &Value) -> String {
    let canonical = canonical_json(value);
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    let mut hex = hex::encode(digest.as_ref());
    hex.truncate(SPEC_HASH_LEN);
    hex
}

fn to_value<T: Serialize>(value: &T) -> Value {
    // Serializing plain data types into a Value cannot fail: there are no maps with
    // non-string keys and no custom serializers that error.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Canonical JSON: keys sorted at every level, compact separators.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runbook_spec(device: &str) -> DeviceProcessSpec {
        crate::samples::demo_logger_template().for_device(device)
    }

    #[test]
    fn golden_vector() {
        // Pinned: changing the canonical form or the hash breaks every ETag and observed hash
        // in the field, so this must only change together with a protocol version bump.
        let spec = runbook_spec("tor1-01");
        assert_eq!(
            canonical_json(&serde_json::to_value(&spec).unwrap()),
            r#"{"artifact":{"type":"oci","url":"alpine:3.19"},"deviceRef":{"name":"tor1-01"},"execution":{"args":["echo hello from ${APOLLO_DEVICE_NAME}; sleep 3600"],"backend":"container","command":["/bin/sh","-c"],"env":[{"name":"APOLLO_DEVICE_NAME","value":"${APOLLO_DEVICE_NAME}"}]}}"#
        );
        assert_eq!(spec_hash(&spec), GOLDEN_TOR1_01);
    }

    // Computed independently: sha256 of the canonical string above, first 16 hex chars.
    const GOLDEN_TOR1_01: &str = "23648a6c57cc6195";

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::from_str(
            r#"{"deviceRef":{"name":"x"},"artifact":{"url":"u","type":"oci"},"execution":{"backend":"container","args":["a","b"]}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"execution":{"args":["a","b"],"backend":"container"},"artifact":{"type":"oci","url":"u"},"deviceRef":{"name":"x"}}"#,
        )
        .unwrap();
        assert_eq!(hash_value(&a), hash_value(&b));
        // And the typed path agrees with the untyped one.
        let typed: DeviceProcessSpec = serde_json::from_value(b).unwrap();
        assert_eq!(spec_hash(&typed), hash_value(&a));
    }

    #[test]
    fn any_change_changes_the_hash() {
        let base = runbook_spec("tor1-01");
        let mut changed_arg = base.clone();
        changed_arg.execution.args = vec!["echo".into(), "updated".into()];
        let mut changed_device = base.clone();
        changed_device.device_ref.name = "tor1-02".into();
        let mut reordered_args = base.clone();
        reordered_args.execution.command.reverse();
        let hashes = [
            spec_hash(&base),
            spec_hash(&changed_arg),
            spec_hash(&changed_device),
            spec_hash(&reordered_args),
        ];
        for (i, a) in hashes.iter().enumerate() {
            assert_eq!(a.len(), SPEC_HASH_LEN);
            assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
            for b in &hashes[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn escaping_is_stable() {
        let v: Value = serde_json::json!({"b": "quote\" and \\ and \n", "a": [1, 2.5, true, null]});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":[1,2.5,true,null],"b":"quote\" and \\ and \n"}"#
        );
    }
}
