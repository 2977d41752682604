//! Tokens (admin): mint (`POST /v1/tokens`; the secret is shown once, with an optional TTL),
//! list (`GET /v1/tokens`, never secrets) and revoke (`DELETE /v1/tokens/{id}`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::store::now_ms;
use crate::token::{Role, generate, hash};
use crate::wire::{CreatedToken, NewToken, TokenView};

/// Shortest token lifetime accepted: shorter ones would expire before a client could use them.
pub const MIN_TTL_SECONDS: u64 = 60;
/// Longest token lifetime accepted (366 days): a token meant to outlive that should be
/// rotated, not kept.
pub const MAX_TTL_SECONDS: u64 = 366 * 86_400;

pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.body_text()))?;
    let expires_at = match req.ttl_seconds {
        None => None,
        Some(s) if (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&s) => {
            Some(now_ms() + i64::try_from(s * 1000).unwrap_or(i64::MAX))
        }
        Some(s) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidTtl,
                format!(
                    "ttl_seconds {s} is outside {MIN_TTL_SECONDS}..={MAX_TTL_SECONDS} \
                     (one minute to 366 days); omit it for a token that never expires"
                ),
            ));
        }
    };
    let name = req
        .name
        .unwrap_or_else(|| format!("{}-token", req.role.as_str()));
    let token = generate();
    let id = st
        .store
        .create_token(&hash(&token), &name, req.role, expires_at)
        .await?;
    let _ = st
        .store
        .audit(&caller.token_id, "token.create", &id, req.role.as_str())
        .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id,
            name,
            role: req.role,
            token,
            expires_at,
        }),
    ))
}

/// `GET /v1/tokens`: every token, oldest first, with its state.
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    caller.require(Role::Admin)?;
    let now = now_ms();
    let rows = st.store.list_tokens().await?;
    Ok(Json(
        rows.into_iter()
            .filter_map(|r| TokenView::from_row(r, now))
            .collect(),
    ))
}

/// `DELETE /v1/tokens/{id}`: revokes a token. This replica refuses it at once, every other one
/// within [`super::TOKEN_CACHE_TTL`]; event streams opened with it end within that bound too.
pub async fn revoke(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    caller.require(Role::Admin)?;
    let row =
        st.store.revoke_token(&id).await?.ok_or_else(|| {
            ApiError::not_found(ErrorCode::TokenNotFound, format!("no token `{id}`"))
        })?;
    st.tokens.forget(&id);
    let _ = st
        .store
        .audit(&caller.token_id, "token.revoke", &id, "")
        .await;
    tracing::info!(event = "token_revoked", token = %id, by = %caller.token_id);
    // Remote gateways cannot check tokens: their sessions of this token are terminated there.
    match st
        .sessions
        .terminate_remote_sessions_of(&id, &caller.token_id)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(event = "token_remote_sessions_terminated", token = %id, count = n),
        Err(e) => {
            tracing::warn!(token = %id, error = %e, "remote sessions of a revoked token not terminated")
        }
    }
    TokenView::from_row(row, now_ms())
        .map(Json)
        .ok_or_else(|| ApiError::not_found(ErrorCode::TokenNotFound, format!("no token `{id}`")))
}

/// After the bootstrap token hashed `current_hash` is ensured at start-up: revokes the bootstrap
/// tokens it replaced (rotating `--admin-token-file` kills the old secret), and says loudly
/// when the configured one was revoked itself (a revoked secret never comes back).
pub async fn rotate_bootstrap_token(
    store: &crate::store::Store,
    current_hash: &str,
) -> Result<(), crate::store::StoreError> {
    let revoked = store.revoke_older_bootstrap_tokens(current_hash).await?;
    if revoked > 0 {
        tracing::warn!(
            event = "bootstrap_tokens_revoked",
            count = revoked,
            "revoked bootstrap admin tokens that no longer match --admin-token-file"
        );
    }
    if store
        .token_by_hash(current_hash)
        .await?
        .is_some_and(|t| t.revoked_at.is_some())
    {
        tracing::error!(
            event = "bootstrap_token_revoked",
            "the token in --admin-token-file was revoked before and stays refused; put a new one in the file"
        );
    }
    Ok(())
}
