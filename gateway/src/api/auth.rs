//! Bearer-token authentication: `Authorization: Bearer <token>`, looked up by hash.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::token::{Role, hash};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token id.
    pub token_id: String,
    /// Token label.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role.allows(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                ErrorCode::Forbidden,
                format!(
                    "this action needs the {} role; the token `{}` has {}",
                    role.as_str(),
                    self.name,
                    self.role.as_str()
                ),
            ))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing Authorization: Bearer <token> header")
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("malformed Authorization header; expected `Bearer <token>`")
            })?;
        let row = state
            .store
            .token_by_hash(&hash(token))
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        let role = Role::parse(&row.role)
            .ok_or_else(|| ApiError::unauthorized("token has an unknown role"))?;
        Ok(Caller {
            token_id: row.id,
            name: row.name,
            role,
        })
    }
}
