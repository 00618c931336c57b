//! TLS to the gateway (feature `tls`): the agent trusts exactly the CA in its CA file, gets
//! its document over https, and refuses a gateway certificate from another CA.
#![cfg(feature = "tls")]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use apollo_agent::{Agent, Args, Config};
use common::{Behaviour, Event, FakeGateway, device_key, document, process};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const T: Duration = Duration::from_secs(10);

/// A CA (PEM) and a TLS acceptor for "localhost" signed by it.
fn ca_and_acceptor() -> (String, TlsAcceptor) {
    let ca = apollo_testca::TestCa::new();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(ca.cert_der)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.key_der)),
    )
    .unwrap();
    (ca.ca_pem, TlsAcceptor::from(Arc::new(config)))
}

fn config_for(gw: &FakeGateway, ca_pem: &str, dir: &std::path::Path) -> Config {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let args = Args {
        device: Some(common::DEVICE.into()),
        gateway_url: Some(gw.https_url()),
        gateway_ca_file: Some(ca_file),
        ..Args::default()
    };
    let env = std::collections::HashMap::from([(
        "APOLLO_DEVICE_KEY".to_string(),
        device_key().to_string(),
    )]);
    let mut config = Config::resolve(&args, &env).unwrap();
    config.backoff_initial = Duration::from_millis(50);
    config.min_poll_gap = Duration::from_millis(10);
    config
}

#[tokio::test]
async fn fetches_and_reports_over_tls_with_the_configured_ca() {
    let (ca, acceptor) = ca_and_acceptor();
    let doc = document(vec![process("p", "4444444444444444", 1)]);
    let mut gw = FakeGateway::start_with(doc.clone(), Behaviour::default(), Some(acceptor)).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Arc::new(Agent::new(config_for(&gw, &ca, dir.path())));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let a = agent.clone();
    let task = tokio::spawn(async move {
        a.run(async {
            let _ = stopped.await;
        })
        .await
    });
    let reports = gw.reports(1, T).await;
    assert_eq!(
        reports[0].1.revision.as_deref(),
        Some(doc.revision.as_str())
    );
    let _ = stop.send(());
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn refuses_a_gateway_certificate_from_another_ca() {
    let (_, acceptor) = ca_and_acceptor();
    let (other_ca, _) = ca_and_acceptor();
    let doc = document(vec![]);
    let mut gw = FakeGateway::start_with(doc, Behaviour::default(), Some(acceptor)).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Arc::new(Agent::new(config_for(&gw, &other_ca, dir.path())));
    let mut state = agent.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let a = agent.clone();
    let task = tokio::spawn(async move {
        a.run(async {
            let _ = stopped.await;
        })
        .await
    });
    gw.wait_for(T, "failed handshake", |e| matches!(e, Event::TlsFailed))
        .await;
    let s = tokio::time::timeout(T, state.wait_for(|s| s.last_error.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert!(
        s.last_error
            .as_deref()
            .unwrap()
            .contains("cannot reach the gateway"),
        "{s:?}"
    );
    assert_eq!(s.revision, None);
    let _ = stop.send(());
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[test]
fn bad_ca_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let args = Args {
        device: Some(common::DEVICE.into()),
        gateway_url: Some("https://localhost:8443".into()),
        gateway_ca_file: Some(ca_file.clone()),
        ..Args::default()
    };
    let env = std::collections::HashMap::from([(
        "APOLLO_DEVICE_KEY".to_string(),
        device_key().to_string(),
    )]);
    let err = Config::resolve(&args, &env).unwrap_err().to_string();
    assert!(err.contains("invalid gateway CA file"), "{err}");
    let args = Args {
        gateway_url: Some("http://localhost:8080".into()),
        ..args
    };
    let err = Config::resolve(&args, &env).unwrap_err().to_string();
    assert!(err.contains("not https://"), "{err}");
}
