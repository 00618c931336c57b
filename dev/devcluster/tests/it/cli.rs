//! The CLI contract: `serve --listen --dir` writes the kubeconfigs and prints one `ready <url>`
//! line once it accepts requests; `--help` documents every flag.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_ready_and_writes_kubeconfigs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_apollo-devcluster"))
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("ready in time")
        .unwrap()
        .expect("a line");
    let url = line
        .strip_prefix("ready ")
        .expect("`ready <url>`")
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    for stem in ["admin", "controller", "gateway", "agent"] {
        assert!(
            dir.path().join(format!("{stem}.kubeconfig")).is_file(),
            "{stem}.kubeconfig"
        );
    }
    let kc = kube::config::Kubeconfig::read_from(dir.path().join("admin.kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), url);
    let client = kube::Client::try_from(config).unwrap();
    let nss: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let ns = nss.get("default").await.expect("default namespace exists");
    assert_eq!(ns.metadata.name.as_deref(), Some("default"));
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

/// Clients in containers reach the server by another name: `--tls-san` puts it in the serving
/// certificate and `--advertise-url` into the kubeconfigs; a name not given stays refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_certificate_names_and_advertised_url() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_apollo-devcluster"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-san",
            "apiserver.demo.test",
            "--advertise-url",
            "https://apiserver.demo.test:6443",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("ready in time")
        .unwrap()
        .expect("a line");
    let listen = line.strip_prefix("ready ").expect("`ready <url>`");
    assert!(listen.starts_with("https://127.0.0.1:"), "{listen}");
    let kc = kube::config::Kubeconfig::read_from(dir.path().join("admin.kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        "https://apiserver.demo.test:6443"
    );
    let get = |name: &'static str| {
        let mut config = config.clone();
        config.cluster_url = listen.parse().unwrap();
        config.tls_server_name = Some(name.to_string());
        async move {
            let client = kube::Client::try_from(config).unwrap();
            let nss: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
            nss.get("default").await
        }
    };
    get("apiserver.demo.test")
        .await
        .expect("the extra name is in the certificate");
    get("localhost").await.expect("localhost still is");
    let err = get("elsewhere.demo.test")
        .await
        .expect_err("a name not given is not in the certificate");
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "refused at the TLS handshake, not by the API: {err}"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test]
async fn help_documents_every_flag() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_apollo-devcluster"))
        .args(["serve", "--help"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--dir",
        "--namespace",
        "--bookmark-interval",
        "--history-limit",
        "--gc-interval",
        "--tls-san",
        "--advertise-url",
    ] {
        assert!(text.contains(flag), "{flag} in {text}");
    }
}
