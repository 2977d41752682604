//! `GET /v1/sessions/{id}/watch` (WebSocket, approver or admin): follows a live terminated SSH
//! session from any replica. Text frames, each a JSON [`WatchMessage`]: the cast header, event
//! lines as they happen, gaps, and the end (with the reason the user was given), after which
//! the server closes. The watcher sends nothing (anything it sends is ignored): watching never
//! affects the session. Every watch is audited (`session.watch`). The stream re-checks its
//! token every [`TOKEN_CACHE_TTL`], like the event stream, so a revoked approver stops
//! watching.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use tokio::sync::mpsc;

use super::auth::lookup;
use super::{ApiError, AppState, Caller, ErrorCode, TOKEN_CACHE_TTL};
use crate::session::SessionStatus;
use crate::ssh::live_cast::{Liveness, follow};
use crate::token::Role;
use crate::wire::WatchMessage;

/// Messages waiting for a watcher's socket; a watcher that lets it stay full is dropped
/// ([`crate::ssh::live_cast::SLOW_WATCHER`]).
const WATCHER_QUEUE: usize = 64;
/// Ping interval when the relay keep-alive sets none.
const DEFAULT_PING: Duration = Duration::from_secs(20);

/// The upgrade: checked (role, session live and terminated SSH) and audited before it is
/// answered.
pub async fn watch(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    caller.require(Role::Approver)?;
    let row = st.sessions.get(&id).await?.ok_or_else(|| {
        ApiError::not_found(ErrorCode::SessionNotFound, format!("no session `{id}`"))
    })?;
    if !matches!(
        row.status,
        SessionStatus::Active | SessionStatus::Terminating
    ) {
        return Err(ApiError::conflict(
            ErrorCode::SessionNotWatchable,
            format!(
                "session {id} is {}: only a live session can be watched (a recorded one plays \
                 with `wgctl recordings play {id}`)",
                row.status.as_str()
            ),
        ));
    }
    if st.store.ssh_target(&row.target_id).await?.is_none() {
        return Err(ApiError::conflict(
            ErrorCode::SessionNotWatchable,
            format!(
                "session {id} is a byte relay to `{}`: its bytes are opaque, not a terminal; \
                 only terminated SSH sessions can be watched",
                row.target_name
            ),
        ));
    }
    st.sessions.watched(&id, &caller.token_id);
    let ping = st.relay_keepalive.ping_every.unwrap_or(DEFAULT_PING);
    Ok(ws.on_upgrade(move |socket| serve(st, caller, id, socket, ping)))
}

fn text(m: &WatchMessage) -> Message {
    Message::Text(serde_json::to_string(m).unwrap_or_default().into())
}

async fn serve(
    st: Arc<AppState>,
    caller: Caller,
    id: String,
    mut socket: WebSocket,
    ping: Duration,
) {
    let (tx, mut rx) = mpsc::channel(WATCHER_QUEUE);
    let follower = {
        let (st, id) = (st.clone(), id.clone());
        tokio::spawn(async move {
            let status = || {
                let (st, id) = (st.clone(), id.clone());
                async move {
                    match st.sessions.get(&id).await {
                        Ok(Some(r))
                            if matches!(
                                r.status,
                                SessionStatus::Ended | SessionStatus::Unknown
                            ) =>
                        {
                            Liveness::Ended(r.end_reason)
                        }
                        Ok(None) => Liveness::Ended(None),
                        _ => Liveness::Live,
                    }
                }
            };
            follow(&st.live, &id, &tx, status, |r| {
                crate::ssh::end_message(r).to_string()
            })
            .await
        })
    };
    let mut pings = tokio::time::interval(ping);
    pings.tick().await;
    let mut checked = tokio::time::Instant::now();
    let closing = loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    let end = matches!(m, WatchMessage::End { .. });
                    if socket.send(text(&m)).await.is_err() {
                        break None;
                    }
                    if end {
                        break Some("session ended");
                    }
                }
                None => break Some("watch ended"),
            },
            m = socket.recv() => match m {
                // The watcher speaks only to leave; anything else is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                Some(Ok(_)) => {}
            },
            _ = pings.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
                if checked.elapsed() >= TOKEN_CACHE_TTL {
                    checked = tokio::time::Instant::now();
                    if let Err(e) = lookup(&st, &caller.token_hash).await {
                        tracing::info!(event = "watch_closed", session = %id, token = %caller.token_id, code = %e.body.code, "token no longer accepted; ending the watch");
                        let end = WatchMessage::End {
                            reason: None,
                            message: format!("watching stopped: {}", e.body.message),
                        };
                        let _ = socket.send(text(&end)).await;
                        break Some("token no longer accepted");
                    }
                }
            }
        }
    };
    follower.abort();
    if let Some(reason) = closing {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: reason.to_string().into(),
            })))
            .await;
    }
    tracing::info!(event = "watch_ended", session = %id, by = %caller.token_id);
}
