//! Command line and environment: argh flags, each with an `APOLLO_` environment twin (the flag
//! wins), resolved through [`apollo_process::env`] so parsing is testable with `MapEnv`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use apollo_process::duration::{HumanDuration, format_duration};
use apollo_process::env::{Env, flag_or_env, switch_or_env};
use apollo_process::telemetry::LogFormat;
use apollo_protocol::keys::MasterKeyRing;
use argh::FromArgs;

use crate::{Settings, limits};

/// Default `--addr`.
pub const DEFAULT_ADDR: &str = ":8080";
/// Default `--metrics-addr`.
pub const DEFAULT_METRICS_ADDR: &str = ":9090";
/// Default `--heartbeat-interval`.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Default `--auth-skew` (see docs/PROTOCOL.md §3.3).
pub const DEFAULT_AUTH_SKEW: Duration = Duration::from_secs(60);
/// Least default `--header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The default `--header-timeout` for a heartbeat interval: at least 10 s and twice the
/// heartbeat. The header timeout also limits how long a keep-alive connection may sit idle
/// between requests (the server counts it from the end of the previous answer); an agent reuses its connection about once per heartbeat, so the
/// limit must stay clear of it or the gateway would close connections just as agents reuse
/// them.
pub fn default_header_timeout(heartbeat: Duration) -> Duration {
    (heartbeat * 2).max(DEFAULT_HEADER_TIMEOUT)
}
/// Default `--body-timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--max-long-polls`.
pub const DEFAULT_MAX_LONG_POLLS: usize = 120_000;
/// Default `--max-long-polls-per-device` (an agent holds one).
pub const DEFAULT_MAX_LONG_POLLS_PER_DEVICE: usize = 4;
/// Default `--status-write-interval`.
pub const DEFAULT_STATUS_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a spec change's `SpecObserved=False` waits for a connected agent to report the
/// new hash (`--observe-grace`).
pub const DEFAULT_OBSERVE_GRACE: Duration = Duration::from_secs(2);
/// Default `--event-interval`.
pub const DEFAULT_EVENT_INTERVAL: Duration = Duration::from_secs(60);
/// Most `--worker-threads`: more threads than this only add memory and contention.
pub const MAX_WORKER_THREADS: usize = 64;
/// Default `--status-workers`.
pub const DEFAULT_STATUS_WORKERS: usize = 8;
/// Default `--shutdown-grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default `--reload-interval`.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Apollo device gateway: serves each device's desired DeviceProcesses to its agent (ETag,
/// long poll, per-device HMAC) and turns the agents' reports into DeviceProcess status and
/// events. Every flag has an APOLLO_ environment twin (--stale-after → APOLLO_STALE_AFTER);
/// a flag wins over its variable. Durations are written like 500ms, 2s, 1m.
#[derive(FromArgs, Debug, Default, PartialEq)]
pub struct Cli {
    /// listen address HOST:PORT of the device API (":8080" = all interfaces; env
    /// APOLLO_ADDR; default :8080); it also takes reports forwarded by other replicas unless
    /// --peer-addr is set
    #[argh(option)]
    pub addr: Option<String>,
    /// listen address HOST:PORT of /healthz, /readyz and /metrics (env APOLLO_METRICS_ADDR;
    /// default :9090)
    #[argh(option)]
    pub metrics_addr: Option<String>,
    /// kubeconfig file; empty = in-cluster config; absent = KUBECONFIG, ~/.kube/config, then
    /// in-cluster (env APOLLO_KUBECONFIG)
    #[argh(option)]
    pub kubeconfig: Option<String>,
    /// namespace whose DeviceProcesses are served (env APOLLO_NAMESPACE; default: the pod's
    /// namespace, else the kubeconfig context's, else "default")
    #[argh(option)]
    pub namespace: Option<String>,
    /// file holding the master key ring, one `apollo-mk1:...` key per line, current first
    /// (env APOLLO_MASTER_KEY_FILE; required)
    #[argh(option)]
    pub master_key_file: Option<PathBuf>,
    /// heartbeat interval asked of agents (env APOLLO_HEARTBEAT_INTERVAL; default 10s)
    #[argh(option)]
    pub heartbeat_interval: Option<HumanDuration>,
    /// silence after which a device's agent is stale (env APOLLO_STALE_AFTER; default 3 x
    /// heartbeat interval)
    #[argh(option)]
    pub stale_after: Option<HumanDuration>,
    /// accepted clock skew of request timestamps (env APOLLO_AUTH_SKEW; default 60s)
    #[argh(option)]
    pub auth_skew: Option<HumanDuration>,
    /// time allowed to receive a request's headers, also the idle limit of keep-alive
    /// connections (env APOLLO_HEADER_TIMEOUT; default 2 x heartbeat interval, at least 10s)
    #[argh(option)]
    pub header_timeout: Option<HumanDuration>,
    /// time allowed to receive a request's body (env APOLLO_BODY_TIMEOUT; default 10s)
    #[argh(option)]
    pub body_timeout: Option<HumanDuration>,
    /// memory the gateway may use, bytes or a quantity like 1Gi (env APOLLO_MEMORY_LIMIT;
    /// default: the cgroup's limit); sizes the default --max-connections
    #[argh(option)]
    pub memory_limit: Option<String>,
    /// most open client connections; further ones wait in the accept backlog (env
    /// APOLLO_MAX_CONNECTIONS; default: half the memory limit at 16 KiB each, 150000 without
    /// a limit, and at most the open-file limit less 640 descriptors)
    #[argh(option)]
    pub max_connections: Option<usize>,
    /// most open connections from one source address, IPv6 per /64; more are closed at once
    /// (env APOLLO_MAX_CONNECTIONS_PER_ADDRESS; default 1024)
    #[argh(option)]
    pub max_connections_per_address: Option<usize>,
    /// request-body bytes held before authentication, all requests together, bytes or a
    /// quantity like 16Mi; more get 503 (env APOLLO_UNAUTHENTICATED_BODY_BUDGET; default 16Mi)
    #[argh(option)]
    pub unauthenticated_body_budget: Option<String>,
    /// most long polls held at once; more get 429 (env APOLLO_MAX_LONG_POLLS; default 120000)
    #[argh(option)]
    pub max_long_polls: Option<usize>,
    /// most long polls held for one device; more get 429 (env
    /// APOLLO_MAX_LONG_POLLS_PER_DEVICE; default 4)
    #[argh(option)]
    pub max_long_polls_per_device: Option<usize>,
    /// least time between two status writes of one DeviceProcess; changes in between are
    /// written together, latest state (env APOLLO_STATUS_WRITE_INTERVAL; default 1s)
    #[argh(option)]
    pub status_write_interval: Option<HumanDuration>,
    /// how long the SpecObserved=False of a spec change waits for a connected agent to report
    /// the new hash, so that a rollout costs one status write per device; 0s writes it at once
    /// (env APOLLO_OBSERVE_GRACE; default 2s)
    #[argh(option)]
    pub observe_grace: Option<HumanDuration>,
    /// least time between two Events with the same DeviceProcess and reason; repeats in
    /// between are counted into the next one (env APOLLO_EVENT_INTERVAL; default 1m)
    #[argh(option)]
    pub event_interval: Option<HumanDuration>,
    /// concurrent DeviceProcess status writers (env APOLLO_STATUS_WORKERS; default 8)
    #[argh(option)]
    pub status_workers: Option<usize>,
    /// time given to open requests and pending status writes at shutdown (env
    /// APOLLO_SHUTDOWN_GRACE; default 10s)
    #[argh(option)]
    pub shutdown_grace: Option<HumanDuration>,
    /// log format: text or json (env APOLLO_LOG_FORMAT; default text; filter with RUST_LOG)
    #[argh(option)]
    pub log_format: Option<String>,
    /// threads of the async runtime, 1 to 64 (env APOLLO_WORKER_THREADS; default: the CPUs
    /// available); one costs the least CPU per request below a few thousand requests/s
    #[argh(option)]
    pub worker_threads: Option<usize>,
    /// log one line per device request: method, path, status, time (env APOLLO_ACCESS_LOG;
    /// default off — at fleet scale this is a line per heartbeat)
    #[argh(switch)]
    pub access_log: bool,
    /// serve TLS (1.2 and 1.3) with this PEM certificate chain, re-read when it changes;
    /// needs --tls-key-file (env APOLLO_TLS_CERT_FILE; default: plain HTTP)
    #[argh(option)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file (env APOLLO_TLS_KEY_FILE)
    #[argh(option)]
    pub tls_key_file: Option<PathBuf>,
    /// revocation file: lines `<device> <lowest accepted key epoch>`, re-read when it changes
    /// (env APOLLO_REVOCATION_FILE; default: none)
    #[argh(option)]
    pub revocation_file: Option<PathBuf>,
    /// lowest accepted request signature version, v1 or v2; v2 once every agent signs v2
    /// (env APOLLO_MIN_AUTH_VERSION; default v1)
    #[argh(option)]
    pub min_auth_version: Option<String>,
    /// how often the TLS and revocation files are checked for changes (env
    /// APOLLO_RELOAD_INTERVAL; default 5s)
    #[argh(option)]
    pub reload_interval: Option<HumanDuration>,
    /// this replica's id, a DNS-1123 subdomain of at most 200 characters; its Lease is
    /// apollo-gateway-\<id\> (env APOLLO_GATEWAY_ID; default: POD_NAME, then the hostname)
    #[argh(option)]
    pub id: Option<String>,
    /// listen address HOST:PORT of the peer listener: plain HTTP, reports forwarded by other
    /// replicas only (signed with the replica key), which the device listener then no longer
    /// takes; needed for several replicas with TLS (env APOLLO_PEER_ADDR; default: none)
    #[argh(option)]
    pub peer_addr: Option<String>,
    /// URL other replicas reach this one at, for forwarded reports (env
    /// APOLLO_ADVERTISE_URL; default: http://POD_IP:<port of --peer-addr, else of --addr>,
    /// else the bound address)
    #[argh(option)]
    pub advertise_url: Option<String>,
    /// duration of this replica's Lease; renewed every quarter of it, writes stop after two
    /// thirds without renewal, peers take over after all of it (env APOLLO_LEASE_DURATION;
    /// default 15s)
    #[argh(option)]
    pub lease_duration: Option<HumanDuration>,
    #[argh(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum Command {
    Keys(KeysCommand),
}

/// Provision keys: `keys generate` prints a new master key, `keys derive` a device key.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "keys")]
pub struct KeysCommand {
    #[argh(subcommand)]
    pub action: KeysAction,
}

/// `keys` actions.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum KeysAction {
    Generate(GenerateCommand),
    Derive(DeriveCommand),
}

/// Print a new random master key (one line, `apollo-mk1:<key-id>:<secret>`) to stdout.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "generate")]
pub struct GenerateCommand {
    /// key id (1-32 of A-Z a-z 0-9 - _; default: k + 8 random hex characters)
    #[argh(option)]
    pub key_id: Option<String>,
}

/// Print a device's key (`apollo-dk1:<key-id>:<device>:<secret>`, the form the agent takes
/// in APOLLO_DEVICE_KEY or APOLLO_DEVICE_KEY_FILE) derived from the current master key.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "derive")]
pub struct DeriveCommand {
    /// master key ring file (env APOLLO_MASTER_KEY_FILE)
    #[argh(option)]
    pub master_key_file: Option<PathBuf>,
    /// device name, the DeviceProcesses' spec.deviceRef.name (env APOLLO_DEVICE_NAME)
    #[argh(option)]
    pub device: Option<String>,
    /// derive from this key id of the ring instead of the current (first) key
    #[argh(option)]
    pub key_id: Option<String>,
    /// key epoch: 0 (default) is the device's original key; N re-issues it, so that the
    /// revocation file can refuse its keys below N (docs/PROTOCOL.md §2.3)
    #[argh(option)]
    pub epoch: Option<u32>,
}

/// Errors of the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Runtime(#[from] apollo_process::ConfigError),
    #[error("invalid {flag} {value:?}: expected HOST:PORT or :PORT")]
    Addr { flag: &'static str, value: String },
    #[error("a master key ring is required: --master-key-file or APOLLO_MASTER_KEY_FILE")]
    MissingMasterKey,
    #[error("cannot read master key file {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("master key file {path}: {source}")]
    BadKey {
        path: PathBuf,
        source: apollo_protocol::keys::KeyError,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The serving configuration resolved from flags and environment.
#[derive(Debug)]
pub struct ServeConfig {
    pub settings: Settings,
    /// `Some("")`: in-cluster; `Some(path)`; `None`: kube's inference.
    pub kubeconfig: Option<String>,
    pub log_format: LogFormat,
    /// Threads of the async runtime; `None`: tokio's default (the CPUs available).
    pub worker_threads: Option<usize>,
}

/// Boolean flags, for [`apollo_process::args::split_equals`] (`--access-log=true`).
pub const SWITCHES: &[&str] = &["--access-log"];

/// [`apollo_process::args::split_equals`] with this binary's switches (`--flag=value` as
/// manifests write it); an invalid switch value is left for argh to refuse.
pub fn split_equals(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let args: Vec<String> = args.into_iter().collect();
    apollo_process::args::split_equals(args.clone(), SWITCHES).unwrap_or(args)
}

/// Parses the listen address given to `flag`: `:8080` (all interfaces), `HOST:PORT`, `localhost:PORT`.
pub fn parse_addr(flag: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    let bad = || ConfigError::Addr {
        flag,
        value: text.to_string(),
    };
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(bad())
}

/// Reads a master key ring file.
pub fn read_key_ring(path: &std::path::Path) -> Result<MasterKeyRing, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadKey {
        path: path.to_path_buf(),
        source,
    })?;
    MasterKeyRing::parse(&text).map_err(|source| ConfigError::BadKey {
        path: path.to_path_buf(),
        source,
    })
}

fn duration(
    flag: Option<HumanDuration>,
    env: &dyn Env,
    key: &str,
) -> Result<Option<Duration>, ConfigError> {
    Ok(flag_or_env(flag, env, key)?.map(|d| d.0))
}

impl Cli {
    /// Resolves the serving configuration (flags, then `APOLLO_*` variables, then defaults).
    pub fn serve_config(&self, env: &dyn Env) -> Result<ServeConfig, ConfigError> {
        let addr_text = flag_or_env(self.addr.clone(), env, "APOLLO_ADDR")?
            .unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let addr = parse_addr("--addr", &addr_text)?;
        let metrics_text = flag_or_env(self.metrics_addr.clone(), env, "APOLLO_METRICS_ADDR")?
            .unwrap_or_else(|| DEFAULT_METRICS_ADDR.to_string());
        let metrics_addr = parse_addr("--metrics-addr", &metrics_text)?;
        let peer_addr = match flag_or_env(self.peer_addr.clone(), env, "APOLLO_PEER_ADDR")?
            .filter(|a| !a.is_empty())
        {
            Some(text) => Some(parse_addr("--peer-addr", &text)?),
            None => None,
        };
        let kubeconfig = flag_or_env(self.kubeconfig.clone(), env, "APOLLO_KUBECONFIG")?;
        let namespace = flag_or_env(self.namespace.clone(), env, "APOLLO_NAMESPACE")?
            .filter(|ns| !ns.is_empty());
        let key_file = flag_or_env(self.master_key_file.clone(), env, "APOLLO_MASTER_KEY_FILE")?
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or(ConfigError::MissingMasterKey)?;
        let keys = read_key_ring(&key_file)?;
        let heartbeat_interval =
            duration(self.heartbeat_interval, env, "APOLLO_HEARTBEAT_INTERVAL")?
                .unwrap_or(DEFAULT_HEARTBEAT);
        let stale_after = duration(self.stale_after, env, "APOLLO_STALE_AFTER")?
            .unwrap_or(heartbeat_interval * 3);
        let auth_skew =
            duration(self.auth_skew, env, "APOLLO_AUTH_SKEW")?.unwrap_or(DEFAULT_AUTH_SKEW);
        let header_timeout = duration(self.header_timeout, env, "APOLLO_HEADER_TIMEOUT")?
            .unwrap_or_else(|| default_header_timeout(heartbeat_interval));
        let body_timeout = duration(self.body_timeout, env, "APOLLO_BODY_TIMEOUT")?
            .unwrap_or(DEFAULT_BODY_TIMEOUT);
        let memory_limit = match flag_or_env(self.memory_limit.clone(), env, "APOLLO_MEMORY_LIMIT")?
        {
            Some(text) => Some(limits::parse_memory(&text).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "invalid --memory-limit {text:?}: expected bytes or a quantity like 1Gi"
                ))
            })?),
            None => limits::cgroup_memory_limit(),
        };
        let max_connections = flag_or_env(self.max_connections, env, "APOLLO_MAX_CONNECTIONS")?
            .unwrap_or_else(|| {
                limits::descriptor_bound(
                    limits::default_max_connections(memory_limit),
                    limits::open_file_limit(),
                )
            });
        let max_connections_per_address = flag_or_env(
            self.max_connections_per_address,
            env,
            "APOLLO_MAX_CONNECTIONS_PER_ADDRESS",
        )?
        .unwrap_or(limits::DEFAULT_PER_ADDRESS);
        let unauthenticated_body_budget = match flag_or_env(
            self.unauthenticated_body_budget.clone(),
            env,
            "APOLLO_UNAUTHENTICATED_BODY_BUDGET",
        )? {
            Some(text) => limits::parse_memory(&text)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "invalid --unauthenticated-body-budget {text:?}: expected bytes or a \
                         quantity like 16Mi"
                    ))
                })?,
            None => limits::DEFAULT_BODY_BUDGET,
        };
        let max_long_polls = flag_or_env(self.max_long_polls, env, "APOLLO_MAX_LONG_POLLS")?
            .unwrap_or(DEFAULT_MAX_LONG_POLLS);
        let max_long_polls_per_device = flag_or_env(
            self.max_long_polls_per_device,
            env,
            "APOLLO_MAX_LONG_POLLS_PER_DEVICE",
        )?
        .unwrap_or(DEFAULT_MAX_LONG_POLLS_PER_DEVICE);
        let status_write_interval = duration(
            self.status_write_interval,
            env,
            "APOLLO_STATUS_WRITE_INTERVAL",
        )?
        .unwrap_or(DEFAULT_STATUS_WRITE_INTERVAL);
        let observe_grace = duration(self.observe_grace, env, "APOLLO_OBSERVE_GRACE")?
            .unwrap_or(DEFAULT_OBSERVE_GRACE);
        let event_interval = duration(self.event_interval, env, "APOLLO_EVENT_INTERVAL")?
            .unwrap_or(DEFAULT_EVENT_INTERVAL);
        let status_workers = flag_or_env(self.status_workers, env, "APOLLO_STATUS_WORKERS")?
            .unwrap_or(DEFAULT_STATUS_WORKERS);
        let shutdown_grace = duration(self.shutdown_grace, env, "APOLLO_SHUTDOWN_GRACE")?
            .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
        let log_format = flag_or_env(self.log_format.clone(), env, "APOLLO_LOG_FORMAT")?
            .unwrap_or_else(|| "text".to_string());
        let log_format: LogFormat = log_format.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "invalid log format {log_format:?}: expected text or json"
            ))
        })?;
        let tls_cert = flag_or_env(self.tls_cert_file.clone(), env, "APOLLO_TLS_CERT_FILE")?
            .filter(|p| !p.as_os_str().is_empty());
        let tls_key = flag_or_env(self.tls_key_file.clone(), env, "APOLLO_TLS_KEY_FILE")?
            .filter(|p| !p.as_os_str().is_empty());
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "--tls-cert-file and --tls-key-file go together: set both or neither".into(),
                ));
            }
        };
        let revocation_file =
            flag_or_env(self.revocation_file.clone(), env, "APOLLO_REVOCATION_FILE")?
                .filter(|p| !p.as_os_str().is_empty());
        let min_auth_version = match flag_or_env(
            self.min_auth_version.clone(),
            env,
            "APOLLO_MIN_AUTH_VERSION",
        )?
        .as_deref()
        {
            None | Some("v1") => apollo_protocol::auth::AuthVersion::V1,
            Some("v2") => apollo_protocol::auth::AuthVersion::V2,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "invalid --min-auth-version {other:?}: expected v1 or v2"
                )));
            }
        };
        let reload_interval = duration(self.reload_interval, env, "APOLLO_RELOAD_INTERVAL")?
            .unwrap_or(DEFAULT_RELOAD_INTERVAL);
        let hostname = env
            .var("POD_NAME")
            .or_else(|| env.var("HOSTNAME"))
            .filter(|h| !h.is_empty());
        let id = flag_or_env(self.id.clone(), env, "APOLLO_GATEWAY_ID")?
            .filter(|i| !i.is_empty())
            .or_else(|| hostname.clone().map(|h| h.to_ascii_lowercase()));
        let advertise_url =
            match flag_or_env(self.advertise_url.clone(), env, "APOLLO_ADVERTISE_URL")?
                .filter(|u| !u.is_empty())
            {
                Some(u) => Some(u),
                None => env.var("POD_IP").filter(|ip| !ip.is_empty()).map(|ip| {
                    let host = if ip.contains(':') {
                        format!("[{ip}]")
                    } else {
                        ip
                    };
                    let port = peer_addr.unwrap_or(addr).port();
                    format!("http://{host}:{port}")
                }),
            };
        let lease_duration = duration(self.lease_duration, env, "APOLLO_LEASE_DURATION")?
            .unwrap_or(crate::membership::DEFAULT_LEASE_DURATION);
        let settings = Settings {
            id,
            advertise_url,
            lease_duration,
            tls,
            revocation_file,
            min_auth_version,
            reload_interval,
            addr,
            metrics_addr,
            peer_addr,
            namespace,
            keys,
            heartbeat_interval,
            stale_after,
            auth_skew,
            header_timeout,
            body_timeout,
            max_connections,
            max_connections_per_address,
            unauthenticated_body_budget,
            max_long_polls,
            max_long_polls_per_device,
            status_write_interval,
            observe_grace,
            event_interval,
            status_workers,
            shutdown_grace,
            access_log: switch_or_env(self.access_log, env, "APOLLO_ACCESS_LOG")?,
            instance: hostname,
        };
        settings.validate()?;
        let worker_threads = flag_or_env(self.worker_threads, env, "APOLLO_WORKER_THREADS")?;
        if let Some(n) = worker_threads
            && !(1..=MAX_WORKER_THREADS).contains(&n)
        {
            return Err(ConfigError::Invalid(format!(
                "--worker-threads {n}: expected 1 to {MAX_WORKER_THREADS}"
            )));
        }
        Ok(ServeConfig {
            settings,
            kubeconfig,
            log_format,
            worker_threads,
        })
    }
}

impl Settings {
    /// Checks relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.heartbeat_interval < Duration::from_millis(10) {
            return invalid(format!(
                "--heartbeat-interval {} is too short (at least 10ms)",
                format_duration(self.heartbeat_interval)
            ));
        }
        if self.stale_after < self.heartbeat_interval {
            return invalid(format!(
                "--stale-after {} must be at least --heartbeat-interval {}",
                format_duration(self.stale_after),
                format_duration(self.heartbeat_interval)
            ));
        }
        if self.auth_skew < Duration::from_secs(1) {
            return invalid("--auth-skew must be at least 1s".into());
        }
        for (name, d) in [
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--reload-interval", self.reload_interval),
        ] {
            if d.is_zero() {
                return invalid(format!("{name} must be more than 0s"));
            }
        }
        if self.max_connections == 0
            || self.max_connections_per_address == 0
            || self.max_long_polls == 0
            || self.max_long_polls_per_device == 0
            || self.status_workers == 0
        {
            return invalid(
                "--max-connections, --max-connections-per-address, --max-long-polls, \
                 --max-long-polls-per-device and --status-workers must be at least 1"
                    .into(),
            );
        }
        if self.unauthenticated_body_budget < apollo_protocol::wire::MAX_REQUEST_BODY {
            return invalid(format!(
                "--unauthenticated-body-budget must hold at least one request body ({} bytes)",
                apollo_protocol::wire::MAX_REQUEST_BODY
            ));
        }
        let id = self.replica_id();
        if !apollo_protocol::replica::valid_replica_id(&id)
            || id.len() > crate::membership::MAX_ID_LEN
        {
            return invalid(format!(
                "invalid --id {id:?}: expected a DNS-1123 subdomain (a-z, 0-9, '-', '.') of at \
                 most {} characters",
                crate::membership::MAX_ID_LEN
            ));
        }
        if let Some(url) = &self.advertise_url {
            let ok = url
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|u| u.scheme_str() == Some("http") && u.authority().is_some());
            if !ok {
                return invalid(format!(
                    "invalid --advertise-url {url:?}: expected http://HOST:PORT"
                ));
            }
        }
        if self.lease_duration < Duration::from_secs(1) {
            return invalid(format!(
                "--lease-duration {} is too short (at least 1s)",
                format_duration(self.lease_duration)
            ));
        }
        if self.addr.port() != 0 && self.addr == self.metrics_addr {
            return invalid("--addr and --metrics-addr must differ".into());
        }
        if let Some(peer) = self.peer_addr
            && peer.port() != 0
            && (peer == self.addr || peer == self.metrics_addr)
        {
            return invalid("--peer-addr must differ from --addr and --metrics-addr".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_process::env::MapEnv;
    use apollo_protocol::keys::MasterKey;

    fn key_file() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            format!("{}\n", MasterKey::new("k1", [3; 32]).unwrap()),
        )
        .unwrap();
        f
    }

    fn parse(args: &[&str]) -> Result<Cli, argh::EarlyExit> {
        let args = split_equals(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Cli::from_args(&["apollo-gateway"], &refs)
    }

    #[test]
    fn replica_flags_and_their_defaults() {
        let f = key_file();
        let key = f.path().to_str().unwrap();
        // In a pod: the id from POD_NAME, the advertise URL from POD_IP and the port of --addr.
        let env = MapEnv::from_pairs([
            ("APOLLO_MASTER_KEY_FILE", key),
            ("POD_NAME", "apollo-deviceprocess-gateway-7d9f-x2k"),
            ("POD_IP", "10.1.2.3"),
        ]);
        let c = parse(&["--addr=:8081"])
            .unwrap()
            .serve_config(&env)
            .unwrap();
        let s = &c.settings;
        assert_eq!(s.replica_id(), "apollo-deviceprocess-gateway-7d9f-x2k");
        assert_eq!(s.advertise_url.as_deref(), Some("http://10.1.2.3:8081"));
        assert_eq!(s.lease_duration, Duration::from_secs(15));
        let env6 = MapEnv::from_pairs([("APOLLO_MASTER_KEY_FILE", key), ("POD_IP", "fd00::7")]);
        let c = parse(&[]).unwrap().serve_config(&env6).unwrap();
        assert_eq!(
            c.settings.advertise_url.as_deref(),
            Some("http://[fd00::7]:8080")
        );
        // Env twins, and flags winning over them.
        let env = MapEnv::from_pairs([
            ("APOLLO_MASTER_KEY_FILE", key),
            ("APOLLO_GATEWAY_ID", "gw-env"),
            ("APOLLO_ADVERTISE_URL", "http://gw-env:8080"),
            ("APOLLO_LEASE_DURATION", "4s"),
        ]);
        let c = parse(&[]).unwrap().serve_config(&env).unwrap();
        assert_eq!(c.settings.replica_id(), "gw-env");
        assert_eq!(
            c.settings.advertise_url.as_deref(),
            Some("http://gw-env:8080")
        );
        assert_eq!(c.settings.lease_duration, Duration::from_secs(4));
        let c = parse(&[
            "--id",
            "gw-flag",
            "--advertise-url=http://1.2.3.4:80",
            "--lease-duration",
            "2s",
        ])
        .unwrap()
        .serve_config(&env)
        .unwrap();
        assert_eq!(c.settings.replica_id(), "gw-flag");
        assert_eq!(
            c.settings.advertise_url.as_deref(),
            Some("http://1.2.3.4:80")
        );
        assert_eq!(c.settings.lease_duration, Duration::from_secs(2));
        // Clear errors naming the flag.
        let base = MapEnv::from_pairs([("APOLLO_MASTER_KEY_FILE", key)]);
        for (args, needle) in [
            (vec!["--id", "Not_An_Id"], "--id"),
            (vec!["--advertise-url", "ftp://x"], "--advertise-url"),
            (vec!["--advertise-url", "https://x:8080"], "--advertise-url"),
            (vec!["--lease-duration", "500ms"], "--lease-duration"),
        ] {
            let err = parse(&args)
                .unwrap()
                .serve_config(&base)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn peer_listener_flag_and_the_advertise_url_it_implies() {
        let f = key_file();
        let key = f.path().to_str().unwrap();
        // Without it: no peer listener, the advertise URL names the device port (as before).
        let pod = MapEnv::from_pairs([("APOLLO_MASTER_KEY_FILE", key), ("POD_IP", "10.1.2.3")]);
        let c = parse(&[]).unwrap().serve_config(&pod).unwrap();
        assert_eq!(c.settings.peer_addr, None);
        assert_eq!(
            c.settings.advertise_url.as_deref(),
            Some("http://10.1.2.3:8080")
        );
        // The flag: the default advertise URL follows the peer port.
        let c = parse(&["--peer-addr=:8081"])
            .unwrap()
            .serve_config(&pod)
            .unwrap();
        assert_eq!(c.settings.peer_addr, Some("0.0.0.0:8081".parse().unwrap()));
        assert_eq!(
            c.settings.advertise_url.as_deref(),
            Some("http://10.1.2.3:8081")
        );
        // The env twin, and the flag winning over it.
        let env = MapEnv::from_pairs([
            ("APOLLO_MASTER_KEY_FILE", key),
            ("POD_IP", "fd00::7"),
            ("APOLLO_PEER_ADDR", "127.0.0.1:7000"),
        ]);
        let c = parse(&[]).unwrap().serve_config(&env).unwrap();
        assert_eq!(
            c.settings.peer_addr,
            Some("127.0.0.1:7000".parse().unwrap())
        );
        assert_eq!(
            c.settings.advertise_url.as_deref(),
            Some("http://[fd00::7]:7000")
        );
        let c = parse(&["--peer-addr", ":7001"])
            .unwrap()
            .serve_config(&env)
            .unwrap();
        assert_eq!(c.settings.peer_addr, Some("0.0.0.0:7001".parse().unwrap()));
        // An explicit advertise URL still wins.
        let c = parse(&["--peer-addr=:8081", "--advertise-url=http://gw-0.gw:9999"])
            .unwrap()
            .serve_config(&pod)
            .unwrap();
        assert_eq!(
            c.settings.advertise_url.as_deref(),
            Some("http://gw-0.gw:9999")
        );
        // Errors name the flag.
        for args in [
            vec!["--peer-addr", "nonsense"],
            vec!["--peer-addr", ":8080"],
            vec!["--peer-addr", ":9090"],
        ] {
            let err = parse(&args)
                .unwrap()
                .serve_config(&pod)
                .unwrap_err()
                .to_string();
            assert!(err.contains("--peer-addr"), "{args:?}: {err}");
        }
    }

    #[test]
    fn defaults() {
        let f = key_file();
        let env = MapEnv::from_pairs([("APOLLO_MASTER_KEY_FILE", f.path().to_str().unwrap())]);
        let c = parse(&[]).unwrap().serve_config(&env).unwrap();
        let s = &c.settings;
        assert_eq!(s.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(s.stale_after, Duration::from_secs(30));
        assert_eq!(s.namespace, None);
        assert_eq!(s.keys.current().id(), "k1");
        assert_eq!(c.kubeconfig, None);
        assert_eq!(s.auth_skew, Duration::from_secs(60));
        assert_eq!(s.header_timeout, Duration::from_secs(20));
        assert_eq!(s.metrics_addr, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(s.max_connections_per_address, 1024);
        assert_eq!(s.max_long_polls_per_device, 4);
        assert_eq!(s.unauthenticated_body_budget, 16 << 20);
        assert_eq!(s.status_write_interval, Duration::from_secs(1));
        assert_eq!(s.observe_grace, Duration::from_secs(2));
        assert_eq!(s.event_interval, Duration::from_secs(60));
        // --max-connections follows the memory limit: half of it at 16 KiB per connection.
        let env = MapEnv::from_pairs([
            ("APOLLO_MASTER_KEY_FILE", f.path().to_str().unwrap()),
            ("APOLLO_MEMORY_LIMIT", "1Gi"),
        ]);
        let c = parse(&[]).unwrap().serve_config(&env).unwrap();
        // ... and the open-file limit, less the reserve.
        let fds = limits::open_file_limit();
        assert_eq!(
            c.settings.max_connections,
            limits::descriptor_bound(32_767, fds)
        );
        let c = parse(&["--memory-limit", "256Mi"])
            .unwrap()
            .serve_config(&env)
            .unwrap();
        assert_eq!(
            c.settings.max_connections,
            limits::descriptor_bound(8_191, fds)
        );
        let err = parse(&["--memory-limit", "lots"])
            .unwrap()
            .serve_config(&env)
            .unwrap_err();
        assert!(err.to_string().contains("--memory-limit"), "{err}");
        let err = parse(&["--metrics-addr", ":8080"])
            .unwrap()
            .serve_config(&env)
            .unwrap_err();
        assert!(err.to_string().contains("--metrics-addr"), "{err}");
    }

    #[test]
    fn flags_win_over_env_and_stale_follows_heartbeat() {
        let f = key_file();
        let path = f.path().to_str().unwrap();
        let env = MapEnv::from_pairs([
            ("APOLLO_ADDR", "127.0.0.1:9000"),
            ("APOLLO_HEARTBEAT_INTERVAL", "2s"),
            ("APOLLO_NAMESPACE", "fleet"),
            ("APOLLO_KUBECONFIG", "/env/kubeconfig"),
        ]);
        let cli = parse(&[
            "--addr",
            ":18080",
            "--master-key-file",
            path,
            "--kubeconfig=",
        ])
        .unwrap();
        let c = cli.serve_config(&env).unwrap();
        assert_eq!(c.settings.addr, "0.0.0.0:18080".parse().unwrap());
        assert_eq!(c.settings.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(c.settings.stale_after, Duration::from_secs(6));
        assert_eq!(c.settings.namespace.as_deref(), Some("fleet"));
        assert_eq!(c.kubeconfig.as_deref(), Some(""), "empty flag = in-cluster");
        let cli = parse(&[
            "--master-key-file",
            path,
            "--heartbeat-interval",
            "500ms",
            "--stale-after",
            "2s",
        ])
        .unwrap();
        let c = cli.serve_config(&env).unwrap();
        assert_eq!(c.settings.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.settings.stale_after, Duration::from_secs(2));
        assert_eq!(c.kubeconfig.as_deref(), Some("/env/kubeconfig"));
        assert_eq!(c.settings.addr, "127.0.0.1:9000".parse().unwrap());
    }

    #[test]
    fn every_flag_has_an_env_twin() {
        let f = key_file();
        let env = MapEnv::from_pairs([
            ("APOLLO_MASTER_KEY_FILE", f.path().to_str().unwrap()),
            ("APOLLO_STALE_AFTER", "1m"),
            ("APOLLO_AUTH_SKEW", "30s"),
            ("APOLLO_HEADER_TIMEOUT", "1s"),
            ("APOLLO_BODY_TIMEOUT", "2s"),
            ("APOLLO_MAX_CONNECTIONS", "10"),
            ("APOLLO_MAX_LONG_POLLS", "5"),
            ("APOLLO_METRICS_ADDR", "127.0.0.1:9191"),
            ("APOLLO_MAX_CONNECTIONS_PER_ADDRESS", "7"),
            ("APOLLO_UNAUTHENTICATED_BODY_BUDGET", "1Mi"),
            ("APOLLO_MAX_LONG_POLLS_PER_DEVICE", "2"),
            ("APOLLO_STATUS_WRITE_INTERVAL", "250ms"),
            ("APOLLO_OBSERVE_GRACE", "0s"),
            ("APOLLO_EVENT_INTERVAL", "5s"),
            ("APOLLO_STATUS_WORKERS", "2"),
            ("APOLLO_SHUTDOWN_GRACE", "3s"),
            ("APOLLO_LOG_FORMAT", "json"),
            ("APOLLO_ACCESS_LOG", "true"),
            ("APOLLO_WORKER_THREADS", "1"),
        ]);
        let c = parse(&[]).unwrap().serve_config(&env).unwrap();
        let s = &c.settings;
        assert_eq!(s.stale_after, Duration::from_secs(60));
        assert_eq!(s.auth_skew, Duration::from_secs(30));
        assert_eq!(s.header_timeout, Duration::from_secs(1));
        assert_eq!(s.body_timeout, Duration::from_secs(2));
        assert_eq!(s.max_connections, 10);
        assert_eq!(s.max_long_polls, 5);
        assert_eq!(s.metrics_addr, "127.0.0.1:9191".parse().unwrap());
        assert_eq!(s.max_connections_per_address, 7);
        assert_eq!(s.unauthenticated_body_budget, 1 << 20);
        assert_eq!(s.max_long_polls_per_device, 2);
        assert_eq!(s.status_write_interval, Duration::from_millis(250));
        assert_eq!(s.observe_grace, Duration::ZERO);
        assert_eq!(s.event_interval, Duration::from_secs(5));
        assert_eq!(s.status_workers, 2);
        assert_eq!(s.shutdown_grace, Duration::from_secs(3));
        assert!(matches!(c.log_format, LogFormat::Json));
        assert_eq!(c.worker_threads, Some(1));
        assert!(s.access_log);
        assert!(
            !parse(&[])
                .unwrap()
                .serve_config(&MapEnv::from_pairs([(
                    "APOLLO_MASTER_KEY_FILE",
                    f.path().to_str().unwrap()
                )]))
                .unwrap()
                .settings
                .access_log
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let f = key_file();
        let path = f.path().to_str().unwrap();
        let none = MapEnv::default();
        let err = parse(&[]).unwrap().serve_config(&none).unwrap_err();
        assert!(matches!(err, ConfigError::MissingMasterKey), "{err}");
        let env = MapEnv::from_pairs([
            ("APOLLO_MASTER_KEY_FILE", path),
            ("APOLLO_STALE_AFTER", "30"),
        ]);
        let err = parse(&[]).unwrap().serve_config(&env).unwrap_err();
        assert!(err.to_string().contains("APOLLO_STALE_AFTER"), "{err}");
        let err = parse(&["--master-key-file", path, "--addr", "nonsense"])
            .unwrap()
            .serve_config(&none)
            .unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
        assert!(err.to_string().starts_with("invalid --addr "), "{err}");
        let err = parse(&["--master-key-file", path, "--metrics-addr", "nonsense"])
            .unwrap()
            .serve_config(&none)
            .unwrap_err();
        assert!(
            err.to_string().starts_with("invalid --metrics-addr "),
            "{err}"
        );
        let err = parse(&[
            "--master-key-file",
            path,
            "--heartbeat-interval",
            "10s",
            "--stale-after",
            "5s",
        ])
        .unwrap()
        .serve_config(&none)
        .unwrap_err();
        assert!(err.to_string().contains("--stale-after"), "{err}");
        assert!(parse(&["--heartbeat-interval", "10"]).is_err());
        // A bad key file is reported without its content.
        let bad = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(bad.path(), "apollo-mk1:k1:c2VjcmV0\n").unwrap();
        let err = parse(&["--master-key-file", bad.path().to_str().unwrap()])
            .unwrap()
            .serve_config(&none)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn tls_revocation_and_auth_version_flags() {
        let f = key_file();
        let path = f.path().to_str().unwrap();
        let none = MapEnv::default();
        let c = parse(&["--master-key-file", path])
            .unwrap()
            .serve_config(&none)
            .unwrap();
        assert_eq!(c.settings.tls, None);
        assert_eq!(c.settings.revocation_file, None);
        assert_eq!(
            c.settings.min_auth_version,
            apollo_protocol::auth::AuthVersion::V1
        );
        assert_eq!(c.settings.reload_interval, DEFAULT_RELOAD_INTERVAL);
        let env = MapEnv::from_pairs([
            ("APOLLO_TLS_CERT_FILE", "/tls/tls.crt"),
            ("APOLLO_TLS_KEY_FILE", "/tls/tls.key"),
            ("APOLLO_REVOCATION_FILE", "/rev/revoked"),
            ("APOLLO_MIN_AUTH_VERSION", "v2"),
            ("APOLLO_RELOAD_INTERVAL", "1s"),
        ]);
        let c = parse(&["--master-key-file", path])
            .unwrap()
            .serve_config(&env)
            .unwrap();
        assert_eq!(
            c.settings.tls,
            Some(crate::tls::TlsFiles {
                cert: "/tls/tls.crt".into(),
                key: "/tls/tls.key".into()
            })
        );
        assert_eq!(c.settings.revocation_file, Some("/rev/revoked".into()));
        assert_eq!(
            c.settings.min_auth_version,
            apollo_protocol::auth::AuthVersion::V2
        );
        assert_eq!(c.settings.reload_interval, Duration::from_secs(1));
        for (args, needle) in [
            (vec!["--tls-cert-file", "/c"], "go together"),
            (vec!["--tls-key-file", "/k"], "go together"),
            (vec!["--min-auth-version", "v3"], "--min-auth-version"),
            (vec!["--reload-interval", "0s"], "--reload-interval"),
            (
                vec!["--worker-threads", "0"],
                "--worker-threads 0: expected 1 to 64",
            ),
            (
                vec!["--worker-threads", "65"],
                "--worker-threads 65: expected 1 to 64",
            ),
        ] {
            let mut all = vec!["--master-key-file", path];
            all.extend(args);
            let err = parse(&all).unwrap().serve_config(&none).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn equals_form_is_accepted() {
        let args = split_equals(
            [
                "--addr=:8080",
                "--kubeconfig=",
                "keys",
                "--device",
                "a=b",
                "--",
                "--x=y",
            ]
            .map(String::from),
        );
        assert_eq!(
            args,
            [
                "--addr",
                ":8080",
                "--kubeconfig",
                "",
                "keys",
                "--device",
                "a=b",
                "--",
                "--x=y"
            ]
        );
        let f = key_file();
        let key = format!("--master-key-file={}", f.path().display());
        let args = split_equals(["--addr=:8080".to_string(), "--kubeconfig=".into(), key]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = parse(&refs)
            .unwrap()
            .serve_config(&MapEnv::default())
            .unwrap();
        assert_eq!(c.settings.addr.port(), 8080);
        assert_eq!(c.kubeconfig.as_deref(), Some(""));
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("--addr", ":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse_addr("--addr", "localhost:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert_eq!(
            parse_addr("--addr", "[::]:80").unwrap(),
            "[::]:80".parse().unwrap()
        );
        for bad in ["", "8080", ":", ":99999", "host"] {
            assert!(parse_addr("--addr", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subcommands_parse() {
        let cli = parse(&["keys", "derive", "--master-key-file", "/k", "--device", "d"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Keys(KeysCommand {
                action: KeysAction::Derive(DeriveCommand {
                    master_key_file: Some("/k".into()),
                    device: Some("d".into()),
                    key_id: None,
                    epoch: None,
                })
            }))
        );
        let cli = parse(&["keys", "generate"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Keys(KeysCommand {
                action: KeysAction::Generate(_)
            }))
        ));
    }
}
