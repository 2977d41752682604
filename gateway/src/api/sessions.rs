//! Sessions: authorise (`POST /v1/sessions`), list, inspect, terminate.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, Caller};
use crate::session::SessionStatus;
use crate::store::SessionRow;
use crate::token::Role;

/// Request body of `POST /v1/sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    target: String,
}

/// Response of `POST /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authorized {
    /// Session id; connect with `GET /v1/sessions/{id}/relay`.
    pub id: String,
    /// Target name.
    pub target: String,
    /// `authorized`, or `pending` when an approver must decide first.
    pub status: SessionStatus,
    /// Unix ms after which the authorisation can no longer be used to connect.
    pub expires_at_ms: i64,
}

pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewSession>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Authorized>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    let a = st.sessions.authorise(&caller.token_id, &req.target).await?;
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
) -> Result<Json<Vec<SessionRow>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let owner = (!caller.role.allows(Role::Approver)).then_some(caller.token_id.as_str());
    Ok(Json(st.sessions.list(owner, limit).await?))
}

async fn visible(st: &AppState, caller: &Caller, id: &str) -> Result<SessionRow, ApiError> {
    let not_found = || ApiError::not_found("session_not_found", format!("no session `{id}`"));
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
) -> Result<Json<SessionRow>, ApiError> {
    Ok(Json(visible(&st, &caller, &id).await?))
}

/// Terminates a session (its owner, or an admin): the relay, wherever it runs, closes within a
/// poll interval.
pub async fn terminate(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionRow>, ApiError> {
    let row = visible(&st, &caller, &id).await?;
    if row.token_id != caller.token_id {
        caller.require(Role::Admin)?;
    }
    Ok(Json(st.sessions.terminate(&id, &caller.token_id).await?))
}
