//! Sessions: authorise (`POST /v1/sessions`), list, inspect, terminate. Thin: every lifecycle
//! step is [`crate::session::Sessions`]'s.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::session::SessionStatus;
use crate::store::SessionRow;
use crate::token::Role;
use crate::wire::{Authorized, NewSession, SessionView};

pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    client: Option<axum::Extension<crate::client_addr::ClientAddr>>,
    body: Result<Json<NewSession>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Authorized>), ApiError> {
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.body_text()))?;
    let a = st
        .sessions
        .authorise(super::requester(&caller, client), &req.target)
        .await?;
    let code = if a.status == SessionStatus::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok((
        code,
        Json(Authorized {
            id: a.id,
            target: a.target,
            status: a.status,
            expires_at_ms: a.expires_at_ms,
            gateway: a.gateway,
            grant: a.grant,
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
    let rows = st.sessions.list(owner, limit).await?;
    Ok(Json(rows.into_iter().map(SessionView::from).collect()))
}

async fn visible(st: &AppState, caller: &Caller, id: &str) -> Result<SessionRow, ApiError> {
    let not_found =
        || ApiError::not_found(ErrorCode::SessionNotFound, format!("no session `{id}`"));
    let row = st.sessions.get(id).await?.ok_or_else(not_found)?;
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

/// Terminates a session (its owner, an approver or an admin): the relay, wherever it runs,
/// closes within a poll interval.
pub async fn terminate(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let row = visible(&st, &caller, &id).await?;
    if row.token_id != caller.token_id {
        caller.require(Role::Approver)?;
    }
    Ok(Json(
        st.sessions.terminate(&id, &caller.token_id).await?.into(),
    ))
}
