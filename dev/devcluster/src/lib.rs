//! A development Kubernetes API server, faithful enough to test against.
//!
//! `apollo-devcluster` serves the Kubernetes REST API over HTTPS (HTTP/1.1 and HTTP/2) from
//! memory: built-in kinds the project needs (Namespace, Event in both API groups, Lease, Secret,
//! ConfigMap, ServiceAccount, RBAC, CustomResourceDefinition, and Deployment, Service and
//! PodDisruptionBudget stored without controllers) and every custom resource whose CRD
//! is created through the API. It is used in-process by tests ([`DevCluster::start`],
//! `apollo_testkit::TestEnv`) and standalone by `kubectl` and the project's binaries
//! (`apollo-devcluster serve`).
//!
//! Object semantics (structural schemas, server-side apply) come from `apollo-apimachinery`,
//! selectors, JSONPath and Table rendering from `apollo-apiquery`, authorization from
//! `apollo-rbac`. This crate owns storage (one increasing resourceVersion, history for watches),
//! HTTP, discovery, the verbs, garbage collection, fault injection and request counting.
//!
//! See `docs/DEVCLUSTER.md` for what it implements and what it does not.

mod admin;
mod apimetrics;
mod events;
mod faults;
mod gc;
mod handlers;
mod kubeconfig;
mod leases;
mod meta;
mod openapi;
mod pdb;
mod protobuf;
mod registry;
mod requests;
mod server;
mod status;
mod store;
mod tls;
mod typed;
mod version;
mod watch;
mod workloads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use faults::{FaultConfig, Faults};
pub use kubeconfig::client_from_file;
pub use requests::{RequestCount, RequestLog};
pub use version::{KubeVersion, VersionError};

/// Errors starting or talking to the development cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Filesystem error (state dir, kubeconfig files).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or TLS configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// Building a kube client failed.
    #[error("kube client: {0}")]
    Kube(String),
    /// A manifest could not be read or applied.
    #[error("manifest: {0}")]
    Manifest(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Server options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// State directory: kubeconfig files and the CA are written here (default: a fresh
    /// directory under the system temp dir).
    pub dir: PathBuf,
    /// Namespace of the component ServiceAccount identities.
    pub namespace: String,
    /// Interval between BOOKMARK events on watches with `allowWatchBookmarks=true`.
    pub bookmark_interval: Duration,
    /// Watch history kept per resource (events); older resourceVersions get 410 Expired.
    pub history_limit: usize,
    /// Interval of the ownerReference garbage collector and namespace finalizer.
    pub gc_interval: Duration,
    /// How long before `timeoutSeconds` a watch sends its last BOOKMARK.
    pub bookmark_before_timeout: Duration,
    /// The Kubernetes minor the server pretends to be: `/version` reports it and CRD fields
    /// that minor lacks are refused or dropped as there (default 1.33).
    pub version: KubeVersion,
    /// Extra names (DNS names or IP addresses) in the serving certificate besides
    /// `127.0.0.1`, `localhost` and `::1`, as kubeadm's `apiServer.certSANs`: e.g. the
    /// container name other containers reach the server by.
    pub tls_sans: Vec<String>,
    /// The `server:` URL written into the kubeconfig files (default: the listen address,
    /// `https://127.0.0.1:PORT`); e.g. `https://apiserver:6443` when the clients are
    /// containers on a docker network.
    pub advertise_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            // Unique per Options value, so servers started with defaults never share files.
            dir: std::env::temp_dir().join(format!(
                "apollo-devcluster-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            )),
            namespace: "default".to_string(),
            bookmark_interval: Duration::from_secs(60),
            history_limit: 10_000,
            gc_interval: Duration::from_millis(500),
            bookmark_before_timeout: Duration::from_secs(2),
            version: KubeVersion::DEFAULT,
            tls_sans: Vec::new(),
            advertise_url: None,
        }
    }
}

/// The identities the server knows (bearer tokens, one kubeconfig each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum User {
    /// `admin`, group `system:masters`.
    Admin,
    /// `system:serviceaccount:<ns>:apollo-deviceprocess-controller`.
    Controller,
    /// `system:serviceaccount:<ns>:apollo-deviceprocess-gateway`.
    Gateway,
    /// `system:serviceaccount:<ns>:apollo-agent`, bound to nothing.
    Agent,
}

impl User {
    /// All identities.
    pub const ALL: [User; 4] = [User::Admin, User::Controller, User::Gateway, User::Agent];

    /// File stem of the kubeconfig (`admin`, `controller`, `gateway`, `agent`).
    pub fn file_stem(self) -> &'static str {
        match self {
            User::Admin => "admin",
            User::Controller => "controller",
            User::Gateway => "gateway",
            User::Agent => "agent",
        }
    }

    /// The user name the server authenticates this identity as.
    pub fn username(self, namespace: &str) -> String {
        match self {
            User::Admin => "admin".to_string(),
            User::Controller => {
                format!("system:serviceaccount:{namespace}:apollo-deviceprocess-controller")
            }
            User::Gateway => {
                format!("system:serviceaccount:{namespace}:apollo-deviceprocess-gateway")
            }
            User::Agent => format!("system:serviceaccount:{namespace}:apollo-agent"),
        }
    }

    /// Groups of this identity.
    pub fn groups(self, namespace: &str) -> Vec<String> {
        match self {
            User::Admin => vec![
                "system:masters".to_string(),
                "system:authenticated".to_string(),
            ],
            _ => vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
        }
    }
}

/// A running development API server.
pub struct DevCluster {
    shared: Arc<server::Shared>,
    url: String,
    handle: server::ServerHandle,
}

impl DevCluster {
    /// Starts the server: generates a CA and server certificate, writes one kubeconfig per
    /// identity into `opts.dir`, and accepts connections before returning.
    pub async fn start(opts: Options) -> Result<DevCluster, Error> {
        let (shared, url, handle) = server::start(opts).await?;
        Ok(DevCluster {
            shared,
            url,
            handle,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The kubeconfig file of `user` (`<dir>/<user>.kubeconfig`).
    pub fn kubeconfig(&self, user: User) -> PathBuf {
        self.shared
            .opts
            .dir
            .join(format!("{}.kubeconfig", user.file_stem()))
    }

    /// A kube client authenticated as `user`.
    pub async fn client(&self, user: User) -> Result<kube::Client, Error> {
        kubeconfig::client_from_file(&self.kubeconfig(user)).await
    }

    /// The namespace of the component identities.
    pub fn namespace(&self) -> &str {
        &self.shared.opts.namespace
    }

    /// Fault injection handle.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Request counts by (user, verb, resource, subresource).
    pub fn requests(&self) -> RequestLog {
        self.shared.requests.clone()
    }

    /// Current resourceVersion of the store (the last one handed out).
    pub fn resource_version(&self) -> u64 {
        self.shared.current_rv()
    }

    /// Stops accepting connections and ends open requests and watches.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}
