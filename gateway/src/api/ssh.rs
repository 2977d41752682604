//! The terminating SSH front end's HTTP side: `GET /v1/ssh/ca.pub` (the user CA as one
//! `TrustedUserCAKeys` line, for targets) and `POST /v1/ssh/certificates` (a short-lived login
//! certificate for the caller's ephemeral key: what `wgctl ssh` logs in with).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::ssh::SshKeys;
use crate::wire::{SshCertificate, SshCertificateRequest};

fn keys(st: &AppState) -> Result<&Arc<SshKeys>, ApiError> {
    st.ssh.as_ref().ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::SshNotConfigured,
            "terminating SSH is not configured on this server (--ssh-host-key-file, \
             --ssh-ca-key-file, --ssh-login-ca-key-file)",
        )
    })
}

/// The SSH user CA's public key, one line for `TrustedUserCAKeys`. No token needed: it is a
/// public key.
pub async fn ca_pub(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let line = format!("{}\n", keys(&st)?.ca_line());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        line,
    )
        .into_response())
}

/// Signs a login certificate for the caller's public key.
pub async fn certificate(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<SshCertificateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SshCertificate>, ApiError> {
    let keys = keys(&st)?;
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.body_text()))?;
    let key = russh::keys::PublicKey::from_openssh(req.public_key.trim())
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, format!("public_key: {e}")))?;
    let token = st
        .store
        .token_by_id(&caller.token_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    let cert = keys
        .login_certificate(
            &key,
            &token.id,
            &token.name,
            crate::ssh::keys::LOGIN_CERT_TTL,
        )
        .map_err(|e| ApiError::unavailable(ErrorCode::NotFound, e.to_string(), 1))?;
    let _ = st
        .store
        .audit(
            &caller.token_id,
            "ssh.certificate",
            &token.id,
            &cert.serial().to_string(),
        )
        .await;
    Ok(Json(SshCertificate {
        certificate: cert.to_openssh().unwrap_or_default(),
        user: token.name.clone(),
        host_key: crate::ssh::keys::public_line(keys.host.public_key()),
        ssh_port: st.ssh_port,
        valid_before: cert.valid_before(),
    }))
}
