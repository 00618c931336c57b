//! The pure part of a reconcile: validating a deployment, choosing the DeviceProcess of each
//! matching device, deciding what to create, update and delete, and computing the
//! deployment's status. No I/O here, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use apollo_api::conditions::{self, reasons, status as cstatus};
use apollo_api::naming::{device_process_name, hashed_device_process_name, label_value};
use apollo_api::{
    DeviceProcess, DeviceProcessDeployment, DeviceProcessDeploymentStatus, labels, template_hash,
};
use apollo_names::{is_dns1123_subdomain, is_label_value, is_qualified_name_part};
use foldhash::{HashMap, HashSet, HashSetExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, ManagedFieldsEntry, OwnerReference, Time,
};
use kube::api::ObjectMeta;
use kube::core::Selector;
use kube::{Resource, ResourceExt};

use crate::spec_hashes::SpecHashes;

/// Field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "apollo-controller";

/// Why a deployment cannot be reconciled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// `spec.selector` is malformed.
    Selector(String),
    /// `spec.template` is malformed.
    Template(String),
    /// `spec.updateStrategy` or `spec.progressDeadlineSeconds` is malformed.
    Strategy(String),
}

impl SpecError {
    /// Condition and event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Selector(_) => reasons::INVALID_SELECTOR,
            Self::Template(_) => "InvalidTemplate",
            Self::Strategy(_) => "InvalidUpdateStrategy",
        }
    }

    /// What is wrong, naming the field.
    pub fn message(&self) -> &str {
        match self {
            Self::Selector(m) | Self::Template(m) | Self::Strategy(m) => m,
        }
    }
}

/// Checks the selector and template as the API server would check a DaemonSet's, and returns
/// the selector to match inventory labels with.
pub fn validate(dpd: &DeviceProcessDeployment) -> Result<Selector, SpecError> {
    let selector = &dpd.spec.selector;
    validate_selector(selector).map_err(SpecError::Selector)?;
    for (key, value) in &dpd.spec.template.metadata.labels {
        let field = format!("spec.template.metadata.labels[{key:?}]");
        validate_label_key(key).map_err(|e| SpecError::Template(format!("{field}: {e}")))?;
        if !is_label_value(value) {
            return Err(SpecError::Template(format!(
                "{field}: Invalid value: {value:?}: {LABEL_VALUE_RULE}"
            )));
        }
    }
    let execution = &dpd.spec.template.spec.execution;
    for (i, env) in execution.env.iter().enumerate() {
        if env.name.is_empty() {
            return Err(SpecError::Template(format!(
                "spec.template.spec.execution.env[{i}].name: Required value"
            )));
        }
    }
    if dpd.spec.template.spec.artifact.url.is_empty() {
        return Err(SpecError::Template(
            "spec.template.spec.artifact.url: Required value".into(),
        ));
    }
    crate::rollout::Settings::of(dpd, 0)?;
    Selector::try_from(selector.clone()).map_err(|e| SpecError::Selector(e.0))
}

const LABEL_VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)";
const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

fn validate_selector(selector: &LabelSelector) -> Result<(), String> {
    for (key, value) in selector.match_labels.iter().flatten() {
        let field = format!("spec.selector.matchLabels[{key:?}]");
        validate_label_key(key).map_err(|e| format!("{field}: {e}"))?;
        if !is_label_value(value) {
            return Err(format!(
                "{field}: Invalid value: {value:?}: {LABEL_VALUE_RULE}"
            ));
        }
    }
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let field = format!("spec.selector.matchExpressions[{i}]");
        validate_label_key(&req.key).map_err(|e| format!("{field}.key: {e}"))?;
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    return Err(format!(
                        "{field}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
                    ));
                }
                for value in values {
                    if !is_label_value(value) {
                        return Err(format!(
                            "{field}.values: Invalid value: {value:?}: {LABEL_VALUE_RULE}"
                        ));
                    }
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    return Err(format!(
                        "{field}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    ));
                }
            }
            other => {
                let supported: Vec<String> = OPERATORS.iter().map(|o| format!("{o:?}")).collect();
                return Err(format!(
                    "{field}.operator: Unsupported value: {other:?}: supported values: {}",
                    supported.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters.
fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return Err(format!(
            "Invalid value: {key:?}: prefix part must be a lowercase RFC 1123 subdomain"
        ));
    }
    if is_qualified_name_part(name) {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)"
        ))
    }
}

/// Whether `dp` has `uid` as its controller owner.
pub fn is_controlled_by(dp: &DeviceProcess, uid: &str) -> bool {
    dp.owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// The controller owner reference of a deployment's DeviceProcesses.
pub fn owner_reference(dpd: &DeviceProcessDeployment) -> Option<OwnerReference> {
    let mut owner = dpd.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(true);
    Some(owner)
}

/// What the controller applies for each matching device of one deployment, worked out once
/// per reconcile: the template revision (a hash of the whole template) and the labels every
/// DeviceProcess carries are the same for all devices, so a device that needs nothing costs
/// comparisons, not a hash or a copy of the template.
#[derive(Debug)]
pub struct Desired<'a> {
    dpd: &'a DeviceProcessDeployment,
    owner: &'a OwnerReference,
    /// The template revision ([`template_hash`]).
    revision: String,
    /// The labels of every DeviceProcess but the device label: the template's, then the
    /// controller's own (which win).
    labels: BTreeMap<String, String>,
}

impl<'a> Desired<'a> {
    /// What `dpd` wants, owned through `owner`.
    pub fn new(dpd: &'a DeviceProcessDeployment, owner: &'a OwnerReference) -> Self {
        let revision = template_hash(&dpd.spec.template);
        let mut labels = dpd.spec.template.metadata.labels.clone();
        labels.remove(labels::DEVICE);
        labels.insert(labels::DEPLOYMENT.into(), label_value(&dpd.name_any()));
        labels.insert(
            labels::MANAGED_BY.into(),
            labels::MANAGED_BY_CONTROLLER.into(),
        );
        labels.insert(labels::TEMPLATE_HASH.into(), revision.clone());
        Self {
            dpd,
            owner,
            revision,
            labels,
        }
    }

    /// The template revision.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The DeviceProcess the controller applies for `device` under `name`: identity, labels,
    /// owner and spec; never status.
    pub fn object(&self, name: &str, device: &str) -> DeviceProcess {
        let mut labels = self.labels.clone();
        labels.insert(labels::DEVICE.into(), label_value(device));
        let mut dp = DeviceProcess::new(name, self.dpd.spec.template.spec.for_device(device));
        dp.metadata = ObjectMeta {
            name: Some(name.to_owned()),
            namespace: self.dpd.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        };
        dp
    }

    /// How the live DeviceProcess of `device` differs from what the controller applies, if
    /// it does: its spec, or else any of its labels, a label it applied earlier and no
    /// longer wants, or the owner reference.
    pub fn drift(&self, live: &DeviceProcess, device: &str) -> Option<Drift> {
        if !self.dpd.spec.template.spec.yields(&live.spec, device) {
            return Some(Drift::Spec);
        }
        let live_labels = live.labels();
        if live_labels.get(labels::DEVICE).map(String::as_str) != Some(&*label_value(device))
            || self
                .labels
                .iter()
                .any(|(k, v)| live_labels.get(k) != Some(v))
        {
            return Some(Drift::Metadata);
        }
        let wanted = |key: &str| key == labels::DEVICE || self.labels.contains_key(key);
        if own_applied_label_keys(live).any(|k| !wanted(k) && live_labels.contains_key(k)) {
            return Some(Drift::Metadata);
        }
        let owner = self.owner;
        let owned = live.owner_references().iter().any(|r| {
            r.uid == owner.uid
                && r.controller == Some(true)
                && r.block_owner_deletion == Some(true)
                && r.kind == owner.kind
                && r.name == owner.name
                && r.api_version == owner.api_version
        });
        (!owned).then_some(Drift::Metadata)
    }
}

/// How a live DeviceProcess differs from what the controller applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// The spec (what the agent must observe; labels and owner may differ too).
    Spec,
    /// Labels or the owner reference only.
    Metadata,
}

/// The DeviceProcess the controller applies for `device` under `name` ([`Desired::object`],
/// for one device).
pub fn desired_object(
    dpd: &DeviceProcessDeployment,
    owner: &OwnerReference,
    name: &str,
    device: &str,
) -> DeviceProcess {
    Desired::new(dpd, owner).object(name, device)
}

/// What a reconcile writes.
#[derive(Debug, Default)]
pub struct Plan {
    /// DeviceProcesses that differ from what the deployment wants: to apply, as far as the
    /// rollout lets ([`crate::rollout::gate`]).
    pub apply: Vec<Candidate>,
    /// Owned DeviceProcesses already as desired, by device.
    pub unchanged: Vec<(String, Arc<DeviceProcess>)>,
    /// Owned DeviceProcesses to delete.
    pub delete: Vec<Arc<DeviceProcess>>,
    /// Devices whose DeviceProcess cannot be named (both names taken by other objects).
    pub conflicts: Vec<(String, String)>,
}

/// A DeviceProcess that differs from what the deployment wants. The object to apply is only
/// built once the rollout lets it go ahead: during a rollout most are held back, at every
/// reconcile.
#[derive(Debug)]
pub struct Candidate {
    /// The device.
    pub device: String,
    /// The DeviceProcess's name.
    pub name: String,
    /// The live object when it exists (update), `None` when it is created.
    pub live: Option<Arc<DeviceProcess>>,
    /// Whether the write changes the spec (what the agent must observe), as opposed to
    /// labels or the owner reference only.
    pub changes_spec: bool,
}

/// One DeviceProcess to apply.
#[derive(Debug)]
pub struct ApplyItem {
    /// The device.
    pub device: String,
    /// The object to apply.
    pub object: DeviceProcess,
    /// The live object when it exists (update), `None` when it is created.
    pub live: Option<Arc<DeviceProcess>>,
}

impl ApplyItem {
    /// Whether it exists already (update) or not (create).
    pub fn exists(&self) -> bool {
        self.live.is_some()
    }
}

/// Decides the writes for `dpd` given the matching `devices` and every DeviceProcess in the
/// deployment's namespace (from the cache). DeviceProcesses owned by others are never
/// chosen, updated or deleted. `claimed` are names other deployments are creating right now
/// (not in the cache yet); they count as taken.
pub fn plan(
    dpd: &DeviceProcessDeployment,
    owner: &OwnerReference,
    devices: &[String],
    in_namespace: &[Arc<DeviceProcess>],
    claimed: &BTreeSet<String>,
) -> Plan {
    let by_name: HashMap<&str, &Arc<DeviceProcess>> = in_namespace
        .iter()
        .filter_map(|dp| Some((dp.metadata.name.as_deref()?, dp)))
        .collect();
    let deployment = dpd.name_any();
    let ours = |name: &str| {
        by_name
            .get(name)
            .filter(|dp| is_controlled_by(dp, &owner.uid))
            .copied()
    };
    let free = |name: &str| !by_name.contains_key(name) && !claimed.contains(name);
    let want = Desired::new(dpd, owner);
    let mut plan = Plan::default();
    let mut chosen = HashSet::with_capacity(devices.len());
    for device in devices {
        let plain = device_process_name(&deployment, device);
        let (name, live) = if let Some(dp) = ours(&plain) {
            (plain, Some(dp))
        } else {
            // The hashed name is only worked out when the plain one is not ours.
            let hashed = hashed_device_process_name(&deployment, device);
            if let Some(dp) = ours(&hashed) {
                (hashed, Some(dp))
            } else if free(&plain) {
                (plain, None)
            } else if free(&hashed) {
                (hashed, None)
            } else {
                plan.conflicts.push((
                    device.clone(),
                    format!(
                        "cannot create a DeviceProcess for device {device}: {plain} and {hashed} exist and are not controlled by this deployment"
                    ),
                ));
                continue;
            }
        };
        match live {
            Some(live) if live.metadata.deletion_timestamp.is_some() => {
                // Being deleted (finalizers): it comes back once it is gone.
            }
            Some(live) => match want.drift(live, device) {
                None => plan.unchanged.push((device.clone(), live.clone())),
                Some(drift) => plan.apply.push(Candidate {
                    device: device.clone(),
                    name: name.clone(),
                    live: Some(live.clone()),
                    changes_spec: drift == Drift::Spec,
                }),
            },
            None => plan.apply.push(Candidate {
                device: device.clone(),
                name: name.clone(),
                live: None,
                changes_spec: true,
            }),
        }
        chosen.insert(name);
    }
    for dp in in_namespace {
        if is_controlled_by(dp, &owner.uid)
            && !dp
                .metadata
                .name
                .as_deref()
                .is_some_and(|name| chosen.contains(name))
            && dp.metadata.deletion_timestamp.is_none()
        {
            plan.delete.push(dp.clone());
        }
    }
    plan
}

/// Whether a managedFields entry is the controller's own server-side apply of the object
/// (not of a subresource): the only entry [`managed_label_keys`] reads.
pub fn is_own_apply(entry: &ManagedFieldsEntry) -> bool {
    entry.manager.as_deref() == Some(FIELD_MANAGER)
        && entry.operation.as_deref() == Some("Apply")
        && entry.subresource.as_deref().is_none_or(str::is_empty)
}

/// Label keys the controller owns according to the object's managedFields (server-side
/// apply bookkeeping).
pub fn managed_label_keys(dp: &DeviceProcess) -> BTreeSet<String> {
    own_applied_label_keys(dp).map(str::to_owned).collect()
}

/// The label keys of the controller's own apply entries, as they are found (a key may repeat
/// when several entries name it).
fn own_applied_label_keys(dp: &DeviceProcess) -> impl Iterator<Item = &str> {
    dp.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| is_own_apply(entry))
        .filter_map(|entry| entry.fields_v1.as_ref())
        .filter_map(|fields| {
            fields
                .0
                .get("f:metadata")
                .and_then(|m| m.get("f:labels"))
                .and_then(|l| l.as_object())
        })
        .flat_map(|labels| labels.keys().filter_map(|k| k.strip_prefix("f:")))
}

/// Counts behind a deployment's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Matching devices.
    pub desired: i32,
    /// Matching devices with a DeviceProcess.
    pub current: i32,
    /// ... that have the update revision (the template's spec and revision label).
    pub updated: i32,
    /// ... whose agent is connected.
    pub connected: i32,
    /// Up-to-date ones whose agent observed the current spec.
    pub observed: i32,
    /// ... that are available: agent connected and current spec observed (old or new).
    pub available: i32,
}

impl Counts {
    /// Matching devices without an available DeviceProcess.
    pub fn unavailable(&self) -> i32 {
        (self.desired - self.available).max(0)
    }

    /// Every matching device has a DeviceProcess with the update revision, observed.
    pub fn rolled_out(&self) -> bool {
        self.current == self.desired
            && self.updated == self.desired
            && self.observed == self.desired
    }
}

/// Whether `dp` has the update revision of `dpd`: the template's spec for its device and the
/// template's revision label.
pub fn is_updated(
    dpd: &DeviceProcessDeployment,
    revision: &str,
    device: &str,
    dp: &DeviceProcess,
) -> bool {
    dp.labels().get(labels::TEMPLATE_HASH).map(String::as_str) == Some(revision)
        && dpd.spec.template.spec.yields(&dp.spec, device)
}

/// Whether the agent observed the DeviceProcess's current spec (its hash from `hashes`).
pub fn observed_current_spec(dp: &DeviceProcess, hashes: &SpecHashes) -> bool {
    dp.status
        .as_ref()
        .and_then(|s| s.observed_spec_hash.as_deref())
        .is_some_and(|observed| observed == &*hashes.of(dp))
}

/// Whether the DeviceProcess's agent is connected.
pub fn agent_connected(dp: &DeviceProcess) -> bool {
    dp.status
        .as_ref()
        .is_some_and(|s| s.is_true(conditions::AGENT_CONNECTED))
}

/// Available, as for a DaemonSet's pods: the agent is connected and observed the current spec.
pub fn is_available(dp: &DeviceProcess, hashes: &SpecHashes) -> bool {
    agent_connected(dp) && observed_current_spec(dp, hashes)
}

/// Counts over the DeviceProcesses (one per matching device) after the reconcile's writes.
pub fn count(
    dpd: &DeviceProcessDeployment,
    desired: usize,
    current: &[(String, &DeviceProcess)],
    hashes: &SpecHashes,
) -> Counts {
    let revision = template_hash(&dpd.spec.template);
    let mut counts = Counts {
        desired: clamp(desired),
        current: clamp(current.len()),
        ..Counts::default()
    };
    for (device, dp) in current {
        let observed = observed_current_spec(dp, hashes);
        if is_updated(dpd, &revision, device, dp) {
            counts.updated += 1;
            if observed {
                counts.observed += 1;
            }
        }
        if agent_connected(dp) {
            counts.connected += 1;
            if observed {
                counts.available += 1;
            }
        }
    }
    counts
}

fn clamp(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A condition the status should carry: type, status, reason, message.
pub type WantedCondition = (&'static str, &'static str, &'static str, String);

/// The deployment status for `counts` (or for an invalid spec), with the rollout's revisions,
/// progress time and `RolledOut` condition, keeping each condition's lastTransitionTime unless
/// its status changes.
pub fn status(
    dpd: &DeviceProcessDeployment,
    counts: Counts,
    invalid: Option<&SpecError>,
    rollout: &crate::rollout::Progress,
    now: &Time,
) -> DeviceProcessDeploymentStatus {
    let prior = dpd.status.clone().unwrap_or_default();
    let generation = dpd.metadata.generation;
    let converged = counts.current == counts.desired && counts.updated == counts.desired;
    let mut wanted: Vec<WantedCondition> = vec![rollout.rolled_out.clone()];
    match invalid {
        Some(err) => {
            wanted.push((
                conditions::INVALID_SPEC,
                cstatus::TRUE,
                err.reason(),
                err.message().to_owned(),
            ));
            wanted.push((
                conditions::AVAILABLE,
                cstatus::FALSE,
                err.reason(),
                "the spec is invalid; existing DeviceProcesses are left as they are".to_owned(),
            ));
            wanted.push((
                conditions::PROGRESSING,
                cstatus::FALSE,
                err.reason(),
                "the spec is invalid".to_owned(),
            ));
        }
        None => {
            wanted.push((
                conditions::INVALID_SPEC,
                cstatus::FALSE,
                reasons::VALID,
                "the selector and template are valid".to_owned(),
            ));
            let summary = format!(
                "{} of {} matching devices have an up-to-date DeviceProcess",
                counts.updated, counts.desired
            );
            if converged {
                wanted.push((
                    conditions::AVAILABLE,
                    cstatus::TRUE,
                    reasons::ALL_UPDATED,
                    summary.clone(),
                ));
                wanted.push((
                    conditions::PROGRESSING,
                    cstatus::FALSE,
                    reasons::ALL_UPDATED,
                    summary,
                ));
            } else {
                wanted.push((
                    conditions::AVAILABLE,
                    cstatus::FALSE,
                    reasons::ROLLING_OUT,
                    summary.clone(),
                ));
                wanted.push((
                    conditions::PROGRESSING,
                    cstatus::TRUE,
                    reasons::ROLLING_OUT,
                    summary,
                ));
            }
        }
    }
    let conditions = wanted
        .into_iter()
        .map(|(type_, status, reason, message)| {
            let last_transition_time = prior
                .conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    DeviceProcessDeploymentStatus {
        observed_generation: generation,
        desired_number_scheduled: counts.desired,
        current_number_scheduled: counts.current,
        updated_number_scheduled: counts.updated,
        number_agent_connected: counts.connected,
        number_spec_observed: counts.observed,
        number_available: counts.available,
        number_unavailable: counts.unavailable(),
        current_revision: rollout.current_revision.clone(),
        update_revision: Some(rollout.update_revision.clone()),
        last_progress_time: rollout.last_progress_time.clone(),
        conditions,
    }
}

/// Now, to the second (what the API server stores).
pub fn now() -> Time {
    let ts = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_api::{
        AgentInfo, DeviceProcessDeploymentSpec, DeviceProcessStatus, DeviceProcessTemplate,
        ProcessTemplateSpec, TemplateMetadata, spec_hash,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        FieldsV1, LabelSelectorRequirement, ManagedFieldsEntry,
    };
    use kube::core::SelectorExt;

    fn template() -> ProcessTemplateSpec {
        apollo_api::samples::demo_logger_template()
    }

    fn demo_logger() -> DeviceProcessDeployment {
        let mut dpd = DeviceProcessDeployment::new(
            "demo-logger",
            DeviceProcessDeploymentSpec {
                selector: LabelSelector {
                    match_labels: Some(
                        [("site", "sfo"), ("role", "tor")]
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                    ),
                    match_expressions: None,
                },
                template: DeviceProcessTemplate {
                    metadata: TemplateMetadata {
                        labels: [("app".to_owned(), "logger".to_owned())].into(),
                    },
                    spec: template(),
                },
                update_strategy: None,
                paused: None,
                progress_deadline_seconds: None,
            },
        );
        dpd.metadata.namespace = Some("default".into());
        dpd.metadata.uid = Some("uid-1".into());
        dpd.metadata.generation = Some(1);
        dpd
    }

    fn live(dpd: &DeviceProcessDeployment, name: &str, device: &str) -> Arc<DeviceProcess> {
        let owner = owner_reference(dpd).unwrap();
        let mut dp = desired_object(dpd, &owner, name, device);
        dp.metadata.resource_version = Some("5".into());
        Arc::new(dp)
    }

    fn foreign(name: &str, device: &str) -> Arc<DeviceProcess> {
        let mut dp = DeviceProcess::new(name, template().for_device(device));
        dp.metadata.namespace = Some("default".into());
        Arc::new(dp)
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn devices(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn runbook_fan_out() {
        let dpd = demo_logger();
        let owner = owner_reference(&dpd).unwrap();
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(owner.kind, "DeviceProcessDeployment");
        assert_eq!(owner.api_version, "azure.com/v1alpha1");
        let p = plan(
            &dpd,
            &owner,
            &devices(&["tor1-01", "tor1-02"]),
            &[],
            &none(),
        );
        let names: Vec<_> = p.apply.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["demo-logger-tor1-01", "demo-logger-tor1-02"]);
        assert!(p.apply.iter().all(|a| a.live.is_none() && a.changes_spec));
        let dp = &Desired::new(&dpd, &owner).object(&p.apply[0].name, &p.apply[0].device);
        assert_eq!(dp.spec.device_ref.name, "tor1-01");
        assert_eq!(dp.spec.template(), template());
        assert_eq!(
            dp.labels()
                .get("apollo.azure.com/deployment")
                .map(String::as_str),
            Some("demo-logger")
        );
        assert_eq!(
            dp.labels()
                .get("apollo.azure.com/device")
                .map(String::as_str),
            Some("tor1-01")
        );
        assert_eq!(dp.labels().get("app").map(String::as_str), Some("logger"));
        assert!(dp.status.is_none());
        assert_eq!(dp.owner_references(), [owner]);
    }

    #[test]
    fn steady_state_plans_nothing() {
        let dpd = demo_logger();
        let owner = owner_reference(&dpd).unwrap();
        let existing = vec![
            live(&dpd, "demo-logger-tor1-01", "tor1-01"),
            live(&dpd, "demo-logger-tor1-02", "tor1-02"),
        ];
        let p = plan(
            &dpd,
            &owner,
            &devices(&["tor1-01", "tor1-02"]),
            &existing,
            &none(),
        );
        assert!(p.apply.is_empty() && p.delete.is_empty() && p.conflicts.is_empty());
        assert_eq!(p.unchanged.len(), 2);
    }

    #[test]
    fn drift_template_change_and_stale_devices() {
        let mut dpd = demo_logger();
        let owner = owner_reference(&dpd).unwrap();
        let mut edited = (*live(&dpd, "demo-logger-tor1-01", "tor1-01")).clone();
        edited.spec.execution.args = vec!["hacked".into()];
        let existing = vec![
            Arc::new(edited),
            live(&dpd, "demo-logger-tor1-02", "tor1-02"),
            live(&dpd, "demo-logger-tor1-03", "tor1-03"),
        ];
        let p = plan(
            &dpd,
            &owner,
            &devices(&["tor1-01", "tor1-02"]),
            &existing,
            &none(),
        );
        assert_eq!(p.apply.len(), 1);
        assert!(p.apply[0].live.is_some());
        assert!(
            p.apply[0].changes_spec,
            "the edited spec is put back to the template's"
        );
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.delete[0].name_any(), "demo-logger-tor1-03");

        dpd.spec.template.spec.execution.args = vec!["echo".into(), "updated".into()];
        let p = plan(
            &dpd,
            &owner,
            &devices(&["tor1-01", "tor1-02"]),
            &existing,
            &none(),
        );
        assert_eq!(
            p.apply.len(),
            2,
            "template change updates every DeviceProcess"
        );
    }

    #[test]
    fn what_the_controller_applies_needs_no_further_update() {
        // An object built from the deployment must compare equal to it, or every reconcile
        // would apply it again. A device name that is no valid label value gets a hashed
        // label; a template that sets the controller's own labels is overridden.
        let mut dpd = demo_logger();
        dpd.spec
            .template
            .metadata
            .labels
            .insert(labels::DEVICE.into(), "spoofed".into());
        let owner = owner_reference(&dpd).unwrap();
        let want = Desired::new(&dpd, &owner);
        let long = format!("{}.example.net", "rack-a".repeat(12));
        for device in ["tor1-01", long.as_str()] {
            let name = device_process_name("demo-logger", device);
            let mut applied = want.object(&name, device);
            assert_eq!(
                applied.labels().get(labels::DEVICE),
                Some(&label_value(device))
            );
            assert_eq!(want.drift(&applied, device), None, "{device}");
            assert!(want.drift(&applied, "tor1-02").is_some(), "another device");
            assert_eq!(
                want.drift(&applied, "tor1-02"),
                Some(Drift::Spec),
                "another device's spec"
            );
            applied.owner_references_mut()[0].block_owner_deletion = None;
            assert!(want.drift(&applied, device).is_some(), "owner reference");
            assert_eq!(want.drift(&applied, device), Some(Drift::Metadata));
        }
    }

    #[test]
    fn label_changes_and_stale_managed_labels() {
        let mut dpd = demo_logger();
        let owner = owner_reference(&dpd).unwrap();
        let mut dp = (*live(&dpd, "demo-logger-tor1-01", "tor1-01")).clone();
        // Someone else's label is fine.
        dp.labels_mut().insert("team".into(), "net".into());
        assert_eq!(Desired::new(&dpd, &owner).drift(&dp, "tor1-01"), None);
        // A template label the controller applied and the template dropped must go.
        dp.labels_mut().insert("tier".into(), "edge".into());
        dp.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}}
            }))),
            ..ManagedFieldsEntry::default()
        }]);
        assert_eq!(
            managed_label_keys(&dp),
            BTreeSet::from(["app".to_owned(), "tier".to_owned()])
        );
        assert!(Desired::new(&dpd, &owner).drift(&dp, "tor1-01").is_some());
        // A changed template label value is drift too.
        dpd.spec
            .template
            .metadata
            .labels
            .insert("app".into(), "logger2".into());
        dp.labels_mut().remove("tier");
        assert!(Desired::new(&dpd, &owner).drift(&dp, "tor1-01").is_some());
    }

    #[test]
    fn foreign_objects_are_never_touched_and_names_fall_back_to_the_hash() {
        let dpd = demo_logger();
        let owner = owner_reference(&dpd).unwrap();
        let taken = foreign("demo-logger-tor1-01", "tor1-01");
        let p = plan(
            &dpd,
            &owner,
            &devices(&["tor1-01"]),
            std::slice::from_ref(&taken),
            &none(),
        );
        assert!(p.delete.is_empty());
        assert_eq!(p.apply.len(), 1);
        let hashed = hashed_device_process_name("demo-logger", "tor1-01");
        assert_eq!(p.apply[0].name, hashed);

        // Once created under the hashed name, it stays there.
        let ours = live(&dpd, &hashed, "tor1-01");
        let p = plan(
            &dpd,
            &owner,
            &devices(&["tor1-01"]),
            &[taken.clone(), ours],
            &none(),
        );
        assert!(p.apply.is_empty() && p.delete.is_empty());

        // Both names taken: a conflict, nothing written.
        let p = plan(
            &dpd,
            &owner,
            &devices(&["tor1-01"]),
            &[taken, foreign(&hashed, "x")],
            &none(),
        );
        assert!(p.apply.is_empty());
        assert_eq!(p.conflicts.len(), 1);
        assert!(
            p.conflicts[0]
                .1
                .contains("not controlled by this deployment")
        );

        // Another deployment's DeviceProcess is not deleted.
        let other = {
            let mut o = demo_logger();
            o.metadata.uid = Some("uid-2".into());
            live(&o, "demo-logger-tor1-09", "tor1-09")
        };
        let p = plan(&dpd, &owner, &[], &[other], &none());
        assert!(p.delete.is_empty());
    }

    #[test]
    fn names_claimed_by_a_concurrent_reconcile_count_as_taken() {
        let dpd = demo_logger();
        let owner = owner_reference(&dpd).unwrap();
        let claimed = BTreeSet::from(["demo-logger-tor1-01".to_owned()]);
        let p = plan(&dpd, &owner, &devices(&["tor1-01"]), &[], &claimed);
        assert_eq!(
            p.apply[0].name,
            hashed_device_process_name("demo-logger", "tor1-01")
        );
    }

    #[test]
    fn ambiguous_names_between_deployments() {
        // Deployment "a" with device "b-c" and deployment "a-b" with device "c" both want
        // "a-b-c"; the second one falls back to its hashed name.
        let mut a = demo_logger();
        a.metadata.name = Some("a".into());
        let mut ab = demo_logger();
        ab.metadata.name = Some("a-b".into());
        ab.metadata.uid = Some("uid-ab".into());
        let taken = live(&a, "a-b-c", "b-c");
        let p = plan(
            &ab,
            &owner_reference(&ab).unwrap(),
            &devices(&["c"]),
            &[taken],
            &none(),
        );
        assert_eq!(p.apply[0].name, hashed_device_process_name("a-b", "c"));
    }

    #[test]
    fn selector_validation() {
        let mut dpd = demo_logger();
        assert!(validate(&dpd).is_ok());
        dpd.spec.selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "role".into(),
            operator: "Equals".into(),
            values: Some(vec!["tor".into()]),
        }]);
        let err = validate(&dpd).unwrap_err();
        assert_eq!(err.reason(), "InvalidSelector");
        assert_eq!(
            err.message(),
            r#"spec.selector.matchExpressions[0].operator: Unsupported value: "Equals": supported values: "In", "NotIn", "Exists", "DoesNotExist""#
        );
        dpd.spec.selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "role".into(),
            operator: "In".into(),
            values: None,
        }]);
        assert!(
            validate(&dpd)
                .unwrap_err()
                .message()
                .contains("Required value")
        );
        dpd.spec.selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "role".into(),
            operator: "Exists".into(),
            values: Some(vec!["x".into()]),
        }]);
        assert!(validate(&dpd).unwrap_err().message().contains("Forbidden"));
        dpd.spec.selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "bad key!".into(),
            operator: "Exists".into(),
            values: None,
        }]);
        let err = validate(&dpd).unwrap_err();
        assert!(
            err.message()
                .starts_with("spec.selector.matchExpressions[0].key: Invalid value: \"bad key!\""),
            "{}",
            err.message()
        );
        dpd.spec.selector.match_expressions = None;
        dpd.spec
            .selector
            .match_labels
            .get_or_insert_default()
            .insert("Example.COM/x".into(), "y".into());
        assert!(validate(&dpd).unwrap_err().message().contains("prefix"));
    }

    #[test]
    fn template_validation() {
        let mut dpd = demo_logger();
        dpd.spec
            .template
            .metadata
            .labels
            .insert("app".into(), "not valid!".into());
        let err = validate(&dpd).unwrap_err();
        assert_eq!(err.reason(), "InvalidTemplate");
        assert!(
            err.message()
                .starts_with("spec.template.metadata.labels[\"app\"]"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn selector_matching() {
        let mut dpd = demo_logger();
        dpd.spec.selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "rack".into(),
            operator: "NotIn".into(),
            values: Some(vec!["r9".into()]),
        }]);
        let sel = validate(&dpd).unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(sel.matches(&labels(&[("site", "sfo"), ("role", "tor"), ("rack", "r1")])));
        assert!(!sel.matches(&labels(&[("site", "sfo"), ("role", "tor"), ("rack", "r9")])));
        assert!(!sel.matches(&labels(&[("site", "sfo"), ("role", "spine")])));
    }

    #[test]
    fn counts_and_status() {
        let dpd = demo_logger();
        let a = (*live(&dpd, "demo-logger-tor1-01", "tor1-01")).clone();
        let mut b = (*live(&dpd, "demo-logger-tor1-02", "tor1-02")).clone();
        let hash_b = spec_hash(&b.spec);
        b.status = Some(DeviceProcessStatus {
            observed_spec_hash: Some(hash_b),
            conditions: vec![Condition {
                type_: "AgentConnected".into(),
                status: "True".into(),
                reason: "Heartbeat".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: now(),
            }],
            agent: Some(AgentInfo::default()),
            ..DeviceProcessStatus::default()
        });
        let current = vec![("tor1-01".to_owned(), &a), ("tor1-02".to_owned(), &b)];
        let counts = count(&dpd, 3, &current, &SpecHashes::default());
        assert_eq!(
            counts,
            Counts {
                desired: 3,
                current: 2,
                updated: 2,
                connected: 1,
                observed: 1,
                available: 1,
            }
        );

        let t0 = Time(jiff::Timestamp::from_second(1_000).unwrap());
        let status = |dpd: &DeviceProcessDeployment, counts, invalid: Option<&SpecError>, now| {
            let settings = crate::rollout::Settings::of(dpd, 3).ok();
            let p = crate::rollout::progress(dpd, settings.as_ref(), counts, &[], invalid, now);
            status(dpd, counts, invalid, &p, now)
        };
        let s = status(&dpd, counts, None, &t0);
        assert_eq!(s.observed_generation, Some(1));
        let cond = |s: &DeviceProcessDeploymentStatus, t: &str| {
            s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap()
        };
        assert_eq!(cond(&s, "Available").status, "False");
        assert_eq!(cond(&s, "Progressing").status, "True");
        assert_eq!(cond(&s, "InvalidSpec").status, "False");

        // Same input later: identical status (no write), times kept.
        let mut dpd2 = dpd.clone();
        dpd2.status = Some(s.clone());
        let t1 = Time(jiff::Timestamp::from_second(1_100).unwrap());
        assert_eq!(status(&dpd2, counts, None, &t1), s);

        // Converged: Available flips and gets the new time; InvalidSpec keeps its old one.
        let done = Counts {
            desired: 2,
            ..counts
        };
        let s2 = status(&dpd2, done, None, &t1);
        assert_eq!(cond(&s2, "Available").status, "True");
        assert_eq!(cond(&s2, "Available").last_transition_time, t1);
        assert_eq!(cond(&s2, "InvalidSpec").last_transition_time, t0);

        // Invalid spec.
        let err = SpecError::Selector("bad".into());
        let s3 = status(&dpd2, counts, Some(&err), &t1);
        assert_eq!(cond(&s3, "InvalidSpec").status, "True");
        assert_eq!(cond(&s3, "InvalidSpec").reason, "InvalidSelector");
        assert_eq!(cond(&s3, "InvalidSpec").message, "bad");
    }
}
