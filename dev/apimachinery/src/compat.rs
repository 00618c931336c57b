//! Which Kubernetes minor serves which CustomResourceDefinition field.
//!
//! A CRD that uses a newer field does not install on an older server: when the field is not
//! in the older server's API types at all, `kubectl apply` (strict field validation) is
//! refused with 400 `strict decoding error: unknown field "spec.versions[0].selectableFields"`
//! (with Warn/Ignore the field is pruned); while the field's feature gate is off by default
//! the server drops it silently. [`CRD_VERSION_FIELDS`] is the one table of such fields; the
//! CRD generator writes a variant without them for older servers and the development API
//! server behaves like the older server (`--version 1.29`).

use serde_json::Value;

/// The oldest Kubernetes minor the project supports.
pub const OLDEST_SUPPORTED_MINOR: u32 = 29;

/// A field of a CRD's `spec.versions[*]` that older servers lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatedField {
    /// The field name inside `spec.versions[*]`.
    pub field: &'static str,
    /// First minor whose API types have the field (older: unknown field).
    pub known_since: u32,
    /// First minor whose feature gate is on by default (older: dropped silently).
    pub enabled_since: u32,
}

/// `selectableFields` (KEP-4358, feature gate `CustomResourceFieldSelectors`): alpha in 1.30
/// (off by default), beta and on by default in 1.31, GA in 1.32.
pub const CRD_VERSION_FIELDS: &[GatedField] = &[GatedField {
    field: "selectableFields",
    known_since: 30,
    enabled_since: 31,
}];

/// A field removed from a CRD by [`strip_crd_fields`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedField {
    /// Index into `spec.versions`.
    pub version_index: usize,
    /// The gate that removed it.
    pub gate: GatedField,
}

impl RemovedField {
    /// The apiserver's field path, `spec.versions[0].selectableFields`.
    pub fn path(&self) -> String {
        format!("spec.versions[{}].{}", self.version_index, self.gate.field)
    }

    /// A JSON pointer, `/spec/versions/0/selectableFields` (for a JSON patch `remove`).
    pub fn pointer(&self) -> String {
        format!("/spec/versions/{}/{}", self.version_index, self.gate.field)
    }

    /// Whether a server of `minor` knows the field (then it is dropped silently, else it is an
    /// unknown field for field validation).
    pub fn known_by(&self, minor: u32) -> bool {
        minor >= self.gate.known_since
    }
}

/// Removes from `crd` (a CustomResourceDefinition as JSON) every field that a server of
/// `minor` does not serve, and returns what was removed, in order.
pub fn strip_crd_fields(crd: &mut Value, minor: u32) -> Vec<RemovedField> {
    let mut removed = Vec::new();
    let Some(versions) = crd
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    else {
        return removed;
    };
    for (version_index, version) in versions.iter_mut().enumerate() {
        let Some(v) = version.as_object_mut() else {
            continue;
        };
        for gate in CRD_VERSION_FIELDS {
            if minor < gate.enabled_since && v.remove(gate.field).is_some() {
                removed.push(RemovedField {
                    version_index,
                    gate: *gate,
                });
            }
        }
    }
    removed
}

/// The oldest minor that serves every field `crd` uses (at least
/// [`OLDEST_SUPPORTED_MINOR`]).
pub fn minimum_minor(crd: &Value) -> u32 {
    let mut probe = crd.clone();
    strip_crd_fields(&mut probe, 0)
        .iter()
        .map(|r| r.gate.enabled_since)
        .fold(OLDEST_SUPPORTED_MINOR, u32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({"spec": {"versions": [
            {"name": "v1", "selectableFields": [{"jsonPath": ".spec.a"}]},
            {"name": "v2"},
            {"name": "v3", "selectableFields": []}
        ]}})
    }

    #[test]
    fn selectable_fields_by_minor() {
        let mut c = crd();
        let removed = strip_crd_fields(&mut c, 29);
        let paths: Vec<String> = removed.iter().map(RemovedField::path).collect();
        assert_eq!(
            paths,
            [
                "spec.versions[0].selectableFields",
                "spec.versions[2].selectableFields"
            ]
        );
        assert_eq!(removed[1].pointer(), "/spec/versions/2/selectableFields");
        assert!(!removed[0].known_by(29));
        assert!(removed[0].known_by(30));
        assert!(c["spec"]["versions"][0].get("selectableFields").is_none());
        let mut c = crd();
        assert_eq!(strip_crd_fields(&mut c, 30).len(), 2);
        for minor in [31, 32, 36] {
            let mut c = crd();
            assert!(strip_crd_fields(&mut c, minor).is_empty());
            assert_eq!(c, crd());
        }
    }

    #[test]
    fn minimum_minor_of_a_crd() {
        assert_eq!(minimum_minor(&crd()), 31);
        assert_eq!(
            minimum_minor(&json!({"spec": {"versions": [{"name": "v1"}]}})),
            OLDEST_SUPPORTED_MINOR
        );
        assert_eq!(minimum_minor(&json!("not a crd")), OLDEST_SUPPORTED_MINOR);
    }
}
