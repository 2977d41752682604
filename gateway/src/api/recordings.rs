//! `GET /v1/recordings/{id}/verify`: checks a recording's signed manifest and every object it
//! lists, recomputing each hash from object storage. The signing key never leaves the servers,
//! so verification runs here; the answer says exactly what failed.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::recording::Verification;
use crate::token::Role;

/// The verification report (200 whether or not it verified; `ok` says which).
pub async fn verify(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Verification>, ApiError> {
    caller.require(Role::Approver)?;
    let Some(rec) = &st.recordings else {
        return Err(ApiError::not_found(
            ErrorCode::RecordingsDisabled,
            "this server does not record sessions (set --recordings-url / WG_RECORDINGS_URL)",
        ));
    };
    if st.store.session(&id).await?.is_none() {
        return Err(ApiError::not_found(
            ErrorCode::SessionNotFound,
            format!("no session `{id}`"),
        ));
    }
    let v = rec.verify(&id, &st.keyring).await.map_err(|e| {
        ApiError::unavailable(
            ErrorCode::RecordingsUnavailable,
            format!("reading the recording: {e}"),
            5,
        )
    })?;
    Ok(Json(v))
}
