//! # apollo-api
//!
//! The Kubernetes API of Apollo DeviceProcess (group `azure.com`, version `v1alpha1`) and the
//! conventions every component shares:
//!
//! - [`NetworkSwitch`] (`nsw`): placeholder device inventory; keeps unknown spec fields.
//! - [`DeviceProcessDeployment`] (`dpd`): a selector over inventory labels and a template; the
//!   controller fans it out to one [`DeviceProcess`] per matching device (DaemonSet semantics).
//! - [`DeviceProcess`] (`dp`): one workload on one device; the gateway serves its spec to the
//!   device's agent and writes its status.
//! - [`spec_hash`](fn@spec_hash): the one hash of a DeviceProcess spec (canonical JSON, SHA-256, 16 hex chars)
//!   used for ETags, `SpecObserved` and up-to-date counts; [`template_hash`], the same hash
//!   of a deployment's template, is its rollout revision.
//! - [`naming`]: stable DeviceProcess names and valid label values for long device names.
//! - [`labels`] and [`conditions`]: label keys, condition types and reasons.
//! - [`lean`]: a DeviceProcess decoded without `managedFields`, for answers that do not need them.
//! - [`samples`]: the runbook's demo template as a value, for tests and examples.
//!
//! The CRD YAML under `k8s/crds/` is generated from these types by `apollo-crdgen`.

// kube-derive's repeated `printcolumn(...)` arguments trip this lint; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

pub mod conditions;
pub mod deployment;
pub mod device_process;
pub mod labels;
pub mod lean;
pub mod naming;
pub mod network_switch;
pub mod samples;
pub mod spec_hash;

pub use deployment::{
    DeviceProcessDeployment, DeviceProcessDeploymentSpec, DeviceProcessDeploymentStatus,
    DeviceProcessTemplate, MaxUnavailableError, RollingUpdate, TemplateMetadata, UpdateStrategy,
    UpdateStrategyType,
};
pub use device_process::{
    AgentInfo, Artifact, ArtifactType, DeviceProcess, DeviceProcessSpec, DeviceProcessStatus,
    DeviceRef, EnvVar, Execution, ExecutionBackend, Phase, ProcessTemplateSpec,
};
pub use network_switch::{NetworkSwitch, NetworkSwitchSpec};
pub use spec_hash::{spec_hash, template_hash};

/// API group of every Apollo kind.
pub const GROUP: &str = "azure.com";
/// API version served by this release.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` string of every Apollo kind.
pub const API_VERSION: &str = "azure.com/v1alpha1";
/// kubectl category: `kubectl get apollo` lists every Apollo object.
pub const CATEGORY: &str = "apollo";
