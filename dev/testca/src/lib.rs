//! # apollo-testca
//!
//! A throwaway certificate authority for the TLS tests: a CA and a certificate for
//! `localhost` signed by it, made fresh for each call. Shared by the agent's and the gateway's
//! test suites; it depends on `rcgen` alone (no Kubernetes crates), so the agent's tests may
//! use it and the agent stays kube-free.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA and a `localhost` certificate signed by it.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate, PEM (what a client trusts).
    pub ca_pem: String,
    /// The `localhost` certificate, PEM and DER.
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// The certificate's private key, PEM and PKCS#8 DER.
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

impl TestCa {
    /// A new CA and a `localhost` certificate signed by it.
    pub fn new() -> TestCa {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("a CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("a leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &issuer)
            .expect("a leaf certificate");
        TestCa {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            cert_der: leaf.der().to_vec(),
            key_pem: leaf_key.serialize_pem(),
            key_der: leaf_key.serialize_der(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_ca_and_a_leaf() {
        let a = TestCa::new();
        assert!(a.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.key_pem.contains("PRIVATE KEY"));
        assert!(!a.cert_der.is_empty() && !a.key_der.is_empty());
        assert_ne!(a.ca_pem, TestCa::new().ca_pem, "a fresh CA per call");
    }
}
