//! Kubeconfig files, one per identity, and kube clients built from them.

use std::path::Path;

use base64::Engine;

use crate::Error;

/// Renders a kubeconfig for a bearer-token user.
pub(crate) fn render(
    server: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
    namespace: &str,
) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let lines = [
        "apiVersion: v1".to_string(),
        "kind: Config".to_string(),
        "clusters:".to_string(),
        "- name: apollo-devcluster".to_string(),
        "  cluster:".to_string(),
        format!("    server: {server}"),
        format!("    certificate-authority-data: {ca}"),
        "users:".to_string(),
        format!("- name: {user}"),
        "  user:".to_string(),
        format!("    token: {token}"),
        "contexts:".to_string(),
        format!("- name: {user}@apollo-devcluster"),
        "  context:".to_string(),
        "    cluster: apollo-devcluster".to_string(),
        format!("    user: {user}"),
        format!("    namespace: {namespace}"),
        format!("current-context: {user}@apollo-devcluster"),
    ];
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Builds a kube client from a kubeconfig file (its current context).
pub async fn client_from_file(path: &Path) -> Result<kube::Client, Error> {
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Kube(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kube(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
}
