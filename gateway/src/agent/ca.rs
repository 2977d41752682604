//! The agent CA: the control plane's own certificate authority for gateway client certificates.
//!
//! Every control-plane replica must sign with the same CA, so it lives in one PEM file that a
//! Secret mounts on all of them (`--agent-ca-file`; `wardengate keys generate --agent-ca` writes
//! one). The file holds the signing CA certificate, its private key, then any number of older
//! CA certificates that are still trusted: to rotate, put a new CA (cert + key) first and keep
//! the old certificate below it until every gateway has renewed (at most one certificate
//! lifetime), then drop it.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Agent CA failures.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA file is not usable.
    #[error("agent CA file: {0}")]
    File(String),
    /// A certificate request could not be parsed or signed.
    #[error("certificate request: {0}")]
    Csr(String),
}

/// The loaded agent CA: signs with the first certificate, trusts all of them.
pub struct AgentCa {
    signing_cert_pem: String,
    key: KeyPair,
    trusted_pem: String,
}

impl std::fmt::Debug for AgentCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCa").finish_non_exhaustive()
    }
}

impl AgentCa {
    /// Parses a CA file (see the module docs).
    pub fn from_pem(pem: &str) -> Result<Self, CaError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| CaError::File(format!("bad certificate PEM: {e}")))?;
        let first = certs
            .first()
            .ok_or_else(|| CaError::File("no CA certificate in it".into()))?;
        let key_der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CaError::File(format!("no usable private key in it: {e}")))?;
        let key = KeyPair::try_from(&key_der)
            .map_err(|e| CaError::File(format!("private key not supported: {e}")))?;
        // The key must belong to the first certificate, or gateways would get certificates that
        // chain to nothing the replicas trust.
        let issuer = Issuer::from_ca_cert_der(first, &key)
            .map_err(|e| CaError::File(format!("first certificate is not a CA: {e}")))?;
        drop(issuer);
        let (_, parsed) = x509_parser::parse_x509_certificate(first)
            .map_err(|e| CaError::File(format!("first certificate: {e}")))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::File(
                "the private key does not belong to the first certificate (put the signing CA \
                 certificate first, its key next, older trusted CA certificates after)"
                    .into(),
            ));
        }
        let to_pem = |c: &CertificateDer<'_>| pem_cert(c.as_ref());
        Ok(Self {
            signing_cert_pem: to_pem(first),
            key,
            trusted_pem: certs.iter().map(to_pem).collect(),
        })
    }

    /// Generates a new CA file (certificate and key, PEM) for `keys generate --agent-ca` and for
    /// tests: an ECDSA P-256 CA valid for ten years.
    pub fn generate(name: &str) -> Result<String, CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::File(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::File(e.to_string()))?;
        Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
    }

    /// Every trusted CA certificate, PEM (what the agent listener verifies client certs against).
    pub fn trusted_pem(&self) -> &str {
        &self.trusted_pem
    }

    /// Signs a client certificate for `gateway_id` with the public key of `csr_pem`, valid for
    /// `ttl`. Only the key is taken from the request: the name, usages and lifetime are ours.
    pub fn sign(
        &self,
        gateway_id: &str,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<(String, SystemTime), CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::Csr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, gateway_id);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        // A little slack for clocks that disagree by a minute.
        params.not_before = now - time::Duration::minutes(5);
        let not_after = SystemTime::now() + ttl;
        params.not_after = now + ttl;
        csr.params = params;
        let issuer = Issuer::from_ca_cert_pem(&self.signing_cert_pem, &self.key)
            .map_err(|e| CaError::File(e.to_string()))?;
        let cert = csr
            .signed_by(&issuer)
            .map_err(|e| CaError::Csr(e.to_string()))?;
        Ok((cert.pem(), not_after))
    }
}

/// A DER certificate as PEM.
fn pem_cert(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The gateway id (common name) of a DER client certificate, and when it expires (unix ms).
pub fn gateway_of(der: &[u8]) -> Option<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some((cn, cert.validity().not_after.timestamp() * 1000))
}

/// A new key and a certificate request for it (the gateway side of join and renewal).
pub fn new_key_and_csr() -> Result<(String, String), CaError> {
    let key = KeyPair::generate().map_err(|e| CaError::Csr(e.to_string()))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| CaError::Csr(e.to_string()))?;
    Ok((key.serialize_pem(), csr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_a_client_cert_that_names_the_gateway_and_chains_to_the_ca() {
        let ca = AgentCa::from_pem(&AgentCa::generate("test agent CA").unwrap()).unwrap();
        let (_key, csr) = new_key_and_csr().unwrap();
        let (pem, _) = ca.sign("gw-1", &csr, Duration::from_secs(3600)).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (id, not_after) = gateway_of(der.as_ref()).unwrap();
        assert_eq!(id, "gw-1");
        let in_an_hour = crate::store::now_ms() + 3_600_000;
        assert!((not_after - in_an_hour).abs() < 5_000, "{not_after}");
        let roots = CertificateDer::pem_slice_iter(ca.trusted_pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let mut store = rustls::RootCertStore::empty();
        store.add_parsable_certificates(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(store),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .unwrap();
    }

    #[test]
    fn a_key_that_is_not_the_first_certificates_is_refused() {
        let a = AgentCa::generate("a").unwrap();
        let b = AgentCa::generate("b").unwrap();
        let cert_a = a.split("-----BEGIN PRIVATE KEY-----").next().unwrap();
        let key_b = &b[b.find("-----BEGIN PRIVATE KEY-----").unwrap()..];
        let err = AgentCa::from_pem(&format!("{cert_a}{key_b}")).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn a_rotated_file_trusts_the_old_ca_and_signs_with_the_new() {
        let old = AgentCa::generate("old").unwrap();
        let new = AgentCa::generate("new").unwrap();
        let old_cert = old.split("-----BEGIN PRIVATE KEY-----").next().unwrap();
        let ca = AgentCa::from_pem(&format!("{new}{old_cert}")).unwrap();
        assert_eq!(ca.trusted_pem().matches("BEGIN CERTIFICATE").count(), 2);
        let (_k, csr) = new_key_and_csr().unwrap();
        let (pem, _) = ca.sign("gw-2", &csr, Duration::from_secs(60)).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        assert!(
            cert.issuer().to_string().contains("new"),
            "{}",
            cert.issuer()
        );
    }
}
