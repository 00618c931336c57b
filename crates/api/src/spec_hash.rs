//! The spec hash: one short, content-derived identifier of a DeviceProcess spec.
//!
//! `spec_hash(spec)` = the first 16 hex characters (64 bits) of SHA-256 over the spec's
//! canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace,
//! strings escaped as `serde_json` escapes them, fields that serialize as absent left out.
//! Key order in the source document therefore never changes the hash, and any change of a
//! value does. The gateway uses it for ETags and `SpecObserved`, the controller for
//! up-to-date counts, and kubectl shows it in the `Observed` column. The canonical form and
//! the digest are `apollo-content-hash`'s.

use serde::Serialize;
use serde_json::Value;

use crate::{DeviceProcessSpec, DeviceProcessTemplate};

/// Hex characters kept from the SHA-256 digest.
pub const SPEC_HASH_LEN: usize = 16;

/// The spec hash of a DeviceProcess spec.
pub fn spec_hash(spec: &DeviceProcessSpec) -> String {
    hash_value(&to_value(spec))
}

/// The template revision of a deployment: the spec hash of its whole template (labels and
/// spec), so any change that alters a DeviceProcess is a new revision. Recorded on each
/// DeviceProcess as the [`crate::labels::TEMPLATE_HASH`] label.
pub fn template_hash(template: &DeviceProcessTemplate) -> String {
    hash_value(&to_value(template))
}

/// The spec hash of an arbitrary JSON value (for specs held as untyped JSON).
pub fn hash_value(value: &Value) -> String {
    apollo_content_hash::hash_json(value, SPEC_HASH_LEN)
}

fn to_value<T: Serialize>(value: &T) -> Value {
    // Serializing plain data types into a Value cannot fail: there are no maps with
    // non-string keys and no custom serializers that error.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_content_hash::canonical_json;

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
    fn template_hash_changes_with_spec_and_labels_only() {
        let mut t = DeviceProcessTemplate {
            metadata: crate::TemplateMetadata::default(),
            spec: crate::samples::demo_logger_template(),
        };
        let a = template_hash(&t);
        assert_eq!(a, template_hash(&t.clone()));
        assert_eq!(a.len(), SPEC_HASH_LEN);
        t.metadata.labels.insert("app".into(), "logger".into());
        let b = template_hash(&t);
        t.spec.execution.args = vec!["echo".into(), "updated".into()];
        let c = template_hash(&t);
        assert!(a != b && b != c && a != c);
    }
}
