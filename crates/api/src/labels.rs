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
