//! The gateway end of the agent link (`--role gateway --control-plane https://HOST:8444`).
//!
//! On first start the gateway trades its join token (`--join-token-file`) and a certificate
//! request for a client certificate, and keeps key and certificate in its state directory; later
//! starts reuse them, so the one-time token is needed once. It then holds one long-lived
//! stream: a heartbeat up every interval, commands down (drain, terminate — both through the
//! replica's one drain path and the session core). A lost link is retried with the jittered
//! backoff of [`crate::retry::forever`], through the load balancer, so any control-plane replica
//! may pick it up. The certificate is renewed once two thirds of its lifetime have passed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate as TlsCert, Channel, ClientTlsConfig, Endpoint, Identity};

use super::ca::{gateway_of, new_key_and_csr};
use super::proto::agent_client::AgentClient;
use super::proto::{Down, Heartbeat, JoinRequest, RenewRequest, Up, down, up};
use super::state::RemoteState;
use crate::metrics::Metrics;
use crate::replica::Replica;

/// How the gateway reaches the control plane.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `https://HOST:8444`.
    pub control_plane: url::Url,
    /// PEM CA certificates trusted for the control plane's serving certificate (None: the
    /// system roots).
    pub control_plane_ca: Option<String>,
    /// File holding the one-time join token (needed only until the first certificate).
    pub join_token_file: Option<PathBuf>,
    /// The region this gateway serves.
    pub region: String,
    /// Where the key and certificate are kept.
    pub state_dir: PathBuf,
    /// The address this gateway serves relays on (reported in heartbeats).
    pub address: String,
    /// Heartbeat interval.
    pub interval: Duration,
}

/// Link failures, each retried.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Reading or writing the state directory or token file.
    #[error("{0}")]
    Local(String),
    /// The control plane could not be reached.
    #[error("control plane unreachable: {0}")]
    Transport(String),
    /// The control plane refused or ended the call.
    #[error("control plane refused: {code:?}: {message}")]
    Refused {
        /// gRPC code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
}

impl From<tonic::Status> for LinkError {
    fn from(s: tonic::Status) -> Self {
        // tonic reports a failed connection as `Unavailable` with the transport error inside.
        LinkError::Refused {
            code: s.code(),
            message: error_chain(&s),
        }
    }
}

/// The gateway's credentials as kept in the state directory.
#[derive(Debug, Clone)]
struct Credentials {
    id: String,
    cert: String,
    key: String,
    not_before_ms: i64,
    not_after_ms: i64,
}

/// The control plane back-dates `not_before` by this much for clock skew (see `AgentCa::sign`).
const BACKDATE_MS: i64 = 5 * 60_000;

/// How long an HTTP/2 keepalive ping may go unanswered before the link counts as lost.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A link never ends for a renewal sooner than this after it started, so a renewal that keeps
/// failing (the control plane's store is down) cannot make the link flap.
const MIN_RENEW_WAIT: Duration = Duration::from_secs(60);

impl Credentials {
    /// When to renew: two thirds into the certificate's lifetime, counted from its issue.
    fn renew_at_ms(&self) -> i64 {
        let issued = (self.not_before_ms + BACKDATE_MS).min(self.not_after_ms);
        issued + (self.not_after_ms - issued) * 2 / 3
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Runs the gateway's side of the link forever.
#[derive(Debug, Clone)]
pub struct GatewayLink {
    /// Configuration.
    pub config: LinkConfig,
    /// This replica (drain, live relay count).
    pub replica: Arc<Replica>,
    /// What the relays share with the link: link state, grant keys, terminations, events.
    pub state: Arc<super::state::RemoteState>,
    /// Metrics (`wg_agent_link_up`, `wg_agent_offline_seconds`).
    pub metrics: Metrics,
}

impl GatewayLink {
    fn local(what: &str, e: impl std::fmt::Display) -> LinkError {
        LinkError::Local(format!("{what}: {e}"))
    }

    fn load(&self) -> Result<Option<Credentials>, LinkError> {
        let (c, k) = (
            self.config.state_dir.join("cert.pem"),
            self.config.state_dir.join("key.pem"),
        );
        if !c.exists() || !k.exists() {
            return Ok(None);
        }
        let cert = std::fs::read_to_string(&c).map_err(|e| Self::local("reading cert.pem", e))?;
        let key = std::fs::read_to_string(&k).map_err(|e| Self::local("reading key.pem", e))?;
        Ok(parse_credentials(cert, key))
    }

    fn store(&self, cert: &str, key: &str) -> Result<Credentials, LinkError> {
        let dir = &self.config.state_dir;
        std::fs::create_dir_all(dir).map_err(|e| Self::local("creating the state dir", e))?;
        for (name, body) in [("key.pem", key), ("cert.pem", cert)] {
            let tmp = dir.join(format!(".{name}.tmp"));
            write_private(&tmp, body).map_err(|e| Self::local(name, e))?;
            std::fs::rename(&tmp, dir.join(name)).map_err(|e| Self::local(name, e))?;
        }
        parse_credentials(cert.to_string(), key.to_string()).ok_or_else(|| {
            LinkError::Local("the control plane sent an unusable certificate".into())
        })
    }

    async fn channel(&self, creds: Option<&Credentials>) -> Result<Channel, LinkError> {
        let url = &self.config.control_plane;
        let mut tls = ClientTlsConfig::new().domain_name(url.host_str().unwrap_or("localhost"));
        tls = match &self.config.control_plane_ca {
            Some(pem) => tls.ca_certificate(TlsCert::from_pem(pem)),
            None => tls.with_native_roots(),
        };
        if let Some(c) = creds {
            tls = tls.identity(Identity::from_pem(&c.cert, &c.key));
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| LinkError::Local(format!("--control-plane: {e}")))?
            .tls_config(tls)
            .map_err(|e| LinkError::Local(format!("agent TLS: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(self.keepalive_interval())
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        endpoint
            .connect()
            .await
            .map_err(|e| LinkError::Transport(error_chain(&e)))
    }

    /// The stored credentials, or new ones from a join.
    async fn credentials(&self) -> Result<Credentials, LinkError> {
        if let Some(c) = self.load()?
            && c.not_after_ms > now_ms()
        {
            return Ok(c);
        }
        let file = self.config.join_token_file.as_ref().ok_or_else(|| {
            LinkError::Local(
                "no certificate in the state dir and no --join-token-file to join with".into(),
            )
        })?;
        let token =
            std::fs::read_to_string(file).map_err(|e| Self::local("reading the join token", e))?;
        let (key, csr_pem) = new_key_and_csr().map_err(|e| Self::local("new key", e))?;
        let mut client = AgentClient::new(self.channel(None).await?);
        let got = client
            .join(JoinRequest {
                token: token.trim().to_string(),
                region: self.config.region.clone(),
                csr_pem,
            })
            .await?
            .into_inner();
        tracing::info!(event = "agent_joined", gateway = %got.gateway_id, region = %self.config.region);
        self.store(&got.cert_pem, &key)
    }

    async fn renew(&self, creds: &Credentials) -> Result<Credentials, LinkError> {
        let (key, csr_pem) = new_key_and_csr().map_err(|e| Self::local("new key", e))?;
        let mut client = AgentClient::new(self.channel(Some(creds)).await?);
        let got = client.renew(RenewRequest { csr_pem }).await?.into_inner();
        tracing::info!(event = "agent_cert_renewed", gateway = %got.gateway_id);
        self.store(&got.cert_pem, &key)
    }

    fn keepalive_interval(&self) -> Duration {
        self.config.interval.max(Duration::from_secs(1))
    }

    /// How long after its last heartbeat the control plane recorded this gateway's sessions
    /// are over at the latest, were the link lost right after it: the next heartbeat's
    /// interval, the keepalive that finds the link dead, then the offline grace.
    fn lost_after(&self) -> Duration {
        self.config.interval
            + self.keepalive_interval()
            + KEEPALIVE_TIMEOUT
            + self.state.policy.grace
    }

    fn heartbeat(&self) -> Up {
        Up {
            msg: Some(up::Msg::Heartbeat(Heartbeat {
                region: self.config.region.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                address: self.config.address.clone(),
                sessions: self.replica.relays(),
                live_sessions: self.state.events.live(),
                lost_after_ms: i64::try_from(self.lost_after().as_millis()).unwrap_or(i64::MAX),
            })),
        }
    }

    /// One link: returns when it ends. `linked` is called once the control plane welcomed it.
    async fn link_once(
        &self,
        creds: &Credentials,
        linked: &mut impl FnMut(&str),
    ) -> Result<(), LinkError> {
        let mut client = AgentClient::new(self.channel(Some(creds)).await?);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let _ = tx.send(self.heartbeat()).await;
        let mut down_stream = client.link(ReceiverStream::new(rx)).await?.into_inner();
        // Every unacknowledged event is sent again on each new link, in order: the control
        // plane drops the ones it recorded before (by sequence number).
        let mut sent = 0u64;
        let mut welcomed = false;
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.tick().await;
        let renew_in =
            Duration::from_millis(u64::try_from(creds.renew_at_ms() - now_ms()).unwrap_or(0))
                .max(MIN_RENEW_WAIT);
        let renew = tokio::time::sleep(renew_in);
        tokio::pin!(renew);
        // The certificate's expiry ends the link too (it would be refused at the next call).
        let expires = tokio::time::sleep(Duration::from_millis(
            u64::try_from(creds.not_after_ms - now_ms()).unwrap_or(0),
        ));
        tokio::pin!(expires);
        loop {
            let pushed = self.state.events.pushed();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            if welcomed {
                for ev in self.state.events.after(sent) {
                    sent = ev.seq;
                    if tx
                        .send(Up {
                            msg: Some(up::Msg::Event(ev)),
                        })
                        .await
                        .is_err()
                    {
                        return Err(LinkError::Transport("the link's send side closed".into()));
                    }
                }
            }
            tokio::select! {
                _ = ticker.tick() => {
                    if tx.send(self.heartbeat()).await.is_err() {
                        return Err(LinkError::Transport("the link's send side closed".into()));
                    }
                }
                _ = pushed => {}
                // Renewal ends this link; the next one presents the new certificate.
                _ = &mut renew => return Ok(()),
                _ = &mut expires => return Err(LinkError::Local("the certificate expired".into())),
                m = down_stream.message() => match m? {
                    None => return Err(LinkError::Transport("the control plane closed the link".into())),
                    Some(Down { msg }) => {
                        if matches!(msg, Some(down::Msg::Welcome(_))) {
                            welcomed = true;
                        }
                        self.command(msg, linked)
                    }
                },
            }
        }
    }

    fn command(&self, msg: Option<down::Msg>, linked: &mut impl FnMut(&str)) {
        match msg {
            Some(down::Msg::Welcome(w)) => {
                self.state.set_grant_keys(
                    w.grant_keys
                        .into_iter()
                        .map(|k| (k.kid, k.public_key))
                        .collect(),
                );
                linked(&w.replica)
            }
            Some(down::Msg::Ack(a)) => self.state.events.ack(a.seq),
            Some(down::Msg::Drain(d)) => {
                let timeout = match d.timeout_seconds {
                    0 => crate::replica::DEFAULT_DRAIN_TIMEOUT,
                    s => Duration::from_secs(s),
                };
                tracing::info!(event = "agent_command", command = "drain", ?timeout);
                let replica = self.replica.clone();
                tokio::spawn(async move {
                    let outcome = replica.drain(timeout).await;
                    tracing::info!(event = "agent_drain_done", outcome = %outcome);
                });
            }
            Some(down::Msg::Terminate(t)) => {
                tracing::info!(event = "agent_command", command = "terminate", session = %t.session_id);
                self.state.terminate(&t.session_id);
            }
            None => {}
        }
    }

    /// Joins if needed, then holds the link forever, reconnecting with jittered backoff.
    pub async fn run(self) {
        self.metrics.agent_link_up.set(0);
        self.state.set_offline();
        let gauge = self.metrics.agent_offline_seconds.clone();
        let state: Arc<RemoteState> = self.state.clone();
        let ticker = tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(500));
            loop {
                t.tick().await;
                gauge.set(
                    state
                        .offline_since()
                        .map_or(0.0, |s| s.elapsed().as_secs_f64()),
                );
            }
        });
        let mut backoff = crate::retry::forever().build();
        loop {
            let mut welcomed = false;
            let result = match self.credentials().await {
                Err(e) => Err(e),
                Ok(creds) => {
                    let creds = if now_ms() >= creds.renew_at_ms() {
                        match self.renew(&creds).await {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::warn!(event = "agent_renew_failed", error = %e);
                                creds
                            }
                        }
                    } else {
                        creds
                    };
                    self.state.set_gateway_id(&creds.id);
                    let mut linked = |replica: &str| {
                        welcomed = true;
                        self.metrics.agent_link_up.set(1);
                        self.state.set_online();
                        tracing::info!(event = "agent_linked", gateway = %creds.id, replica);
                    };
                    self.link_once(&creds, &mut linked).await
                }
            };
            self.metrics.agent_link_up.set(0);
            self.state.set_offline();
            if welcomed {
                backoff = crate::retry::forever().build();
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            match result {
                Ok(()) => tracing::info!(event = "agent_relink", "renewed; linking again"),
                Err(e) => {
                    tracing::warn!(event = "agent_link_lost", error = %e, retry_in = ?delay)
                }
            }
            tokio::time::sleep(delay).await;
            if ticker.is_finished() {
                break;
            }
        }
    }
}

fn parse_credentials(cert: String, key: String) -> Option<Credentials> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).ok()?;
    let (id, not_after_ms) = gateway_of(der.as_ref())?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(Credentials {
        id,
        cert,
        key,
        not_before_ms: parsed.validity().not_before.timestamp() * 1000,
        not_after_ms,
    })
}

/// Writes a file readable only by its owner (it may hold a private key).
fn write_private(path: &std::path::Path, body: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(body.as_bytes())?;
    f.sync_all()
}

/// An error and its sources on one line (a transport error's cause is the useful part).
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn renewal_is_two_thirds_into_the_lifetime_from_issue_not_from_the_backdated_start() {
        let ca = crate::agent::AgentCa::from_pem(&crate::agent::AgentCa::generate("t").unwrap())
            .unwrap();
        let (key, csr) = new_key_and_csr().unwrap();
        let (cert, _) = ca.sign("gw-r", &csr, Duration::from_secs(60)).unwrap();
        let c = parse_credentials(cert, key).unwrap();
        let in_40s = now_ms() + 40_000;
        assert!(
            (c.renew_at_ms() - in_40s).abs() < 3_000,
            "{}",
            c.renew_at_ms() - now_ms()
        );
        assert_eq!(c.id, "gw-r");
    }
}
