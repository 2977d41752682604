//! The HTTPS client `wgctl` uses: the server's address, an optional CA to trust, a bearer token.

use crate::api::SystemStatus;
use crate::tls::{TlsError, client_config};

/// Failures talking to a Wardengate server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file could not be read.
    #[error("reading CA certificate {path}: {source}")]
    CaFile {
        /// Path given with `--ca-cert`/`WG_CA_CERT`.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Transport-level failure (connect, TLS handshake, timeout).
    #[error("request to {addr} failed: {source}")]
    Transport {
        /// Server address.
        addr: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{addr} answered {status}: {body}")]
    Status {
        /// Server address.
        addr: String,
        /// HTTP status.
        status: reqwest::StatusCode,
        /// Response body (the server's JSON error).
        body: String,
    },
}

/// A configured connection to one server address.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    http: reqwest::Client,
}

impl Client {
    /// `addr` like `https://host:8443`; `ca_pem` replaces the system roots when given.
    pub fn new(addr: &str, ca_pem: Option<&str>) -> Result<Self, ClientError> {
        crate::tls::install_crypto_provider();
        let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = ca_pem {
            b = b.tls_backend_preconfigured((*client_config(ca)?).clone());
        }
        let http = b.build().map_err(|source| ClientError::Transport {
            addr: addr.into(),
            source,
        })?;
        Ok(Self {
            addr: addr.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// `GET /v1/system/status`.
    pub async fn system_status(&self) -> Result<SystemStatus, ClientError> {
        let url = format!("{}/v1/system/status", self.addr);
        let transport = |source| ClientError::Transport {
            addr: self.addr.clone(),
            source,
        };
        let resp = self.http.get(url).send().await.map_err(transport)?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(ClientError::Status {
                addr: self.addr.clone(),
                status,
                body,
            });
        }
        resp.json().await.map_err(transport)
    }
}
