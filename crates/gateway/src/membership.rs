//! Gateway replicas: membership through one `coordination.k8s.io/v1` Lease per replica,
//! ownership of devices by rendezvous hashing, and the write fence.
//!
//! - **Membership.** Each replica holds the Lease `apollo-gateway-<id>` (label
//!   [`MEMBER_LABEL`], its advertise URL in [`ADVERTISE_ANNOTATION`]) and renews it every
//!   quarter of the lease duration. Every round it also lists the member Leases. A peer is a
//!   member while the time since this replica last *saw its Lease change* is at most the
//!   peer's `leaseDurationSeconds` (local observation times, as kube's leader election does,
//!   so clocks need not agree). While this replica's own renewals or lists fail it cannot tell
//!   a dead peer from its own partition, so it keeps the last member set of its peers.
//! - **Ownership.** [`owner`]: rendezvous (highest random weight) hashing of (member id,
//!   device name) over the member set: every replica computes the same owner from the same
//!   set without talking, and a change of the set moves only the devices of the member that
//!   left, or those the new member wins.
//! - **Fencing.** A replica may write (status, events) only while its own Lease was renewed
//!   within two thirds of its duration ([`Ownership::write_deadline`]); peers consider it dead
//!   only after the full duration, so it stops writing before anyone takes over. It counts
//!   itself as a member only while that holds, and after (re)gaining it only once
//!   [`join delay`](MembershipConfig::join_delay) has passed, so peers have seen its Lease and
//!   stopped writing its devices first. Without any peer it always counts itself: one replica
//!   behaves as a single gateway (writes simply wait while its Lease cannot be renewed).
//! - **Release.** At shutdown, once queued status writes are done, the replica stops writing
//!   and deletes its Lease, so peers take over at their next round rather than a lease
//!   duration later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use tokio::sync::watch;
use tokio::time::Instant;

/// Label every member Lease carries (value `"true"`).
pub const MEMBER_LABEL: &str = "apollo.azure.com/gateway-member";
/// Annotation of a member Lease: the URL peers forward reports to.
pub const ADVERTISE_ANNOTATION: &str = "apollo.azure.com/advertise-url";
/// Prefix of a member Lease's name (`apollo-gateway-<id>`).
pub const LEASE_PREFIX: &str = "apollo-gateway-";
/// Default `--lease-duration`.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Longest replica id (so that the Lease name stays a valid object name).
pub const MAX_ID_LEN: usize = 200;

/// A replica in the member set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub id: String,
    /// Where peers reach it (`http://10.0.0.5:8080`).
    pub url: String,
}

/// The weight of `member` for `device` (FNV-1a 64 of `member 0xff device`, then the
/// splitmix64 finaliser): deterministic across processes, versions and platforms.
pub fn score(member: &str, device: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0xff))
        .chain(device.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The owner of `device` among `members`: the highest [`score`] (ties: the smaller id).
pub fn owner<'a>(members: &'a [Member], device: &str) -> Option<&'a Member> {
    members.iter().max_by(|a, b| {
        score(&a.id, device)
            .cmp(&score(&b.id, device))
            .then_with(|| b.id.cmp(&a.id))
    })
}

/// Who owns a device, as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This replica.
    Me,
    /// Another member.
    Peer(Member),
    /// No member yet (before the first membership round).
    Nobody,
}

/// The shared view of membership and the fence.
#[derive(Debug)]
pub struct Ownership {
    id: String,
    members: RwLock<Arc<[Member]>>,
    fence: Mutex<Option<Instant>>,
    fence_valid: watch::Sender<bool>,
}

impl Ownership {
    /// A replica with no members yet: owns nothing, may not write.
    pub fn new(id: &str) -> Arc<Ownership> {
        Arc::new(Ownership {
            id: id.to_string(),
            members: RwLock::new(Arc::from(Vec::new())),
            fence: Mutex::new(None),
            fence_valid: watch::channel(false).0,
        })
    }

    /// A replica alone for good: owns every device and may always write (unit tests and
    /// embedding without Leases).
    pub fn standalone(id: &str) -> Arc<Ownership> {
        let o = Ownership::new(id);
        o.set_members(vec![Member {
            id: id.to_string(),
            url: String::new(),
        }]);
        o.extend_fence(Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        o
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current member set, sorted by id.
    pub fn members(&self) -> Arc<[Member]> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the member set; the previous one when it changed.
    pub fn set_members(&self, mut members: Vec<Member>) -> Option<Arc<[Member]>> {
        members.sort();
        members.dedup_by(|a, b| a.id == b.id);
        let mut cur = self.members.write().unwrap_or_else(|p| p.into_inner());
        if **cur == *members {
            return None;
        }
        Some(std::mem::replace(&mut *cur, Arc::from(members)))
    }

    /// Whether `members` make this replica the owner of `device`.
    pub fn is_mine(&self, members: &[Member], device: &str) -> bool {
        owner(members, device).is_some_and(|m| m.id == self.id)
    }

    /// The owner of `device`.
    pub fn owner(&self, device: &str) -> Owner {
        let members = self.members();
        match owner(&members, device) {
            None => Owner::Nobody,
            Some(m) if m.id == self.id => Owner::Me,
            Some(m) => Owner::Peer(m.clone()),
        }
    }

    /// Whether this replica owns `device`.
    pub fn owns(&self, device: &str) -> bool {
        let members = self.members();
        self.is_mine(&members, device)
    }

    /// Until when this replica may write, if it may now.
    pub fn write_deadline(&self) -> Option<Instant> {
        let fence = *self.fence.lock().unwrap_or_else(|p| p.into_inner());
        fence.filter(|f| *f > Instant::now())
    }

    /// Writes are allowed until `until` (a successful renewal).
    pub fn extend_fence(&self, until: Instant) {
        let mut f = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none_or(|old| old < until) {
            *f = Some(until);
        }
        drop(f);
        self.fence_valid.send_replace(true);
    }

    /// No more writes (shutdown, or the fence expired).
    pub fn revoke_fence(&self) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.fence_valid.send_replace(false);
    }

    /// Waits until writes are allowed (for at least [`crate::status::MIN_FENCE_LEFT`]).
    pub async fn wait_fence(&self) {
        let mut rx = self.fence_valid.subscribe();
        loop {
            rx.borrow_and_update();
            if self.write_deadline().is_some_and(|d| {
                d.saturating_duration_since(Instant::now()) >= crate::status::MIN_FENCE_LEFT
            }) {
                return;
            }
            // A renewal notifies; the timeout covers a flag that was already set.
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    }
}

/// Membership settings.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub id: String,
    pub advertise_url: String,
    pub lease_duration: Duration,
}

impl MembershipConfig {
    /// Renewal period: a quarter of the lease duration.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 4
    }

    /// How long after its last successful renewal a replica may still write: two thirds of
    /// the duration (kube's renew deadline is 10 s of 15 s), leaving a third as the margin
    /// before peers take over.
    pub fn fence(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// Time a replica waits after (re)gaining a valid Lease before it counts itself a
    /// member, so that every peer has listed its Lease (and stopped writing its devices).
    pub fn join_delay(&self) -> Duration {
        self.renew_interval() * 2 + Duration::from_millis(100)
    }

    /// The `leaseDurationSeconds` written (whole seconds, rounded up).
    pub fn lease_seconds(&self) -> i32 {
        let ms = self.lease_duration.as_millis().div_ceil(1000);
        i32::try_from(ms).unwrap_or(i32::MAX).max(1)
    }

    /// The Lease name of replica `id`.
    pub fn lease_name(id: &str) -> String {
        format!("{LEASE_PREFIX}{id}")
    }
}

#[derive(Debug)]
struct Peer {
    url: String,
    resource_version: String,
    observed: Instant,
    duration: Duration,
}

/// Readiness parts: the cache and the membership, both needed.
#[derive(Debug)]
pub struct ReadyParts {
    cache: std::sync::atomic::AtomicBool,
    members: std::sync::atomic::AtomicBool,
    readiness: apollo_process::http::Readiness,
}

impl ReadyParts {
    pub fn new(readiness: apollo_process::http::Readiness) -> Arc<ReadyParts> {
        Arc::new(ReadyParts {
            cache: false.into(),
            members: false.into(),
            readiness,
        })
    }

    fn update(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.cache.load(SeqCst) && self.members.load(SeqCst) {
            self.readiness.set_ready(true);
        }
    }

    /// The first complete list of DeviceProcesses is in.
    pub fn cache_synced(&self) {
        self.cache.store(true, std::sync::atomic::Ordering::SeqCst);
        self.update();
    }

    /// The first membership round succeeded.
    pub fn members_known(&self) {
        self.members
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.update();
    }

    /// Whether the cache has synced.
    pub fn is_cache_synced(&self) -> bool {
        self.cache.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What the membership loop tells the rest of the gateway.
pub trait Rebalance: Send + Sync {
    /// The member set changed from `old` to `new`.
    fn rebalance(&self, old: &[Member], new: &[Member]);
    /// Whether queued status writes are all done (for the release at shutdown).
    fn writes_idle(&self) -> bool;
    /// A renewal (or the creation) of the own Lease succeeded or failed.
    fn lease_renewed(&self, _ok: bool) {}
}

/// Runs membership until shutdown, then releases the Lease.
pub async fn run(
    api: Api<Lease>,
    ownership: Arc<Ownership>,
    target: Arc<dyn Rebalance>,
    ready: Arc<ReadyParts>,
    config: MembershipConfig,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut m = Runner {
        api,
        ownership,
        target,
        config,
        own: None,
        peers: HashMap::new(),
        valid_since: None,
        failing: false,
        established: false,
    };
    let period = m.config.renew_interval();
    let mut first = true;
    loop {
        let ok = m.round().await;
        if ok && first {
            first = false;
            ready.members_known();
            tracing::info!(id = %m.config.id, members = m.ownership.members().len(), "membership established");
        }
        // Sleep until the next round, or until a peer's Lease runs out before it (so a dead
        // peer is dropped at its expiry, not up to a renewal period later).
        let next_round = Instant::now() + period;
        loop {
            let expiry = if ok { m.next_expiry() } else { None };
            let wake = expiry.map_or(next_round, |e| e.min(next_round));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = crate::stopped(&mut shutdown) => break,
            }
            if *shutdown.borrow() || Instant::now() >= next_round {
                break;
            }
            m.evaluate(true, Instant::now());
        }
        if *shutdown.borrow() {
            break;
        }
    }
    // Shutdown: keep the Lease while queued writes finish, then stop writing and release it.
    let deadline = Instant::now() + grace;
    let mut next_renew = Instant::now() + period;
    while !m.target.writes_idle() && Instant::now() < deadline {
        if Instant::now() >= next_renew {
            m.renew().await;
            next_renew = Instant::now() + period;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    m.ownership.revoke_fence();
    m.release().await;
}

struct Runner {
    api: Api<Lease>,
    ownership: Arc<Ownership>,
    target: Arc<dyn Rebalance>,
    config: MembershipConfig,
    own: Option<Lease>,
    peers: HashMap<String, Peer>,
    valid_since: Option<Instant>,
    failing: bool,
    /// A round with both a renewal and a list succeeded (before that, the replica knows
    /// nothing about its peers and owns nothing).
    established: bool,
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Runner {
    fn lease_body(&self, base: Option<Lease>) -> Lease {
        let mut lease = base.unwrap_or_default();
        let name = MembershipConfig::lease_name(&self.config.id);
        let meta = &mut lease.metadata;
        meta.name = Some(name);
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(MEMBER_LABEL.into(), "true".into());
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(
                ADVERTISE_ANNOTATION.into(),
                self.config.advertise_url.clone(),
            );
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.id.as_str()) {
            spec.holder_identity = Some(self.config.id.clone());
            spec.acquire_time = Some(now_micro());
        }
        spec.lease_duration_seconds = Some(self.config.lease_seconds());
        spec.renew_time = Some(now_micro());
        lease
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        tokio::time::timeout(
            self.config.renew_interval().max(Duration::from_millis(200)),
            f,
        )
        .await
        .unwrap_or_else(|_| Err(kube::Error::Service("no answer in time".into())))
    }

    /// Renews (or creates) the own Lease; extends the fence on success.
    async fn renew(&mut self) -> bool {
        let started = Instant::now();
        let name = MembershipConfig::lease_name(&self.config.id);
        let pp = PostParams::default();
        let result = match self.own.take() {
            Some(own) => {
                let body = self.lease_body(Some(own));
                self.call(self.api.replace(&name, &pp, &body)).await
            }
            None => match self.call(self.api.get_opt(&name)).await {
                Ok(Some(existing)) => {
                    let body = self.lease_body(Some(existing));
                    self.call(self.api.replace(&name, &pp, &body)).await
                }
                Ok(None) => {
                    let body = self.lease_body(None);
                    self.call(self.api.create(&pp, &body)).await
                }
                Err(e) => Err(e),
            },
        };
        self.target.lease_renewed(result.is_ok());
        match result {
            Ok(lease) => {
                self.own = Some(lease);
                self.ownership.extend_fence(started + self.config.fence());
                if self.valid_since.is_none() {
                    self.valid_since = Some(started);
                }
                if self.failing {
                    self.failing = false;
                    tracing::info!("gateway Lease renewed again");
                }
                true
            }
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(error = %e, "cannot renew the gateway Lease; writes stop when it runs out");
                }
                if self.ownership.write_deadline().is_none() {
                    self.ownership.revoke_fence();
                    self.valid_since = None;
                }
                false
            }
        }
    }

    /// Lists member Leases; updates the peers. `false` when the list failed.
    async fn list(&mut self, now: Instant) -> bool {
        let lp = ListParams::default().labels(&format!("{MEMBER_LABEL}=true"));
        let list = match self.call(self.api.list(&lp)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list gateway Leases");
                return false;
            }
        };
        let mut seen = std::collections::HashSet::new();
        for lease in list.items {
            let Some(spec) = &lease.spec else { continue };
            let Some(id) = spec.holder_identity.clone() else {
                continue;
            };
            if id == self.config.id
                || lease.metadata.name.as_deref() != Some(&MembershipConfig::lease_name(&id))
            {
                continue;
            }
            let Some(url) = lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ADVERTISE_ANNOTATION))
                .cloned()
            else {
                continue;
            };
            let secs = spec.lease_duration_seconds.unwrap_or(15).max(1);
            let duration = Duration::from_secs(u64::try_from(secs).unwrap_or(15));
            let rv = lease.metadata.resource_version.clone().unwrap_or_default();
            seen.insert(id.clone());
            match self.peers.get_mut(&id) {
                Some(p) => {
                    if p.resource_version != rv {
                        p.resource_version = rv;
                        p.observed = now;
                    }
                    p.url = url;
                    p.duration = duration;
                }
                None => {
                    // First sight: a Lease not renewed for two durations (by this clock) is
                    // dead already; otherwise it counts as renewed now.
                    let age = spec
                        .renew_time
                        .as_ref()
                        .map(|t| Timestamp::now().duration_since(t.0))
                        .and_then(|d| Duration::try_from(d).ok())
                        .unwrap_or_default();
                    let observed = if age > duration * 2 {
                        now.checked_sub(duration * 2).unwrap_or(now)
                    } else {
                        now
                    };
                    self.peers.insert(
                        id,
                        Peer {
                            url,
                            resource_version: rv,
                            observed,
                            duration,
                        },
                    );
                }
            }
            // Long-dead peers' Leases are deleted (a concurrent renewal wins by the
            // resourceVersion precondition).
            let long_dead = self
                .peers
                .get(spec.holder_identity.as_deref().unwrap_or(""))
                .is_some_and(|p| now.saturating_duration_since(p.observed) > p.duration * 10);
            if long_dead && let Some(n) = &lease.metadata.name {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: lease.metadata.resource_version.clone(),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                let _ = self.call(self.api.delete(n, &dp)).await;
            }
        }
        self.peers.retain(|id, _| seen.contains(id));
        true
    }

    /// One round: renew, list, recompute the member set. `true` when both calls succeeded.
    async fn round(&mut self) -> bool {
        let renewed = self.renew().await;
        let now = Instant::now();
        let listed = self.list(now).await;
        if renewed && listed {
            self.established = true;
        }
        if !self.established {
            return false;
        }
        self.evaluate(renewed && listed, now);
        renewed && listed
    }

    /// When the earliest current peer's Lease runs out (by local observation).
    fn next_expiry(&self) -> Option<Instant> {
        let members = self.ownership.members();
        self.peers
            .iter()
            .filter(|(id, _)| members.iter().any(|m| &m.id == *id))
            .map(|(_, p)| p.observed + p.duration + Duration::from_millis(5))
            .min()
    }

    /// Recomputes the member set at `now`; `fresh`: the peers' data comes from a round whose
    /// renewal and list both succeeded (otherwise the peers are kept as they are).
    fn evaluate(&mut self, fresh: bool, now: Instant) {
        let current = self.ownership.members();
        let others: Vec<Member> = if fresh {
            self.peers
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.observed) <= p.duration)
                .map(|(id, p)| Member {
                    id: id.clone(),
                    url: p.url.clone(),
                })
                .collect()
        } else {
            // Cut off: a dead peer and our own partition look the same; keep the peers.
            current
                .iter()
                .filter(|m| m.id != self.config.id)
                .cloned()
                .collect()
        };
        let valid = self.ownership.write_deadline().is_some();
        let joined = self
            .valid_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.config.join_delay());
        let me_now = current.iter().any(|m| m.id == self.config.id);
        let include_me = others.is_empty() || (valid && (joined || me_now));
        let mut members = others;
        if include_me {
            members.push(Member {
                id: self.config.id.clone(),
                url: self.config.advertise_url.clone(),
            });
        }
        if let Some(old) = self.ownership.set_members(members) {
            let new = self.ownership.members();
            tracing::info!(
                members = ?new.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
                previous = ?old.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
                "gateway members changed"
            );
            self.target.rebalance(&old, &new);
        }
    }

    /// Deletes the own Lease (precondition: the version this replica wrote last).
    async fn release(&mut self) {
        let name = MembershipConfig::lease_name(&self.config.id);
        let rv = self
            .own
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone());
        let dp = DeleteParams {
            preconditions: rv.map(|rv| Preconditions {
                resource_version: Some(rv),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        // Bounded: the gateway's shutdown waits for this task only a few seconds past the grace.
        let delete = tokio::time::timeout(Duration::from_secs(2), self.api.delete(&name, &dp));
        match delete
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("no answer in time".into())))
        {
            Ok(_) => tracing::info!(lease = %name, "gateway Lease released"),
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "cannot release the gateway Lease; peers take over when it expires")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter()
            .map(|id| Member {
                id: id.to_string(),
                url: format!("http://{id}"),
            })
            .collect()
    }

    fn devices(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("tor{}-{:02}", i / 40, i % 40))
            .collect()
    }

    #[test]
    fn rendezvous_is_deterministic_and_balanced() {
        let m = members(&["gw-a", "gw-b", "gw-c"]);
        let mut shuffled = m.clone();
        shuffled.reverse();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for d in devices(3000) {
            let o = owner(&m, &d).unwrap();
            assert_eq!(o, owner(&shuffled, &d).unwrap(), "order does not matter");
            *counts.entry(o.id.clone()).or_default() += 1;
        }
        for (id, n) in &counts {
            assert!((800..1200).contains(n), "{id}: {n} of 3000");
        }
        assert!(owner(&[], "d").is_none());
        // Pinned values: every replica (and every version) must agree.
        assert_eq!(score("gw-a", "tor1-01"), score("gw-a", "tor1-01"));
        assert_ne!(score("gw-a", "tor1-01"), score("gw-b", "tor1-01"));
        assert_ne!(score("gw-a", "b"), score("gw-ab", ""));
    }

    #[test]
    fn membership_changes_move_only_what_they_must() {
        let three = members(&["gw-a", "gw-b", "gw-c"]);
        let two = members(&["gw-a", "gw-b"]);
        let four = members(&["gw-a", "gw-b", "gw-c", "gw-d"]);
        let ds = devices(2000);
        let mut moved_to_d = 0;
        for d in &ds {
            let before = owner(&three, d).unwrap();
            // gw-c leaves: only its devices move.
            let after = owner(&two, d).unwrap();
            if before.id != "gw-c" {
                assert_eq!(before, after, "{d} moved although its owner stayed");
            }
            // gw-d joins: devices move only to gw-d.
            let joined = owner(&four, d).unwrap();
            if joined.id != before.id {
                assert_eq!(joined.id, "gw-d", "{d}");
                moved_to_d += 1;
            }
        }
        assert!(
            (350..650).contains(&moved_to_d),
            "{moved_to_d} of 2000 moved to gw-d"
        );
    }

    #[tokio::test]
    async fn ownership_and_fence() {
        let o = Ownership::new("gw-a");
        assert_eq!(o.owner("d"), Owner::Nobody);
        assert!(!o.owns("d") && o.write_deadline().is_none());
        assert!(o.set_members(members(&["gw-b", "gw-a"])).is_some());
        assert!(
            o.set_members(members(&["gw-a", "gw-b"])).is_none(),
            "same set"
        );
        let ds = devices(100);
        let mine = ds.iter().filter(|d| o.owns(d)).count();
        assert!(mine > 20 && mine < 80, "{mine}");
        let peer = ds.iter().find(|d| !o.owns(d)).unwrap();
        assert!(matches!(o.owner(peer), Owner::Peer(m) if m.id == "gw-b"));
        o.extend_fence(Instant::now() + Duration::from_secs(5));
        assert!(o.write_deadline().is_some());
        tokio::time::timeout(Duration::from_secs(1), o.wait_fence())
            .await
            .unwrap();
        o.revoke_fence();
        assert!(o.write_deadline().is_none());
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { o2.wait_fence().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        o.extend_fence(Instant::now() + Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        let s = Ownership::standalone("solo");
        assert!(s.owns("anything") && s.write_deadline().is_some());
    }

    #[test]
    fn timings() {
        let c = MembershipConfig {
            id: "a".into(),
            advertise_url: "http://a".into(),
            lease_duration: Duration::from_secs(15),
        };
        assert_eq!(c.renew_interval(), Duration::from_millis(3750));
        assert_eq!(c.fence(), Duration::from_secs(10));
        assert_eq!(c.lease_seconds(), 15);
        let c = MembershipConfig {
            lease_duration: Duration::from_millis(1500),
            ..c
        };
        assert_eq!(c.lease_seconds(), 2);
    }
}
