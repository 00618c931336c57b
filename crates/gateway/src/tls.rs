//! TLS on the device listener (rustls with the ring provider): `--tls-cert-file` (PEM chain,
//! leaf first) and `--tls-key-file` (PEM private key: PKCS#8, PKCS#1 or SEC1). Only TLS 1.3
//! and 1.2 are offered, with rustls' safe cipher suites; ALPN `http/1.1`.
//!
//! The certificate is served through a resolver that holds a [`Reloadable`] certified key:
//! [`crate::reload::watch_files`] replaces it when the files change (cert-manager renewals,
//! Secret updates), new handshakes use the new certificate, open connections are untouched.
//! A pair that does not load (unreadable, not PEM, key not matching the certificate) keeps the
//! previous one in force.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::reload::Reloadable;

/// The certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certified key from PEM contents, checking that the key matches the certificate.
pub fn load_certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate file: {e}"))?;
    if chain.is_empty() {
        return Err("certificate file: no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key file: {e}"))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| format!("certificate and key: {e}"))
}

/// Serves the current certified key to every handshake.
#[derive(Debug)]
pub struct ReloadingCert {
    pub current: Arc<Reloadable<Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some((*self.current.get()).clone())
    }
}

/// The server configuration: TLS 1.3 and 1.2 only, ALPN `http/1.1`, certificate from `cert`.
pub fn server_config(
    cert: Arc<Reloadable<Arc<CertifiedKey>>>,
) -> Result<rustls::ServerConfig, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ReloadingCert { current: cert }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "localhost" certificate and its key, PEM.
    fn pair() -> (String, String) {
        let ca = apollo_testca::TestCa::new();
        (ca.cert_pem, ca.key_pem)
    }

    #[test]
    fn loads_matching_pairs_only() {
        let (cert, key) = pair();
        assert!(load_certified_key(cert.as_bytes(), key.as_bytes()).is_ok());
        let (_, other_key) = pair();
        let err = load_certified_key(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(err.contains("certificate and key"), "{err}");
        let err = load_certified_key(b"", key.as_bytes()).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = load_certified_key(cert.as_bytes(), b"not a key").unwrap_err();
        assert!(err.contains("key file"), "{err}");
        // A key never appears in an error.
        assert!(!err.contains("PRIVATE KEY"));
    }
}
