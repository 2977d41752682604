//! `GET /v1/sessions/{id}/relay`: the WebSocket relay. Any replica can carry any authorised
//! session: it reads the signed grant from Redis, dials the target, claims the session in
//! Postgres (exactly one replica wins), then copies bytes both ways with back-pressure until
//! either side ends, an operator terminates it, or this replica can no longer vouch for it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::grant::{Grant, GrantState};
use crate::live::{LiveError, Swap, session_key};
use crate::relay_protocol::*;
use crate::store::now_ms;
use crate::token::Role;

const BUF: usize = 64 * 1024;

pub async fn relay(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
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
    let key = session_key(&id);
    let signed = st.live.get(&key).await?.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::GONE,
            ErrorCode::SessionExpired,
            format!("session `{id}` has no live authorisation (expired or ended)"),
        )
    })?;
    let grant: Grant = st.keyring.verify(&signed, now_ms()).map_err(|e| {
        tracing::warn!(event = "session_state_rejected", session = %id, error = %e, "refusing session state");
        ApiError::forbidden(ErrorCode::InvalidSessionState, format!("session state rejected: {e}"))
    })?;
    if grant.session_id != id {
        tracing::warn!(event = "session_state_rejected", session = %id, grant_for = %grant.session_id, "grant stored under another session's key");
        return Err(ApiError::forbidden(
            ErrorCode::InvalidSessionState,
            "session state belongs to another session",
        ));
    }
    if grant.token_id != caller.token_id && !caller.role.allows(Role::Admin) {
        return Err(ApiError::forbidden(
            ErrorCode::NotYourSession,
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
                    ErrorCode::ApprovalPending,
                    "the session is waiting for approval",
                ));
            }
        }
        GrantState::Active => {
            return Err(ApiError::conflict(
                ErrorCode::SessionInUse,
                "the session is already connected",
            ));
        }
        GrantState::Terminated => {
            return Err(ApiError::new(
                axum::http::StatusCode::GONE,
                ErrorCode::SessionTerminated,
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
            ErrorCode::TargetUnreachable,
            format!(
                "cannot reach {}:{} for target `{}`: {e}",
                grant.host, grant.port, grant.target
            ),
        )
    })?;
    let _ = target.set_nodelay(true);
    if !st.store.claim_session(&id, &st.replica.id).await? {
        return Err(ApiError::conflict(
            ErrorCode::SessionInUse,
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
                    ErrorCode::SessionTerminated,
                    "the session was terminated",
                ),
            ),
            _ => (
                "session_state_lost",
                ApiError::new(
                    axum::http::StatusCode::GONE,
                    ErrorCode::SessionExpired,
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
    Ok(ws
        .max_message_size(4 * BUF)
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
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut tcp_rx, mut tcp_tx) = target.into_split();
    let (mut up, mut down) = (0u64, 0u64);

    let upstream = async {
        while let Some(msg) = ws_rx.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    if let Some(r) = &recorder {
                        r.record(crate::recording::Direction::Up, &b);
                    }
                    if tcp_tx.write_all(&b).await.is_err() {
                        return End::TargetClosed;
                    }
                    up += b.len() as u64;
                }
                Ok(Message::Text(t)) if t.as_str() == HALF_CLOSE => {
                    let _ = tcp_tx.shutdown().await;
                }
                Ok(Message::Close(_)) => return End::ClientClosed,
                Ok(_) => {}
                Err(_) => return End::ClientClosed,
            }
        }
        End::ClientClosed
    };
    let downstream = async {
        let mut buf = vec![0u8; BUF];
        loop {
            match tcp_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return End::TargetClosed,
                Ok(n) => {
                    if let Some(r) = &recorder {
                        r.record(crate::recording::Direction::Down, &buf[..n]);
                    }
                    if ws_tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return End::ClientClosed;
                    }
                    down += n as u64;
                }
            }
        }
    };
    let control = watch_session(&st, &grant, signed);
    let end = tokio::select! {
        e = upstream => e,
        e = downstream => e,
        e = control => e,
    };
    if let Some(r) = recorder.clone() {
        r.finish(end.reason(), up, down);
    }
    let (code, why) = end.close();
    let _ = ws_tx
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: why.into(),
        })))
        .await;
    let _ = ws_tx.close().await;
    st.metrics.relay_bytes.with_label_values(&["up"]).inc_by(up);
    st.metrics
        .relay_bytes
        .with_label_values(&["down"])
        .inc_by(down);
    st.metrics
        .relays_ended
        .with_label_values(&[end.reason()])
        .inc();
    if let Err(e) = st
        .store
        .end_session(&id, &st.replica.id, up, down, end.reason())
        .await
    {
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
