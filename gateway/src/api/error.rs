//! API errors: a stable machine-readable `code`, a human `message`, the right status, and
//! `Retry-After` on everything a client should retry.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::live::LiveError;
use crate::store::StoreError;

/// The JSON body of every error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable identifier, e.g. `target_not_found`.
    pub code: String,
    /// Human explanation.
    pub message: String,
}

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub body: ErrorBody,
    /// Seconds for `Retry-After`, on retryable errors.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A non-retryable error.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
            retry_after: None,
        }
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: &str, message: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 400.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub fn forbidden(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404.
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409.
    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ApiError::unavailable(
                "database_unavailable",
                format!("the database is unavailable: {m}"),
                2,
            ),
            StoreError::Conflict(m) => ApiError::conflict("already_exists", m),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see server logs",
                )
            }
        }
    }
}

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> Self {
        match e {
            LiveError::Unavailable(m) => ApiError::unavailable(
                "session_state_unavailable",
                format!("the session state store is unavailable: {m}"),
                2,
            ),
            LiveError::Command(m) => {
                tracing::error!(error = %m, "live store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see server logs",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<crate::session::SessionError> for ApiError {
    fn from(e: crate::session::SessionError) -> Self {
        use crate::session::SessionError as E;
        let message = e.to_string();
        match e {
            E::TargetNotFound(_) => ApiError::not_found("target_not_found", message),
            E::NotFound(_) => ApiError::not_found("session_not_found", message),
            E::ApprovalRequired(_) => ApiError::conflict("approval_required", message),
            E::NoLiveGrant(_) | E::ChangedWhileConnecting(_) => {
                ApiError::new(StatusCode::GONE, "session_expired", message)
            }
            E::Terminated => ApiError::new(StatusCode::GONE, "session_terminated", message),
            E::InvalidState(_) => ApiError::forbidden("invalid_session_state", message),
            E::NotYours => ApiError::forbidden("not_your_session", message),
            E::ApprovalPending => ApiError::conflict("approval_pending", message),
            E::InUse => ApiError::conflict("session_in_use", message),
            E::SelfApproval => ApiError::forbidden("self_approval", message),
            E::AlreadyDecided { .. } => ApiError::conflict("already_decided", message),
            E::ApprovalExpired(_) => ApiError::conflict("approval_expired", message),
            E::NotPending { .. } => ApiError::conflict("not_pending", message),
            E::Store(e) => e.into(),
            E::Live(e) => e.into(),
        }
    }
}
