//! DeviceProcesses as the components read them back from the API server: every field but
//! `metadata.managedFields`.
//!
//! The gateway decodes a DeviceProcess at every watch event and at every answer to its own
//! status patches, the controller at every answer to its applies; during a rollout that is
//! several times per device. The server-side apply bookkeeping in `managedFields` (one entry
//! per field manager, each a tree of the fields it owns) is most of such an object's JSON, and
//! decoding it into
//! [`ManagedFieldsEntry`](k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry)
//! values — maps of maps of strings — was an eighth of the gateway's CPU in a 10,000-device
//! rollout. Neither reads it there (the controller reads its own entry from its watch cache,
//! not from these answers), so [`LeanProcess`] skips it while parsing: the bytes are still
//! checked as JSON, nothing is allocated for them. Use it as the type of an `Api` whose
//! answers need no managedFields.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Deserializer};

use crate::{DeviceProcess, DeviceProcessSpec, DeviceProcessStatus};

/// A DeviceProcess without `metadata.managedFields` (always `None` here).
#[derive(Clone, Debug, Deserialize)]
pub struct LeanProcess {
    /// Everything of the object's metadata but `managedFields`.
    #[serde(deserialize_with = "without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The spec.
    pub spec: DeviceProcessSpec,
    /// The status, when there is one.
    #[serde(default)]
    pub status: Option<DeviceProcessStatus>,
}

impl From<LeanProcess> for DeviceProcess {
    fn from(p: LeanProcess) -> Self {
        DeviceProcess {
            metadata: p.metadata,
            spec: p.spec,
            status: p.status,
        }
    }
}

impl kube::Resource for LeanProcess {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        DeviceProcess::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        DeviceProcess::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        DeviceProcess::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        DeviceProcess::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// [`ObjectMeta`]'s fields but `managedFields`, which serde skips as an unknown field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

fn without_managed_fields<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        generate_name: m.generate_name,
        generation: m.generation,
        labels: m.labels,
        managed_fields: None,
        name: m.name,
        namespace: m.namespace,
        owner_references: m.owner_references,
        resource_version: m.resource_version,
        self_link: m.self_link,
        uid: m.uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DeviceProcess as a real API server returns it, managedFields and all.
    fn served() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "azure.com/v1alpha1",
            "kind": "DeviceProcess",
            "metadata": {
                "name": "demo-logger-tor1-01",
                "namespace": "default",
                "uid": "6f1c2b9e-0d3c-4a43-9d7e-2b1f0c7a9e11",
                "resourceVersion": "4242",
                "generation": 3,
                "creationTimestamp": "2026-12-07T10:00:00Z",
                "labels": {"apollo.azure.com/device": "tor1-01", "app": "logger"},
                "annotations": {"note": "x"},
                "finalizers": ["example.com/keep"],
                "ownerReferences": [{
                    "apiVersion": "azure.com/v1alpha1",
                    "kind": "DeviceProcessDeployment",
                    "name": "demo-logger",
                    "uid": "11111111-2222-3333-4444-555555555555",
                    "controller": true,
                    "blockOwnerDeletion": true
                }],
                "managedFields": [{
                    "manager": "apollo-controller",
                    "operation": "Apply",
                    "apiVersion": "azure.com/v1alpha1",
                    "time": "2026-12-07T10:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {".": {}}}
                }, {
                    "manager": "apollo-gateway",
                    "operation": "Update",
                    "subresource": "status",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:status": {"f:observedSpecHash": {}}}
                }]
            },
            "spec": {
                "deviceRef": {"name": "tor1-01"},
                "artifact": {"type": "oci", "url": "registry.example/logger:1"},
                "execution": {"backend": "container", "command": ["/bin/logger"]}
            },
            "status": {"observedSpecHash": "abc", "observedGeneration": 3}
        })
    }

    #[test]
    fn reads_everything_but_the_managed_fields() {
        let full: DeviceProcess = serde_json::from_value(served()).unwrap();
        let lean: LeanProcess = serde_json::from_value(served()).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        let mut expected = full;
        expected.metadata.managed_fields = None;
        let read = DeviceProcess::from(lean);
        assert_eq!(read.metadata, expected.metadata);
        assert_eq!(read.spec, expected.spec);
        assert_eq!(read.status, expected.status);
    }

    #[test]
    fn a_malformed_object_is_still_an_error() {
        let mut bad = served();
        bad["metadata"]["managedFields"] = serde_json::json!([{"manager": 7}]);
        assert!(
            serde_json::from_value::<LeanProcess>(bad).is_ok(),
            "skipped, not read"
        );
        let mut bad = served();
        bad["metadata"]["generation"] = serde_json::json!("three");
        assert!(serde_json::from_value::<LeanProcess>(bad).is_err());
        let mut bad = served();
        bad["spec"] = serde_json::json!(null);
        assert!(serde_json::from_value::<LeanProcess>(bad).is_err());
        assert!(
            serde_json::from_str::<LeanProcess>(r#"{"metadata": {"managedFields": [}"#).is_err()
        );
    }
}
