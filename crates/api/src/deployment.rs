//! `DeviceProcessDeployment`: DaemonSet semantics over the device inventory.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::device_process::ProcessTemplateSpec;

/// Run one DeviceProcess on every inventory object matching `selector`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "azure.com",
    version = "v1alpha1",
    kind = "DeviceProcessDeployment",
    namespaced,
    status = "DeviceProcessDeploymentStatus",
    shortname = "dpd",
    category = "apollo",
    doc = "Runs one DeviceProcess on every device whose inventory labels match the selector (DaemonSet semantics).",
    printcolumn(
        name = "Desired",
        type_ = "integer",
        description = "Matching devices",
        json_path = ".status.desiredNumberScheduled"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        description = "DeviceProcesses that exist",
        json_path = ".status.currentNumberScheduled"
    ),
    printcolumn(
        name = "Up-To-Date",
        type_ = "integer",
        description = "DeviceProcesses whose spec matches the template",
        json_path = ".status.updatedNumberScheduled"
    ),
    printcolumn(
        name = "Connected",
        type_ = "integer",
        description = "DeviceProcesses whose agent is connected",
        json_path = ".status.numberAgentConnected"
    ),
    printcolumn(
        name = "Observed",
        type_ = "integer",
        description = "DeviceProcesses whose current spec the agent observed",
        json_path = ".status.numberSpecObserved"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProcessDeploymentSpec {
    /// Label selector over inventory objects in the deployment's namespace.
    pub selector: LabelSelector,
    /// Template of every DeviceProcess.
    pub template: DeviceProcessTemplate,
}

/// Template of every DeviceProcess of a deployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DeviceProcessTemplate {
    /// Labels (and later annotations) copied to each DeviceProcess.
    #[serde(default)]
    pub metadata: TemplateMetadata,
    /// DeviceProcess spec without `deviceRef`.
    pub spec: ProcessTemplateSpec,
}

impl Default for ProcessTemplateSpec {
    fn default() -> Self {
        Self {
            artifact: crate::Artifact {
                type_: crate::ArtifactType::Oci,
                url: String::new(),
            },
            execution: crate::Execution {
                backend: crate::ExecutionBackend::Container,
                command: Vec::new(),
                args: Vec::new(),
                env: Vec::new(),
            },
        }
    }
}

/// Metadata of the template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TemplateMetadata {
    /// Labels copied to each DeviceProcess (the controller adds its own two).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Rollout state of a deployment, written by the controller only when it changes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProcessDeploymentStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Devices matching the selector.
    #[serde(default)]
    pub desired_number_scheduled: i32,
    /// DeviceProcesses of this deployment that exist.
    #[serde(default)]
    pub current_number_scheduled: i32,
    /// DeviceProcesses whose spec equals the current template.
    #[serde(default)]
    pub updated_number_scheduled: i32,
    /// DeviceProcesses with `AgentConnected=True`.
    #[serde(default)]
    pub number_agent_connected: i32,
    /// Up-to-date DeviceProcesses whose agent observed the current spec.
    #[serde(default)]
    pub number_spec_observed: i32,
    /// `Available`, `Progressing` and `InvalidSpec`-style conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
