//! API errors: a stable machine-readable `code`, a human `message`, the right status, and
//! `Retry-After` on everything a client should retry.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::live::LiveError;
use crate::store::StoreError;
pub use crate::wire::{ErrorBody, ErrorCode};

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
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
            },
            retry_after: None,
        }
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: ErrorCode, message: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 429 with `Retry-After`: a rate limit or cap; wait, then retry.
    pub fn too_many(code: ErrorCode, message: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    /// 400.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 403.
    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404.
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ApiError::unavailable(
                ErrorCode::DatabaseUnavailable,
                format!("the database is unavailable: {m}"),
                2,
            ),
            StoreError::Conflict(m) => ApiError::conflict(ErrorCode::AlreadyExists, m),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
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
                ErrorCode::SessionStateUnavailable,
                format!("the session state store is unavailable: {m}"),
                2,
            ),
            LiveError::Command(m) => {
                tracing::error!(error = %m, "live store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
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
            E::TargetNotFound(_) => ApiError::not_found(ErrorCode::TargetNotFound, message),
            E::NotFound(_) => ApiError::not_found(ErrorCode::SessionNotFound, message),
            E::ApprovalRequired(_) => ApiError::conflict(ErrorCode::ApprovalRequired, message),
            E::NoLiveGrant(_) | E::ChangedWhileConnecting(_) => {
                ApiError::new(StatusCode::GONE, ErrorCode::SessionExpired, message)
            }
            E::Terminated => ApiError::new(StatusCode::GONE, ErrorCode::SessionTerminated, message),
            E::InvalidState(_) => ApiError::forbidden(ErrorCode::InvalidSessionState, message),
            E::NotYours => ApiError::forbidden(ErrorCode::NotYourSession, message),
            E::ApprovalPending => ApiError::conflict(ErrorCode::ApprovalPending, message),
            E::InUse => ApiError::conflict(ErrorCode::SessionInUse, message),
            E::SelfApproval => ApiError::forbidden(ErrorCode::SelfApproval, message),
            E::AlreadyDecided { .. } => ApiError::conflict(ErrorCode::AlreadyDecided, message),
            E::ApprovalExpired(_) => ApiError::conflict(ErrorCode::ApprovalExpired, message),
            E::NotPending { .. } => ApiError::conflict(ErrorCode::NotPending, message),
            E::RateLimited(wait) => ApiError::too_many(
                ErrorCode::SessionRateLimited,
                message,
                crate::ratelimit::retry_after_secs(wait),
            ),
            E::TooManySessions(_) => ApiError::too_many(ErrorCode::TooManySessions, message, 5),
            E::AtCapacity(_) => ApiError::unavailable(ErrorCode::ReplicaAtCapacity, message, 1),
            E::TargetChanged(_) => ApiError::unavailable(ErrorCode::TargetChanged, message, 0),
            E::Regional(_) => ApiError::conflict(ErrorCode::RegionalTarget, message),
            E::NoRegionalGateway(_) => {
                ApiError::unavailable(ErrorCode::NoRegionalGateway, message, 2)
            }
            E::RegionalApproval(_) => ApiError::conflict(ErrorCode::ApprovalRequired, message),
            E::Store(e) => e.into(),
            E::Live(e) => e.into(),
        }
    }
}
