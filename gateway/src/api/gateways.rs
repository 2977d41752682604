//! Remote gateways (admin): one-time join tokens (`POST /v1/gateways/join-tokens`, the secret
//! shown once), the fleet (`GET /v1/gateways`) and revocation (`DELETE /v1/gateways/{id}`: its
//! certificate is refused from the next call and its link is cut at its next heartbeat), and
//! commands (`POST /v1/gateways/{id}/commands`: drain, terminate — queued in Postgres and sent
//! down the link by whichever replica holds it, at the gateway's next heartbeat).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::store::{GatewayRow, now_ms};
use crate::token::{Role, generate, hash};
use crate::wire::{
    CreatedJoinToken, GATEWAY_CONNECTED_WITHIN_MS, GatewayView, MAX_JOIN_TOKEN_USES, NewJoinToken,
};

/// Longest join-token lifetime: a token is for one gateway's first start, not for keeping.
pub const MAX_JOIN_TTL_SECONDS: u64 = 30 * 86_400;

fn view(g: GatewayRow, now: i64) -> GatewayView {
    let connected = g.revoked_at.is_none()
        && g.linked_by.is_some()
        && g.last_heartbeat_at
            .is_some_and(|t| now - t <= GATEWAY_CONNECTED_WITHIN_MS);
    GatewayView {
        id: g.id,
        region: g.region,
        version: g.version,
        address: g.address,
        sessions: g.sessions,
        last_heartbeat_at: g.last_heartbeat_at,
        connected,
        linked_by: g.linked_by,
        cert_not_after: g.cert_not_after,
        revoked_at: g.revoked_at,
        lost_after_ms: g.lost_after_ms,
    }
}

pub async fn create_join_token(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewJoinToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedJoinToken>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.body_text()))?;
    let region = req.region.trim().to_string();
    if region.is_empty() || region.len() > 63 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "region must be 1 to 63 characters",
        ));
    }
    if !(super::MIN_TTL_SECONDS..=MAX_JOIN_TTL_SECONDS).contains(&req.ttl_seconds) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidTtl,
            format!(
                "ttl_seconds {} is outside {}..={MAX_JOIN_TTL_SECONDS} (one minute to 30 days)",
                req.ttl_seconds,
                super::MIN_TTL_SECONDS
            ),
        ));
    }
    if !(1..=MAX_JOIN_TOKEN_USES).contains(&req.uses) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!(
                "uses {} is outside 1..={MAX_JOIN_TOKEN_USES} (the number of gateways that may join with the token)",
                req.uses
            ),
        ));
    }
    let expires_at = now_ms() + i64::try_from(req.ttl_seconds * 1000).unwrap_or(i64::MAX);
    let token = generate();
    let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    st.store
        .create_join_token(
            &hash(&token),
            &id,
            &region,
            &caller.token_id,
            expires_at,
            i64::from(req.uses),
        )
        .await?;
    let _ = st
        .store
        .audit(&caller.token_id, "gateway.join_token", &id, &region)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedJoinToken {
            id,
            region,
            token,
            expires_at,
            uses: req.uses,
        }),
    ))
}

pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<GatewayView>>, ApiError> {
    caller.require(Role::Admin)?;
    let now = now_ms();
    Ok(Json(
        st.store
            .list_gateways()
            .await?
            .into_iter()
            .map(|g| view(g, now))
            .collect(),
    ))
}

pub async fn revoke(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<GatewayView>, ApiError> {
    caller.require(Role::Admin)?;
    let g =
        st.store.revoke_gateway(&id).await?.ok_or_else(|| {
            ApiError::not_found(ErrorCode::NotFound, format!("no gateway `{id}`"))
        })?;
    let _ = st
        .store
        .audit(&caller.token_id, "gateway.revoke", &id, "")
        .await;
    tracing::info!(event = "gateway_revoked", gateway = %id, by = %caller.token_id);
    Ok(Json(view(g, now_ms())))
}

pub async fn command(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<crate::wire::NewGatewayCommand>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<crate::wire::QueuedGatewayCommand>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.body_text()))?;
    match (req.kind.as_str(), &req.session_id) {
        ("drain", None) | ("terminate", Some(_)) => {}
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "kind must be `drain`, or `terminate` with a session_id",
            ));
        }
    }
    match st.store.gateway(&id).await? {
        Some(g) if g.revoked_at.is_none() => {}
        _ => {
            return Err(ApiError::not_found(
                ErrorCode::NotFound,
                format!("no gateway `{id}` (or it was revoked)"),
            ));
        }
    }
    let cmd = crate::store::GatewayCommand {
        id: uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
        kind: req.kind,
        session_id: req.session_id,
        timeout_seconds: i64::try_from(req.timeout_seconds).unwrap_or(i64::MAX),
    };
    st.store
        .queue_gateway_command(&id, &cmd, &caller.token_id)
        .await?;
    let _ = st
        .store
        .audit(&caller.token_id, &format!("gateway.{}", cmd.kind), &id, "")
        .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(crate::wire::QueuedGatewayCommand {
            id: cmd.id,
            gateway_id: id,
            kind: cmd.kind,
        }),
    ))
}
