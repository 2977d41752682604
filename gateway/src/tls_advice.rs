//! Plain advice for a server certificate a client cannot trust. rustls reports such failures as
//! terse enum names (`UnknownIssuer`, `CaUsedAsEndEntity`) buried in a chain of wrapped I/O
//! errors; the client's verifier is wrapped here so the structured failure and the name we
//! connected to are kept, and [`CertFailures::take_advice`] turns them into a sentence that
//! says what to do (which flag to pass, which names the certificate holds, when it expired).

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::tls::{TlsError, install_crypto_provider, trust_roots};

/// The last server-certificate failure seen by one client configuration, shared between the
/// verifier (which records it) and the client (which reports it).
#[derive(Debug, Clone, Default)]
pub struct CertFailures {
    last: Arc<Mutex<Option<CertFailure>>>,
}

#[derive(Debug, Clone)]
struct CertFailure {
    error: rustls::Error,
    server_name: String,
}

impl CertFailures {
    fn record(&self, error: &rustls::Error, server_name: &ServerName<'_>) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(CertFailure {
                error: error.clone(),
                server_name: server_name.to_str().into_owned(),
            });
        }
    }

    /// Advice for the failure recorded since the last call, if any (then forgotten, so a later
    /// unrelated error is not blamed on it). `addr` is the server address as the user gave it;
    /// `ca_given` says whether `--ca-cert` replaced the system's roots.
    pub fn take_advice(&self, addr: &str, ca_given: bool) -> Option<String> {
        let failure = self.last.lock().ok()?.take()?;
        Some(advice(&failure, addr, ca_given))
    }
}

/// A rustls client configuration trusting `ca_pem` (or the system's roots when `None`) whose
/// certificate failures are recorded in the returned [`CertFailures`].
pub fn advising_client_config(
    ca_pem: Option<&str>,
) -> Result<(Arc<rustls::ClientConfig>, CertFailures), TlsError> {
    install_crypto_provider();
    let roots = trust_roots(ca_pem)?;
    let inner = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| match e {
            VerifierBuilderError::NoRootAnchors => TlsError::NoTrustedRoots,
            other => TlsError::Verifier(other.to_string()),
        })?;
    let failures = CertFailures::default();
    let verifier = Arc::new(AdvisingVerifier {
        inner,
        failures: failures.clone(),
    });
    let cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((Arc::new(cfg), failures))
}

/// The standard WebPKI verifier, unchanged in what it accepts, that remembers why it refused.
#[derive(Debug)]
struct AdvisingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    failures: CertFailures,
}

impl ServerCertVerifier for AdvisingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.failures.record(e, server_name))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

const PASS_CA: &str = "pass the CA certificate that signed it with --ca-cert FILE (or WG_CA_CERT=FILE); \
for `wardengate dev` that is .wardengate-dev/dev-cert.pem";

fn advice(f: &CertFailure, addr: &str, ca_given: bool) -> String {
    let name = &f.server_name;
    let rustls::Error::InvalidCertificate(cert_error) = &f.error else {
        return format!("the TLS handshake with {name} failed: {}", f.error);
    };
    match cert_error {
        CertificateError::UnknownIssuer | CertificateError::BadSignature if ca_given => {
            "the server's certificate is not signed by the CA given with --ca-cert / WG_CA_CERT: \
             pass the CA certificate that signed the server's certificate (for `wardengate dev`, \
             .wardengate-dev/dev-cert.pem of the directory it runs in)"
                .to_string()
        }
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            format!("the server's certificate is not signed by a CA this machine trusts: {PASS_CA}")
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names: Vec<String> = presented.iter().map(|p| plain_name(p)).collect();
            let used = expected.to_str();
            if names.is_empty() {
                format!(
                    "the server's certificate names no host (no DNS name or IP address in its \
                     subjectAltName), so it cannot match `{used}`: reissue it with the names \
                     clients use"
                )
            } else {
                let example = with_host(addr, &names[0]);
                format!(
                    "the server's certificate is for {} but wgctl connected to `{used}`: use an \
                     address the certificate names (--addr / WG_ADDR, e.g. {example}) or reissue \
                     the certificate with `{used}` among its names",
                    names.join(", ")
                )
            }
        }
        CertificateError::NotValidForName => format!(
            "the server's certificate does not name `{name}`, the host wgctl connected to: use an \
             address the certificate names (--addr / WG_ADDR) or reissue it with `{name}`"
        ),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the server's certificate expired at {} ({} ago; this machine's clock says {}): \
             renew the server's certificate (--tls-cert / WG_TLS_CERT)",
            rfc3339(*not_after),
            ago(time.as_secs().saturating_sub(not_after.as_secs())),
            rfc3339(*time),
        ),
        CertificateError::Expired => "the server's certificate has expired: renew the server's \
                                      certificate (--tls-cert / WG_TLS_CERT)"
            .to_string(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the server's certificate is not valid before {} (this machine's clock says {}): \
             check the clocks, or wait",
            rfc3339(*not_before),
            rfc3339(*time),
        ),
        CertificateError::NotValidYet => {
            "the server's certificate is not valid yet: check the clocks".to_string()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the server's certificate is not issued for TLS servers (its extended key usage lacks \
             serverAuth): reissue it for server use"
                .to_string()
        }
        CertificateError::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            "the server presents a CA certificate as its own certificate: give the server \
             (--tls-cert / WG_TLS_CERT) a certificate issued by that CA for its host name, and \
             pass the CA itself to wgctl with --ca-cert / WG_CA_CERT"
                .to_string()
        }
        other => {
            format!("the server's certificate was refused ({other}) while connecting to {name}")
        }
    }
}

/// `DnsName("host")` / `IpAddress(1.2.3.4)` (webpki's rendering) → `host` / `1.2.3.4`.
fn plain_name(presented: &str) -> String {
    for prefix in ["DnsName(", "IpAddress("] {
        if let Some(inner) = presented
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
        {
            return inner.trim_matches('"').to_string();
        }
    }
    presented.to_string()
}

/// `addr` with its host replaced by `host` (for an example of a working address).
fn with_host(addr: &str, host: &str) -> String {
    let Ok(mut url) = url::Url::parse(addr) else {
        return format!("https://{host}");
    };
    // A wildcard name is not an address; show its shape instead.
    let host = host.replacen("*.", "host.", 1);
    if url.set_host(Some(&host)).is_err() {
        return format!("https://{host}");
    }
    url.as_str().trim_end_matches('/').to_string()
}

/// `secs` as a rough age: whole days past a day, else hours/minutes/seconds.
fn ago(secs: u64) -> String {
    match secs / 86_400 {
        0 => humantime::format_duration(Duration::from_secs(secs)).to_string(),
        1 => "1 day".to_string(),
        days => format!("{days} days"),
    }
}

fn rfc3339(t: UnixTime) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_rough() {
        assert_eq!(ago(90), "1m 30s");
        assert_eq!(ago(86_400 * 2 + 5), "2 days");
    }

    #[test]
    fn presented_names_are_shown_plainly() {
        assert_eq!(plain_name("DnsName(\"gw.example.com\")"), "gw.example.com");
        assert_eq!(plain_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(plain_name("Unsupported(0x88)"), "Unsupported(0x88)");
    }

    #[test]
    fn example_address_keeps_scheme_and_port() {
        assert_eq!(
            with_host("https://127.0.0.1:8443", "gw.example.com"),
            "https://gw.example.com:8443"
        );
        assert_eq!(
            with_host("https://10.0.0.1:9443", "*.gw.example.com"),
            "https://host.gw.example.com:9443"
        );
    }
}
