//! Reconciling one DeviceProcessDeployment against the caches: the writes of [`crate::plan`],
//! the deployment's status, events, error classification and retry backoff.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apollo_api::conditions;
use apollo_api::lean::LeanProcess;
use apollo_api::{DeviceProcess, DeviceProcessDeployment};
use apollo_backoff::Exponential;
use foldhash::HashMap;
use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::{PartialObjectMeta, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::controller::Synced;
use crate::events::{EventType, Recorder};
use crate::metrics::Metrics;
use crate::plan::{self, FIELD_MANAGER, SpecError};
use crate::rollout;
use crate::spec_hashes::SpecHashes;

/// How long a reconcile waits for the DeviceProcess and inventory caches to fill.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the controller waits for its own writes to reach its caches before acting on
/// the caches anyway.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(10);
/// DeviceProcess writes of one reconcile in flight at once.
const WRITE_CONCURRENCY: usize = 16;
/// Requeue delay while waiting for its own writes to show up in the caches.
const EXPECTATION_REQUEUE: Duration = Duration::from_millis(200);

/// What kind of failure a reconcile met; its [`ErrorKind::metric_label`] is the `reason` label
/// of `apollo_controller_reconcile_errors_total`, and the retry policy branches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The API server answered 409 (a write raced another).
    Conflict,
    /// 403: the controller's RBAC does not allow the request.
    Forbidden,
    /// 400 or 422: the object was refused as invalid.
    Invalid,
    /// 404.
    NotFound,
    /// 401: the controller's credentials were refused.
    Unauthorized,
    /// Any other API or transport failure.
    Unavailable,
    /// A DeviceProcess name is taken by an object this deployment does not own.
    NameConflict,
    /// The caches had not synced in time.
    CacheNotReady,
    /// The deployment has no namespace or uid.
    MissingMetadata,
}

impl ErrorKind {
    /// Every kind, in the order the metric's series are created (all start at zero so that
    /// rates and alerts work before the first error).
    pub const ALL: [ErrorKind; 9] = [
        Self::Conflict,
        Self::Forbidden,
        Self::Invalid,
        Self::NotFound,
        Self::Unauthorized,
        Self::Unavailable,
        Self::NameConflict,
        Self::CacheNotReady,
        Self::MissingMetadata,
    ];

    /// The `reason` label of `apollo_controller_reconcile_errors_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::Forbidden => "forbidden",
            Self::Invalid => "invalid",
            Self::NotFound => "not_found",
            Self::Unauthorized => "unauthorized",
            Self::Unavailable => "unavailable",
            Self::NameConflict => "name_conflict",
            Self::CacheNotReady => "cache_not_ready",
            Self::MissingMetadata => "missing_metadata",
        }
    }

    /// The kind of a kube error.
    pub fn of(error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => match status.code {
                409 => Self::Conflict,
                403 => Self::Forbidden,
                404 => Self::NotFound,
                400 | 422 => Self::Invalid,
                401 => Self::Unauthorized,
                _ => Self::Unavailable,
            },
            _ => Self::Unavailable,
        }
    }
}

/// A failed reconcile: its kind and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReconcileError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Human-readable description.
    pub message: String,
}

impl ReconcileError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The `reason` label of `apollo_controller_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        self.kind.metric_label()
    }
}

/// What the reconciler needs: client, caches, metrics, events, and per-deployment memory.
pub struct Context {
    pub(crate) client: kube::Client,
    pub(crate) deployments: Store<DeviceProcessDeployment>,
    pub(crate) processes: Store<DeviceProcess>,
    pub(crate) inventory: Store<PartialObjectMeta<DynamicObject>>,
    processes_synced: Synced,
    inventory_synced: Synced,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) recorder: Recorder,
    pub(crate) resync: Option<Duration>,
    pub(crate) retry_base: Duration,
    pub(crate) retry_max: Duration,
    /// What the controller remembers per deployment, by uid (a deployment deleted and
    /// recreated under the same name starts afresh).
    memory: Mutex<HashMap<String, DeploymentMemory>>,
    /// (namespace, DeviceProcess name) → uid of the deployment that created it, so two
    /// deployments reconciled at the same time never pick the same name before the cache
    /// shows either object.
    claims: Mutex<HashMap<(String, String), String>>,
    /// The spec hash of each cached DeviceProcess, once per spec generation.
    pub(crate) spec_hashes: SpecHashes,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// What the controller remembers of one deployment between reconciles.
#[derive(Debug, Default)]
struct DeploymentMemory {
    /// Consecutive failed reconciles (the retry backoff's exponent).
    failures: u32,
    /// Warning messages already published since the last clean reconcile.
    warned: HashSet<String>,
    /// Writes of the last reconcile that the caches have not shown yet.
    expectations: Option<Expectations>,
}

/// Writes of the last reconcile that the caches have not shown yet.
#[derive(Debug)]
struct Expectations {
    since: Instant,
    /// DeviceProcess name → what the cache should show.
    processes: HashMap<String, Expect>,
    /// resourceVersion of the deployment after its status write.
    deployment: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Written at this resourceVersion.
    AtLeast(u64),
    /// Deleted; the object had this resourceVersion.
    Gone(u64),
}

impl Expectations {
    /// Whether `in_namespace` (the cache) shows every expected write: each written
    /// DeviceProcess at its resourceVersion or later, each deleted one gone (or recreated).
    /// Only the expected names are looked up.
    fn shown_by(&self, in_namespace: &[Arc<DeviceProcess>]) -> bool {
        let mut present = 0;
        for dp in in_namespace {
            let Some(expect) = dp
                .metadata
                .name
                .as_deref()
                .and_then(|name| self.processes.get(name))
            else {
                continue;
            };
            let have = rv_of(&dp.metadata);
            let shown = match expect {
                Expect::AtLeast(want) => have.is_none_or(|have| have >= *want),
                Expect::Gone(old) => have.is_none_or(|have| have > *old),
            };
            if !shown {
                return false;
            }
            if matches!(expect, Expect::AtLeast(_)) {
                present += 1;
            }
        }
        // A written DeviceProcess the cache does not hold yet is not shown.
        present
            == self
                .processes
                .values()
                .filter(|e| matches!(e, Expect::AtLeast(_)))
                .count()
    }
}

fn rv_of(meta: &kube::api::ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: kube::Client,
        deployments: Store<DeviceProcessDeployment>,
        processes: Store<DeviceProcess>,
        inventory: Store<PartialObjectMeta<DynamicObject>>,
        processes_synced: Synced,
        inventory_synced: Synced,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        resync: Option<Duration>,
        retry_base: Duration,
        retry_max: Duration,
    ) -> Self {
        Self {
            client,
            deployments,
            processes,
            inventory,
            processes_synced,
            inventory_synced,
            metrics,
            recorder,
            resync,
            retry_base,
            retry_max,
            memory: Mutex::default(),
            claims: Mutex::default(),
            spec_hashes: SpecHashes::default(),
        }
    }

    /// The periodic resync, or sooner when a rollout would stall before it (so the stall is
    /// reported without any other change).
    fn resync_action(&self, stalls_in: Option<Duration>) -> Action {
        match (self.resync, stalls_in) {
            (Some(a), Some(b)) => Action::requeue(a.min(b)),
            (Some(d), None) | (None, Some(d)) => Action::requeue(d),
            (None, None) => Action::await_change(),
        }
    }

    async fn wait_for_caches(&self) -> Result<(), ReconcileError> {
        let ready =
            async { self.processes_synced.wait().await && self.inventory_synced.wait().await };
        match tokio::time::timeout(CACHE_SYNC_TIMEOUT, ready).await {
            Ok(true) => Ok(()),
            _ => Err(ReconcileError::new(
                ErrorKind::CacheNotReady,
                "the DeviceProcess and inventory caches have not synced yet",
            )),
        }
    }

    /// Whether the caches show the writes of this deployment's previous reconcile (so it does
    /// not act twice on a stale view). Unknown or expired expectations count as met. Once the
    /// cache shows the DeviceProcesses it created, their names need no claim any more.
    fn expectations_met(
        &self,
        uid: &str,
        dpd: &DeviceProcessDeployment,
        in_namespace: &[Arc<DeviceProcess>],
    ) -> bool {
        let created = {
            let Ok(mut all) = self.memory.lock() else {
                return true;
            };
            let Some(memory) = all.get_mut(uid) else {
                return true;
            };
            let Some(exp) = &memory.expectations else {
                return true;
            };
            if exp.since.elapsed() > EXPECTATION_TIMEOUT {
                memory.expectations = None;
                return true;
            }
            let deployment_seen = match (exp.deployment, rv_of(&dpd.metadata)) {
                (Some(want), Some(have)) => have >= want,
                _ => true,
            };
            if !deployment_seen || !exp.shown_by(in_namespace) {
                return false;
            }
            memory.expectations.take().map(|e| e.processes)
        };
        if let Some(namespace) = dpd.namespace() {
            for (name, expect) in created.iter().flatten() {
                if matches!(expect, Expect::AtLeast(_)) {
                    self.unclaim(&namespace, name, uid);
                }
            }
        }
        true
    }

    fn expect(&self, uid: &str, processes: HashMap<String, Expect>, deployment: Option<u64>) {
        if let Ok(mut all) = self.memory.lock() {
            let memory = all.entry(uid.to_owned()).or_default();
            memory.expectations =
                (!processes.is_empty() || deployment.is_some()).then(|| Expectations {
                    since: Instant::now(),
                    processes,
                    deployment,
                });
        }
    }

    /// True the first time `message` is seen for `uid` since the last clean reconcile.
    fn first_warning(&self, uid: &str, message: &str) -> bool {
        self.memory.lock().is_ok_and(|mut all| {
            all.entry(uid.to_owned())
                .or_default()
                .warned
                .insert(message.to_owned())
        })
    }

    fn clear_warnings(&self, uid: &str) {
        if let Ok(mut all) = self.memory.lock()
            && let Some(memory) = all.get_mut(uid)
        {
            memory.warned.clear();
        }
    }

    /// One more consecutive failure of `uid`; returns the count.
    fn count_failure(&self, uid: &str) -> u32 {
        self.memory.lock().map_or(1, |mut all| {
            let memory = all.entry(uid.to_owned()).or_default();
            memory.failures = memory.failures.saturating_add(1);
            memory.failures
        })
    }

    fn reset_failures(&self, uid: &str) {
        if let Ok(mut all) = self.memory.lock()
            && let Some(memory) = all.get_mut(uid)
        {
            memory.failures = 0;
        }
    }

    /// Refreshes the cache-derived gauges.
    pub(crate) fn update_gauges(&self) {
        let managed = self
            .processes
            .state()
            .iter()
            .filter(|dp| {
                dp.owner_references().iter().any(|r| {
                    r.controller == Some(true)
                        && r.kind == "DeviceProcessDeployment"
                        && r.api_version == apollo_api::API_VERSION
                })
            })
            .count();
        self.metrics
            .managed_objects
            .set(i64::try_from(managed).unwrap_or(i64::MAX));
        self.metrics
            .deployments
            .set(i64::try_from(self.deployments.state().len()).unwrap_or(i64::MAX));
        let deployments = self.deployments.state();
        self.metrics
            .observe_deployments(deployments.iter().map(|d| d.as_ref()));
    }

    /// Delay before retrying a failed reconcile: `retry_base` doubled per consecutive failure,
    /// capped at `retry_max`; conflicts retry at `retry_base`.
    pub(crate) fn retry_delay(&self, uid: &str, error: &ReconcileError) -> Duration {
        let n = self.count_failure(uid);
        backoff(
            self.retry_base,
            self.retry_max,
            n,
            error.kind == ErrorKind::Conflict,
        )
    }

    /// Names in `namespace` claimed by deployments other than `uid`.
    fn claimed_by_others(&self, namespace: &str, uid: &str) -> BTreeSet<String> {
        self.claims.lock().map_or_else(
            |_| BTreeSet::new(),
            |c| {
                c.iter()
                    .filter(|((ns, _), owner)| ns == namespace && *owner != uid)
                    .map(|((_, name), _)| name.clone())
                    .collect()
            },
        )
    }

    /// Claims `name` for `uid`; false when another deployment holds it.
    fn claim(&self, namespace: &str, name: &str, uid: &str) -> bool {
        self.claims.lock().is_ok_and(|mut c| {
            let owner = c
                .entry((namespace.to_owned(), name.to_owned()))
                .or_insert_with(|| uid.to_owned());
            owner == uid
        })
    }

    fn unclaim(&self, namespace: &str, name: &str, uid: &str) {
        if let Ok(mut c) = self.claims.lock() {
            let key = (namespace.to_owned(), name.to_owned());
            if c.get(&key).is_some_and(|owner| owner == uid) {
                c.remove(&key);
            }
        }
    }

    /// Forgets failure counts, warnings, expectations and claims of deployments no longer
    /// cached.
    pub(crate) fn prune(&self) {
        let live = self.deployments.state();
        let uids: HashSet<String> = live.iter().filter_map(|d| d.uid()).collect();
        if let Ok(mut all) = self.memory.lock() {
            all.retain(|uid, _| uids.contains(uid));
        }
        if let Ok(mut c) = self.claims.lock() {
            c.retain(|_, owner| uids.contains(owner));
        }
    }
}

/// Retry delay after the `failures`-th consecutive failure: `base` doubled per failure,
/// capped at `max`; conflicts always retry after `base`.
pub fn backoff(base: Duration, max: Duration, failures: u32, conflict: bool) -> Duration {
    if conflict {
        return base.min(max);
    }
    // `.min(max)`: a `max` below `base` caps (the schedule would raise it to `base`).
    Exponential::new(base, max)
        .delay(failures.saturating_sub(1))
        .min(max)
}

fn key_of(dpd: &DeviceProcessDeployment) -> String {
    format!("{}/{}", dpd.namespace().unwrap_or_default(), dpd.name_any())
}

/// Reconciles one deployment (the `Controller::run` reconciler).
pub async fn reconcile(
    dpd: Arc<DeviceProcessDeployment>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile_deployment(&dpd, &ctx).await;
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err().map(|e| e.kind));
    ctx.update_gauges();
    ctx.prune();
    if result.is_ok() {
        ctx.reset_failures(&dpd.uid().unwrap_or_default());
    }
    result
}

/// Retry policy of failed reconciles (the `Controller::run` error policy).
pub fn error_policy(
    dpd: Arc<DeviceProcessDeployment>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let key = key_of(&dpd);
    let delay = ctx.retry_delay(&dpd.uid().unwrap_or_default(), error);
    tracing::warn!(
        deployment = %key,
        reason = error.metric_label(),
        error = %error.message,
        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "reconcile failed"
    );
    Action::requeue(delay)
}

struct Failure {
    class: ErrorKind,
    event_reason: &'static str,
    message: String,
}

/// One reconcile in four phases: observe (identity, caches, expectations), fan out (plan and
/// apply the DeviceProcess writes the rollout allows), write status (with its rollout Events),
/// report (warnings, the error the retry policy sees).
async fn reconcile_deployment(
    dpd: &DeviceProcessDeployment,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let obs = match observe(dpd, ctx).await? {
        Observation::Ready(obs) => obs,
        Observation::Wait(action) => return Ok(action),
    };
    let mut writes = Writes::default();
    let (fanned, invalid) = match plan::validate(dpd) {
        Err(err) => (FannedOut::invalid(dpd, &obs, &ctx.spec_hashes), Some(err)),
        Ok(selector) => (fan_out(dpd, ctx, &obs, &selector, &mut writes).await?, None),
    };
    let now = plan::now();
    let progress = rollout::progress(
        dpd,
        fanned.settings.as_ref(),
        fanned.counts,
        &fanned.unavailable,
        invalid.as_ref(),
        &now,
    );
    let status = plan::status(dpd, fanned.counts, invalid.as_ref(), &progress, &now);
    let status_rv = write_status(
        dpd,
        ctx,
        &obs,
        &status,
        &progress,
        fanned.settings.as_ref(),
        &mut writes.failures,
    )
    .await;
    ctx.expect(&obs.uid, writes.expect, status_rv);
    report(
        dpd,
        ctx,
        &obs,
        invalid.as_ref(),
        writes.failures,
        progress.stalls_in,
    )
    .await
}

/// What a reconcile works from once its caches can be trusted.
struct Observed {
    namespace: String,
    uid: String,
    name: String,
    /// `namespace/name`, for logs and messages.
    key: String,
    owner: OwnerReference,
    regarding: ObjectReference,
    /// The cached DeviceProcesses of the deployment's namespace.
    in_namespace: Vec<Arc<DeviceProcess>>,
}

enum Observation {
    Ready(Box<Observed>),
    /// Nothing to do now: deleted, or the caches do not show the last writes yet.
    Wait(Action),
}

/// Phase 1: the deployment's identity, synced caches, and its last writes visible in them.
async fn observe(
    dpd: &DeviceProcessDeployment,
    ctx: &Context,
) -> Result<Observation, ReconcileError> {
    let (Some(namespace), Some(uid)) = (dpd.namespace(), dpd.uid()) else {
        return Err(ReconcileError::new(
            ErrorKind::MissingMetadata,
            "deployment without namespace or uid",
        ));
    };
    if dpd.metadata.deletion_timestamp.is_some() {
        // Its DeviceProcesses go with it through their ownerReferences.
        return Ok(Observation::Wait(Action::await_change()));
    }
    let name = dpd.name_any();
    let key = format!("{namespace}/{name}");
    ctx.wait_for_caches().await?;
    let in_namespace: Vec<Arc<DeviceProcess>> = ctx
        .processes
        .state_filter(|dp| dp.metadata.namespace.as_deref() == Some(namespace.as_str()));
    if !ctx.expectations_met(&uid, dpd, &in_namespace) {
        tracing::debug!(deployment = %key, "waiting for the caches to show the last writes");
        return Ok(Observation::Wait(Action::requeue(EXPECTATION_REQUEUE)));
    }
    let Some(owner) = plan::owner_reference(dpd) else {
        return Err(ReconcileError::new(
            ErrorKind::MissingMetadata,
            "deployment without uid",
        ));
    };
    Ok(Observation::Ready(Box::new(Observed {
        regarding: dpd.object_ref(&()),
        namespace,
        uid,
        name,
        key,
        owner,
        in_namespace,
    })))
}

/// What the writes of one reconcile leave behind.
#[derive(Default)]
struct Writes {
    /// What the caches must show before the next reconcile acts.
    expect: HashMap<String, Expect>,
    failures: Vec<Failure>,
}

/// The fan-out's result: counts and availability after the writes.
struct FannedOut {
    counts: plan::Counts,
    /// `None` for an invalid spec.
    settings: Option<rollout::Settings>,
    unavailable: Vec<(String, &'static str)>,
}

impl FannedOut {
    /// An invalid spec writes nothing: count what the deployment owns.
    fn invalid(dpd: &DeviceProcessDeployment, obs: &Observed, hashes: &SpecHashes) -> Self {
        let owned: Vec<(String, &DeviceProcess)> = obs
            .in_namespace
            .iter()
            .filter(|dp| plan::is_controlled_by(dp, &obs.uid))
            .map(|dp| (dp.spec.device_ref.name.clone(), dp.as_ref()))
            .collect();
        Self {
            counts: plan::count(dpd, 0, &owned, hashes),
            settings: None,
            unavailable: Vec::new(),
        }
    }
}

/// Phase 2: match devices, plan, let the rollout gate the updates, and apply and delete
/// DeviceProcesses ([`WRITE_CONCURRENCY`] at a time).
async fn fan_out(
    dpd: &DeviceProcessDeployment,
    ctx: &Context,
    obs: &Observed,
    selector: &kube::core::Selector,
    writes: &mut Writes,
) -> Result<FannedOut, ReconcileError> {
    let Observed {
        namespace,
        uid,
        key,
        owner,
        regarding,
        in_namespace,
        ..
    } = obs;
    let no_labels = std::collections::BTreeMap::new();
    let mut devices: Vec<String> = ctx
        .inventory
        .state_filter(|obj| {
            obj.metadata.namespace.as_deref() == Some(namespace.as_str())
                && obj.metadata.deletion_timestamp.is_none()
                && selector.matches(obj.metadata.labels.as_ref().unwrap_or(&no_labels))
        })
        .iter()
        .filter_map(|obj| obj.metadata.name.clone())
        .collect();
    devices.sort();
    devices.dedup();
    let claimed = ctx.claimed_by_others(namespace, uid);
    let p = plan::plan(dpd, owner, &devices, in_namespace, &claimed);
    // Valid spec: validate() checked the strategy already.
    let settings = rollout::Settings::of(dpd, devices.len())
        .map_err(|e| ReconcileError::new(ErrorKind::Invalid, e.message().to_owned()))?;
    let current_rev = if settings.paused {
        let owned: Vec<&DeviceProcess> = in_namespace
            .iter()
            .filter(|dp| plan::is_controlled_by(dp, uid))
            .map(AsRef::as_ref)
            .collect();
        dpd.status
            .as_ref()
            .and_then(|s| s.current_revision.as_deref())
            .and_then(|rev| rollout::revision_template(&owned, rev))
    } else {
        None
    };
    let fleet = rollout::Fleet {
        matching: devices.len(),
        unchanged: &p.unchanged,
        hashes: &ctx.spec_hashes,
    };
    let gated = rollout::gate(
        &settings,
        &plan::Desired::new(dpd, owner),
        current_rev.as_ref(),
        fleet,
        p.apply,
    );
    // Shared with the cache, not copied: a reconcile during a rollout sees every
    // DeviceProcess of the deployment, and it runs again at each batch of status changes.
    let mut current: Vec<(String, Arc<DeviceProcess>)> = p
        .unchanged
        .iter()
        .chain(gated.held.iter())
        .map(|(device, dp)| (device.clone(), Arc::clone(dp)))
        .collect();
    let processes: Api<DeviceProcess> = Api::namespaced(ctx.client.clone(), namespace);
    let applies: Api<LeanProcess> = Api::namespaced(ctx.client.clone(), namespace);
    let mut pending: Vec<BoxFuture<'_, Outcome>> = Vec::new();
    for item in gated.apply {
        let dp_name = item.object.name_any();
        if !item.exists() && !ctx.claim(namespace, &dp_name, uid) {
            writes.failures.push(Failure {
                class: ErrorKind::NameConflict,
                event_reason: "NameConflict",
                message: format!(
                    "DeviceProcess {dp_name} for device {} is being created by another deployment",
                    item.device
                ),
            });
            continue;
        }
        pending.push(Box::pin(apply_one(&applies, key, item)));
    }
    for dp in p.delete {
        pending.push(Box::pin(delete_one(
            ctx, &processes, regarding, key, namespace, uid, dp,
        )));
    }
    let outcomes: Vec<Outcome> = stream::iter(pending)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let (mut created, mut updated): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for outcome in outcomes {
        match outcome {
            Outcome::Applied {
                device,
                object,
                updated: was_update,
            } => {
                if let Some(rv) = rv_of(&object.metadata) {
                    writes.expect.insert(object.name_any(), Expect::AtLeast(rv));
                }
                let summed = if was_update {
                    &mut updated
                } else {
                    &mut created
                };
                summed.push((device.clone(), object.object_ref(&())));
                current.push((device, Arc::from(object)));
            }
            Outcome::Deleted { name, rv } => {
                if let Some(rv) = rv {
                    writes.expect.insert(name, Expect::Gone(rv));
                }
            }
            Outcome::AlreadyGone => {}
            Outcome::Failed(failure) => writes.failures.push(failure),
        }
    }
    publish_applied(ctx, regarding, Applied::Created, created).await;
    publish_applied(ctx, regarding, Applied::Updated, updated).await;
    for (_device, message) in p.conflicts {
        writes.failures.push(Failure {
            class: ErrorKind::NameConflict,
            event_reason: "NameConflict",
            message,
        });
    }
    let current: Vec<(String, &DeviceProcess)> =
        current.iter().map(|(d, dp)| (d.clone(), &**dp)).collect();
    Ok(FannedOut {
        counts: plan::count(dpd, devices.len(), &current, &ctx.spec_hashes),
        unavailable: rollout::unavailable_devices(&devices, &current, &ctx.spec_hashes),
        settings: Some(settings),
    })
}

/// Phase 3: patch the deployment's status when it changed (optimistically, on the
/// resourceVersion the reconcile saw) and publish the rollout's transitions as Events. Returns
/// the resourceVersion of the written status.
async fn write_status(
    dpd: &DeviceProcessDeployment,
    ctx: &Context,
    obs: &Observed,
    status: &apollo_api::DeviceProcessDeploymentStatus,
    progress: &rollout::Progress,
    settings: Option<&rollout::Settings>,
    failures: &mut Vec<Failure>,
) -> Option<u64> {
    if dpd.status.as_ref() == Some(status) {
        return None;
    }
    let key = &obs.key;
    let deployments: Api<DeviceProcessDeployment> =
        Api::namespaced(ctx.client.clone(), &obs.namespace);
    let patch = json!({
        "metadata": { "resourceVersion": dpd.resource_version() },
        "status": status,
    });
    match deployments
        .patch_status(&obs.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(updated) => {
            tracing::info!(
                deployment = %key,
                desired = status.desired_number_scheduled,
                current = status.current_number_scheduled,
                up_to_date = status.updated_number_scheduled,
                connected = status.number_agent_connected,
                observed = status.number_spec_observed,
                available = status.number_available,
                rolled_out = %progress.rolled_out.3,
                "deployment status updated"
            );
            for due in rollout::transitions(dpd.status.as_ref(), status, settings) {
                tracing::info!(deployment = %key, reason = due.reason, "{}", due.note);
                ctx.recorder
                    .publish(
                        &obs.regarding,
                        None,
                        due.type_,
                        due.reason,
                        "Rollout",
                        due.note,
                    )
                    .await;
            }
            rv_of(&updated.metadata)
        }
        Err(error) => {
            failures.push(Failure {
                class: ErrorKind::of(&error),
                event_reason: "FailedStatusUpdate",
                message: format!("cannot update the status of {key}: {error}"),
            });
            None
        }
    }
}

/// Phase 4: warn once per message (an invalid spec, failed writes other than conflicts) and
/// turn the failures into the error the retry policy sees, or the next resync.
async fn report(
    dpd: &DeviceProcessDeployment,
    ctx: &Context,
    obs: &Observed,
    invalid: Option<&SpecError>,
    failures: Vec<Failure>,
    stalls_in: Option<Duration>,
) -> Result<Action, ReconcileError> {
    let uid = &obs.uid;
    if let Some(err) = invalid {
        let already_reported = dpd.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == conditions::INVALID_SPEC
                    && c.status == conditions::status::TRUE
                    && c.message == err.message()
            })
        });
        let text = format!("{}: {}", err.reason(), err.message());
        if ctx.first_warning(uid, &text) && !already_reported {
            tracing::warn!(deployment = %obs.key, reason = err.reason(), "{}", err.message());
            publish_invalid(ctx, &obs.regarding, err).await;
        }
    }

    if failures.is_empty() {
        if invalid.is_none() {
            ctx.clear_warnings(uid);
        }
        return Ok(ctx.resync_action(stalls_in));
    }
    for failure in &failures {
        // Conflicts are retried quietly; everything else is reported once per message.
        if failure.class != ErrorKind::Conflict && ctx.first_warning(uid, &failure.message) {
            ctx.recorder
                .publish(
                    &obs.regarding,
                    None,
                    EventType::Warning,
                    failure.event_reason,
                    "Reconcile",
                    failure.message.clone(),
                )
                .await;
        }
    }
    let first = &failures[0];
    let message = if failures.len() == 1 {
        first.message.clone()
    } else {
        format!(
            "{} (and {} more failures)",
            first.message,
            failures.len() - 1
        )
    };
    Err(ReconcileError::new(first.class, message))
}

/// Result of one DeviceProcess write.
enum Outcome {
    Applied {
        device: String,
        object: Box<DeviceProcess>,
        /// An existing DeviceProcess given the current template (not a creation).
        updated: bool,
    },
    Deleted {
        name: String,
        rv: Option<u64>,
    },
    AlreadyGone,
    Failed(Failure),
}

/// Server-side applies one DeviceProcess and logs it (its Event is summed up per reconcile).
async fn apply_one(processes: &Api<LeanProcess>, key: &str, item: plan::ApplyItem) -> Outcome {
    let dp_name = item.object.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // The answer is read for its resourceVersion, labels, spec and status (the counts), never
    // its managedFields: decoded without them.
    match processes
        .patch(&dp_name, &params, &Patch::Apply(&item.object))
        .await
    {
        Ok(applied) => {
            let applied = DeviceProcess::from(applied);
            let updated = item.exists();
            tracing::info!(
                deployment = %key,
                deviceprocess = %dp_name,
                device = %item.device,
                "DeviceProcess {}",
                if updated { "updated" } else { "created" }
            );
            // Creations and updates are summed up per reconcile ([`publish_applied`]).
            Outcome::Applied {
                device: item.device,
                object: Box::new(applied),
                updated,
            }
        }
        Err(error) => Outcome::Failed(Failure {
            class: ErrorKind::of(&error),
            event_reason: if item.exists() {
                "FailedUpdate"
            } else {
                "FailedCreate"
            },
            message: format!(
                "cannot apply DeviceProcess {dp_name} for device {}: {error}",
                item.device
            ),
        }),
    }
}

/// Deletes one DeviceProcess (only the object seen, by uid precondition) and reports it.
async fn delete_one(
    ctx: &Context,
    processes: &Api<DeviceProcess>,
    regarding: &ObjectReference,
    key: &str,
    namespace: &str,
    uid: &str,
    dp: Arc<DeviceProcess>,
) -> Outcome {
    let dp_name = dp.name_any();
    let device = dp.spec.device_ref.name.clone();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: dp.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match processes.delete(&dp_name, &params).await {
        Ok(_) => {
            ctx.unclaim(namespace, &dp_name, uid);
            let still_there = ctx
                .inventory
                .find(|obj| {
                    obj.metadata.namespace.as_deref() == Some(namespace)
                        && obj.metadata.name.as_deref() == Some(device.as_str())
                        && obj.metadata.deletion_timestamp.is_none()
                })
                .is_some();
            let why = if still_there {
                "no longer matches the selector"
            } else {
                "is no longer in the inventory"
            };
            tracing::info!(
                deployment = %key,
                deviceprocess = %dp_name,
                device = %device,
                "DeviceProcess deleted: device {why}"
            );
            ctx.recorder
                .publish(
                    regarding,
                    Some(dp.object_ref(&())),
                    EventType::Normal,
                    "Deleted",
                    "Delete",
                    format!("Deleted DeviceProcess {dp_name}: device {device} {why}"),
                )
                .await;
            Outcome::Deleted {
                name: dp_name,
                rv: rv_of(&dp.metadata),
            }
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Outcome::AlreadyGone,
        Err(error) => Outcome::Failed(Failure {
            class: ErrorKind::of(&error),
            event_reason: "FailedDelete",
            message: format!("cannot delete DeviceProcess {dp_name}: {error}"),
        }),
    }
}

/// What the controller did to a DeviceProcess it applied: the reason and action of the
/// summed-up Event ([`publish_applied`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Created,
    Updated,
}

impl Applied {
    fn reason(self) -> &'static str {
        match self {
            Applied::Created => "Created",
            Applied::Updated => "Updated",
        }
    }

    fn action(self) -> &'static str {
        match self {
            Applied::Created => "Create",
            Applied::Updated => "Update",
        }
    }

    /// The note naming one DeviceProcess.
    fn one(self, name: &str, device: &str) -> String {
        match self {
            Applied::Created => format!("Created DeviceProcess {name} for device {device}"),
            Applied::Updated => {
                format!("Updated DeviceProcess {name} for device {device} to the current template")
            }
        }
    }

    /// The head of the note naming several.
    fn many(self, n: usize) -> String {
        match self {
            Applied::Created => format!("Created {n} DeviceProcesses:"),
            Applied::Updated => format!("Updated {n} DeviceProcesses to the current template:"),
        }
    }
}

/// One Event for the DeviceProcesses a reconcile created (or updated): named with `related`
/// set when one, summed up when several (a fan-out or rollout to thousands of devices costs a
/// few Events, not one API write per device on top of the device's own).
async fn publish_applied(
    ctx: &Context,
    regarding: &ObjectReference,
    what: Applied,
    mut applied: Vec<(String, ObjectReference)>,
) {
    applied.sort_by(|a, b| a.0.cmp(&b.0));
    let (note, related) = match applied.as_slice() {
        [] => return,
        [(device, object)] => (
            what.one(object.name.as_deref().unwrap_or_default(), device),
            Some(object.clone()),
        ),
        all => (applied_note(what, all), None),
    };
    ctx.recorder
        .publish(
            regarding,
            related,
            EventType::Normal,
            what.reason(),
            what.action(),
            note,
        )
        .await;
}

/// Longest note of a summed-up Event before "and N more" (the API allows 1 KiB).
const APPLIED_NOTE_BUDGET: usize = 900;

fn applied_note(what: Applied, applied: &[(String, ObjectReference)]) -> String {
    let mut note = what.many(applied.len());
    for (i, (_, object)) in applied.iter().enumerate() {
        let name = object.name.as_deref().unwrap_or_default();
        if note.len() + name.len() + 2 > APPLIED_NOTE_BUDGET {
            note.push_str(&format!(" and {} more", applied.len() - i));
            return note;
        }
        note.push_str(if i == 0 { " " } else { ", " });
        note.push_str(name);
    }
    note
}

async fn publish_invalid(ctx: &Context, regarding: &ObjectReference, err: &SpecError) {
    ctx.recorder
        .publish(
            regarding,
            None,
            EventType::Warning,
            err.reason(),
            "Validate",
            format!(
                "{}; no DeviceProcess is created, updated or deleted until it is fixed",
                err.message()
            ),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context over empty caches, with a client that is never called.
    fn context() -> Context {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let inventory =
            kube::runtime::reflector::store::Writer::<PartialObjectMeta<DynamicObject>>::new(
                kube::api::ApiResource::erase::<apollo_api::NetworkSwitch>(&()),
            );
        Context::new(
            client.clone(),
            kube::runtime::reflector::store().0,
            kube::runtime::reflector::store().0,
            inventory.as_reader(),
            crate::controller::Synced::new().1,
            crate::controller::Synced::new().1,
            Arc::new(Metrics::register(
                &mut prometheus_client::registry::Registry::default(),
            )),
            Recorder::new(client, "test"),
            None,
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn a_created_name_is_claimed_until_the_cache_shows_it() {
        let ctx = context();
        let mut dpd = DeviceProcessDeployment::new(
            "fleet",
            serde_json::from_value(serde_json::json!({
                "selector": {},
                "template": {"spec": apollo_api::samples::demo_logger_template()},
            }))
            .unwrap(),
        );
        dpd.metadata.namespace = Some("default".into());
        let cached = |rv: u64| {
            let mut dp = DeviceProcess::new(
                "fleet-tor1",
                apollo_api::samples::shell_process("tor1", "x"),
            );
            dp.metadata.resource_version = Some(rv.to_string());
            vec![Arc::new(dp)]
        };
        assert!(ctx.claim("default", "fleet-tor1", "uid-a"));
        assert!(
            !ctx.claim("default", "fleet-tor1", "uid-b"),
            "held for uid-a"
        );
        ctx.expect(
            "uid-a",
            [("fleet-tor1".to_owned(), Expect::AtLeast(7))]
                .into_iter()
                .collect(),
            None,
        );
        // The cache does not show the create yet: the claim stays.
        assert!(!ctx.expectations_met("uid-a", &dpd, &[]));
        assert!(!ctx.expectations_met("uid-a", &dpd, &cached(6)));
        assert_eq!(
            ctx.claimed_by_others("default", "uid-b"),
            BTreeSet::from(["fleet-tor1".to_owned()])
        );
        // Shown: released (the cache now tells other deployments the name is taken).
        assert!(ctx.expectations_met("uid-a", &dpd, &cached(7)));
        assert!(ctx.claimed_by_others("default", "uid-b").is_empty());
    }

    #[test]
    fn expectations_are_shown_when_the_cache_holds_every_write() {
        let cached = |name: &str, rv: u64| {
            let mut dp = DeviceProcess::new(name, apollo_api::samples::shell_process("d", "x"));
            dp.metadata.resource_version = Some(rv.to_string());
            Arc::new(dp)
        };
        let exp = |processes: &[(&str, Expect)]| Expectations {
            since: Instant::now(),
            processes: processes
                .iter()
                .map(|(n, e)| ((*n).to_owned(), *e))
                .collect(),
            deployment: None,
        };
        let cache = vec![cached("a", 10), cached("b", 20), cached("other", 5)];
        let written = exp(&[("a", Expect::AtLeast(10)), ("b", Expect::AtLeast(15))]);
        assert!(written.shown_by(&cache));
        assert!(
            !exp(&[("a", Expect::AtLeast(11))]).shown_by(&cache),
            "an older resourceVersion"
        );
        assert!(
            !exp(&[("new", Expect::AtLeast(1))]).shown_by(&cache),
            "a created object not cached yet"
        );
        assert!(exp(&[("gone", Expect::Gone(3))]).shown_by(&cache));
        assert!(
            !exp(&[("a", Expect::Gone(10))]).shown_by(&cache),
            "a deleted object still cached"
        );
        assert!(
            exp(&[("a", Expect::Gone(9))]).shown_by(&cache),
            "deleted and created again"
        );
    }

    #[test]
    fn a_summed_up_update_event_counts_every_device_and_fits_the_note() {
        let updated = |n: usize| -> Vec<(String, ObjectReference)> {
            (0..n)
                .map(|i| {
                    let name = format!("demo-logger-tor1-{i:04}");
                    (
                        format!("tor1-{i:04}"),
                        ObjectReference {
                            name: Some(name),
                            ..ObjectReference::default()
                        },
                    )
                })
                .collect()
        };
        assert_eq!(
            applied_note(Applied::Updated, &updated(2)),
            "Updated 2 DeviceProcesses to the current template: demo-logger-tor1-0000, demo-logger-tor1-0001"
        );
        let note = applied_note(Applied::Updated, &updated(10_000));
        assert!(note.len() <= 1024, "{} bytes", note.len());
        assert!(note.starts_with("Updated 10000 DeviceProcesses"), "{note}");
        let named = note.matches("demo-logger-tor1-").count();
        assert!(named > 10, "{note}");
        assert!(
            note.ends_with(&format!(" and {} more", 10_000 - named)),
            "{note}"
        );
        assert_eq!(
            applied_note(Applied::Created, &updated(2)),
            "Created 2 DeviceProcesses: demo-logger-tor1-0000, demo-logger-tor1-0001"
        );
    }

    #[test]
    fn classifies_api_errors() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..kube::core::Status::default()
            }))
        };
        assert_eq!(ErrorKind::of(&api(409)), ErrorKind::Conflict);
        assert_eq!(ErrorKind::of(&api(403)), ErrorKind::Forbidden);
        assert_eq!(ErrorKind::of(&api(422)), ErrorKind::Invalid);
        assert_eq!(ErrorKind::of(&api(503)), ErrorKind::Unavailable);
        assert_eq!(ErrorKind::of(&api(503)).metric_label(), "unavailable");
        for code in [400, 401, 403, 404, 409, 422, 429, 500, 503] {
            assert!(
                ErrorKind::ALL.contains(&ErrorKind::of(&api(code))),
                "{code}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_conflicts_retry_fast() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(5);
        let delays: Vec<_> = (1..=6).map(|n| backoff(base, max, n, false)).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 5000, 5000].map(Duration::from_millis)
        );
        assert_eq!(backoff(base, max, 9, true), base);
        assert_eq!(backoff(base, max, u32::MAX, false), max);
    }
}
