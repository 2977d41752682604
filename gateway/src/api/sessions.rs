//! Sessions: authorise (`POST /v1/sessions`), list, inspect, terminate.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::grant::{APPROVAL_WINDOW_MS, AUTHORIZED_TTL_MS, Grant, GrantState};
use crate::live::session_key;
use crate::store::{SessionRow, SessionStatus, now_ms};
use crate::token::Role;
use crate::wire::{Authorized, NewSession, SessionView};

pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewSession>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Authorized>), ApiError> {
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.body_text()))?;
    let target = st
        .store
        .target(&req.target)
        .await?
        .ok_or_else(|| super::targets::not_found(&req.target))?;
    let id = uuid::Uuid::new_v4().to_string();
    let pending = target.require_approval != 0;
    let now = now_ms();
    let grant = Grant {
        session_id: id.clone(),
        token_id: caller.token_id.clone(),
        target: target.name.clone(),
        host: target.host.clone(),
        port: u16::try_from(target.port).unwrap_or(0),
        state: if pending {
            GrantState::Pending
        } else {
            GrantState::Authorized
        },
        replica: None,
        expires_at_ms: now
            + if pending {
                APPROVAL_WINDOW_MS
            } else {
                AUTHORIZED_TTL_MS
            },
    };
    // Live state first: if Redis is down the session is refused before anything durable exists.
    st.live
        .set(
            &session_key(&id),
            &st.keyring.sign(&grant),
            Duration::from_millis((grant.expires_at_ms - now).max(1) as u64),
        )
        .await?;
    let status = if pending {
        SessionStatus::Pending
    } else {
        SessionStatus::Authorized
    };
    let row = SessionRow {
        id: id.clone(),
        token_id: caller.token_id.clone(),
        target_id: target.id.clone(),
        target_name: target.name.clone(),
        host: target.host.clone(),
        port: target.port,
        status: status.as_str().to_string(),
        replica: None,
        created_at: now,
        started_at: None,
        ended_at: None,
        bytes_up: 0,
        bytes_down: 0,
        end_reason: None,
    };
    st.store.create_session(&row).await?;
    let _ = st
        .store
        .audit(&caller.token_id, "session.authorize", &id, &target.name)
        .await;
    tracing::info!(event = "session_authorized", session = %id, target = %target.name, token = %caller.token_id, pending);
    if pending {
        super::emit(
            &st,
            "approval.requested",
            &id,
            serde_json::json!({"session": id, "target": target.name, "requester": caller.token_id}),
        );
    }
    let code = if pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok((
        code,
        Json(Authorized {
            id,
            target: target.name,
            status,
            expires_at_ms: grant.expires_at_ms,
        }),
    ))
}

/// `GET /v1/sessions?limit=N`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<i64>,
}

pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let owner = (!caller.role.allows(Role::Approver)).then_some(caller.token_id.as_str());
    let rows = st.store.list_sessions(owner, limit).await?;
    Ok(Json(rows.into_iter().map(SessionView::from).collect()))
}

async fn visible(st: &AppState, caller: &Caller, id: &str) -> Result<SessionRow, ApiError> {
    let not_found =
        || ApiError::not_found(ErrorCode::SessionNotFound, format!("no session `{id}`"));
    let row = st.store.session(id).await?.ok_or_else(not_found)?;
    if row.token_id != caller.token_id && !caller.role.allows(Role::Approver) {
        return Err(not_found());
    }
    Ok(row)
}

pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(visible(&st, &caller, &id).await?.into()))
}

/// Terminates a session: durable in Postgres first, then the live grant is marked so the relay,
/// wherever it runs, closes within a poll interval.
pub async fn terminate(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let row = visible(&st, &caller, &id).await?;
    if row.token_id != caller.token_id {
        caller.require(Role::Admin)?;
    }
    let after = st.store.terminate_session(&id).await?.unwrap_or(row);
    let key = session_key(&id);
    if let Some(signed) = st.live.get(&key).await?
        && let Ok(mut g) = st.keyring.verify::<Grant>(&signed, now_ms())
    {
        g.state = GrantState::Terminated;
        g.expires_at_ms = now_ms() + 60_000;
        st.live
            .set(&key, &st.keyring.sign(&g), Duration::from_secs(60))
            .await?;
    }
    let _ = st
        .store
        .audit(&caller.token_id, "session.terminate", &id, "")
        .await;
    tracing::info!(event = "session_terminated", session = %id, by = %caller.token_id);
    super::emit(
        &st,
        "session.terminated",
        &id,
        serde_json::json!({"session": id, "by": caller.token_id}),
    );
    Ok(Json(after.into()))
}
