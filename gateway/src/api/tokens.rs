//! `POST /v1/tokens`: admins mint tokens; the secret is shown once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, Caller};
use crate::token::{Role, generate, hash};

/// Request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    role: Role,
    #[serde(default)]
    name: Option<String>,
}

/// Response body (the only time the secret is shown).
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedToken {
    /// Token id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The secret bearer token.
    pub token: String,
}

pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
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
