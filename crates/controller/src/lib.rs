//! # apollo-controller
//!
//! The controller of Apollo DeviceProcess: every DeviceProcessDeployment gets exactly one
//! DeviceProcess per inventory object (NetworkSwitch by default) in its namespace whose labels
//! match its selector — DaemonSet semantics over the device inventory.
//!
//! - [`controller`]: the kube-runtime `Controller`, one watch per kind (deployments,
//!   DeviceProcesses, inventory metadata), each feeding a reflector cache and the triggers.
//! - [`plan`]: the pure decisions (validation, naming, create/update/delete, status).
//! - [`rollout`]: rolling updates with DaemonSet semantics (`maxUnavailable`, `paused`,
//!   `OnDelete`, progress deadline), the `RolledOut` condition and the rollout Events.
//! - [`spec_hashes`]: each cached DeviceProcess's spec hash, once per spec generation.
//! - [`reconcile`]: one reconcile: server-side apply of DeviceProcesses (field manager
//!   `apollo-controller`, controller ownerReference), deletes with a uid precondition, the
//!   deployment status through `/status` only when it changed, events, retry backoff.
//! - [`leader`]: leader election on a `coordination.k8s.io/v1` Lease.
//! - [`config`]: flags with `APOLLO_*` environment twins; [`metrics`]: Prometheus metrics.
//!
//! [`App::run`] ties them together: health and metrics listeners, leader election when on,
//! the controller while leading, graceful shutdown that releases the Lease.

pub mod config;
pub mod controller;
pub mod events;
pub mod inventory;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod rollout;
pub mod spec_hashes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apollo_process::http::Readiness;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use config::{Args, Config, LeaderElectionConfig};
pub use metrics::Metrics;

/// How long a stopping controller waits for running reconciles before stopping anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// How long a stopping leader tries to release its Lease.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The inventory kind could not be resolved.
    #[error("cannot resolve inventory kind {kind} (is its CRD installed?): {source}")]
    Discovery {
        /// The kind.
        kind: String,
        /// Cause.
        source: Box<kube::Error>,
    },
    /// The inventory kind is cluster-scoped.
    #[error("inventory kind {0} is not namespaced")]
    InventoryNotNamespaced(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Leadership was lost; the process should exit and be restarted.
    #[error("lost the leader lease")]
    LostLeadership,
}

/// A configured controller process.
pub struct App {
    config: Config,
    client: kube::Client,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    leading: watch::Sender<bool>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl App {
    /// A controller for `config` talking to the API server through `client`.
    pub fn new(config: Config, client: kube::Client) -> Self {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        Self {
            config,
            client,
            registry: Arc::new(registry),
            metrics,
            readiness: Readiness::new(),
            leading: watch::channel(false).0,
        }
    }

    /// The metrics (for tests and embedding).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The metrics registry (what `/metrics` serves).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Readiness as `/readyz` reports it.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Whether this replica is running the controller (leading, or no leader election).
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    fn identity(&self) -> String {
        self.config
            .leader_election
            .as_ref()
            .map_or_else(|| "apollo-controller".to_owned(), |le| le.identity.clone())
    }

    /// Runs until `shutdown` resolves (then running reconciles finish and the Lease is
    /// released), or until leadership is lost ([`Error::LostLeadership`]).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let mut listeners = Vec::new();
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in [self.config.metrics_addr, self.config.health_addr]
            .into_iter()
            .flatten()
        {
            if addrs.contains(&addr) {
                continue;
            }
            addrs.push(addr);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen { addr, source })?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /healthz, /readyz and /metrics");
            listeners.push(listener);
        }
        for listener in listeners {
            let registry = self.registry.clone();
            let readiness = self.readiness.clone();
            let stop = stopped();
            tokio::spawn(async move {
                if let Err(error) =
                    apollo_process::http::serve_health_on(listener, registry, readiness, stop).await
                {
                    tracing::error!(%error, "health listener failed");
                }
            });
        }

        let inventory = self.config.inventory.resolve(&self.client).await?;
        tracing::info!(
            inventory = %self.config.inventory,
            plural = %inventory.plural,
            namespace = self.config.namespace.as_deref().unwrap_or("(all)"),
            "starting apollo-controller"
        );
        let settings = controller::RunSettings {
            namespace: self.config.namespace.clone(),
            inventory,
            concurrency: self.config.concurrency,
            resync: self.config.resync_period,
            retry_base: self.config.retry_base,
            retry_max: self.config.retry_max,
            identity: self.identity(),
        };

        // With leader election a standby replica is healthy and ready (its job is to wait
        // for the Lease) and runs the controller only once it leads; without it, this
        // replica runs the controller at once and is ready when the caches have synced.
        let mut elector = match self.config.leader_election.clone() {
            Some(le) => {
                let mut elector = leader::LeaderElector::new(self.client.clone(), le);
                self.readiness.set_ready(true);
                tokio::select! {
                    () = elector.acquire() => {}
                    () = stopped() => {
                        tracing::info!("stopped before acquiring the leader lease");
                        return Ok(());
                    }
                }
                Some(elector)
            }
            None => None,
        };
        self.leading.send_replace(true);
        self.metrics.leader.set(1);
        let (caches, run) = controller::build(
            self.client.clone(),
            settings,
            self.metrics.clone(),
            stopped(),
        );
        let readiness = elector.is_none().then(|| self.readiness.clone());
        let sync = tokio::spawn(async move {
            if caches.synced().await {
                tracing::info!("caches synced");
                if let Some(readiness) = readiness {
                    readiness.set_ready(true);
                }
            }
        });
        let mut run = Box::pin(run);
        let stop = stopped();
        let held = async {
            match elector.as_mut() {
                Some(elector) => elector.hold().await,
                None => std::future::pending().await,
            }
        };
        let lost = tokio::select! {
            () = &mut run => false,
            () = async { stop.await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                tracing::warn!("running reconciles did not finish in time; stopping anyway");
                false
            }
            () = held => true,
        };
        sync.abort();
        self.metrics.leader.set(0);
        self.leading.send_replace(false);
        // Nothing writes after this point (dropping the controller aborts its reconciles).
        drop(run);
        if lost {
            // The process exits and is restarted as a candidate.
            return Err(Error::LostLeadership);
        }
        if let Some(mut elector) = elector {
            match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "could not release the leader lease"),
                Err(_) => tracing::warn!("timed out releasing the leader lease"),
            }
        }
        tracing::info!("controller stopped");
        Ok(())
    }
}
