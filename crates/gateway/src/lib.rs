//! # apollo-gateway
//!
//! The device gateway of Apollo DeviceProcess: the only bridge between the devices' agents and
//! the Kubernetes API server (see `docs/GATEWAY.md` and `docs/PROTOCOL.md`).
//!
//! ```text
//!            one watch (list once, then watch)        merge patches on /status, Events
//! API server ───────────────► sync ──► desired (per-device document + ETag)   ▲
//!                                  └─► status (live/target views) ─── writer ─┘
//!                                            ▲
//! agents ── HTTP, per-device HMAC ──► http ──┴─ liveness (last report, instance, observed)
//!                                              ▲ sweeper (stale transitions)
//! ```
//!
//! - [`desired`]: per device, the encoded desired document and its ETag, rebuilt only when one
//!   of that device's DeviceProcesses changes; long-poll waiters are woken per device.
//! - [`liveness`]: in-memory table of reports; the sweeper marks silent devices stale once.
//! - [`status`]: computes each DeviceProcess's status from liveness and writes `/status` only
//!   on a change, coalesced per object, retried until it lands; [`events`] on transitions.
//! - [`http`]: the hardened HTTP/1.1 server of the protocol plus `/healthz`, `/readyz`,
//!   `/metrics`; [`metrics`]: the Prometheus families.
//! - [`sync`]: the DeviceProcess watch and the sweeper; [`kubeapi`]: API request counting.
//! - [`config`] and [`keys`]: the command line (argh + `APOLLO_*` env twins) and the `keys`
//!   subcommands.

pub mod config;
pub mod desired;
pub mod events;
pub mod http;
pub mod keys;
pub mod kubeapi;
pub mod liveness;
pub mod metrics;
pub mod status;
pub mod sync;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use apollo_api::DeviceProcess;
use apollo_protocol::auth::ReplayCache;
use apollo_protocol::keys::MasterKeyRing;
use apollo_runtime::duration::format_duration;
use apollo_runtime::http::Readiness;
use kube::Api;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use metrics::Metrics;

/// Resolves once `shutdown` is true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Capacity of the nonce replay cache (entries; see docs/PROTOCOL.md §3.3).
pub const REPLAY_CACHE_CAPACITY: usize = 2_000_000;

/// Everything the gateway needs besides its Kubernetes client.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address of the device API, `/healthz`, `/readyz` and `/metrics`.
    pub addr: SocketAddr,
    /// Namespace served; `None`: the client's default namespace.
    pub namespace: Option<String>,
    /// Master keys (current first).
    pub keys: MasterKeyRing,
    /// Heartbeat interval asked of agents.
    pub heartbeat_interval: Duration,
    /// Silence after which a device is stale.
    pub stale_after: Duration,
    /// Accepted clock skew of request timestamps.
    pub auth_skew: Duration,
    /// Time allowed to receive request headers (also the idle limit of keep-alive
    /// connections: keep it above the heartbeat interval).
    pub header_timeout: Duration,
    /// Time allowed to receive a request body.
    pub body_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Most long polls held at once.
    pub max_long_polls: usize,
    /// Concurrent status writers.
    pub status_workers: usize,
    /// Time given to open requests and pending writes at shutdown.
    pub shutdown_grace: Duration,
    /// `reportingInstance` of events (the pod name); `None`: `apollo-gateway`.
    pub instance: Option<String>,
    /// One log line per device-API request.
    pub access_log: bool,
}

impl Settings {
    /// The defaults of the command line with the given keys, listening on 127.0.0.1 with a
    /// free port (for tests and embedding).
    pub fn new(keys: MasterKeyRing) -> Settings {
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            namespace: None,
            keys,
            heartbeat_interval: config::DEFAULT_HEARTBEAT,
            stale_after: config::DEFAULT_HEARTBEAT * 3,
            auth_skew: config::DEFAULT_AUTH_SKEW,
            header_timeout: config::default_header_timeout(config::DEFAULT_HEARTBEAT),
            body_timeout: config::DEFAULT_BODY_TIMEOUT,
            max_connections: config::DEFAULT_MAX_CONNECTIONS,
            max_long_polls: config::DEFAULT_MAX_LONG_POLLS,
            status_workers: config::DEFAULT_STATUS_WORKERS,
            shutdown_grace: config::DEFAULT_SHUTDOWN_GRACE,
            instance: None,
            access_log: false,
        }
    }
}

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    namespace: String,
    shutdown: watch::Sender<bool>,
    grace: Duration,
    tasks: JoinSet<()>,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    status: Arc<status::StatusController>,
    desired: Arc<desired::DesiredStore>,
    liveness: Arc<liveness::Liveness>,
}

impl Gateway {
    /// Binds the listener and starts every task: the watch, the sweeper, the status writers,
    /// the event worker and the HTTP server. Readiness follows the first complete list.
    pub async fn start(settings: Settings, client: kube::Client) -> Result<Gateway, Error> {
        settings.validate()?;
        if settings.header_timeout <= settings.heartbeat_interval {
            tracing::warn!(
                header_timeout = %format_duration(settings.header_timeout),
                heartbeat = %format_duration(settings.heartbeat_interval),
                "the header timeout also closes idle keep-alive connections; at or below the \
                 heartbeat interval agents will find their connections closed as they reuse them"
            );
        }
        let metrics = Metrics::new();
        let client = kubeapi::counting_client(client, metrics.clone());
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let listener = TcpListener::bind(settings.addr)
            .await
            .map_err(|source| Error::Listen {
                addr: settings.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: settings.addr,
            source,
        })?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let readiness = Readiness::new();
        let instance = settings
            .instance
            .clone()
            .unwrap_or_else(|| "apollo-gateway".to_string());
        let (recorder, event_worker) = events::recorder(metrics.clone(), instance);
        let liveness = Arc::new(liveness::Liveness::new(
            settings.stale_after,
            metrics.clone(),
        ));
        let desired = Arc::new(desired::DesiredStore::new());
        let status = Arc::new(status::StatusController::new(
            liveness.clone(),
            recorder,
            metrics.clone(),
        ));
        let mut tasks = JoinSet::new();
        let api: Api<DeviceProcess> = Api::namespaced(client.clone(), &namespace);
        tasks.spawn(sync::run_watch(
            api,
            desired.clone(),
            status.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(sync::run_sweeper(
            liveness.clone(),
            status.clone(),
            shutdown.clone(),
        ));
        for _ in 0..settings.status_workers {
            tasks.spawn(status.clone().run_writer(
                client.clone(),
                shutdown.clone(),
                settings.shutdown_grace,
            ));
        }
        tasks.spawn(event_worker.run(client.clone(), shutdown.clone()));
        let state = Arc::new(http::HttpState {
            desired: desired.clone(),
            liveness: liveness.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            keys: settings.keys.clone(),
            replay: ReplayCache::new(settings.auth_skew, REPLAY_CACHE_CAPACITY),
            skew_secs: i64::try_from(settings.auth_skew.as_secs()).unwrap_or(60),
            heartbeat: settings.heartbeat_interval,
            readiness: readiness.clone(),
            body_timeout: settings.body_timeout,
            max_long_polls: settings.max_long_polls,
            long_polls: AtomicUsize::new(0),
            shutdown: shutdown.clone(),
            access_log: settings.access_log,
        });
        tasks.spawn(http::serve(
            listener,
            state,
            http::ListenerLimits {
                header_timeout: settings.header_timeout,
                max_connections: settings.max_connections,
                grace: settings.shutdown_grace,
            },
            shutdown.clone(),
        ));
        tracing::info!(
            %addr,
            namespace,
            heartbeat = %format_duration(settings.heartbeat_interval),
            stale_after = %format_duration(settings.stale_after),
            key_ids = ?settings.keys.keys().iter().map(|k| k.id()).collect::<Vec<_>>(),
            "gateway listening"
        );
        Ok(Gateway {
            addr,
            namespace,
            shutdown: shutdown_tx,
            grace: settings.shutdown_grace,
            tasks,
            metrics,
            readiness,
            status,
            desired,
            liveness,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The namespace served.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the cache has synced.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// The status controller (diagnostics and tests).
    pub fn status(&self) -> &Arc<status::StatusController> {
        &self.status
    }

    /// The desired index (diagnostics and tests).
    pub fn desired(&self) -> &Arc<desired::DesiredStore> {
        &self.desired
    }

    /// The liveness table (diagnostics and tests).
    pub fn liveness(&self) -> &Arc<liveness::Liveness> {
        &self.liveness
    }

    /// Stops accepting, answers held long polls, lets requests and queued status writes
    /// finish within the grace period, and waits for every task.
    pub async fn shutdown(mut self) {
        tracing::info!("gateway shutting down");
        let _ = self.shutdown.send(true);
        // Every task stops within the grace period (plus the event drain); never hang past it.
        let limit = self.grace + events::SHUTDOWN_DRAIN + Duration::from_secs(2);
        let joined = tokio::time::timeout(limit, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            tracing::warn!("tasks still busy after the grace period; stopping them");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        tracing::info!("gateway stopped");
    }

    /// Runs until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}
