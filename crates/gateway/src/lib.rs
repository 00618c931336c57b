//! # apollo-gateway
//!
//! The device gateway of Apollo DeviceProcess: the only bridge between the devices' agents and
//! the Kubernetes API server (see `docs/GATEWAY.md` and `docs/PROTOCOL.md`).
//!
//! ```text
//!            one watch (list once, then watch)        merge patches on /status, Events
//! API server ───────────────► sync ──► index: per device its desired document + ETag,  ▲
//!                                      per object its status views ── status ── writer ─┘
//!                                            ▲
//! agents ── HTTP, per-device HMAC ──► http ──┴─ liveness (last report, instance, observed)
//!                                              ▲ sweeper (stale transitions)
//! ```
//!
//! - [`index`]: every DeviceProcess once, sharded by device: per device the encoded
//!   [`desired`] document and its ETag, rebuilt only when one of that device's DeviceProcesses
//!   changes, per object the status controller's views; long-poll waiters are woken per
//!   shard.
//! - [`liveness`]: in-memory table of reports; the sweeper marks silent devices stale once.
//! - [`status`]: computes each DeviceProcess's status from liveness and writes `/status` only
//!   on a change, coalesced per object, retried until it lands; [`events`] on transitions.
//! - [`http`]: the hardened HTTP/1.1 server of the protocol (device listener), of
//!   `/healthz`, `/readyz`, `/metrics` (metrics listener) and of forwarded reports (peer
//!   listener, `--peer-addr`); [`limits`]: what unauthenticated
//!   clients can make it hold; [`metrics`]: the Prometheus families.
//! - [`sync`]: the DeviceProcess watch and the sweeper; [`kubeapi`]: API request counting;
//!   the watch and the status writes decode DeviceProcesses without their `managedFields`
//!   ([`apollo_api::lean`]).
//! - [`config`] and [`keys`]: the command line (argh + `APOLLO_*` env twins) and the `keys`
//!   subcommands.
//! - [`tls`]: optional TLS on the listener; [`revocation`]: per-device key-epoch floors and
//!   the lowest accepted signature version; [`reload`]: both re-read on change, no restart.
//! - [`membership`]: replicas coordinated through one Lease each; device ownership by
//!   rendezvous hashing; the write fence. [`forward`]: reports of devices another replica
//!   owns, handed to it over an authenticated, batched, bounded path.

pub mod config;
pub mod desired;
pub mod events;
pub mod forward;
pub mod http;
pub mod index;
pub mod keys;
pub mod kubeapi;
pub mod limits;
pub mod liveness;
pub mod membership;
pub mod metrics;
pub mod reload;
pub mod revocation;
pub mod server;
pub mod status;
pub mod sync;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apollo_process::duration::format_duration;
use apollo_process::http::Readiness;
use apollo_protocol::auth::{AuthVersion, ReplayCache};
use apollo_protocol::keys::MasterKeyRing;
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
    /// Listen address of the device API (and of forwarded reports without `peer_addr`).
    pub addr: SocketAddr,
    /// Listen address of `/healthz`, `/readyz` and `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Listen address of the peer listener (plain HTTP, forwarded reports only); `None`: the
    /// device listener serves forwarded reports.
    pub peer_addr: Option<SocketAddr>,
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
    /// Most open connections from one source address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Body bytes requests may hold before they are authenticated, all together.
    pub unauthenticated_body_budget: usize,
    /// Most long polls held at once.
    pub max_long_polls: usize,
    /// Most long polls held for one device.
    pub max_long_polls_per_device: usize,
    /// Least time between two status writes of one DeviceProcess.
    pub status_write_interval: Duration,
    /// How long a spec change's `SpecObserved=False` waits for a connected agent to report
    /// the new hash.
    pub observe_grace: Duration,
    /// Least time between two Events of one DeviceProcess with the same reason (repeats in
    /// between are aggregated into the next one's count).
    pub event_interval: Duration,
    /// Concurrent status writers.
    pub status_workers: usize,
    /// Time given to open requests and pending writes at shutdown.
    pub shutdown_grace: Duration,
    /// `reportingInstance` of events (the pod name); `None`: `apollo-gateway`.
    pub instance: Option<String>,
    /// One log line per device-API request.
    pub access_log: bool,
    /// Serve TLS with this certificate and key (re-read on change); `None`: plain HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// Per-device key-epoch floors (re-read on change); `None`: no revocations.
    pub revocation_file: Option<std::path::PathBuf>,
    /// Lowest accepted request signature version.
    pub min_auth_version: AuthVersion,
    /// How often the TLS and revocation files are checked for changes.
    pub reload_interval: Duration,
    /// This replica's id (its Lease is `apollo-gateway-<id>`); `None`: `instance`, else
    /// `apollo-gateway`.
    pub id: Option<String>,
    /// The URL other replicas reach this one at; `None`: `http://` + the bound peer address,
    /// else the bound device address (127.0.0.1 for an unspecified address).
    pub advertise_url: Option<String>,
    /// Duration of the replica's Lease (renewed every quarter of it).
    pub lease_duration: Duration,
}

impl Settings {
    /// The defaults of the command line with the given keys, listening on 127.0.0.1 with a
    /// free port (for tests and embedding).
    pub fn new(keys: MasterKeyRing) -> Settings {
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            peer_addr: None,
            namespace: None,
            keys,
            heartbeat_interval: config::DEFAULT_HEARTBEAT,
            stale_after: config::DEFAULT_HEARTBEAT * 3,
            auth_skew: config::DEFAULT_AUTH_SKEW,
            header_timeout: config::default_header_timeout(config::DEFAULT_HEARTBEAT),
            body_timeout: config::DEFAULT_BODY_TIMEOUT,
            max_connections: limits::UNLIMITED_MAX_CONNECTIONS,
            max_connections_per_address: limits::DEFAULT_PER_ADDRESS,
            unauthenticated_body_budget: limits::DEFAULT_BODY_BUDGET,
            max_long_polls: config::DEFAULT_MAX_LONG_POLLS,
            max_long_polls_per_device: config::DEFAULT_MAX_LONG_POLLS_PER_DEVICE,
            status_write_interval: config::DEFAULT_STATUS_WRITE_INTERVAL,
            observe_grace: config::DEFAULT_OBSERVE_GRACE,
            event_interval: config::DEFAULT_EVENT_INTERVAL,
            status_workers: config::DEFAULT_STATUS_WORKERS,
            shutdown_grace: config::DEFAULT_SHUTDOWN_GRACE,
            instance: None,
            access_log: false,
            tls: None,
            revocation_file: None,
            min_auth_version: AuthVersion::V1,
            reload_interval: config::DEFAULT_RELOAD_INTERVAL,
            id: None,
            advertise_url: None,
            lease_duration: membership::DEFAULT_LEASE_DURATION,
        }
    }

    /// The replica id in effect.
    pub fn replica_id(&self) -> String {
        self.id
            .clone()
            .or_else(|| self.instance.clone())
            .unwrap_or_else(|| "apollo-gateway".to_string())
    }
}

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{what}: {message}")]
    Load { what: &'static str, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Loads the revocation file (an error if it does not parse) and watches it for changes.
fn start_revocations(
    settings: &Settings,
    tasks: &mut JoinSet<()>,
    shutdown: &watch::Receiver<bool>,
) -> Result<revocation::CredentialPolicy, Error> {
    let mut policy = revocation::CredentialPolicy::permissive();
    policy.min_version = settings.min_auth_version;
    let Some(path) = &settings.revocation_file else {
        return Ok(policy);
    };
    let what = "revocation file";
    let paths = vec![path.clone()];
    let contents = reload::read_all(&paths, reload::Absent::Empty)
        .map_err(|message| Error::Load { what, message })?;
    let list = revocation::RevocationList::parse_bytes(&contents[0]).map_err(|e| Error::Load {
        what,
        message: format!("{}: {e}", path.display()),
    })?;
    tracing::info!(path = %path.display(), devices = list.len(), "revocation file loaded");
    policy.revocations.set(list);
    let display = path.display().to_string();
    tasks.spawn(reload::watch_files(
        what,
        paths,
        reload::Absent::Empty,
        contents,
        settings.reload_interval,
        policy.revocations.clone(),
        move |c| {
            revocation::RevocationList::parse_bytes(&c[0]).map_err(|e| format!("{display}: {e}"))
        },
        shutdown.clone(),
    ));
    Ok(policy)
}

/// Loads the TLS certificate and key (an error if they do not load) and watches them.
fn start_tls(
    settings: &Settings,
    tasks: &mut JoinSet<()>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<tokio_rustls::TlsAcceptor>, Error> {
    let Some(files) = &settings.tls else {
        return Ok(None);
    };
    let what = "TLS certificate and key";
    let paths = vec![files.cert.clone(), files.key.clone()];
    let contents = reload::read_all(&paths, reload::Absent::Error)
        .map_err(|message| Error::Load { what, message })?;
    let key = tls::load_certified_key(&contents[0], &contents[1])
        .map_err(|message| Error::Load { what, message })?;
    let current = Arc::new(reload::Reloadable::new(Arc::new(key)));
    let config =
        tls::server_config(current.clone()).map_err(|message| Error::Load { what, message })?;
    tasks.spawn(reload::watch_files(
        what,
        paths,
        reload::Absent::Error,
        contents,
        settings.reload_interval,
        current,
        |c| tls::load_certified_key(&c[0], &c[1]).map(Arc::new),
        shutdown.clone(),
    ));
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Binds a listener; the address it got.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listen = |source| Error::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    Ok((listener, bound))
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    peer_addr: Option<SocketAddr>,
    namespace: String,
    shutdown: watch::Sender<bool>,
    grace: Duration,
    tasks: JoinSet<()>,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    status: Arc<status::StatusController>,
    index: Arc<index::ObjectIndex>,
    liveness: Arc<liveness::Liveness>,
    ownership: Arc<membership::Ownership>,
}

/// Connects membership changes to the status controller, and counts Lease renewals.
struct Rebalancer {
    status: Arc<status::StatusController>,
    metrics: Arc<Metrics>,
}

impl membership::Rebalance for Rebalancer {
    fn rebalance(&self, old: &[membership::Member], new: &[membership::Member]) {
        self.status.rebalance(old, new);
    }

    fn writes_idle(&self) -> bool {
        self.status.writes_idle()
    }

    fn lease_renewed(&self, ok: bool) {
        self.metrics
            .lease_renewal(if ok { "success" } else { "failure" });
    }
}

impl Gateway {
    /// Binds the listeners and starts every task: the watch, the sweeper, the status writers,
    /// the event worker, membership and the HTTP servers. Readiness follows the first complete
    /// list and the first membership round. Membership uses `clients.membership` alone (its own
    /// connection pool: see [`kubeapi`]).
    pub async fn start(settings: Settings, clients: kubeapi::Clients) -> Result<Gateway, Error> {
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
        let (shutdown_tx, shutdown) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let credentials = start_revocations(&settings, &mut tasks, &shutdown)?;
        let tls = start_tls(&settings, &mut tasks, &shutdown)?;
        // Lease traffic (membership) has its own client and is not counted with the
        // DeviceProcess and Event requests.
        let kubeapi::Clients {
            api: client,
            membership: membership_client,
        } = clients;
        let client = kubeapi::counting_client(client, metrics.clone());
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let (listener, addr) = bind(settings.addr).await?;
        let (metrics_listener, metrics_addr) = bind(settings.metrics_addr).await?;
        let peer_listener = match settings.peer_addr {
            Some(peer_addr) => Some(bind(peer_addr).await?),
            None => None,
        };
        let peer_addr = peer_listener.as_ref().map(|(_, a)| *a);
        let readiness = Readiness::new();
        let ready_parts = membership::ReadyParts::new(readiness.clone());
        let id = settings.replica_id();
        let advertise_url = settings.advertise_url.clone().unwrap_or_else(|| {
            let reached = peer_addr.unwrap_or(addr);
            let ip = if reached.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                reached.ip()
            };
            format!("http://{}", SocketAddr::new(ip, reached.port()))
        });
        let ownership = membership::Ownership::new(&id);
        let instance = settings
            .instance
            .clone()
            .unwrap_or_else(|| "apollo-gateway".to_string());
        let (recorder, event_worker) = events::recorder_with_ownership(
            metrics.clone(),
            instance,
            settings.event_interval,
            ownership.clone(),
        );
        let liveness = Arc::new(liveness::Liveness::new(
            settings.stale_after,
            metrics.clone(),
        ));
        let index = Arc::new(index::ObjectIndex::new());
        let status = Arc::new(
            status::StatusController::with_ownership(
                index.clone(),
                liveness.clone(),
                recorder,
                metrics.clone(),
                settings.status_write_interval,
                ownership.clone(),
            )
            .with_observe_grace(settings.observe_grace),
        );
        let membership_config = membership::MembershipConfig {
            id: id.clone(),
            advertise_url: advertise_url.clone(),
            lease_duration: settings.lease_duration,
        };
        tasks.spawn(membership::run(
            Api::namespaced(membership_client, &namespace),
            ownership.clone(),
            Arc::new(Rebalancer {
                status: status.clone(),
                metrics: metrics.clone(),
            }),
            ready_parts.clone(),
            membership_config,
            shutdown.clone(),
            settings.shutdown_grace,
        ));
        let forwarder = forward::Forwarder::new(&id, settings.keys.clone(), metrics.clone());
        tasks.spawn(forwarder.clone().run(shutdown.clone()));
        let api: Api<apollo_api::lean::LeanProcess> = Api::namespaced(client.clone(), &namespace);
        tasks.spawn(sync::run_watch(
            api,
            index.clone(),
            status.clone(),
            ready_parts.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(sync::run_sweeper(
            liveness.clone(),
            status.clone(),
            ownership.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(status.clone().run_delays(shutdown.clone()));
        for _ in 0..settings.status_workers {
            tasks.spawn(status.clone().run_writer(
                client.clone(),
                shutdown.clone(),
                settings.shutdown_grace,
            ));
        }
        tasks.spawn(event_worker.run(client.clone(), shutdown.clone()));
        let state = Arc::new(http::HttpState {
            desired: index.clone(),
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
            max_long_polls_per_device: settings.max_long_polls_per_device,
            device_polls: Mutex::new(HashMap::new()),
            body_budget: limits::BodyBudget::new(settings.unauthenticated_body_budget),
            shutdown: shutdown.clone(),
            access_log: settings.access_log,
            credentials,
            ownership: ownership.clone(),
            forwarder,
            inbound: forward::Inbound::new(settings.auth_skew),
            forward_on_devices: peer_listener.is_none(),
        });
        let tls_on = tls.is_some();
        if tls_on && peer_listener.is_none() {
            tracing::warn!(
                "TLS on the device listener and no --peer-addr: peers cannot forward reports \
                 to this replica (forwarding speaks plain HTTP); set --peer-addr to run \
                 several replicas with TLS"
            );
        }
        tasks.spawn(http::serve(
            listener,
            tls,
            state.clone(),
            http::Role::Devices,
            http::ListenerLimits {
                header_timeout: settings.header_timeout,
                max_connections: settings.max_connections,
                max_connections_per_address: settings.max_connections_per_address,
                grace: settings.shutdown_grace,
            },
            shutdown.clone(),
        ));
        if let Some((peer_listener, _)) = peer_listener {
            // Plain HTTP: batches are authenticated and replay-protected by their signature.
            tasks.spawn(http::serve(
                peer_listener,
                None,
                state.clone(),
                http::Role::Peers,
                http::ListenerLimits {
                    header_timeout: settings.header_timeout,
                    max_connections: limits::PEER_MAX_CONNECTIONS,
                    max_connections_per_address: limits::PEER_PER_ADDRESS,
                    grace: settings.shutdown_grace,
                },
                shutdown.clone(),
            ));
        }
        tasks.spawn(http::serve(
            metrics_listener,
            None,
            state,
            http::Role::Metrics,
            http::ListenerLimits {
                header_timeout: settings.header_timeout,
                max_connections: limits::METRICS_MAX_CONNECTIONS,
                max_connections_per_address: limits::METRICS_PER_ADDRESS,
                grace: settings.shutdown_grace,
            },
            shutdown.clone(),
        ));
        tracing::info!(
            %addr,
            %metrics_addr,
            peer_addr = ?peer_addr,
            max_connections = settings.max_connections,
            open_file_limit = ?limits::open_file_limit(),
            namespace,
            tls = tls_on,
            min_auth_version = settings.min_auth_version.as_str(),
            id,
            advertise_url,
            lease_duration = %format_duration(settings.lease_duration),
            heartbeat = %format_duration(settings.heartbeat_interval),
            stale_after = %format_duration(settings.stale_after),
            key_ids = ?settings.keys.keys().iter().map(|k| k.id()).collect::<Vec<_>>(),
            "gateway listening"
        );
        Ok(Gateway {
            addr,
            metrics_addr,
            peer_addr,
            namespace,
            shutdown: shutdown_tx,
            grace: settings.shutdown_grace,
            tasks,
            metrics,
            readiness,
            status,
            index,
            liveness,
            ownership,
        })
    }

    /// Membership and device ownership (diagnostics and tests).
    pub fn ownership(&self) -> &Arc<membership::Ownership> {
        &self.ownership
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound address of the peer listener (`None` without `--peer-addr`).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// The bound address of `/healthz`, `/readyz` and `/metrics`.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
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

    /// The object index (diagnostics and tests).
    pub fn index(&self) -> &Arc<index::ObjectIndex> {
        &self.index
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
