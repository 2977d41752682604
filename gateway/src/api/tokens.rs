//! `POST /v1/tokens`: admins mint tokens; the secret is shown once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::token::{Role, generate, hash};
use crate::wire::{CreatedToken, NewToken};

pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.body_text()))?;
    let name = req
        .name
        .unwrap_or_else(|| format!("{}-token", req.role.as_str()));
    let token = generate();
    let id = st
        .store
        .create_token(&hash(&token), &name, req.role)
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
        }),
    ))
}
