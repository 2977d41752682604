//! Approvals: list pending requests, approve, deny. Decisions are durable in Postgres first
//! (with the session's new status and an outbox event, in one transaction), then mirrored into
//! the signed live grant. Any replica serves any request: the pending state lives in Redis and
//! Postgres, not in the replica that created it.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::grant::{AUTHORIZED_TTL_MS, Grant, GrantState};
use crate::live::session_key;
use crate::store::{Decided, Decision, now_ms};
use crate::token::Role;
use crate::wire::{DecisionBody, DecisionResult, SessionView};

/// `GET /v1/approvals`: sessions waiting for a decision.
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    caller.require(Role::Approver)?;
    let rows = st.store.pending_sessions().await?;
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
    let Some(row) = st.store.session(&id).await? else {
        return Err(ApiError::not_found(
            ErrorCode::SessionNotFound,
            format!("no session `{id}`"),
        ));
    };
    if row.token_id == caller.token_id {
        return Err(ApiError::forbidden(
            ErrorCode::SelfApproval,
            "a request cannot be decided by the token that made it; ask another approver",
        ));
    }
    let session = match st
        .store
        .decide(&id, decision, &caller.token_id, &reason)
        .await?
    {
        Decided::Now(s) => s,
        Decided::Already(a) => {
            return Err(ApiError::conflict(
                ErrorCode::AlreadyDecided,
                format!(
                    "session `{id}` was already {} by {}",
                    a.decision, a.decided_by
                ),
            ));
        }
        Decided::NotPending if row.end_reason.as_deref() == Some("expired") => {
            return Err(ApiError::conflict(
                ErrorCode::ApprovalExpired,
                format!(
                    "session `{id}` waited longer than {} minutes for a decision and expired; \
                     the requester must connect again",
                    crate::grant::APPROVAL_WINDOW_MS / 60_000
                ),
            ));
        }
        Decided::NotPending => {
            return Err(ApiError::conflict(
                ErrorCode::NotPending,
                format!(
                    "session `{id}` is not waiting for approval (status {})",
                    row.status
                ),
            ));
        }
    };
    // Mirror the durable decision into the live grant. If Redis is unavailable the decision
    // still stands: the relay consults Postgres when it finds a grant still pending.
    let grant = Grant {
        session_id: id.clone(),
        token_id: session.token_id.clone(),
        target: session.target_name.clone(),
        host: session.host.clone(),
        port: u16::try_from(session.port).unwrap_or(0),
        state: match decision {
            Decision::Approved => GrantState::Authorized,
            Decision::Denied => GrantState::Terminated,
        },
        replica: None,
        expires_at_ms: now_ms() + AUTHORIZED_TTL_MS,
    };
    if let Err(e) = st
        .live
        .set(
            &session_key(&id),
            &st.keyring.sign(&grant),
            Duration::from_millis(AUTHORIZED_TTL_MS as u64),
        )
        .await
    {
        tracing::warn!(session = %id, error = %e, "decision recorded; live grant not updated (the relay will read Postgres)");
    }
    let _ = st
        .store
        .audit(
            &caller.token_id,
            &format!("approval.{}", decision.as_str()),
            &id,
            &reason,
        )
        .await;
    st.metrics
        .approvals
        .with_label_values(&[decision.as_str()])
        .inc();
    tracing::info!(event = "approval_decided", session = %id, decision = decision.as_str(), by = %caller.token_id);
    Ok(Json(DecisionResult {
        session: session.into(),
        decision,
    }))
}
