//! A remote gateway (`--role gateway --control-plane …`): no Postgres, no Redis. Its HTTPS
//! port serves only `/healthz`, `/readyz` and the relay, `GET /v1/sessions/{id}/relay`,
//! authenticated by the control plane's Ed25519 grant in the [`GRANT_HEADER`] header (never an
//! API token: the gateway cannot check one). Sessions are reported up the link as events;
//! while the link is down they live on for `--offline-grace`, then close with the recoverable
//! code 4004 (`replica_isolated`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use futures::{SinkExt, StreamExt, future};
use tokio::net::TcpStream;

use super::proto::SessionEvent;
use super::state::{Refusal, RemoteState};
use crate::api::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::pump::{self, CloseInfo, Ended, Flow, Frame, OnSourceEof, TcpSource};
use crate::relay_protocol::*;
use crate::replica::Replica;
use crate::session::EndReason;
use crate::store::now_ms;
use crate::wire::{Healthz, LiveState, Readyz};

/// Request header carrying the grant on a remote gateway's relay.
pub const GRANT_HEADER: &str = "wardengate-grant";

/// How often a live session's byte counts go up the link (when they changed).
const BYTES_EVERY: Duration = Duration::from_secs(30);

/// What the remote gateway's handlers share.
#[derive(Debug)]
pub struct Remote {
    /// Link state, grants, events.
    pub state: Arc<RemoteState>,
    /// Drain and relay count.
    pub replica: Arc<Replica>,
    /// Metrics.
    pub metrics: Metrics,
    /// Which addresses targets may resolve to.
    pub target_policy: crate::target_policy::TargetPolicy,
    /// Pings and idle timeout of relays.
    pub keepalive: crate::pump::Keepalive,
    /// Dial timeout.
    pub dial_timeout: Duration,
}

/// The remote gateway's router.
pub fn router(remote: Arc<Remote>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/sessions/{id}/relay", get(relay))
        .with_state(remote)
}

async fn healthz() -> Json<Healthz> {
    Json(Healthz {
        status: LiveState::Ok,
        reason: None,
        waiting_for: None,
    })
}

/// Ready while not draining and able to take new sessions (linked, or accepting offline).
async fn readyz(State(r): State<Arc<Remote>>) -> (StatusCode, Json<Readyz>) {
    let offline = r.state.offline_since().is_some() && !r.state.policy.accept_signed_grants;
    let ready = !r.replica.draining() && !offline;
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(Readyz {
            ready,
            replica: Some(r.replica.id.clone()),
            starting: offline.then(|| "the control-plane link".to_string()),
            checks: None,
        }),
    )
}

fn refused(e: Refusal) -> ApiError {
    let message = e.to_string();
    match e {
        Refusal::Offline(_) => ApiError::unavailable(ErrorCode::GatewayOffline, message, 2),
        Refusal::Terminated => {
            ApiError::new(StatusCode::GONE, ErrorCode::SessionTerminated, message)
        }
        Refusal::Used => ApiError::conflict(ErrorCode::SessionInUse, message),
        Refusal::Grant(_) | Refusal::Elsewhere(_) => {
            ApiError::forbidden(ErrorCode::InvalidGrant, message)
        }
    }
}

async fn relay(
    State(r): State<Arc<Remote>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if r.replica.draining() {
        return Err(ApiError::unavailable(
            ErrorCode::Draining,
            "this gateway is draining; retry",
            1,
        ));
    }
    let signed = headers
        .get(GRANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::forbidden(
                ErrorCode::InvalidGrant,
                format!(
                    "a remote gateway relays only with a `{GRANT_HEADER}` header (wgctl sends it)"
                ),
            )
        })?;
    let grant = r.state.admit(&id, signed).map_err(|e| {
        tracing::warn!(event = "remote_relay_refused", session = %id, error = %e);
        refused(e)
    })?;
    let target = dial(&r, &grant.host, grant.port, &grant.target).await?;
    let client = peer.to_string();
    Ok(ws
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| carry(r, grant, client, socket, target)))
}

async fn dial(r: &Remote, host: &str, port: u16, name: &str) -> Result<TcpStream, ApiError> {
    r.target_policy
        .dial(host, port, r.dial_timeout)
        .await
        .map_err(|e| match e {
            crate::target_policy::DialError::Refused(e) => {
                ApiError::forbidden(ErrorCode::TargetNotAllowed, e.to_string())
            }
            crate::target_policy::DialError::Unreachable(e) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::TargetUnreachable,
                format!("cannot reach {host}:{port} for target `{name}`: {e}"),
            ),
        })
}

fn to_message(f: Frame) -> Message {
    match f {
        Frame::Data(b) => Message::Binary(b),
        Frame::HalfClose => Message::Text(HALF_CLOSE.into()),
        Frame::Close(c) => Message::Close(c.map(|c| CloseFrame {
            code: c.code,
            reason: c.reason.into(),
        })),
        Frame::Ping => Message::Ping(Default::default()),
        Frame::Pong => Message::Pong(Default::default()),
    }
}

fn from_message(m: Message) -> Option<Frame> {
    match m {
        Message::Binary(b) => Some(Frame::Data(b)),
        Message::Text(t) if t.as_str() == HALF_CLOSE => Some(Frame::HalfClose),
        Message::Close(c) => Some(Frame::Close(c.map(|c| CloseInfo {
            code: c.code,
            reason: c.reason.to_string(),
        }))),
        Message::Ping(_) => Some(Frame::Ping),
        Message::Pong(_) => Some(Frame::Pong),
        _ => None,
    }
}

/// Resolves when the session must end: terminated by the control plane, the link down for
/// longer than the grace, or the drain window over.
async fn stop(r: &Remote, id: &str) -> EndReason {
    let mut terms = r.state.terminations();
    let mut link = r.state.watch_link();
    let mut evictions = r.replica.evictions();
    loop {
        if r.state.is_terminated(id) {
            return EndReason::Terminated;
        }
        let offline = *link.borrow_and_update();
        let until = offline.map(|since| since + r.state.policy.grace);
        tokio::select! {
            t = terms.recv() => {
                if let Ok(t) = t && t != id {
                    continue;
                }
            }
            _ = link.changed() => {}
            _ = async {
                match until {
                    Some(u) => tokio::time::sleep_until(u).await,
                    None => futures::future::pending().await,
                }
            } => {
                tracing::warn!(event = "remote_offline_grace_over", session = %id, grace = ?r.state.policy.grace);
                return EndReason::ReplicaIsolated;
            }
            changed = evictions.changed() => {
                if changed.is_ok() && *evictions.borrow() {
                    return EndReason::Drained;
                }
            }
        }
    }
}

fn event(id: &str, kind: &str) -> SessionEvent {
    SessionEvent {
        session_id: id.to_string(),
        kind: kind.to_string(),
        at_ms: now_ms(),
        ..Default::default()
    }
}

async fn carry(
    r: Arc<Remote>,
    grant: super::grant::RemoteGrant,
    client: String,
    socket: WebSocket,
    target: TcpStream,
) {
    let id = grant.session_id.clone();
    let _guard = r.replica.relay_guard(crate::metrics::SessionMode::Relay);
    r.state.event(SessionEvent {
        client,
        token_id: grant.token_id.clone(),
        ..event(&id, "started")
    });
    tracing::info!(event = "relay_started", session = %id, target = %grant.target, gateway = %grant.gateway_id);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let count = |flow: Flow, b: &[u8]| {
        match flow {
            Flow::FromSocket => &up,
            Flow::ToSocket => &down,
        }
        .fetch_add(b.len() as u64, Ordering::Relaxed);
    };
    let (ws_tx, ws_rx) = socket.split();
    let mut ws_tx = ws_tx.with(|f: Frame| future::ready(Ok::<_, axum::Error>(to_message(f))));
    let mut ws_rx = ws_rx.filter_map(|m| {
        future::ready(match m {
            Ok(m) => from_message(m).map(Ok),
            Err(e) => Some(Err(e)),
        })
    });
    let (tcp_rx, tcp_tx) = target.into_split();
    // The stop condition, with the byte counts reported while the session lives.
    let watch = async {
        let mut every = tokio::time::interval(BYTES_EVERY);
        every.tick().await;
        let mut reported = (0, 0);
        let s = stop(&r, &id);
        tokio::pin!(s);
        loop {
            tokio::select! {
                reason = &mut s => return reason,
                _ = every.tick() => {
                    let now = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
                    if now != reported {
                        reported = now;
                        r.state.event(SessionEvent { bytes_up: now.0, bytes_down: now.1, ..event(&id, "bytes") });
                    }
                }
            }
        }
    };
    let out = pump::run(
        &mut ws_rx,
        &mut ws_tx,
        TcpSource::new(tcp_rx),
        tcp_tx,
        watch,
        Some(&count as pump::Hook<'_>),
        pump::Config {
            chunk: pump::DEFAULT_CHUNK,
            on_source_eof: OnSourceEof::End,
            keepalive: r.keepalive,
        },
    )
    .await;
    let end = match out.ended {
        Ended::Stopped(reason) => reason,
        Ended::SocketClosed(_) | Ended::SocketLost(_) => EndReason::ClientClosed,
        Ended::StreamEof | Ended::StreamFailed(_) => EndReason::TargetClosed,
        Ended::Idle(_) => EndReason::IdleTimeout,
        Ended::Unresponsive(_) => EndReason::ClientUnresponsive,
    };
    let (bytes_up, bytes_down) = (out.counts.from_socket, out.counts.to_socket);
    r.state.event(SessionEvent {
        bytes_up,
        bytes_down,
        reason: end.as_str().to_string(),
        ..event(&id, "ended")
    });
    r.metrics
        .relays_ended
        .with_label_values(&[end.as_str()])
        .inc();
    tracing::info!(event = "relay_ended", session = %id, reason = end.as_str(), bytes_up, bytes_down);
    let (code, why) = match end {
        EndReason::Terminated => (CLOSE_TERMINATED, "terminated by the control plane"),
        EndReason::ReplicaIsolated => (
            CLOSE_ISOLATED,
            "the gateway lost its control plane for longer than its offline grace; reconnect",
        ),
        EndReason::Drained => (CLOSE_DRAINED, "gateway drained; reconnect"),
        EndReason::IdleTimeout => (CLOSE_IDLE, "no data moved for the relay idle timeout"),
        _ => (CLOSE_NORMAL, "closed"),
    };
    let _ = ws_tx
        .send(Frame::Close(Some(CloseInfo {
            code,
            reason: why.into(),
        })))
        .await;
    let _ = ws_tx.close().await;
}

/// Everything a remote gateway runs on.
#[derive(Debug)]
pub struct RemoteParts {
    /// Its handlers' shared state.
    pub remote: Arc<Remote>,
    /// The link configuration.
    pub link: super::LinkConfig,
    /// Serving certificate.
    pub tls: crate::tls::PemPair,
    /// HTTPS address.
    pub listen: SocketAddr,
    /// Plain-HTTP metrics address, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a SIGTERM drain waits for sessions.
    pub drain_timeout: Duration,
}

/// Serves a remote gateway until `shutdown`, then drains.
pub async fn run(
    parts: RemoteParts,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::server::ServeError> {
    let RemoteParts {
        remote,
        link,
        tls,
        listen,
        metrics_listen,
        drain_timeout,
    } = parts;
    let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(
        crate::tls::server_config(&tls)?,
    ));
    let metrics_task = match metrics_listen {
        Some(a) => Some(
            crate::server::serve_metrics(a, remote.metrics.clone(), remote.replica.clone()).await?,
        ),
        None => None,
    };
    let link_task = tokio::spawn(
        super::GatewayLink {
            config: link,
            replica: remote.replica.clone(),
            state: remote.state.clone(),
            metrics: remote.metrics.clone(),
        }
        .run(),
    );
    let handle = axum_server::Handle::new();
    let (h, replica) = (handle.clone(), remote.replica.clone());
    tokio::spawn(async move {
        shutdown.await;
        let outcome = replica.drain(drain_timeout).await;
        tracing::info!(event = "shutting_down", outcome = %outcome);
        h.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    tracing::info!(event = "serving", listen = %listen, replica = %remote.replica.id, role = "remote gateway");
    let app = router(remote).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum_server::bind_rustls(listen, config)
        .handle(handle)
        .serve(app)
        .await
        .map_err(|source| crate::server::ServeError::Listen {
            addr: listen,
            source,
        });
    link_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    result
}
