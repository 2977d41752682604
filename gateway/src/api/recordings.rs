//! Recording endpoints. `GET /v1/recordings/{id}/verify` checks a recording's hash chain, its
//! Ed25519-signed manifest and every object, against the manifest hash Postgres recorded; the
//! answer lists typed findings naming the object concerned. `GET /v1/recordings/public-keys`
//! (unauthenticated: public keys are public) publishes the keys manifests are signed with, so
//! auditors verify offline. `GET /v1/recordings/{id}/objects[/{key}]` lets an approver download
//! a recording for that.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::recording::{Recorded, Recordings, Verification};
use crate::token::Role;
use crate::wire::{RecordingKeys, RecordingObjects};

fn recordings(st: &AppState) -> Result<&Recordings, ApiError> {
    st.recordings.as_ref().ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::RecordingsDisabled,
            "this server does not record sessions (set --recordings-url / WG_RECORDINGS_URL)",
        )
    })
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(
        ErrorCode::RecordingsUnavailable,
        format!("reading the recording: {e}"),
        5,
    )
}

async fn known_session(st: &AppState, id: &str) -> Result<(), ApiError> {
    if st.store.session(id).await?.is_none() {
        return Err(ApiError::not_found(
            ErrorCode::SessionNotFound,
            format!("no session `{id}`"),
        ));
    }
    Ok(())
}

/// The verification report (200 whether or not it verified; `ok` says which).
pub async fn verify(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Verification>, ApiError> {
    caller.require(Role::Approver)?;
    let rec = recordings(&st)?;
    known_session(&st, &id).await?;
    let recorded = match st.store.manifest_hash(&id).await? {
        Some(h) => Recorded::Signed(h),
        None => Recorded::NotSigned,
    };
    let v = rec.verify(&id, &recorded).await.map_err(unavailable)?;
    Ok(Json(v))
}

/// The trusted manifest public keys, the signing one first. No token needed.
pub async fn public_keys(State(st): State<Arc<AppState>>) -> Result<Json<RecordingKeys>, ApiError> {
    Ok(Json(recordings(&st)?.manifest_keys().listing()))
}

/// Every object key of a recording (nested ones included).
pub async fn objects(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RecordingObjects>, ApiError> {
    caller.require(Role::Approver)?;
    let rec = recordings(&st)?;
    known_session(&st, &id).await?;
    let keys = rec.list_keys(&id).await.map_err(unavailable)?;
    Ok(Json(RecordingObjects { session: id, keys }))
}

/// One object's bytes, by its exact key.
pub async fn object(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Role::Approver)?;
    let rec = recordings(&st)?;
    known_session(&st, &id).await?;
    match rec.get_object(&id, &key).await.map_err(unavailable)? {
        Some(b) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            b,
        )
            .into_response()),
        None => Err(ApiError::not_found(
            ErrorCode::NotFound,
            format!("recording {id} has no object `{key}`"),
        )),
    }
}

/// The recording of a terminated SSH session as one asciicast v2 file (`application/x-asciicast`):
/// its chunks' bytes in order, read from the same objects verification covers. Live sessions
/// get what has been uploaded so far.
pub async fn cast(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Approver)?;
    let rec = recordings(&st)?;
    known_session(&st, &id).await?;
    let meta = rec
        .get_object(&id, crate::recording::verify::META)
        .await
        .map_err(unavailable)?
        .and_then(|b| serde_json::from_slice::<crate::recording::Meta>(&b).ok());
    if !meta.is_some_and(|m| crate::ssh::is_cast_note(&m.note)) {
        return Err(ApiError::not_found(
            ErrorCode::NotFound,
            format!(
                "recording {id} is not a terminated SSH session's cast (byte relays record raw bytes)"
            ),
        ));
    }
    let mut chunks: Vec<String> = rec
        .list_keys(&id)
        .await
        .map_err(unavailable)?
        .into_iter()
        .filter(|k| k.starts_with("chunk-") && k.ends_with(".bin"))
        .collect();
    chunks.sort();
    let mut body = Vec::new();
    for k in chunks {
        if let Some(b) = rec.get_object(&id, &k).await.map_err(unavailable)? {
            body.extend_from_slice(&b);
        }
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-asciicast")],
        body,
    )
        .into_response())
}
