//! Approvals: list pending requests, approve, deny. Decisions are durable in Postgres first
//! (with the session's new status and an outbox event, in one transaction), then mirrored into
//! the signed live grant. Any replica serves any request: the pending state lives in Redis and
//! Postgres, not in the replica that created it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, AppState, Caller};
use crate::store::Decision;
use crate::token::Role;
use crate::wire::{DecisionBody, DecisionResult, SessionView};

/// `GET /v1/approvals`: sessions waiting for a decision.
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    caller.require(Role::Approver)?;
    let rows = st.sessions.pending().await?;
    Ok(Json(rows.into_iter().map(SessionView::from).collect()))
}

/// `POST /v1/approvals/{id}/approve`.
pub async fn approve(
    st: State<Arc<AppState>>,
    caller: Caller,
    id: Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<DecisionResult>, ApiError> {
    decide(st, caller, id, body, Decision::Approved).await
}

/// `POST /v1/approvals/{id}/deny`.
pub async fn deny(
    st: State<Arc<AppState>>,
    caller: Caller,
    id: Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<DecisionResult>, ApiError> {
    decide(st, caller, id, body, Decision::Denied).await
}

async fn decide(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Option<Json<DecisionBody>>,
    decision: Decision,
) -> Result<Json<DecisionResult>, ApiError> {
    caller.require(Role::Approver)?;
    let reason = body.map(|b| b.0.reason).unwrap_or_default();
    let session = st
        .sessions
        .decide(&id, decision, &caller.token_id, &reason)
        .await?;
    Ok(Json(DecisionResult {
        session: session.into(),
        decision,
    }))
}
