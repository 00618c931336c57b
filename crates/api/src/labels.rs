//! Label keys the controller puts on every DeviceProcess.

/// Names the owning DeviceProcessDeployment (value via [`crate::naming::label_value`]).
pub const DEPLOYMENT: &str = "apollo.azure.com/deployment";
/// Names the device (value via [`crate::naming::label_value`]; the authoritative device is
/// `spec.deviceRef.name`).
pub const DEVICE: &str = "apollo.azure.com/device";
/// Standard managed-by label.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`] on objects the controller creates.
pub const MANAGED_BY_CONTROLLER: &str = "apollo-controller";
/// The template revision a DeviceProcess was written from ([`crate::template_hash`] of the
/// deployment's template), like a DaemonSet pod's `controller-revision-hash`:
/// `kubectl get dp -l apollo.azure.com/template-hash=<revision>` lists one revision.
pub const TEMPLATE_HASH: &str = "apollo.azure.com/template-hash";
