//! `NetworkSwitch`: placeholder device inventory for demos.
//!
//! Real deployments own their inventory elsewhere; the controller needs only the metadata
//! (name, labels) of inventory objects, and the inventory kind is configurable. This kind
//! accepts any spec (the runbook's `spec.dummy: ok` survives) so demo objects apply as written.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Inventory object for one network switch; only metadata matters to Apollo.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "azure.com",
    version = "v1alpha1",
    kind = "NetworkSwitch",
    namespaced,
    shortname = "nsw",
    category = "apollo",
    doc = "Placeholder device inventory: one network switch. Apollo reads only its name and labels.",
    printcolumn(name = "Role", type_ = "string", json_path = ".metadata.labels.role"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct NetworkSwitchSpec {
    /// Free-form placeholder field used by the demo runbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dummy: Option<String>,
    /// Any other inventory fields, kept as written.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}
