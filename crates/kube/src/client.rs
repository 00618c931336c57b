//! Building the Kubernetes client the way other Kubernetes clients do: one place that turns
//! a `--kubeconfig` setting into a [`kube::Config`], for every component and tool.

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::KubeError;

/// The client configuration for `kubeconfig`: `Some("")` means in-cluster configuration,
/// `Some(path)` that kubeconfig file, `None` kube's inference (`KUBECONFIG`, `~/.kube/config`,
/// then in-cluster). Callers that need another request stack (the gateway turns kube's retry
/// off and counts requests) start from here.
pub async fn config(kubeconfig: Option<&str>) -> Result<kube::Config, KubeError> {
    match kubeconfig {
        Some("") => kube::Config::incluster().map_err(|e| KubeError::Client(e.to_string())),
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| KubeError::Client(format!("{path}: {e}")))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Client(format!("{path}: {e}")))
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeError::Client(e.to_string())),
    }
}

/// A client for `kubeconfig` (see [`config`]) with kube's default request stack.
pub async fn client(kubeconfig: Option<&str>) -> Result<kube::Client, KubeError> {
    client_from(config(kubeconfig).await?)
}

/// A client from a configuration made by [`config`] and adjusted by the caller.
pub fn client_from(config: kube::Config) -> Result<kube::Client, KubeError> {
    kube::Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))
}
