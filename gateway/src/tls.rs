//! TLS material: the one process-wide crypto provider, generated development certificates, and
//! rustls configurations for the server and for clients that trust a given CA.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Failures while preparing TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file did not contain what it should.
    #[error("reading {what} PEM: {source}")]
    Pem {
        /// Which file (certificate, key, CA).
        what: &'static str,
        /// Parser error.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls rejected the certificate/key pair.
    #[error("building TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// Neither `--ca-cert` nor the operating system supplied a CA to trust.
    #[error(
        "no trusted CA certificates: pass --ca-cert FILE (or WG_CA_CERT=FILE), or install the \
         system's CA bundle (ca-certificates)"
    )]
    NoTrustedRoots,
    /// The certificate verifier could not be built.
    #[error("building the certificate verifier: {0}")]
    Verifier(String),
}

/// The crypto provider of every TLS connection Wardengate makes or accepts: aws-lc-rs (already
/// compiled in through object_store; faster AES-GCM than ring), with `TLS13_AES_128_GCM_SHA256`
/// preferred over AES-256 — the relay's throughput is bounded partly by AES-GCM, and
/// AES-128 measured about 6 % more throughput at 5–10 % less CPU per MiB. Both peers list it
/// first, so a rustls server (which follows the client's order) picks it.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // A stable sort: everything else keeps the provider's order.
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

/// Installs [`crypto_provider`] as the process-wide rustls default. Both ring and aws-lc-rs end
/// up in the dependency tree, so rustls cannot pick one by itself. Idempotent; call at the top
/// of `main` and in tests.
pub fn install_crypto_provider() {
    let _ = crypto_provider().install_default();
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// Certificate chain in PEM.
    pub cert: String,
    /// PKCS#8 private key in PEM.
    pub key: String,
}

/// Generates a self-signed certificate valid for `names` (DNS names or IP literals).
pub fn self_signed(names: &[&str]) -> Result<PemPair, TlsError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names)?;
    Ok(PemPair {
        cert: ck.cert.pem(),
        key: ck.signing_key.serialize_pem(),
    })
}

/// A rustls server configuration from PEM certificate chain and key.
pub fn server_config(pair: &PemPair) -> Result<rustls::ServerConfig, TlsError> {
    install_crypto_provider();
    let certs = CertificateDer::pem_slice_iter(pair.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "certificate",
            source,
        })?;
    let key =
        PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).map_err(|source| TlsError::Pem {
            what: "private key",
            source,
        })?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The CAs a client trusts: exactly the certificates in `ca_pem`, or the operating system's
/// roots when `None`.
pub fn trust_roots(ca_pem: Option<&str>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|source| TlsError::Pem {
                    what: "CA certificate",
                    source,
                })?;
                roots.add(cert)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

/// A rustls client configuration trusting exactly the certificates in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    install_crypto_provider();
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(trust_roots(Some(ca_pem))?)
            .with_no_client_auth(),
    ))
}

/// A rustls client configuration trusting the operating system's roots.
pub fn system_client_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    install_crypto_provider();
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(trust_roots(None)?)
            .with_no_client_auth(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_builds_server_and_client_configs() {
        let pair = self_signed(&["localhost", "127.0.0.1"]).unwrap();
        assert!(pair.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        server_config(&pair).unwrap();
        client_config(&pair.cert).unwrap();
    }

    /// Drives a handshake between the two configurations in memory.
    fn handshake(client: &mut rustls::ClientConnection, server: &mut rustls::ServerConnection) {
        let mut buf = Vec::new();
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return;
            }
            buf.clear();
            client.write_tls(&mut buf).unwrap();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
            }
            server.process_new_packets().unwrap();
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
            }
            client.process_new_packets().unwrap();
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn server_and_client_negotiate_tls13_aes_128_gcm_with_aws_lc_rs() {
        install_crypto_provider();
        let installed = rustls::crypto::CryptoProvider::get_default().unwrap();
        let ours = crypto_provider();
        let names = |p: &rustls::crypto::CryptoProvider| {
            p.cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(installed), names(&ours));
        assert_eq!(
            names(&ours),
            names(&rustls::crypto::aws_lc_rs::default_provider())
                .into_iter()
                .filter(|s| *s != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
                .fold(
                    vec![rustls::CipherSuite::TLS13_AES_128_GCM_SHA256],
                    |mut v, s| {
                        v.push(s);
                        v
                    }
                ),
            "aws-lc-rs's suites, AES-128-GCM first"
        );
        let pair = self_signed(&["localhost"]).unwrap();
        let mut server =
            rustls::ServerConnection::new(Arc::new(server_config(&pair).unwrap())).unwrap();
        let mut client = rustls::ClientConnection::new(
            client_config(&pair.cert).unwrap(),
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        handshake(&mut client, &mut server);
        for suite in [
            client.negotiated_cipher_suite(),
            server.negotiated_cipher_suite(),
        ] {
            assert_eq!(
                suite.map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
        }
    }

    #[test]
    fn garbage_pem_is_refused_with_what_it_was() {
        let pair = PemPair {
            cert: "not a cert".into(),
            key: "nope".into(),
        };
        let err = server_config(&pair).unwrap_err().to_string();
        assert!(
            err.contains("private key") || err.contains("certificate"),
            "{err}"
        );
    }
}
