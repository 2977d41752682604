//! `GET /v1/sessions/{id}/relay`: the WebSocket relay. Any replica can carry any authorised
//! session: it reads the signed grant from Redis, dials the target, claims the session in
//! Postgres (exactly one replica wins), then copies bytes both ways with back-pressure until
//! either side ends, an operator terminates it, or this replica can no longer vouch for it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt, future};
use tokio::net::TcpStream;

use super::{ApiError, AppState, Caller};
use crate::grant::{Grant, GrantState};
use crate::live::{LiveError, Swap, session_key};
use crate::pump::{self, CloseInfo, Ended, Flow, Frame, OnSourceEof, TcpSource};
use crate::relay_protocol::*;
use crate::store::now_ms;
use crate::token::Role;

/// Largest frame the relay sends to the client: tungstenite keeps one frame of write buffer
/// per session after traffic.
const FRAME: usize = pump::DEFAULT_CHUNK;
/// Largest message accepted from a client (older `wgctl` sent 64 KiB frames).
const MAX_MESSAGE: usize = 256 * 1024;
/// WebSocket read buffer: allocated per session up front, so kept small.
const READ_BUFFER: usize = 4 * 1024;
/// How long the close frame waits for the session's end to be recorded.
const END_RECORD_WAIT: Duration = Duration::from_secs(1);

/// A pump frame as an axum WebSocket message.
fn to_message(f: Frame) -> Message {
    match f {
        Frame::Data(b) => Message::Binary(b),
        Frame::HalfClose => Message::Text(HALF_CLOSE.into()),
        Frame::Close(c) => Message::Close(c.map(|c| CloseFrame {
            code: c.code,
            reason: c.reason.into(),
        })),
    }
}

/// An axum WebSocket message as a pump frame; pings, pongs and other text are not relayed.
fn from_message(m: Message) -> Option<Frame> {
    match m {
        Message::Binary(b) => Some(Frame::Data(b)),
        Message::Text(t) if t.as_str() == HALF_CLOSE => Some(Frame::HalfClose),
        Message::Close(c) => Some(Frame::Close(c.map(|c| CloseInfo {
            code: c.code,
            reason: c.reason.to_string(),
        }))),
        _ => None,
    }
}

pub async fn relay(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if st.replica.draining() {
        return Err(ApiError::unavailable(
            "draining",
            "this replica is draining; retry through the load balancer",
            1,
        ));
    }
    if *st.health.isolated().borrow() {
        return Err(ApiError::unavailable(
            "replica_isolated",
            "this replica is isolated; retry through the load balancer",
            1,
        ));
    }
    let key = session_key(&id);
    let signed = st.live.get(&key).await?.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::GONE,
            "session_expired",
            format!("session `{id}` has no live authorisation (expired or ended)"),
        )
    })?;
    let grant: Grant = st.keyring.verify(&signed, now_ms()).map_err(|e| {
        tracing::warn!(event = "session_state_rejected", session = %id, error = %e, "refusing session state");
        ApiError::forbidden("invalid_session_state", format!("session state rejected: {e}"))
    })?;
    if grant.session_id != id {
        tracing::warn!(event = "session_state_rejected", session = %id, grant_for = %grant.session_id, "grant stored under another session's key");
        return Err(ApiError::forbidden(
            "invalid_session_state",
            "session state belongs to another session",
        ));
    }
    if grant.token_id != caller.token_id && !caller.role.allows(Role::Admin) {
        return Err(ApiError::forbidden(
            "not_your_session",
            "this session was authorised for another token",
        ));
    }
    match grant.state {
        GrantState::Authorized => {}
        GrantState::Pending => {
            // The durable decision wins over a live grant that missed its update (Redis was
            // down when the approver decided).
            let approved = st
                .store
                .session(&id)
                .await?
                .is_some_and(|s| s.status == "authorized");
            if !approved {
                return Err(ApiError::conflict(
                    "approval_pending",
                    "the session is waiting for approval",
                ));
            }
        }
        GrantState::Active => {
            return Err(ApiError::conflict(
                "session_in_use",
                "the session is already connected",
            ));
        }
        GrantState::Terminated => {
            return Err(ApiError::new(
                axum::http::StatusCode::GONE,
                "session_terminated",
                "the session was terminated",
            ));
        }
    }
    let target = tokio::time::timeout(
        st.dial_timeout,
        TcpStream::connect((grant.host.as_str(), grant.port)),
    )
    .await
    .map_err(|_| format!("no answer within {:?}", st.dial_timeout))
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "target_unreachable",
            format!(
                "cannot reach {}:{} for target `{}`: {e}",
                grant.host, grant.port, grant.target
            ),
        )
    })?;
    let _ = target.set_nodelay(true);
    if !st.store.claim_session(&id, &st.replica.id).await? {
        return Err(ApiError::conflict(
            "session_in_use",
            "the session is already connected or ended",
        ));
    }
    let active = Grant {
        state: GrantState::Active,
        replica: Some(st.replica.id.clone()),
        expires_at_ms: now_ms() + ttl_ms(st.live_session_ttl),
        ..grant.clone()
    };
    let active_signed = st.keyring.sign(&active);
    // Compare-and-set against the grant read above: a terminate (or a decision) that landed
    // since is never overwritten by this relay.
    let refused = match st
        .live
        .compare_and_set(&key, &signed, &active_signed, st.live_session_ttl)
        .await
    {
        Ok(Swap::Swapped) => None,
        Ok(Swap::Current(now)) => Some(match grant_state(&st, now.as_deref()) {
            Some(GrantState::Terminated) => (
                "terminated",
                ApiError::new(
                    axum::http::StatusCode::GONE,
                    "session_terminated",
                    "the session was terminated",
                ),
            ),
            _ => (
                "session_state_lost",
                ApiError::new(
                    axum::http::StatusCode::GONE,
                    "session_expired",
                    format!("session `{id}` changed while connecting; authorise it again"),
                ),
            ),
        }),
        Err(e) => Some(("session_state_lost", e.into())),
    };
    if let Some((reason, error)) = refused {
        let _ = st
            .store
            .end_session(&id, &st.replica.id, 0, 0, reason)
            .await;
        return Err(error);
    }
    super::emit(
        &st,
        "session.started",
        &id,
        serde_json::json!({"session": id, "target": grant.target, "replica": st.replica.id}),
    );
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
            let started = match st.store.start_recording(&id, &st.replica.id).await {
                Ok(()) => rec.start(&meta).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match started {
                Ok(r) => Some(r),
                Err(e) => {
                    // No unrecorded sessions when recording is on.
                    tracing::error!(session = %id, error = %e, "cannot record the session; refusing it");
                    let _ = st
                        .store
                        .end_session(&id, &st.replica.id, 0, 0, "recording_unavailable")
                        .await;
                    let _ = st.live.del(&key).await;
                    return Err(ApiError::unavailable(
                        "recording_unavailable",
                        format!("the session cannot be recorded: {e}"),
                        5,
                    ));
                }
            }
        }
    };
    let failed = st.clone();
    let failed_id = id.clone();
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_failed_upgrade(move |e| {
            tracing::warn!(session = %failed_id, error = %e, "websocket upgrade failed");
            tokio::spawn(async move {
                let _ = failed
                    .store
                    .end_session(&failed_id, &failed.replica.id, 0, 0, "upgrade_failed")
                    .await;
                let _ = failed.live.del(&session_key(&failed_id)).await;
            });
        })
        .on_upgrade(move |socket| run(st, active, active_signed, socket, target, recorder)))
}

/// Why a relay ended, and the close frame that tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientClosed,
    TargetClosed,
    Terminated,
    Isolated,
    StateLost,
    Drained,
}

impl End {
    fn reason(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::TargetClosed => "target_closed",
            End::Terminated => "terminated",
            End::Isolated => "replica_isolated",
            End::StateLost => "session_state_lost",
            End::Drained => "drained",
        }
    }

    fn close(self) -> (u16, &'static str) {
        match self {
            End::ClientClosed | End::TargetClosed => (CLOSE_NORMAL, "closed"),
            End::Terminated => (CLOSE_TERMINATED, "terminated by an operator"),
            End::Isolated => (
                CLOSE_ISOLATED,
                "replica isolated; reconnect through another replica",
            ),
            End::StateLost => (CLOSE_STATE_LOST, "session state unavailable; reconnect"),
            End::Drained => (
                CLOSE_DRAINED,
                "replica drained; reconnect through another replica",
            ),
        }
    }
}

async fn run(
    st: Arc<AppState>,
    grant: Grant,
    signed: String,
    socket: WebSocket,
    target: TcpStream,
    recorder: Option<crate::recording::Recorder>,
) {
    let id = grant.session_id.clone();
    let _guard = st.replica.relay_guard();
    st.metrics.sessions_active.set(st.replica.relays());
    tracing::info!(event = "relay_started", session = %id, target = %grant.target, replica = %st.replica.id);
    let (ws_tx, ws_rx) = socket.split();
    let mut ws_tx = ws_tx.with(|f: Frame| future::ready(Ok::<_, axum::Error>(to_message(f))));
    let mut ws_rx = ws_rx.filter_map(|m| {
        future::ready(match m {
            Ok(m) => from_message(m).map(Ok),
            Err(e) => Some(Err(e)),
        })
    });
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
        watch_session(&st, &grant, signed),
        recorder.as_ref().map(|_| &record as pump::Hook<'_>),
        pump::Config {
            chunk: FRAME,
            on_source_eof: OnSourceEof::End,
        },
    )
    .await;
    let (up, down) = (out.counts.from_socket, out.counts.to_socket);
    let end = match out.ended {
        Ended::Stopped(e) => e,
        Ended::SocketClosed(_) | Ended::SocketLost(_) => End::ClientClosed,
        Ended::StreamEof | Ended::StreamFailed(_) => End::TargetClosed,
    };
    if let Some(r) = recorder.clone() {
        r.finish(end.reason(), up, down);
    }
    st.metrics.relay_bytes.with_label_values(&["up"]).inc_by(up);
    st.metrics
        .relay_bytes
        .with_label_values(&["down"])
        .inc_by(down);
    st.metrics
        .relays_ended
        .with_label_values(&[end.reason()])
        .inc();
    // Recorded before the client hears the close, so a client that asks right after sees the
    // session ended; bounded, so a replica cut off from Postgres still closes promptly.
    let recorded = tokio::time::timeout(
        END_RECORD_WAIT,
        st.store
            .end_session(&id, &st.replica.id, up, down, end.reason()),
    )
    .await
    .unwrap_or_else(|_| {
        Err(crate::store::StoreError::Unavailable(format!(
            "no answer within {END_RECORD_WAIT:?}"
        )))
    });
    if let Err(e) = recorded {
        // An isolated replica cannot reach Postgres now; keep trying so history is not lost.
        tracing::warn!(session = %id, error = %e, "could not record the end of a session yet; retrying in the background");
        let (st, id) = (st.clone(), id.clone());
        tokio::spawn(async move {
            let give_up = tokio::time::Instant::now() + Duration::from_secs(3600);
            while tokio::time::Instant::now() < give_up {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if st
                    .store
                    .end_session(&id, &st.replica.id, up, down, end.reason())
                    .await
                    .is_ok()
                {
                    tracing::info!(event = "session_end_recorded_late", session = %id);
                    return;
                }
            }
            tracing::error!(session = %id, "gave up recording the end of a session; the cleanup job will");
        });
    }
    let (code, why) = end.close();
    let _ = ws_tx
        .send(Frame::Close(Some(CloseInfo {
            code,
            reason: why.into(),
        })))
        .await;
    let _ = ws_tx.close().await;
    super::emit(
        &st,
        "session.ended",
        &id,
        serde_json::json!({"session": id, "reason": end.reason(), "bytes_up": up, "bytes_down": down, "replica": st.replica.id}),
    );
    let _ = st.live.del(&session_key(&id)).await;
    drop(_guard);
    st.metrics.sessions_active.set(st.replica.relays());
    tracing::info!(event = "relay_ended", session = %id, reason = end.reason(), bytes_up = up, bytes_down = down);
}

/// The state of the grant `signed`, if it verifies.
fn grant_state(st: &AppState, signed: Option<&str>) -> Option<GrantState> {
    st.keyring
        .verify::<Grant>(signed?, now_ms())
        .ok()
        .map(|g| g.state)
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Keeps the session's live state valid for as long as this relay carries it, and ends the
/// relay when that state says so. Every poll re-signs the active grant with a fresh expiry and
/// writes it with compare-and-set against the value this relay wrote last: a session lasts as
/// long as its user, while a relay that stops renewing lets its grant lapse within the live
/// session TTL. Ends the relay when the grant was terminated or vanished, when Redis stays
/// unreachable for three polls, when this replica becomes isolated, or when its drain window
/// passes.
async fn watch_session(st: &AppState, grant: &Grant, mut signed: String) -> End {
    let key = session_key(&grant.session_id);
    let mut isolated = st.health.isolated();
    let mut evictions = st.replica.evictions();
    let mut tick = tokio::time::interval(st.relay_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = isolated.changed() => {
                if changed.is_ok() && *isolated.borrow() {
                    return End::Isolated;
                }
                continue;
            }
            changed = evictions.changed() => {
                if changed.is_ok() && *evictions.borrow() {
                    return End::Drained;
                }
                continue;
            }
        }
        let renewed = st.keyring.sign(&Grant {
            expires_at_ms: now_ms() + ttl_ms(st.live_session_ttl),
            ..grant.clone()
        });
        match st
            .live
            .compare_and_set(&key, &signed, &renewed, st.live_session_ttl)
            .await
        {
            Ok(Swap::Swapped) => {
                failures = 0;
                signed = renewed;
            }
            Ok(Swap::Current(Some(current))) => {
                match st.keyring.verify::<Grant>(&current, now_ms()) {
                    Ok(g) if g.state == GrantState::Terminated => return End::Terminated,
                    // An earlier renewal of ours, brought back by a Redis failover that lost
                    // the latest write: carry on from it.
                    Ok(g)
                        if g.state == GrantState::Active
                            && g.session_id == grant.session_id
                            && g.replica == grant.replica =>
                    {
                        failures = 0;
                        signed = current;
                    }
                    Ok(g) => {
                        tracing::warn!(event = "session_state_rejected", session = %grant.session_id, state = ?g.state, "live state changed under the relay");
                        return End::StateLost;
                    }
                    Err(e) => {
                        tracing::warn!(event = "session_state_rejected", session = %grant.session_id, error = %e);
                        return End::StateLost;
                    }
                }
            }
            Ok(Swap::Current(None)) => return End::StateLost,
            Err(LiveError::Unavailable(_)) | Err(LiveError::Command(_)) => {
                failures += 1;
                if failures >= 3 {
                    return End::StateLost;
                }
            }
        }
    }
}
