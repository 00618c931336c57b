//! Leader election on a `coordination.k8s.io/v1` Lease, the client-go way: a candidate takes
//! a Lease that is free, released, or not renewed within its duration (judged by the local
//! clock from when the candidate last saw the record change, so clock skew between nodes does
//! not matter); the leader renews every retry period and gives up when it cannot renew within
//! the renew deadline. Every write is a create or an update carrying the resourceVersion it
//! read, so two candidates can never both win: one of them gets 409 Conflict.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::config::LeaderElectionConfig;

/// A candidate for the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    /// The record last seen and when it was first seen in that form.
    observed: Option<(Observed, Instant)>,
    /// When this candidate last renewed successfully.
    last_renew: Option<Instant>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<String>,
    resource_version: Option<String>,
}

/// Result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the Lease.
    Leading,
    /// Someone else holds a valid Lease.
    Following(Option<String>),
}

impl LeaderElector {
    /// A candidate using `client` with `config`.
    pub fn new(client: kube::Client, config: LeaderElectionConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self {
            api,
            config,
            observed: None,
            last_renew: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    fn lease_seconds(&self) -> i32 {
        let secs = self.config.lease_duration.as_secs_f64().ceil();
        if secs < 1.0 {
            1
        } else if secs > f64::from(i32::MAX) {
            i32::MAX
        } else {
            // In range, checked above.
            #[allow(clippy::cast_possible_truncation)]
            {
                secs as i32
            }
        }
    }

    fn now() -> MicroTime {
        MicroTime(jiff::Timestamp::now())
    }

    /// One acquire-or-renew attempt.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let name = self.config.lease_name.clone();
        let me = self.config.identity.clone();
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(Self::now()),
                    renew_time: Some(Self::now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.last_renew = Some(Instant::now());
                    Ok(Attempt::Leading)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following(None)),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let observed = Observed {
            holder: holder.clone(),
            renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            resource_version: lease.metadata.resource_version.clone(),
        };
        let now = Instant::now();
        match &self.observed {
            Some((seen, _)) if *seen == observed => {}
            _ => self.observed = Some((observed, now)),
        }
        let seen_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0).max(1)).unwrap_or(1),
        );
        let held_by_other = holder.as_deref().is_some_and(|h| h != me);
        if held_by_other && now < seen_at + duration {
            return Ok(Attempt::Following(holder));
        }
        let mut new_spec = spec.clone();
        new_spec.holder_identity = Some(me.clone());
        new_spec.lease_duration_seconds = Some(self.lease_seconds());
        new_spec.renew_time = Some(Self::now());
        if holder.as_deref() != Some(me.as_str()) {
            new_spec.acquire_time = Some(Self::now());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new_spec);
        // `replace` sends the resourceVersion read above: a concurrent writer makes it 409.
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.last_renew = Some(Instant::now());
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following(holder)),
            Err(e) => Err(e),
        }
    }

    /// Tries every retry period until this candidate leads.
    pub async fn acquire(&mut self) {
        let mut last_holder: Option<Option<String>> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    tracing::info!(
                        identity = %self.config.identity,
                        lease = %self.config.lease_name,
                        namespace = %self.config.namespace,
                        "acquired leader lease"
                    );
                    return;
                }
                Ok(Attempt::Following(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(
                            identity = %self.config.identity,
                            leader = holder.as_deref().unwrap_or(""),
                            "waiting for the leader lease"
                        );
                        last_holder = Some(holder);
                    }
                }
                Err(error) => tracing::warn!(%error, "leader lease attempt failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews every retry period while leading; returns when leadership is lost (renewals
    /// failed for the renew deadline, or another holder took the Lease).
    pub async fn hold(&mut self) {
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let deadline = self
                .last_renew
                .map_or_else(Instant::now, |t| t + self.config.renew_deadline);
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => {}
                Ok(Ok(Attempt::Following(holder))) => {
                    tracing::error!(
                        leader = holder.as_deref().unwrap_or(""),
                        "leader lease taken by another replica"
                    );
                    return;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "leader lease renewal failed");
                }
                Err(_) => {}
            }
            if self
                .last_renew
                .is_none_or(|t| t.elapsed() >= self.config.renew_deadline)
            {
                tracing::error!(
                    renew_deadline_ms =
                        u64::try_from(self.config.renew_deadline.as_millis()).unwrap_or(u64::MAX),
                    "could not renew the leader lease in time"
                );
                return;
            }
        }
    }

    /// Gives the Lease up (holder cleared) if this candidate still holds it, so a standby
    /// replica takes over at its next attempt instead of after the lease duration.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(Self::now());
        self.api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await?;
        self.last_renew = None;
        tracing::info!(identity = %self.config.identity, "released leader lease");
        Ok(())
    }
}
