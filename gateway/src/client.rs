//! The client side of the API, used by `wgctl` (and tests): one typed method per endpoint,
//! returning the wire types the server answers with ([`crate::wire`]), errors carrying the
//! server's [`ErrorCode`], and the relay WebSocket with retries through the load balancer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Sink, SinkExt, Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::pump::{CloseInfo, Config as PumpConfig, Ended, Frame, OnSourceEof, ReadSource};
use crate::relay_protocol::{
    CLOSE_NORMAL, HALF_CLOSE, SESSION_HEADER, is_recoverable, relay_path, target_relay_path,
};
use crate::tls::TlsError;
use crate::tls_advice::{CertFailures, advising_client_config};
use crate::wire::{
    Authorized, CreatedToken, DecisionBody, DecisionResult, ErrorBody, ErrorCode, Event, Healthz,
    NewSession, NewTarget, NewToken, Readyz, SessionView, SystemStatus, TargetView, TokenView,
    Verification,
};

/// Failures talking to a Wardengate server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The address is not an https:// URL.
    #[error("bad server address `{0}`: expected https://host:port")]
    Address(String),
    /// No token configured.
    #[error("no token: pass --token, or set WG_TOKEN or WG_TOKEN_FILE")]
    NoToken,
    /// The server's certificate cannot be trusted; `advice` says what to change.
    #[error("cannot trust {addr}: {advice}")]
    Certificate {
        /// Server address.
        addr: String,
        /// What is wrong and what to do, in plain words.
        advice: String,
    },
    /// Connecting, TLS handshake or reading the answer failed.
    #[error("cannot reach {addr}: {message}")]
    Transport {
        /// Server address.
        addr: String,
        /// Cause.
        message: String,
    },
    /// The server refused with an error body.
    #[error("{message} ({status}, {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code (the server's, or one the client names, e.g. `http_error`).
        code: ErrorCode,
        /// Human message.
        message: String,
        /// Seconds the server asked us to wait before retrying.
        retry_after: Option<u64>,
    },
    /// The relay was closed by the server.
    #[error("relay closed by the server: {reason} (code {code})")]
    RelayClosed {
        /// Close code (see `relay_protocol`).
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Local I/O (stdin/stdout, a tunnel socket) failed.
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// True when trying again (through the load balancer, likely another replica) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            // 503: a replica that cannot serve now; 429: a rate limit or cap, with `Retry-After`.
            ClientError::Api { status, .. } => *status == 503 || *status == 429,
            ClientError::RelayClosed { code, .. } => is_recoverable(*code),
            _ => false,
        }
    }

    /// The process exit code `wgctl` uses for this error (see `wgctl --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Api {
                status: 401 | 403, ..
            } => 3,
            ClientError::Api { status: 404, .. } => 4,
            ClientError::Api {
                code: ErrorCode::TargetUnreachable,
                ..
            } => 69,
            e if e.is_retryable() => 75,
            ClientError::NoToken
            | ClientError::Address(_)
            | ClientError::Tls(_)
            | ClientError::Certificate { .. } => 2,
            _ => 1,
        }
    }
}

/// The HTTP client every [`Client`] uses: 5 s to connect, 30 s per call unless a call says
/// otherwise; a build failure names the server.
fn http_client(
    builder: reqwest::ClientBuilder,
    addr: &str,
) -> Result<reqwest::Client, ClientError> {
    builder
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ClientError::Transport {
            addr: addr.to_string(),
            message: e.to_string(),
        })
}

/// A configured connection to one server address.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    /// How errors name the server (the socket path for a local client).
    shown: String,
    token: Option<String>,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    cert_failures: CertFailures,
    ca_given: bool,
    /// Local address outgoing connections are bound to, when chosen.
    local: Option<std::net::IpAddr>,
}

impl Client {
    /// `addr` like `https://host:8443`; `ca_pem` replaces the system roots when given.
    pub fn new(
        addr: &str,
        ca_pem: Option<&str>,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        let addr = addr.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&addr).map_err(|_| ClientError::Address(addr.clone()))?;
        if parsed.scheme() != "https" || parsed.host_str().is_none() {
            return Err(ClientError::Address(addr));
        }
        let (tls, cert_failures) = advising_client_config(ca_pem)?;
        let http = http_client(
            reqwest::Client::builder().tls_backend_preconfigured((*tls).clone()),
            &addr,
        )?;
        Ok(Self {
            shown: addr.clone(),
            addr,
            token,
            http,
            tls,
            cert_failures,
            ca_given: ca_pem.is_some(),
            local: None,
        })
    }

    /// The same client with every connection (API and relays) made from local address `ip`,
    /// like `curl --interface`: for hosts with several addresses, and for tests that need to
    /// be told apart from a load balancer on the same machine.
    pub fn bind_local(mut self, ip: std::net::IpAddr) -> Result<Self, ClientError> {
        self.http = http_client(
            reqwest::Client::builder()
                .tls_backend_preconfigured((*self.tls).clone())
                .local_address(ip),
            &self.addr,
        )?;
        self.local = Some(ip);
        Ok(self)
    }

    /// A client for the replica on this machine, through its admin socket (`--admin-socket`):
    /// plain HTTP over a Unix socket, no token.
    pub fn local(socket: &std::path::Path) -> Result<Self, ClientError> {
        crate::tls::install_crypto_provider();
        let addr = format!("unix:{}", socket.display());
        let http = http_client(reqwest::Client::builder().unix_socket(socket), &addr)?;
        Ok(Self {
            // reqwest sends every request to the socket; the host part is only for the URL.
            addr: "http://localhost".into(),
            shown: addr,
            token: None,
            http,
            // Never used for TLS: a local client makes no relay connections.
            tls: Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
            cert_failures: CertFailures::default(),
            ca_given: false,
            local: None,
        })
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A failed connection or exchange; a refused server certificate becomes advice instead.
    fn transport(&self, e: impl std::fmt::Display) -> ClientError {
        if let Some(advice) = self.cert_failures.take_advice(&self.addr, self.ca_given) {
            return ClientError::Certificate {
                addr: self.addr.clone(),
                advice,
            };
        }
        ClientError::Transport {
            addr: self.shown.clone(),
            message: e.to_string(),
        }
    }

    /// A JSON request; error statuses become [`ClientError::Api`].
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call_with_timeout(method, path, body, Duration::from_secs(30))
            .await
    }

    /// [`Client::call`] with its own overall timeout (long-running calls such as a drain).
    pub async fn call_with_timeout<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut req = self.request(method, path).timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            if status == StatusCode::NO_CONTENT {
                return serde_json::from_str("null").map_err(|e| self.transport(e));
            }
            return resp.json().await.map_err(|e| self.transport(e));
        }
        let retry_after = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        Err(api_error(status.as_u16(), &text, retry_after))
    }

    /// A request to `path` on this server, with the bearer token when there is one: every
    /// HTTP call goes through it.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.addr));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// `GET path` as raw bytes (a recording object).
    pub async fn get_bytes(&self, path: &str) -> Result<bytes::Bytes, ClientError> {
        let resp = self
            .request(Method::GET, path)
            .send()
            .await
            .map_err(|e| self.transport(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return resp.bytes().await.map_err(|e| self.transport(e));
        }
        let retry_after = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        Err(api_error(status.as_u16(), &text, retry_after))
    }

    /// `GET /v1/recordings/public-keys`: the trusted manifest keys (no token needed).
    pub async fn recording_public_keys(&self) -> Result<crate::wire::RecordingKeys, ClientError> {
        self.get("/v1/recordings/public-keys").await
    }

    /// `GET /v1/recordings/{id}/objects`: every object key of a recording.
    pub async fn recording_objects(
        &self,
        id: &str,
    ) -> Result<crate::wire::RecordingObjects, ClientError> {
        self.get(&format!("/v1/recordings/{}/objects", segment(id)))
            .await
    }

    /// `GET /v1/recordings/{id}/objects/{key}`: one object's bytes.
    pub async fn recording_object(&self, id: &str, key: &str) -> Result<bytes::Bytes, ClientError> {
        let key: Vec<String> = key.split('/').map(segment).collect();
        self.get_bytes(&format!(
            "/v1/recordings/{}/objects/{}",
            segment(id),
            key.join("/")
        ))
        .await
    }

    /// `GET path` as text (e.g. `/metrics`), with the token when there is one.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self
            .request(Method::GET, path)
            .send()
            .await
            .map_err(|e| self.transport(error_chain(&e)))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(api_error(status.as_u16(), &text, None))
        }
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    /// Follows the server-sent-event stream at `path` until the server closes it or `f` returns
    /// false, calling `f` for each event. `last_event_id` resumes after that event (the server
    /// replays the gap).
    pub async fn events(
        &self,
        path: &str,
        last_event_id: Option<&str>,
        mut f: impl FnMut(SseEvent) -> bool,
    ) -> Result<(), ClientError> {
        // A stream has no overall deadline; the server's keep-alives show it is alive.
        let mut req = self
            .request(Method::GET, path)
            .timeout(Duration::from_secs(365 * 24 * 3600))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| self.transport(error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let retry = retry_after(resp.headers());
            let text = resp.text().await.unwrap_or_default();
            return Err(api_error(status.as_u16(), &text, retry));
        }
        let mut parser = SseParser::default();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    for e in parser.push(&chunk) {
                        if !f(e) {
                            return Ok(());
                        }
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.transport(error_chain(&e))),
            }
        }
    }

    /// Opens the relay WebSocket of session `id`.
    pub async fn open_relay(&self, id: &str) -> Result<RelayStream, ClientError> {
        self.open_ws(&relay_path(id), None).await.map(|(ws, _)| ws)
    }

    /// Opens the watch WebSocket of live session `id` (`GET /v1/sessions/{id}/watch`): text
    /// messages, each a [`crate::wire::WatchMessage`].
    pub async fn open_watch(&self, id: &str) -> Result<RelayStream, ClientError> {
        self.open_ws(&format!("/v1/sessions/{}/watch", segment(id)), None)
            .await
            .map(|(ws, _)| ws)
    }

    /// A failed exchange on a stream this client opened (for callers outside this module).
    pub fn stream_error(&self, e: impl std::fmt::Display) -> ClientError {
        self.transport(e)
    }

    /// A client for a remote gateway at `addr` (`https://HOST:PORT`): the same trusted
    /// certificates and local address, and no API token (a gateway takes only grants).
    pub fn at(&self, addr: &str) -> Result<Self, ClientError> {
        let addr = addr.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&addr).map_err(|_| ClientError::Address(addr.clone()))?;
        if parsed.scheme() != "https" || parsed.host_str().is_none() {
            return Err(ClientError::Address(addr));
        }
        Ok(Self {
            shown: addr.clone(),
            addr,
            token: None,
            ..self.clone()
        })
    }

    /// Opens the relay of regional session `id` on this (remote gateway) client with the
    /// control plane's `grant`.
    pub async fn open_granted_relay(
        &self,
        id: &str,
        grant: &str,
    ) -> Result<RelayStream, ClientError> {
        self.open_ws(&relay_path(id), Some(grant))
            .await
            .map(|(ws, _)| ws)
    }

    /// Authorises and opens a relay to `target` in one request (targets without approval; the
    /// server answers 409 `approval_required` otherwise). Returns the relay and the session id.
    pub async fn open_target_relay(
        &self,
        target: &str,
    ) -> Result<(RelayStream, String), ClientError> {
        let (ws, session) = self.open_ws(&target_relay_path(target), None).await?;
        let session =
            session.ok_or_else(|| self.transport("the server did not name the session"))?;
        Ok((ws, session))
    }

    /// Opens a relay WebSocket at `path`, authenticated by the API token or, on a remote
    /// gateway, by `grant`; also returns the session the server named, if any.
    async fn open_ws(
        &self,
        path: &str,
        grant: Option<&str>,
    ) -> Result<(RelayStream, Option<String>), ClientError> {
        let url = format!("{}{}", self.addr.replacen("https://", "wss://", 1), path);
        let mut req = url.into_client_request().map_err(|e| self.transport(e))?;
        match grant {
            Some(g) => {
                let v = g.parse().map_err(|_| self.transport("unusable grant"))?;
                req.headers_mut()
                    .insert(crate::agent::remote::GRANT_HEADER, v);
            }
            None => {
                let token = self.token.as_ref().ok_or(ClientError::NoToken)?;
                let auth = format!("Bearer {token}")
                    .parse()
                    .map_err(|_| ClientError::NoToken)?;
                req.headers_mut().insert("authorization", auth);
            }
        }
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        let fut = async {
            let Some(ip) = self.local else {
                return tokio_tungstenite::connect_async_tls_with_config(
                    req,
                    Some(relay_ws_config()),
                    true,
                    Some(connector),
                )
                .await;
            };
            let stream = self.connect_from(ip, req.uri()).await?;
            tokio_tungstenite::client_async_tls_with_config(
                req,
                stream,
                Some(relay_ws_config()),
                Some(connector),
            )
            .await
        };
        match tokio::time::timeout(Duration::from_secs(15), fut).await {
            Err(_) => Err(self.transport("relay handshake timed out")),
            Ok(Ok((ws, resp))) => {
                let session = resp
                    .headers()
                    .get(SESSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                Ok((ws, session))
            }
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let retry = retry_after(resp.headers());
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default();
                Err(api_error(resp.status().as_u16(), &body, retry))
            }
            Ok(Err(e)) => Err(self.transport(e)),
        }
    }
}

impl Client {
    /// A TCP connection to `uri`'s host from local address `ip` (see [`Client::bind_local`]).
    async fn connect_from(
        &self,
        ip: std::net::IpAddr,
        uri: &tungstenite::http::Uri,
    ) -> Result<tokio::net::TcpStream, tungstenite::Error> {
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let port = uri.port_u16().unwrap_or(443);
        let mut last = None;
        for addr in tokio::net::lookup_host((host, port)).await? {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
            match socket.connect(addr).await {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| std::io::Error::other(format!("{host} has no address")))
            .into())
    }
}

/// The typed API: one method per endpoint, each returning the wire type the server answers
/// with. Errors keep the server's [`ErrorCode`].
impl Client {
    /// `POST /v1/sessions`: authorises a session to `target` (status `pending` when an approver
    /// must decide first).
    pub async fn create_session(&self, target: &str) -> Result<Authorized, ClientError> {
        let body = NewSession {
            target: target.to_string(),
        };
        self.call(Method::POST, "/v1/sessions", Some(&body)).await
    }

    /// `GET /v1/sessions/{id}`.
    pub async fn session(&self, id: &str) -> Result<SessionView, ClientError> {
        self.get(&format!("/v1/sessions/{}", segment(id))).await
    }

    /// `GET /v1/sessions?limit=N`: the newest sessions first (the server's default without a
    /// limit).
    pub async fn sessions(&self, limit: Option<u32>) -> Result<Vec<SessionView>, ClientError> {
        match limit {
            Some(n) => self.get(&format!("/v1/sessions?limit={n}")).await,
            None => self.get("/v1/sessions").await,
        }
    }

    /// `DELETE /v1/sessions/{id}`: terminates a session; returns it after the change.
    pub async fn terminate(&self, id: &str) -> Result<SessionView, ClientError> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("/v1/sessions/{}", segment(id)),
            None,
        )
        .await
    }

    /// `GET /v1/targets`.
    pub async fn targets(&self) -> Result<Vec<TargetView>, ClientError> {
        self.get("/v1/targets").await
    }

    /// `GET /v1/targets/{name}`.
    pub async fn target(&self, name: &str) -> Result<TargetView, ClientError> {
        self.get(&format!("/v1/targets/{}", segment(name))).await
    }

    /// `POST /v1/targets` (admin).
    pub async fn add_target(&self, target: &NewTarget) -> Result<TargetView, ClientError> {
        self.call(Method::POST, "/v1/targets", Some(target)).await
    }

    /// `DELETE /v1/targets/{name}` (admin).
    pub async fn remove_target(&self, name: &str) -> Result<(), ClientError> {
        self.call::<(), ()>(
            Method::DELETE,
            &format!("/v1/targets/{}", segment(name)),
            None,
        )
        .await
    }

    /// `POST /v1/tokens` (admin): the answer carries the secret, shown only this once.
    pub async fn create_token(&self, token: &NewToken) -> Result<CreatedToken, ClientError> {
        self.call(Method::POST, "/v1/tokens", Some(token)).await
    }

    /// `GET /v1/tokens` (admin): every token, never a secret.
    pub async fn tokens(&self) -> Result<Vec<TokenView>, ClientError> {
        self.get("/v1/tokens").await
    }

    /// `DELETE /v1/tokens/{id}` (admin): revokes a token; returns it after the change.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenView, ClientError> {
        self.call::<(), _>(Method::DELETE, &format!("/v1/tokens/{}", segment(id)), None)
            .await
    }

    /// `GET /v1/approvals` (approver): sessions waiting for a decision.
    pub async fn approvals(&self) -> Result<Vec<SessionView>, ClientError> {
        self.get("/v1/approvals").await
    }

    /// `POST /v1/approvals/{id}/approve` (approver).
    pub async fn approve(&self, id: &str, reason: &str) -> Result<DecisionResult, ClientError> {
        self.decide(id, "approve", reason).await
    }

    /// `POST /v1/approvals/{id}/deny` (approver).
    pub async fn deny(&self, id: &str, reason: &str) -> Result<DecisionResult, ClientError> {
        self.decide(id, "deny", reason).await
    }

    async fn decide(
        &self,
        id: &str,
        verb: &str,
        reason: &str,
    ) -> Result<DecisionResult, ClientError> {
        let body = DecisionBody {
            reason: reason.to_string(),
        };
        self.call(
            Method::POST,
            &format!("/v1/approvals/{}/{verb}", segment(id)),
            Some(&body),
        )
        .await
    }

    /// `GET /v1/system/status` of the replica that answers.
    pub async fn system_status(&self) -> Result<SystemStatus, ClientError> {
        self.get("/v1/system/status").await
    }

    /// `POST /v1/system/drain?timeout=…` (admin): returns once the replica is empty, at most
    /// `timeout` plus a minute later.
    pub async fn drain(&self, timeout: Duration) -> Result<(), ClientError> {
        let path = format!("/v1/system/drain?timeout={}s", timeout.as_secs());
        self.call_with_timeout::<(), ()>(
            Method::POST,
            &path,
            None,
            timeout + Duration::from_secs(60),
        )
        .await
    }

    /// `GET /v1/recordings/{id}/verify` (approver).
    pub async fn verify_recording(&self, id: &str) -> Result<Verification, ClientError> {
        self.get(&format!("/v1/recordings/{}/verify", segment(id)))
            .await
    }

    /// `GET /healthz`: the status code and the document, whichever the status (a 503 still
    /// says why).
    pub async fn healthz(&self) -> Result<(u16, Healthz), ClientError> {
        self.probe("/healthz").await
    }

    /// `GET /readyz`: the status code and the document, whichever the status.
    pub async fn readyz(&self) -> Result<(u16, Readyz), ClientError> {
        self.probe("/readyz").await
    }

    /// `GET /v1/openapi.json`: the API's OpenAPI document.
    pub async fn openapi(&self) -> Result<utoipa::openapi::OpenApi, ClientError> {
        self.get("/v1/openapi.json").await
    }

    /// A health document read whatever the status; an answer that is not one becomes an error.
    async fn probe<T: DeserializeOwned>(&self, path: &str) -> Result<(u16, T), ClientError> {
        // With a token, `/readyz` names each failing dependency's error.
        let resp = self
            .request(Method::GET, path)
            .send()
            .await
            .map_err(|e| self.transport(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let retry = retry_after(resp.headers());
        let text = resp.text().await.map_err(|e| self.transport(e))?;
        match serde_json::from_str(&text) {
            Ok(doc) => Ok((status, doc)),
            Err(e) if (200..300).contains(&status) => Err(self.transport(e)),
            Err(_) => Err(api_error(status, &text, retry)),
        }
    }
}

/// `s` as one URL path segment: everything but unreserved characters percent-encoded, so an
/// id or name can never reach another endpoint.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The relay connection type.
pub type RelayStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<u64> {
    h.get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn api_error(status: u16, body: &str, retry_after: Option<u64>) -> ClientError {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(b) => ClientError::Api {
            status,
            code: b.code,
            message: b.message,
            retry_after,
        },
        Err(_) => ClientError::Api {
            status,
            code: ErrorCode::HttpError,
            message: if body.trim().is_empty() {
                format!("HTTP {status}")
            } else {
                body.trim().to_string()
            },
            retry_after,
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Retries `op` while its error is retryable, until `deadline` has passed since the first try,
/// with the client backoff of [`crate::retry::client`] (jittered, 200 ms to 2 s); waits the
/// server's `Retry-After` when given (at most four times the current backoff).
pub async fn with_retries<T, F, Fut>(
    deadline: Duration,
    mut on_retry: impl FnMut(&ClientError),
    op: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    use backon::Retryable;
    let start = Instant::now();
    op.retry(crate::retry::client(deadline))
        .when(|e| e.is_retryable() && start.elapsed() < deadline)
        .adjust(|e, backoff| {
            backoff.map(|d| match e {
                ClientError::Api {
                    retry_after: Some(s),
                    ..
                } => Duration::from_secs(*s).min(d * 4),
                _ => d,
            })
        })
        .notify(|e, _| on_retry(e))
        .await
}

/// Bytes moved by [`pump`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pumped {
    /// Local input → target.
    pub up: u64,
    /// Target → local output.
    pub down: u64,
}

/// Largest frame `wgctl` sends: the server keeps about one incoming frame of read buffer per
/// session after traffic, so this bounds its memory per idle session.
pub const CLIENT_CHUNK: usize = crate::pump::DEFAULT_CHUNK;

/// The relay WebSocket's settings on the client: frames are written as they are sent (every
/// send flushes anyway), and the read buffer holds a few frames.
pub fn relay_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(0)
}

/// A tungstenite WebSocket as the pump's frame sink and stream (the server adapts axum's).
pub fn frames<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
) -> (
    impl Sink<Frame, Error = tungstenite::Error> + Unpin,
    impl Stream<Item = Result<Frame, tungstenite::Error>> + Unpin,
)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, rx) = ws.split();
    let tx = tx.with(|f: Frame| futures::future::ready(Ok::<_, tungstenite::Error>(to_message(f))));
    let rx = rx.filter_map(|m| {
        futures::future::ready(match m {
            Ok(m) => from_message(m).map(Ok),
            Err(e) => Some(Err(e)),
        })
    });
    (tx, rx)
}

fn to_message(f: Frame) -> Message {
    match f {
        Frame::Data(b) => Message::Binary(b),
        Frame::HalfClose => Message::Text(HALF_CLOSE.into()),
        Frame::Close(c) => Message::Close(c.map(|c| CloseFrame {
            code: CloseCode::from(c.code),
            reason: c.reason.into(),
        })),
        Frame::Ping => Message::Ping(Default::default()),
        Frame::Pong => Message::Pong(Default::default()),
    }
}

/// A message as a pump frame. The server's pings are answered by tungstenite itself (on the
/// next read); they reach the pump only as signs of life.
fn from_message(m: Message) -> Option<Frame> {
    match m {
        Message::Binary(b) => Some(Frame::Data(b)),
        Message::Text(t) if t.as_str() == HALF_CLOSE => Some(Frame::HalfClose),
        Message::Close(c) => Some(Frame::Close(c.map(|c| CloseInfo {
            code: u16::from(c.code),
            reason: c.reason.to_string(),
        }))),
        Message::Ping(_) => Some(Frame::Ping),
        Message::Pong(_) => Some(Frame::Pong),
        _ => None,
    }
}

/// Copies `input` to the relay and the relay to `output` until the server closes it, with the
/// shared [`crate::pump`]. Local EOF half-closes (the target sees EOF and may still answer). A
/// close frame with a non-normal code becomes [`ClientError::RelayClosed`].
///
/// The two directions run independently: a send that waits for the relay to drain never stops
/// this side from reading what the relay sends back (with a peer that writes while it reads —
/// an echo, rsync, a COPY with notices — waiting in one loop filled every buffer and deadlocked).
pub async fn pump<S, R, W>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    input: R,
    output: W,
) -> Result<Pumped, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = frames(ws);
    let out = crate::pump::run(
        &mut rx,
        &mut tx,
        ReadSource::new(input),
        output,
        std::future::pending::<std::convert::Infallible>(),
        None,
        PumpConfig {
            chunk: CLIENT_CHUNK,
            on_source_eof: OnSourceEof::HalfClose,
            keepalive: Default::default(),
        },
    )
    .await;
    let pumped = Pumped {
        up: out.counts.to_socket,
        down: out.counts.from_socket,
    };
    match out.ended {
        Ended::SocketClosed(c) => {
            let (code, reason) = c
                .map(|c| (c.code, c.reason))
                .unwrap_or((CLOSE_NORMAL, String::new()));
            if code == CLOSE_NORMAL {
                Ok(pumped)
            } else {
                Err(ClientError::RelayClosed { code, reason })
            }
        }
        Ended::SocketLost(reason) => Err(ClientError::RelayClosed { code: 1006, reason }),
        Ended::StreamFailed(e) => Err(ClientError::Io(e)),
        // Not with `OnSourceEof::HalfClose`: the input's end is only passed on.
        Ended::StreamEof => Ok(pumped),
        // The client runs without keep-alive limits (the server pings and judges).
        Ended::Unresponsive(d) | Ended::Idle(d) => Err(ClientError::RelayClosed {
            code: 1006,
            reason: format!("no sign of the relay for {d:?}"),
        }),
        Ended::Stopped(never) => match never {},
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` field (the resume point).
    pub id: Option<String>,
    /// `event:` field (`message` when absent).
    pub event: String,
    /// `data:` lines joined with newlines.
    pub data: String,
}

/// An incremental `text/event-stream` parser: feed it bytes as they arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    cur: SseEvent,
    has_data: bool,
}

impl SseEvent {
    /// The event's data as the typed [`Event`] the server sends on `/v1/events`.
    pub fn parse(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_str(&self.data)
    }
}

impl SseParser {
    /// Adds bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    let mut e = std::mem::take(&mut self.cur);
                    if e.event.is_empty() {
                        e.event = "message".into();
                    }
                    out.push(e);
                }
                self.cur = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue; // comment / keep-alive
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.cur.id = Some(value.to_string()),
                "event" => self.cur.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod sse_tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape_their_endpoint() {
        assert_eq!(segment("db-1.prod_eu"), "db-1.prod_eu");
        assert_eq!(segment("../approvals/x"), "..%2Fapprovals%2Fx");
        assert_eq!(segment("a b?c#d"), "a%20b%3Fc%23d");
    }

    #[test]
    fn error_answers_keep_the_code_and_fall_back_without_a_body() {
        match api_error(409, r#"{"code":"already_decided","message":"m"}"#, None) {
            ClientError::Api { status, code, .. } => {
                assert_eq!((status, code), (409, ErrorCode::AlreadyDecided));
            }
            other => panic!("{other:?}"),
        }
        match api_error(418, r#"{"code":"teapot_mode","message":"m"}"#, Some(3)) {
            ClientError::Api {
                code, retry_after, ..
            } => {
                assert_eq!(code, ErrorCode::Other("teapot_mode".into()));
                assert_eq!(retry_after, Some(3));
            }
            other => panic!("{other:?}"),
        }
        match api_error(502, "<html>bad gateway</html>", None) {
            ClientError::Api { code, message, .. } => {
                assert_eq!(code, ErrorCode::HttpError);
                assert_eq!(message, "<html>bad gateway</html>");
            }
            other => panic!("{other:?}"),
        }
        let unreachable = api_error(502, r#"{"code":"target_unreachable","message":"m"}"#, None);
        assert_eq!(unreachable.exit_code(), 69);
    }

    #[test]
    fn events_split_across_chunks_keep_ids_kinds_and_multiline_data() {
        let mut p = SseParser::default();
        assert!(p.push(b"id: 7\nevent: approval.requested\nda").is_empty());
        let evs = p.push(b"ta: {\"a\":1}\n\n: keep-alive\n\ndata: x\ndata: y\n\n");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].id.as_deref(), Some("7"));
        assert_eq!(evs[0].event, "approval.requested");
        assert_eq!(evs[0].data, "{\"a\":1}");
        assert_eq!(
            (evs[1].event.as_str(), evs[1].data.as_str()),
            ("message", "x\ny")
        );
    }
}
