//! Condition types and reasons, shared by the gateway (writer) and the controller (reader).

/// The device's agent is heartbeating within the stale window.
pub const AGENT_CONNECTED: &str = "AgentConnected";
/// The agent reported the DeviceProcess's current spec hash.
pub const SPEC_OBSERVED: &str = "SpecObserved";

/// Deployment: every matching device has an up-to-date DeviceProcess.
pub const AVAILABLE: &str = "Available";
/// Deployment: the controller is creating, updating or deleting DeviceProcesses.
pub const PROGRESSING: &str = "Progressing";
/// Deployment: every DeviceProcess has the update revision and its agent observed it
/// (`kubectl wait dpd/<name> --for=condition=RolledOut`).
pub const ROLLED_OUT: &str = "RolledOut";
/// Deployment: the spec cannot be reconciled (bad selector, invalid template).
pub const INVALID_SPEC: &str = "InvalidSpec";

/// Condition reasons.
pub mod reasons {
    /// AgentConnected=True: a report arrived.
    pub const HEARTBEAT: &str = "Heartbeat";
    /// AgentConnected=False: no report within the stale window.
    pub const HEARTBEAT_MISSED: &str = "HeartbeatMissed";
    /// AgentConnected=Unknown/False before any report.
    pub const NEVER_CONNECTED: &str = "NeverConnected";
    /// SpecObserved=True: the reported hash equals the current spec hash.
    pub const SPEC_HASH_MATCHED: &str = "SpecHashMatched";
    /// SpecObserved=False: the reported hash differs (the agent has an older spec).
    pub const SPEC_HASH_MISMATCH: &str = "SpecHashMismatch";
    /// SpecObserved=False: the agent reported nothing for this DeviceProcess yet.
    pub const NOT_REPORTED: &str = "NotReported";
    /// Deployment reasons.
    pub const ALL_UPDATED: &str = "AllUpdated";
    /// Deployment is rolling out.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// RolledOut=True: every DeviceProcess has the update revision and observed it.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// RolledOut=False: updating within `maxUnavailable`.
    pub const IN_PROGRESS: &str = "InProgress";
    /// RolledOut=False: `spec.paused` is true.
    pub const PAUSED: &str = "Paused";
    /// RolledOut=False: no progress for `progressDeadlineSeconds`.
    pub const STALLED: &str = "Stalled";
    /// RolledOut=False with `OnDelete`: waiting for DeviceProcesses to be deleted.
    pub const WAITING_FOR_DELETE: &str = "WaitingForDelete";
    /// Deployment selector is invalid.
    pub const INVALID_SELECTOR: &str = "InvalidSelector";
    /// Deployment spec is valid.
    pub const VALID: &str = "Valid";
}

/// Condition status values.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// Not known.
    pub const UNKNOWN: &str = "Unknown";
}
