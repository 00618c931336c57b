//! `DeviceProcess`: one workload on one device.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of one workload on one device.
///
/// The template fields are copied verbatim from the deployment: `${APOLLO_DEVICE_NAME}` and
/// similar references are expanded on the device at execution time, never by the controller.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "azure.com",
    version = "v1alpha1",
    kind = "DeviceProcess",
    namespaced,
    status = "DeviceProcessStatus",
    shortname = "dp",
    category = "apollo",
    doc = "A workload on one network device. Created by the controller from a DeviceProcessDeployment; its status is written by the device gateway from what the device's agent reports.",
    printcolumn(
        name = "Device",
        type_ = "string",
        description = "The device this process runs on",
        json_path = ".spec.deviceRef.name"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        description = "Lifecycle phase",
        json_path = ".status.phase"
    ),
    printcolumn(
        name = "Connected",
        type_ = "string",
        description = "Whether the device's agent is heartbeating",
        json_path = ".status.conditions[?(@.type==\"AgentConnected\")].status"
    ),
    printcolumn(
        name = "Observed",
        type_ = "string",
        description = "Spec hash the agent last observed",
        json_path = ".status.observedSpecHash"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".spec.deviceRef.name"
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProcessSpec {
    /// The device (inventory object name) this process is for.
    pub device_ref: DeviceRef,
    /// What to run.
    pub artifact: Artifact,
    /// How to run it.
    pub execution: Execution,
}

/// The device-independent part of a DeviceProcess spec: what a deployment's template carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessTemplateSpec {
    /// What to run.
    pub artifact: Artifact,
    /// How to run it.
    pub execution: Execution,
}

impl ProcessTemplateSpec {
    /// The DeviceProcess spec this template yields for `device`.
    pub fn for_device(&self, device: &str) -> DeviceProcessSpec {
        DeviceProcessSpec {
            device_ref: DeviceRef {
                name: device.to_owned(),
            },
            artifact: self.artifact.clone(),
            execution: self.execution.clone(),
        }
    }

    /// Whether `spec` is what this template yields for `device` (`self.for_device(device) ==
    /// *spec`, without building it).
    pub fn yields(&self, spec: &DeviceProcessSpec, device: &str) -> bool {
        // Destructured so that a new spec field cannot be left out of the comparison.
        let DeviceProcessSpec {
            device_ref,
            artifact,
            execution,
        } = spec;
        device_ref.name == device && *artifact == self.artifact && *execution == self.execution
    }
}

impl DeviceProcessSpec {
    /// The template part of this spec (everything but `deviceRef`).
    pub fn template(&self) -> ProcessTemplateSpec {
        ProcessTemplateSpec {
            artifact: self.artifact.clone(),
            execution: self.execution.clone(),
        }
    }
}

/// Reference to an inventory object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct DeviceRef {
    /// Name of the inventory object (e.g. a NetworkSwitch) naming the device.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where the workload comes from. Downloading it is the next stage: this stage only delivers
/// it to the device and proves the device observed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Artifact {
    /// Kind of artifact.
    #[serde(rename = "type")]
    pub type_: ArtifactType,
    /// Location: an image reference for `oci`, a URL for `http`.
    #[schemars(length(min = 1))]
    pub url: String,
}

/// Kind of artifact.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactType {
    /// An OCI image reference such as `alpine:3.19`.
    Oci,
    /// A file downloaded over HTTP(S).
    Http,
}

/// How the workload is executed on the device (next stage; modelled, not yet executed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Execution {
    /// Execution backend on the device.
    pub backend: ExecutionBackend,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables. Values are passed verbatim; `${APOLLO_DEVICE_NAME}` is expanded on
    /// the device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// Execution backend on the device.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionBackend {
    /// Run as a container from an OCI artifact.
    Container,
    /// Run as a systemd unit.
    Systemd,
}

/// One environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Value, verbatim.
    #[serde(default)]
    pub value: String,
}

/// Observed state, written only by the device gateway.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProcessStatus {
    /// Lifecycle phase; `Pending` in this stage (execution is next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Spec hash the agent last reported observing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_spec_hash: Option<String>,
    /// `metadata.generation` of the spec the agent last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `AgentConnected` and `SpecObserved`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The agent that last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentInfo>,
}

impl DeviceProcessStatus {
    /// The condition of `type_`, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the condition of `type_` is `True`.
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

/// Lifecycle phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Delivered to the device; execution is the next stage.
    Pending,
    /// Running on the device (next stage).
    Running,
    /// Failed on the device (next stage).
    Failed,
}

/// Identity of the agent that reported.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// Agent version.
    pub version: String,
    /// Random id, new at every agent start.
    pub instance_id: String,
}

#[cfg(test)]
mod tests {
    use crate::samples::{demo_logger_template, shell_process};

    #[test]
    fn a_template_yields_exactly_its_spec_for_the_device() {
        let template = demo_logger_template();
        let spec = template.for_device("tor1-01");
        assert!(template.yields(&spec, "tor1-01"));
        assert!(!template.yields(&spec, "tor1-02"), "another device");
        let mut changed = spec.clone();
        changed.execution.args.push("--verbose".into());
        assert!(!template.yields(&changed, "tor1-01"), "another execution");
        let mut moved = spec;
        moved.artifact.url.push_str("-2");
        assert!(!template.yields(&moved, "tor1-01"), "another artifact");
        assert!(!template.yields(&shell_process("tor1-01", "true"), "tor1-01"));
    }
}
