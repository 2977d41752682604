//! Secret material the operator generates once per cluster: the internal signing key and the
//! bootstrap admin token, and (when no TLS Secret is given) a per-cluster CA with a serving
//! certificate. The formats match what `wardengate serve` reads (`<kid> <base64>` key lines, a
//! `wg_` token) so a pod can start from the Secret alone.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Validity of generated certificates. The operator never rotates them silently (pods would
/// need a restart); rotate by deleting the Secret, which the operator then regenerates.
pub const CERT_VALIDITY_DAYS: i64 = 3650;

/// Why generated material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// The per-cluster CA or serving certificate.
    #[error("generating the cluster's TLS certificate: {0}")]
    Tls(#[from] rcgen::Error),
    /// One of the SSH keys.
    #[error("generating the cluster's SSH keys: {0}")]
    SshKey(String),
}

/// Item of the SSH Secret (`<name>-ssh`) holding the host key SSH clients see.
pub const SSH_HOST_KEY: &str = "ssh-host-key";
/// Item of the SSH Secret holding the user CA, whose public line targets trust with
/// `TrustedUserCAKeys` (`wgctl ssh-ca` prints it).
pub const SSH_USER_CA: &str = "ssh-user-ca";
/// Item of the SSH Secret holding the login CA that signs `wgctl ssh`'s short-lived login
/// certificates.
pub const SSH_LOGIN_CA: &str = "ssh-login-ca";

/// Data of a fresh SSH Secret: three Ed25519 keys in OpenSSH format (what `wardengate keys
/// generate --ssh-key` prints and `--ssh-*-key-file` reads). Generated for every cluster, so
/// turning `spec.ssh` on later keeps keys targets may already trust.
pub fn ssh_keys() -> Result<BTreeMap<String, ByteString>, MaterialError> {
    let one = || -> Result<ByteString, MaterialError> {
        let key = ssh_key::PrivateKey::random(&mut rand::rng(), ssh_key::Algorithm::Ed25519)
            .map_err(|e| MaterialError::SshKey(e.to_string()))?;
        let text = key
            .to_openssh(ssh_key::LineEnding::LF)
            .map_err(|e| MaterialError::SshKey(e.to_string()))?;
        Ok(ByteString(text.as_bytes().to_vec()))
    };
    Ok(BTreeMap::from([
        (SSH_HOST_KEY.to_string(), one()?),
        (SSH_USER_CA.to_string(), one()?),
        (SSH_LOGIN_CA.to_string(), one()?),
    ]))
}

/// Item of the internal Secret holding the Ed25519 recording-manifest key (control-plane pods
/// only: relay-only GatewayPool pods never mount it).
pub const RECORDING_KEY: &str = "recording-key";

/// Item of the internal Secret holding the observer token: the operator's read-only identity
/// for each pod's `GET /v1/system/status` (`--observer-token-file`). One token per line; to
/// rotate, put the new token first and keep the old one below it until the pods re-read the
/// file (10 s after the kubelet updates the mounted Secret), then remove the old line.
pub const OBSERVER_TOKEN: &str = "observer-token";

/// A fresh observer token file.
fn observer_token() -> ByteString {
    let t: [u8; 32] = rand::random();
    ByteString(format!("wgo_{}\n", URL_SAFE_NO_PAD.encode(t)).into_bytes())
}

/// Adds the observer token to internal Secret data created before it existed.
pub fn with_observer_token(mut data: BTreeMap<String, ByteString>) -> BTreeMap<String, ByteString> {
    data.entry(OBSERVER_TOKEN.to_string())
        .or_insert_with(observer_token);
    data
}

/// A fresh recording-manifest key file (`<kid> private <base64 seed>`, what
/// `--recording-key-file` reads).
fn recording_key() -> ByteString {
    let seed: [u8; 32] = rand::random();
    ByteString(format!("rk1 private {}\n", STANDARD.encode(seed)).into_bytes())
}

/// Adds the recording key to internal Secret data created before it existed (adding a missing
/// item is not a rotation: nothing already in use changes).
pub fn with_recording_key(mut data: BTreeMap<String, ByteString>) -> BTreeMap<String, ByteString> {
    data.entry(RECORDING_KEY.to_string())
        .or_insert_with(recording_key);
    data
}

/// Data of a fresh internal Secret: `keys` (one signing key, id `k1`), `admin-token`,
/// `recording-key` (the Ed25519 manifest key, id `rk1`) and `observer-token`.
pub fn internal() -> BTreeMap<String, ByteString> {
    let key: [u8; 32] = rand::random();
    let token: [u8; 32] = rand::random();
    BTreeMap::from([
        (RECORDING_KEY.to_string(), recording_key()),
        (OBSERVER_TOKEN.to_string(), observer_token()),
        (
            "keys".to_string(),
            ByteString(format!("k1 {}\n", STANDARD.encode(key)).into_bytes()),
        ),
        (
            "admin-token".to_string(),
            ByteString(format!("wg_{}", URL_SAFE_NO_PAD.encode(token)).into_bytes()),
        ),
    ])
}

/// The names a cluster's serving certificate covers: the Service in its short and qualified
/// forms, and loopback (for `wgctl --addr https://127.0.0.1:8443` inside a pod; the preStop drain
/// uses the admin socket and needs no certificate).
pub fn serving_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ]
}

/// Data of a fresh `kubernetes.io/tls` Secret: a per-cluster CA (`ca.crt`; its key is not
/// kept) and a serving certificate for `names` signed by it (`tls.crt`, `tls.key`).
pub fn tls(cluster: &str, names: &[String]) -> Result<BTreeMap<String, ByteString>, MaterialError> {
    let now = time_now();
    let until = now + time::Duration::days(CERT_VALIDITY_DAYS);
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, format!("wardengate {cluster} CA"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now;
    ca.not_after = until;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now;
    leaf.not_after = until;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(BTreeMap::from([
        ("ca.crt".to_string(), ByteString(ca_cert.pem().into_bytes())),
        (
            "tls.crt".to_string(),
            ByteString(leaf_cert.pem().into_bytes()),
        ),
        (
            "tls.key".to_string(),
            ByteString(leaf_key.serialize_pem().into_bytes()),
        ),
    ]))
}

fn time_now() -> time::OffsetDateTime {
    // A minute back: nodes' clocks differ a little.
    time::OffsetDateTime::now_utc() - time::Duration::minutes(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    #[test]
    fn the_serving_certificate_verifies_against_the_ca_for_the_service_and_loopback() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data = tls("wg", &serving_names("wg", "access")).unwrap();
        let ca = CertificateDer::from_pem_slice(&data["ca.crt"].0).unwrap();
        let leaf = CertificateDer::from_pem_slice(&data["tls.crt"].0).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots))
            .build()
            .unwrap();
        for name in ["wg.access.svc", "wg", "127.0.0.1", "localhost"] {
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let wrong = verifier.verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from("other.svc").unwrap(),
            &[],
            UnixTime::now(),
        );
        assert!(wrong.is_err());
        assert!(String::from_utf8_lossy(&data["tls.key"].0).contains("PRIVATE KEY"));
    }

    #[test]
    fn internal_material_has_the_formats_the_gateway_reads() {
        let d = internal();
        let keys = String::from_utf8(d["keys"].0.clone()).unwrap();
        let mut parts = keys.split_whitespace();
        assert_eq!(parts.next(), Some("k1"));
        assert_eq!(STANDARD.decode(parts.next().unwrap()).unwrap().len(), 32);
        let token = String::from_utf8(d["admin-token"].0.clone()).unwrap();
        assert!(token.starts_with("wg_") && token.len() == 46, "{token}");
        assert_ne!(internal()["admin-token"], d["admin-token"], "random");
        let rec = String::from_utf8(d[RECORDING_KEY].0.clone()).unwrap();
        let mut parts = rec.split_whitespace();
        assert_eq!(parts.next(), Some("rk1"));
        assert_eq!(parts.next(), Some("private"));
        assert_eq!(STANDARD.decode(parts.next().unwrap()).unwrap().len(), 32);
        // A Secret from before the recording key gets one; an existing one is kept.
        let mut old = d.clone();
        old.remove(RECORDING_KEY);
        let upgraded = with_recording_key(old);
        assert!(upgraded.contains_key(RECORDING_KEY));
        assert_eq!(upgraded["keys"], d["keys"]);
        assert_eq!(
            with_recording_key(d.clone())[RECORDING_KEY],
            d[RECORDING_KEY]
        );
    }
}
