//! The SSH keys of the terminating front end, and the certificates it signs and checks:
//! - the **host key** users' clients pin (`--ssh-host-key-file`);
//! - the **user CA** (`--ssh-ca-key-file`): targets trust it with `TrustedUserCAKeys`; it signs
//!   one short-lived certificate per session (principal = the target's login, `permit-pty`
//!   only when the session's first channel asks for a terminal, `source-address` when the
//!   target is bound to one, see [`super::source_address`]);
//! - the **login CA** (`--ssh-login-ca-key-file`): signs the short-lived certificates
//!   `wgctl ssh` gets for an ephemeral key (`POST /v1/ssh/certificates`); the front end
//!   accepts only those, and checks the token named in the key id on every login, so revoking
//!   a token revokes its certificates.
//!
//! Each file holds one OpenSSH private key (`wardengate keys generate --ssh-key` prints an
//! Ed25519 one).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::{HashAlg, LineEnding};
use russh::keys::{Algorithm, Certificate, PrivateKey, PublicKey};

/// How long a certificate to a target is valid: it is used once, to log in.
pub const TARGET_CERT_TTL: Duration = Duration::from_secs(120);
/// How long a login certificate from `wgctl ssh` is valid (it is checked only at login).
pub const LOGIN_CERT_TTL: Duration = Duration::from_secs(300);
/// Clock skew allowed for the start of a certificate's validity.
const SKEW: u64 = 60;

/// Failures of SSH keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file cannot be read or is not an OpenSSH private key.
    #[error("SSH key file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Signing or encoding failed.
    #[error("SSH certificate: {0}")]
    Sign(String),
    /// A login certificate is refused.
    #[error("{0}")]
    Refused(String),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new Ed25519 key in OpenSSH format (what `wardengate keys generate --ssh-key` prints).
pub fn generate_key_file() -> Result<String, KeyError> {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|e| KeyError::Sign(e.to_string()))?;
    key.to_openssh(LineEnding::LF)
        .map(|s| s.to_string())
        .map_err(|e| KeyError::Sign(e.to_string()))
}

/// Reads one private key file: OpenSSH format (`wardengate keys generate --ssh-key`,
/// `ssh-keygen`) or unencrypted PKCS#8 PEM (`openssl genpkey -algorithm ed25519`, Helm's
/// `genPrivateKey "ed25519"`, which the chart uses).
pub fn read_key(path: &Path) -> Result<PrivateKey, KeyError> {
    let err = |reason: String| KeyError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let text = text.trim();
    if text.starts_with("-----BEGIN PRIVATE KEY-----") {
        return russh::keys::decode_secret_key(text, None)
            .map_err(|e| err(format!("not a PKCS#8 private key: {e}")));
    }
    if text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(err(
            "the key is passphrase-protected; give an unencrypted key".into(),
        ));
    }
    let key = PrivateKey::from_openssh(text).map_err(|e| err(e.to_string()))?;
    if key.is_encrypted() {
        return Err(err(
            "the key is passphrase-protected; give an unencrypted key".into(),
        ));
    }
    Ok(key)
}

/// A public key as one OpenSSH line without comment (`ssh-ed25519 AAAA…`).
pub fn public_line(key: &PublicKey) -> String {
    let mut k = key.clone();
    k.set_comment("");
    k.to_openssh().unwrap_or_default().trim().to_string()
}

/// The three keys of the front end.
#[derive(Clone)]
pub struct SshKeys {
    /// Host key shown to users' clients.
    pub host: PrivateKey,
    /// Signs certificates to targets.
    pub user_ca: PrivateKey,
    /// Signs (and so is trusted for) users' login certificates.
    pub login_ca: PrivateKey,
}

impl std::fmt::Debug for SshKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshKeys")
            .field("host", &self.host.fingerprint(HashAlg::Sha256).to_string())
            .field(
                "user_ca",
                &self.user_ca.fingerprint(HashAlg::Sha256).to_string(),
            )
            .field(
                "login_ca",
                &self.login_ca.fingerprint(HashAlg::Sha256).to_string(),
            )
            .finish()
    }
}

fn random_nonce() -> Vec<u8> {
    use rand::RngExt;
    let mut n = vec![0u8; 32];
    rand::rng().fill(&mut n[..]);
    n
}

fn serial() -> u64 {
    use rand::RngExt;
    rand::rng().random()
}

/// What a per-session certificate to a target permits besides a command: only what the session
/// needs, so a certificate lifted from the gateway is worth as little as possible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permits {
    /// `permit-pty`: the first channel asked for a terminal.
    pub pty: bool,
    /// `permit-port-forwarding`: the target allows `direct-tcpip` channels (`--ssh-forward-to`).
    pub port_forwarding: bool,
}

impl SshKeys {
    /// The user CA's public key as one `TrustedUserCAKeys` line.
    pub fn ca_line(&self) -> String {
        format!(
            "{} wardengate-user-ca",
            public_line(self.user_ca.public_key())
        )
    }

    /// A certificate for `key` to log in to a target as `login` for session `session`.
    pub fn target_certificate(
        &self,
        key: &PublicKey,
        login: &str,
        session: &str,
        permits: Permits,
        source_address: Option<&str>,
    ) -> Result<Certificate, KeyError> {
        let t = now();
        let sign = |e: russh::keys::ssh_key::Error| KeyError::Sign(e.to_string());
        let mut b = Builder::new(
            random_nonce(),
            key.key_data().clone(),
            t.saturating_sub(SKEW),
            t + TARGET_CERT_TTL.as_secs(),
        )
        .map_err(sign)?;
        b.serial(serial()).map_err(sign)?;
        b.cert_type(CertType::User).map_err(sign)?;
        b.key_id(format!("wardengate session {session}"))
            .map_err(sign)?;
        b.valid_principal(login).map_err(sign)?;
        if permits.pty {
            b.extension("permit-pty", "").map_err(sign)?;
        }
        if permits.port_forwarding {
            b.extension("permit-port-forwarding", "").map_err(sign)?;
        }
        if let Some(a) = source_address {
            b.critical_option("source-address", a).map_err(sign)?;
        }
        b.sign(&self.user_ca).map_err(sign)
    }

    /// A login certificate for `key`, for the token `token_id` named `token_name`: principals
    /// are both, the key id is the token id.
    pub fn login_certificate(
        &self,
        key: &PublicKey,
        token_id: &str,
        token_name: &str,
        ttl: Duration,
    ) -> Result<Certificate, KeyError> {
        let t = now();
        let sign = |e: russh::keys::ssh_key::Error| KeyError::Sign(e.to_string());
        let mut b = Builder::new(
            random_nonce(),
            key.key_data().clone(),
            t.saturating_sub(SKEW),
            t + ttl.as_secs(),
        )
        .map_err(sign)?;
        b.serial(serial()).map_err(sign)?;
        b.cert_type(CertType::User).map_err(sign)?;
        b.key_id(token_id).map_err(sign)?;
        b.valid_principal(token_name).map_err(sign)?;
        if token_name != token_id {
            b.valid_principal(token_id).map_err(sign)?;
        }
        b.extension("permit-pty", "").map_err(sign)?;
        b.sign(&self.login_ca).map_err(sign)
    }

    /// Checks a login certificate for user `user`: signed by the login CA, a user certificate,
    /// valid now, naming `user` as a principal, no critical options. Returns the token id.
    pub fn check_login(&self, cert: &Certificate, user: &str) -> Result<String, KeyError> {
        let ca = self.login_ca.public_key().fingerprint(HashAlg::Sha256);
        cert.validate_at(now(), [&ca]).map_err(|_| {
            KeyError::Refused(format!(
                "certificate not signed by the login CA, or not valid now (valid {}..{})",
                cert.valid_after(),
                cert.valid_before()
            ))
        })?;
        if cert.cert_type() != CertType::User {
            return Err(KeyError::Refused("not a user certificate".into()));
        }
        if !cert.valid_principals().iter().any(|p| p == user) {
            return Err(KeyError::Refused(format!(
                "certificate is not valid for user `{user}` (principals: {})",
                cert.valid_principals().join(",")
            )));
        }
        if !cert.critical_options().is_empty() {
            return Err(KeyError::Refused(
                "critical options are not supported".into(),
            ));
        }
        Ok(cert.key_id().to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys() -> SshKeys {
        let k = || PrivateKey::from_openssh(generate_key_file().unwrap()).unwrap();
        SshKeys {
            host: k(),
            user_ca: k(),
            login_ca: k(),
        }
    }

    #[test]
    fn keys_are_read_in_openssh_and_pkcs8_form() {
        let dir = tempfile::tempdir().unwrap();
        let openssh = dir.path().join("openssh");
        std::fs::write(&openssh, generate_key_file().unwrap()).unwrap();
        let a = read_key(&openssh).unwrap();
        // The same key as PKCS#8 PEM, what `openssl genpkey` and Helm's genPrivateKey write.
        let mut pem = Vec::new();
        russh::keys::encode_pkcs8_pem(&a, &mut pem).unwrap();
        let pkcs8 = dir.path().join("pkcs8");
        std::fs::write(&pkcs8, &pem).unwrap();
        let b = read_key(&pkcs8).unwrap();
        assert_eq!(public_line(a.public_key()), public_line(b.public_key()));
        // What Helm's `genPrivateKey "ed25519"` (Go's PKCS#8, no public key) wrote, verbatim.
        let helm = dir.path().join("helm");
        std::fs::write(
            &helm,
            "-----BEGIN PRIVATE KEY-----\n\
             MC4CAQAwBQYDK2VwBCIEIGpqQtQhtx+EKA8wYSlWPuQm1dyOZSENcR38nYw34+8g\n\
             -----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(public_line(read_key(&helm).unwrap().public_key()).starts_with("ssh-ed25519 "));
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nnot base64!\n").unwrap();
        let e = read_key(&garbage).unwrap_err().to_string();
        assert!(e.contains("not a PKCS#8 private key"), "{e}");
    }

    #[test]
    fn login_certificates_are_checked_for_ca_principal_and_time() {
        let keys = keys();
        let user = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let cert = keys
            .login_certificate(user.public_key(), "tok-1", "alice", LOGIN_CERT_TTL)
            .unwrap();
        assert_eq!(keys.check_login(&cert, "alice").unwrap(), "tok-1");
        assert_eq!(keys.check_login(&cert, "tok-1").unwrap(), "tok-1");
        let e = keys.check_login(&cert, "bob").unwrap_err().to_string();
        assert!(e.contains("not valid for user `bob`"), "{e}");
        // Signed by another CA (the user CA): refused.
        let other = SshKeys {
            login_ca: keys.user_ca.clone(),
            ..keys.clone()
        };
        let foreign = other
            .login_certificate(user.public_key(), "tok-1", "alice", LOGIN_CERT_TTL)
            .unwrap();
        assert!(keys.check_login(&foreign, "alice").is_err());
        // Expired: valid_before in the past.
        let expired = keys
            .login_certificate(user.public_key(), "tok-1", "alice", Duration::ZERO)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(keys.check_login(&expired, "alice").is_err());
    }

    #[test]
    fn target_certificates_carry_the_login_and_pty_only_when_asked() {
        let keys = keys();
        let k = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let c = keys
            .target_certificate(k.public_key(), "deploy", "s1", Permits::default(), None)
            .unwrap();
        assert!(c.critical_options().is_empty());
        assert_eq!(c.valid_principals(), ["deploy".to_string()]);
        assert!(!c.extensions().contains_key("permit-pty"));
        assert!(!c.extensions().contains_key("permit-port-forwarding"));
        assert!(c.valid_before() - c.valid_after() <= TARGET_CERT_TTL.as_secs() + SKEW);
        let ca = keys.user_ca.public_key().fingerprint(HashAlg::Sha256);
        c.validate([&ca]).unwrap();
        let p = keys
            .target_certificate(
                k.public_key(),
                "deploy",
                "s1",
                Permits {
                    pty: true,
                    port_forwarding: true,
                },
                Some("10.0.0.0/8"),
            )
            .unwrap();
        assert!(p.extensions().contains_key("permit-pty"));
        assert!(p.extensions().contains_key("permit-port-forwarding"));
        assert_eq!(
            p.critical_options()
                .get("source-address")
                .map(String::as_str),
            Some("10.0.0.0/8")
        );
        assert!(keys.ca_line().starts_with("ssh-ed25519 "));
    }
}
