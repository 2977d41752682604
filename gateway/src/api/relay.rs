//! The WebSocket relay. `GET /v1/sessions/{id}/relay`: any replica can carry any authorised
//! session: it reads the signed grant from Redis, dials the target, claims the session in
//! Postgres (exactly one replica wins). `GET /v1/targets/{name}/relay`: authorises and claims
//! in one request, for targets without approval. Then bytes flow both ways with back-pressure
//! until either side ends, an operator terminates it, or this replica can no longer vouch for
//! it. Every lifecycle step goes through [`crate::session::Sessions`].

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use futures::SinkExt;
use tokio::net::TcpStream;

use super::ws_upgrade::{Upgraded, WsUpgrade};
use super::{ApiError, AppState, Caller, ErrorCode};
use crate::pump::websocket::{self, Limits};
use crate::pump::{self, CloseInfo, Ended, Flow, Frame, OnSourceEof, TcpSource};
use crate::relay_protocol::*;
use crate::session::{Active, EndReason, Grant, Moved};
use crate::store::now_ms;

/// Largest frame the relay sends to the client.
const FRAME: usize = pump::DEFAULT_CHUNK;
/// Largest message (and frame) accepted from a client (older `wgctl` sent 64 KiB frames): a
/// frame's length is checked before its buffer is taken.
const MAX_MESSAGE: usize = 256 * 1024;

/// `GET /v1/sessions/{id}/relay`: connects a session authorised before.
pub async fn relay(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    client: Option<axum::Extension<crate::client_addr::ClientAddr>>,
    Path(id): Path<String>,
    ws: WsUpgrade,
) -> Result<Response, ApiError> {
    refuse_new_relays(&st)?;
    let opening = st
        .sessions
        .open(&id, super::requester(&caller, client))
        .await?;
    let target = dial(&st, opening.grant()).await?;
    let active = st.sessions.claim(opening).await?;
    carry(st, active, target, ws).await
}

/// `GET /v1/targets/{name}/relay`: authorises and connects a session in one request, for a
/// target that needs no approval (409 `approval_required` otherwise). The target is dialled
/// while the session is written; the upgrade names the session in [`SESSION_HEADER`].
pub async fn relay_target(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    client: Option<axum::Extension<crate::client_addr::ClientAddr>>,
    Path(name): Path<String>,
    ws: WsUpgrade,
) -> Result<Response, ApiError> {
    refuse_new_relays(&st)?;
    let mut direct = st
        .sessions
        .prepare_direct(super::requester(&caller, client), &name)
        .await?;
    if st.recordings.is_some() {
        direct = direct.recorded_by(&st.replica.id);
    }
    let (target, started) = tokio::join!(
        dial(&st, direct.grant()),
        st.sessions.start_direct(direct.clone())
    );
    let active = started?;
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            st.sessions
                .end(active.id(), EndReason::TargetUnreachable, Moved::default())
                .await;
            return Err(e);
        }
    };
    let id = active.id().to_string();
    let mut resp = carry(st, active, target, ws).await?;
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert(SESSION_HEADER, v);
    }
    Ok(resp)
}

/// New relays go elsewhere while this replica drains or is isolated (503, `Retry-After`).
fn refuse_new_relays(st: &AppState) -> Result<(), ApiError> {
    if st.replica.draining() {
        return Err(ApiError::unavailable(
            ErrorCode::Draining,
            "this replica is draining; retry through the load balancer",
            1,
        ));
    }
    if *st.health.isolated().borrow() {
        return Err(ApiError::unavailable(
            ErrorCode::ReplicaIsolated,
            "this replica is isolated; retry through the load balancer",
            1,
        ));
    }
    Ok(())
}

/// Dials the grant's target within the dial timeout: resolves its host now and dials only the
/// addresses the target policy permits (403 `target_not_allowed` when none is; 502
/// `target_unreachable` when the target does not answer).
async fn dial(st: &AppState, grant: &Grant) -> Result<TcpStream, ApiError> {
    st.target_policy
        .dial(&grant.host, grant.port, st.dial_timeout)
        .await
        .map_err(|e| match e {
            crate::target_policy::DialError::Refused(e) => {
                tracing::warn!(event = "target_refused", target = %grant.target, error = %e);
                ApiError::forbidden(ErrorCode::TargetNotAllowed, e.to_string())
            }
            crate::target_policy::DialError::Unreachable(e) => ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                ErrorCode::TargetUnreachable,
                format!(
                    "cannot reach {}:{} for target `{}`: {e}",
                    grant.host, grant.port, grant.target
                ),
            ),
        })
}

/// Starts the recording (when on) and upgrades to the relay of an active session. A session
/// that cannot be recorded while recording is on is refused, never carried unrecorded.
async fn carry(
    st: Arc<AppState>,
    active: Active,
    target: TcpStream,
    ws: WsUpgrade,
) -> Result<Response, ApiError> {
    let id = active.id().to_string();
    let grant = active.grant();
    let recorder = match &st.recordings {
        None => None,
        Some(rec) => {
            let meta = crate::recording::Meta {
                session: id.clone(),
                target: grant.target.clone(),
                address: format!("{}:{}", grant.host, grant.port),
                token_id: grant.token_id.clone(),
                replica: st.replica.id.clone(),
                started_ms: now_ms(),
                note: "bytes as relayed; for SSH and TLS targets they are ciphertext".into(),
            };
            let row = if active.recording_row_written() {
                Ok(())
            } else {
                st.store.start_recording(&id, &st.replica.id).await
            };
            let started = match row {
                Ok(()) => rec.start(&meta).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match started {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(session = %id, error = %e, "cannot record the session; refusing it");
                    st.sessions
                        .end(&id, EndReason::RecordingUnavailable, Moved::default())
                        .await;
                    return Err(ApiError::unavailable(
                        ErrorCode::RecordingUnavailable,
                        format!("the session cannot be recorded: {e}"),
                        5,
                    ));
                }
            }
        }
    };
    let failed = st.clone();
    let failed_id = id.clone();
    let failed = move |e: hyper::Error| {
        tracing::warn!(session = %failed_id, error = %e, "websocket upgrade failed");
        tokio::spawn(async move {
            failed
                .sessions
                .end(&failed_id, EndReason::UpgradeFailed, Moved::default())
                .await;
        });
    };
    Ok(ws.on_upgrade(move |io| run(st, active, io, target, recorder), failed))
}

/// The close frame that tells the client why its relay ended, and whether to reconnect.
fn close_frame(reason: EndReason) -> (u16, &'static str) {
    match reason {
        EndReason::Terminated | EndReason::Denied => {
            (CLOSE_TERMINATED, "terminated by an operator")
        }
        EndReason::ReplicaIsolated => (
            CLOSE_ISOLATED,
            "replica isolated; reconnect through another replica",
        ),
        EndReason::SessionStateLost => (CLOSE_STATE_LOST, "session state unavailable; reconnect"),
        EndReason::IdleTimeout => (CLOSE_IDLE, "no data moved for the relay idle timeout"),
        EndReason::Drained => (
            CLOSE_DRAINED,
            "replica drained; reconnect through another replica",
        ),
        _ => (CLOSE_NORMAL, "closed"),
    }
}

async fn run(
    st: Arc<AppState>,
    active: Active,
    io: Upgraded,
    target: TcpStream,
    recorder: Option<crate::recording::Recorder>,
) {
    let id = active.id().to_string();
    let _guard = st.replica.relay_guard(crate::metrics::SessionMode::Relay);
    tracing::info!(event = "relay_started", session = %id, target = %active.grant().target, replica = %st.replica.id);
    let (mut ws_rx, mut ws_tx) = websocket::server(
        io,
        Limits {
            max_frame: MAX_MESSAGE,
            max_message: MAX_MESSAGE,
        },
    );
    let (tcp_rx, tcp_tx) = target.into_split();
    let record = |flow: Flow, b: &[u8]| {
        if let Some(r) = &recorder {
            r.record(
                match flow {
                    Flow::FromSocket => crate::recording::Direction::Up,
                    Flow::ToSocket => crate::recording::Direction::Down,
                },
                b,
            );
        }
    };
    let out = pump::run(
        &mut ws_rx,
        &mut ws_tx,
        TcpSource::new(tcp_rx),
        tcp_tx,
        st.sessions
            .watch(active, st.health.isolated(), st.replica.evictions()),
        recorder.as_ref().map(|_| &record as pump::Hook<'_>),
        pump::Config {
            chunk: FRAME,
            on_source_eof: OnSourceEof::End,
            keepalive: st.relay_keepalive,
        },
    )
    .await;
    let moved = Moved {
        up: out.counts.from_socket,
        down: out.counts.to_socket,
    };
    let end = match out.ended {
        Ended::Stopped(reason) => reason,
        Ended::SocketClosed(_) | Ended::SocketLost(_) => EndReason::ClientClosed,
        Ended::StreamEof | Ended::StreamFailed(_) => EndReason::TargetClosed,
        Ended::Idle(_) => EndReason::IdleTimeout,
        Ended::Unresponsive(_) => EndReason::ClientUnresponsive,
    };
    if let Some(r) = recorder.clone() {
        r.finish(end.as_str(), moved.up, moved.down);
    }
    // Recorded before the client hears the close, so a client that asks right after sees the
    // session ended (the core bounds the wait).
    st.sessions.end(&id, end, moved).await;
    let (code, why) = close_frame(end);
    let _ = ws_tx
        .send(Frame::Close(Some(CloseInfo {
            code,
            reason: why.into(),
        })))
        .await;
    let _ = ws_tx.close().await;
}
