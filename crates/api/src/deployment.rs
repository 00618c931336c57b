//! `DeviceProcessDeployment`: DaemonSet semantics over the device inventory.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
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
        name = "Available",
        type_ = "integer",
        description = "DeviceProcesses whose agent is connected and observed its current spec",
        json_path = ".status.numberAvailable"
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
    /// How a template change reaches the DeviceProcesses (default: `RollingUpdate` with
    /// `maxUnavailable: 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}))]
    pub update_strategy: Option<UpdateStrategy>,
    /// While true no DeviceProcess gets a new template; devices that join get the current
    /// revision, DeviceProcesses of devices that leave are still deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Seconds a rollout may make no progress before it is reported stalled (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 600))]
    pub progress_deadline_seconds: Option<i32>,
}

/// Default of `spec.progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;

impl DeviceProcessDeploymentSpec {
    /// The update strategy with its defaults filled in.
    pub fn strategy(&self) -> UpdateStrategy {
        let mut strategy = self.update_strategy.clone().unwrap_or_default();
        if strategy.type_ == UpdateStrategyType::RollingUpdate && strategy.rolling_update.is_none()
        {
            strategy.rolling_update = Some(RollingUpdate::default());
        }
        strategy
    }

    /// Whether the rollout is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.unwrap_or(false)
    }

    /// `progressDeadlineSeconds` with its default.
    pub fn progress_deadline_seconds(&self) -> i32 {
        self.progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS)
    }
}

/// How a template change reaches the DeviceProcesses (as a DaemonSet's `updateStrategy`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// `RollingUpdate` (default) or `OnDelete`.
    #[serde(rename = "type", default)]
    #[schemars(extend("default" = "RollingUpdate"))]
    pub type_: UpdateStrategyType,
    /// Parameters of `RollingUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// Kind of update strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpdateStrategyType {
    /// Update DeviceProcesses a few at a time, keeping at most `maxUnavailable` unavailable.
    #[default]
    RollingUpdate,
    /// A DeviceProcess gets the new template only when it is deleted and recreated.
    OnDelete,
}

/// Parameters of a rolling update.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    /// Most DeviceProcesses that may be unavailable (agent not connected, or current spec not
    /// observed) while updating: a number, or a percentage of the matching devices such as
    /// `"10%"` (rounded up, at least 1). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 1))]
    pub max_unavailable: Option<IntOrString>,
}

impl Default for RollingUpdate {
    fn default() -> Self {
        Self {
            max_unavailable: Some(IntOrString::Int(1)),
        }
    }
}

/// Why a `maxUnavailable` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: {value}: {why}")]
pub struct MaxUnavailableError {
    /// The value as written.
    pub value: String,
    /// What is wrong.
    pub why: &'static str,
}

/// The absolute `maxUnavailable` for `desired` matching devices: an integer as is, a
/// percentage of `desired` rounded up; at least 1 either way (as for DaemonSets, where 0 would
/// block every rollout). `None` means the default of 1.
pub fn max_unavailable(
    value: Option<&IntOrString>,
    desired: usize,
) -> Result<usize, MaxUnavailableError> {
    let n = match value {
        None => 1,
        Some(IntOrString::Int(n)) => usize::try_from(*n).map_err(|_| MaxUnavailableError {
            value: n.to_string(),
            why: "must be greater than or equal to 0",
        })?,
        Some(IntOrString::String(s)) => {
            let bad = |why| MaxUnavailableError {
                value: format!("{s:?}"),
                why,
            };
            let digits = s
                .strip_suffix('%')
                .ok_or_else(|| bad("a string value must be a percentage such as \"10%\""))?;
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad("a string value must be a percentage such as \"10%\""));
            }
            let percent: usize = digits
                .parse()
                .map_err(|_| bad("a string value must be a percentage such as \"10%\""))?;
            if percent > 100 {
                return Err(bad("must not be greater than 100%"));
            }
            (desired * percent).div_ceil(100)
        }
    };
    Ok(n.max(1))
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
    /// DeviceProcesses whose agent is connected and observed its current spec.
    #[serde(default)]
    pub number_available: i32,
    /// Matching devices without an available DeviceProcess (`desired - available`).
    #[serde(default)]
    pub number_unavailable: i32,
    /// Template revision of the last completed rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// Template revision being rolled out (the hash of the current template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// When the rollout last made progress (a DeviceProcess updated or became available);
    /// `progressDeadlineSeconds` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<Time>,
    /// `RolledOut`, `Available`, `Progressing` and `InvalidSpec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
