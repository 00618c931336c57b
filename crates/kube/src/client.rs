//! Building the Kubernetes client the way other kube clients do.

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::KubeError;

/// A client for `kubeconfig`: `Some("")` means in-cluster configuration, `Some(path)` that
/// kubeconfig file, `None` kube's inference (`KUBECONFIG`, `~/.kube/config`, then in-cluster).
pub async fn client(kubeconfig: Option<&str>) -> Result<kube::Client, KubeError> {
    let config = match kubeconfig {
        Some("") => kube::Config::incluster().map_err(|e| KubeError::Client(e.to_string()))?,
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| KubeError::Client(format!("{path}: {e}")))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Client(format!("{path}: {e}")))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeError::Client(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))
}
