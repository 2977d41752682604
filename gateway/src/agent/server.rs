//! The control-plane end of the agent link: gRPC with mutual TLS on `--agent-listen` (8444).
//!
//! The server certificate is the replica's serving certificate. Client certificates are
//! optional at the TLS layer (a gateway that has not joined yet has none) but must chain to the
//! agent CA when presented; `Renew` and `Link` require one, and look the gateway up in Postgres
//! on every call so a revoked gateway is refused at once. A link's heartbeats are written to the
//! gateway's row by whichever replica holds the link; a heartbeat that finds the gateway
//! revoked cuts the link.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate as TlsCert, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use super::ca::{AgentCa, gateway_of};
use super::proto::agent_server::{Agent, AgentServer};
use super::proto::{Certificate, Down, JoinRequest, RenewRequest, Up, Welcome, down, up};
use crate::metrics::Metrics;
use crate::store::Store;

/// What the control plane's agent service needs.
#[derive(Debug, Clone)]
pub struct AgentService {
    /// Durable store (join tokens, gateway rows).
    pub store: Store,
    /// The shared agent CA.
    pub ca: Arc<AgentCa>,
    /// This replica's id (written as the link holder).
    pub replica: String,
    /// Lifetime of the client certificates it signs.
    pub cert_ttl: Duration,
    /// A link with no heartbeat for this long is cut.
    pub silent_after: Duration,
    /// Metrics (`wg_agent_gateways`).
    pub metrics: Metrics,
    /// The session core: gateways' session events are recorded through it.
    pub sessions: crate::session::Sessions,
    /// The grant keys whose public halves every link's welcome carries.
    pub grants: Arc<super::grant::GrantSigner>,
}

/// Longest a region name may be (it is shown in tables and used as a label).
const MAX_REGION: usize = 63;

fn store_status(e: crate::store::StoreError) -> Status {
    Status::unavailable(format!("control plane store: {e}; retry"))
}

impl AgentService {
    /// The gateway id of the caller's client certificate and the certificate's expiry (unix
    /// ms), if the gateway exists and is not revoked. The TLS layer has already checked that
    /// the certificate chains to the agent CA and is within its validity.
    async fn gateway<T>(&self, req: &Request<T>) -> Result<(String, i64), Status> {
        let certs = req.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "a gateway client certificate is required; join with a join token first",
            )
        })?;
        let (id, not_after_ms) = certs
            .first()
            .and_then(|c| gateway_of(c.as_ref()))
            .ok_or_else(|| Status::unauthenticated("the client certificate names no gateway"))?;
        match self.store.gateway(&id).await.map_err(store_status)? {
            None => Err(Status::unauthenticated(format!("unknown gateway {id}"))),
            Some(g) if g.revoked_at.is_some() => Err(Status::permission_denied(format!(
                "gateway {id} was revoked; join again with a new join token"
            ))),
            Some(_) => Ok((id, not_after_ms)),
        }
    }

    fn sign(&self, id: &str, csr: &str) -> Result<(String, i64), Status> {
        let (pem, not_after) = self
            .ca
            .sign(id, csr, self.cert_ttl)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ms = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        Ok((pem, ms))
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<Certificate>, Status> {
        let r = req.into_inner();
        let region = r.region.trim();
        if region.is_empty() || region.len() > MAX_REGION {
            return Err(Status::invalid_argument(
                "region must be 1 to 63 characters (--region)",
            ));
        }
        let id = format!("gw-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let (cert_pem, not_after_ms) = self.sign(&id, &r.csr_pem)?;
        match self
            .store
            .join_gateway(
                &crate::token::hash(r.token.trim()),
                region,
                &id,
                not_after_ms,
            )
            .await
            .map_err(store_status)?
        {
            Ok(()) => {
                tracing::info!(event = "gateway_joined", gateway = %id, region, replica = %self.replica);
                Ok(Response::new(Certificate {
                    gateway_id: id,
                    cert_pem,
                    not_after_ms,
                }))
            }
            Err(refusal) => {
                tracing::warn!(event = "gateway_join_refused", region, reason = %refusal);
                Err(Status::permission_denied(refusal.to_string()))
            }
        }
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<Certificate>, Status> {
        let (id, _) = self.gateway(&req).await?;
        let (cert_pem, not_after_ms) = self.sign(&id, &req.into_inner().csr_pem)?;
        if !self
            .store
            .renew_gateway(&id, not_after_ms)
            .await
            .map_err(store_status)?
        {
            return Err(Status::permission_denied(format!(
                "gateway {id} was revoked"
            )));
        }
        tracing::info!(event = "gateway_renewed", gateway = %id);
        Ok(Response::new(Certificate {
            gateway_id: id,
            cert_pem,
            not_after_ms,
        }))
    }

    type LinkStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Down, Status>> + Send>>;

    async fn link(
        &self,
        req: Request<Streaming<Up>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let (id, not_after_ms) = self.gateway(&req).await?;
        let inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let welcome = Down {
            msg: Some(down::Msg::Welcome(Welcome {
                replica: self.replica.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                grant_keys: self
                    .grants
                    .public()
                    .into_iter()
                    .map(|(kid, public_key)| super::proto::GrantKey { kid, public_key })
                    .collect(),
            })),
        };
        let _ = tx.send(Ok(welcome)).await;
        tokio::spawn(hold(self.clone(), id, not_after_ms, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Holds one link until the gateway goes away, falls silent, or is found revoked.
async fn hold(
    svc: AgentService,
    id: String,
    not_after_ms: i64,
    mut inbound: Streaming<Up>,
    tx: tokio::sync::mpsc::Sender<Result<Down, Status>>,
) {
    svc.metrics.agent_gateways.inc();
    tracing::info!(event = "agent_link_up", gateway = %id, replica = %svc.replica);
    // Only a link that recorded a heartbeat records its end: a link that never spoke must not
    // mark another, live link of the same gateway on this replica as ended.
    let mut recorded = false;
    // The link never outlives the certificate it was opened with.
    let expiry = tokio::time::sleep(Duration::from_millis(
        u64::try_from(not_after_ms - crate::store::now_ms()).unwrap_or(0),
    ));
    tokio::pin!(expiry);
    // The last event sequence number recorded for this gateway (read at the first event).
    let mut applied: Option<i64> = None;
    let why = loop {
        let next = tokio::select! {
            n = tokio::time::timeout(svc.silent_after, inbound.message()) => n,
            _ = tx.closed() => break "the gateway went away".to_string(),
            _ = &mut expiry => {
                let _ = tx
                    .send(Err(Status::unauthenticated(format!(
                        "gateway {id}: the link's client certificate expired; renew it"
                    ))))
                    .await;
                break "its certificate expired".to_string();
            }
        };
        match next {
            Err(_) => break format!("no heartbeat for {:?}", svc.silent_after),
            Ok(Err(status)) => break format!("stream error: {}", status.message()),
            Ok(Ok(None)) => break "the gateway closed the link".to_string(),
            Ok(Ok(Some(Up { msg: None }))) => {}
            Ok(Ok(Some(Up {
                msg: Some(up::Msg::Event(ev)),
            }))) => match record_event(&svc, &id, &mut applied, &ev).await {
                Ok(()) => {
                    let ack = Down {
                        msg: Some(down::Msg::Ack(super::proto::Ack { seq: ev.seq })),
                    };
                    if tx.send(Ok(ack)).await.is_err() {
                        break "the gateway went away".to_string();
                    }
                }
                // Not acknowledged: cut the link so the gateway sends it again, in order.
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::unavailable(format!(
                            "session event {} not recorded: {e}; resend",
                            ev.seq
                        ))))
                        .await;
                    break format!("event {} not recorded: {e}", ev.seq);
                }
            },
            Ok(Ok(Some(Up {
                msg: Some(up::Msg::Heartbeat(hb)),
            }))) => {
                match svc.store.gateway_heartbeat(&id, &svc.replica, &hb).await {
                    Ok(true) => {
                        recorded = true;
                        if !deliver(&svc, &id, &tx).await
                            || !reconcile(&svc, &id, &hb.live_sessions, &tx).await
                        {
                            break "the gateway went away".to_string();
                        }
                    }
                    Ok(false) => {
                        let _ = tx
                            .send(Err(Status::permission_denied(format!(
                                "gateway {id} was revoked; the link is cut"
                            ))))
                            .await;
                        break "revoked".to_string();
                    }
                    // A store outage does not cut the link: the gateway stays connected and the
                    // next heartbeat is written when Postgres is back.
                    Err(e) => {
                        tracing::warn!(gateway = %id, error = %e, "heartbeat not recorded")
                    }
                }
            }
        }
    };
    svc.metrics.agent_gateways.dec();
    tracing::info!(event = "agent_link_down", gateway = %id, replica = %svc.replica, why = %why);
    if recorded && let Err(e) = svc.store.unlink_gateway(&id, &svc.replica).await {
        tracing::warn!(gateway = %id, error = %e, "link end not recorded");
    }
}

/// Records one session event of gateway `id` through the session core, exactly once: an
/// event at or below the gateway's recorded sequence number is a duplicate (resent after a
/// reconnect) and only acknowledged again.
async fn record_event(
    svc: &AgentService,
    id: &str,
    applied: &mut Option<i64>,
    ev: &super::proto::SessionEvent,
) -> Result<(), crate::session::SessionError> {
    let seq = i64::try_from(ev.seq).unwrap_or(i64::MAX);
    let last = match *applied {
        Some(s) => s,
        None => svc.store.gateway_events_seq(id).await?,
    };
    *applied = Some(last);
    if seq <= last {
        tracing::info!(event = "gateway_event_duplicate", gateway = %id, seq);
        return Ok(());
    }
    if seq != last + 1 {
        tracing::warn!(event = "gateway_event_gap", gateway = %id, seq, last, "events missing (dropped from a full queue?)");
    }
    svc.sessions.remote_event(id, ev).await?;
    svc.store.advance_gateway_events_seq(id, seq).await?;
    *applied = Some(seq);
    Ok(())
}

/// Sends the gateway's queued commands down its link (claimed first, so each is delivered by
/// one replica once). False when the link is gone.
async fn deliver(
    svc: &AgentService,
    id: &str,
    tx: &tokio::sync::mpsc::Sender<Result<Down, Status>>,
) -> bool {
    let cmds = match svc.store.claim_gateway_commands(id, &svc.replica).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(gateway = %id, error = %e, "gateway commands not read");
            return true;
        }
    };
    for c in cmds {
        let msg = match (c.kind.as_str(), c.session_id) {
            ("drain", _) => down::Msg::Drain(super::proto::Drain {
                timeout_seconds: u64::try_from(c.timeout_seconds).unwrap_or(0),
            }),
            ("terminate", Some(session_id)) => {
                down::Msg::Terminate(super::proto::Terminate { session_id })
            }
            (kind, _) => {
                tracing::warn!(gateway = %id, command = %c.id, kind, "unknown gateway command dropped");
                continue;
            }
        };
        tracing::info!(event = "gateway_command_sent", gateway = %id, command = %c.id, kind = %c.kind);
        if tx.send(Ok(Down { msg: Some(msg) })).await.is_err() {
            return false;
        }
    }
    true
}

/// Answers a heartbeat's list of live relays with a terminate for each session the control
/// plane has ended or is terminating (see [`crate::session::Sessions::owed_terminations`]):
/// the queued command is the fast path, this is what makes a lost one arrive anyway. False
/// when the link is gone.
async fn reconcile(
    svc: &AgentService,
    id: &str,
    live: &[String],
    tx: &tokio::sync::mpsc::Sender<Result<Down, Status>>,
) -> bool {
    let owed = match svc.sessions.owed_terminations(id, live).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(gateway = %id, error = %e, "live sessions not reconciled");
            return true;
        }
    };
    for session_id in owed {
        let msg = down::Msg::Terminate(super::proto::Terminate { session_id });
        if tx.send(Ok(Down { msg: Some(msg) })).await.is_err() {
            return false;
        }
    }
    true
}

/// Agent listener failures.
#[derive(Debug, thiserror::Error)]
pub enum AgentServeError {
    /// TLS material was refused.
    #[error("agent listener TLS: {0}")]
    Tls(String),
    /// Serving failed.
    #[error("agent listener on {addr}: {message}")]
    Serve {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        message: String,
    },
}

/// Serves the agent service on `addr` with the replica's serving certificate until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    tls: &crate::tls::PemPair,
    svc: AgentService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), AgentServeError> {
    let tls_config = ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert, &tls.key))
        .client_ca_root(TlsCert::from_pem(svc.ca.trusted_pem()))
        .client_auth_optional(true)
        .timeout(Duration::from_secs(10));
    let server = Server::builder()
        .tls_config(tls_config)
        .map_err(|e| AgentServeError::Tls(e.to_string()))?
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(AgentServer::new(svc));
    tracing::info!(event = "agent_listen", listen = %addr);
    server
        .serve_with_shutdown(addr, shutdown)
        .await
        .map_err(|e| AgentServeError::Serve {
            addr,
            message: format!("{e}: {:?}", std::error::Error::source(&e)),
        })
}
