//! Targets: what people may connect to. Admins manage them; everyone may list them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::store::StoreError;
use crate::token::Role;
use crate::wire::{NewTarget, TargetView};

/// Validates a target name: 1–63 of letters, digits, `.`, `-`, `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewTarget>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<TargetView>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(t) = body.map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.body_text()))?;
    if !valid_name(&t.name) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidName,
            "name: 1-63 letters, digits, '.', '-' or '_'",
        ));
    }
    if t.host.trim().is_empty() || t.host.chars().any(char::is_whitespace) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidHost,
            "host: a host name or IP address without spaces",
        ));
    }
    if t.port == 0 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidPort,
            "port: 1-65535",
        ));
    }
    if let Some(login) = &t.ssh_user
        && (login.is_empty()
            || login.len() > 64
            || login
                .chars()
                .any(|c| c.is_whitespace() || c == ':' || c == ','))
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "ssh_user: a login name without spaces, `:` or `,`",
        ));
    }
    let host_key = match &t.ssh_host_key {
        Some(k) => Some(
            russh::keys::PublicKey::from_openssh(k.trim())
                .map(|k| crate::ssh::keys::public_line(&k))
                .map_err(|e| {
                    ApiError::bad_request(ErrorCode::InvalidBody, format!("ssh_host_key: {e}"))
                })?,
        ),
        None => None,
    };
    let source_address = ssh_setting::<crate::ssh::source_address::SourceAddress>(
        "ssh_source_address",
        t.ssh_source_address.as_deref(),
        &t.ssh_user,
    )?;
    let forward_to = ssh_setting::<crate::ssh::forwarding::ForwardPolicy>(
        "ssh_forward_to",
        t.ssh_forward_to.as_deref(),
        &t.ssh_user,
    )?;
    let region = t.region.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if let Some(r) = region {
        if r.len() > 63 {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "region: 1-63 characters",
            ));
        }
        if t.require_approval {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "a regional target cannot require approval yet (remote gateways relay only \
                 sessions authorised at once)",
            ));
        }
    }
    if region.is_some() && t.ssh_user.is_some() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "a regional target cannot be a terminated SSH target yet (remote gateways relay \
             bytes only): drop --region or --ssh-user",
        ));
    }
    // A regional target is dialled by its region's gateways, which check it against their own
    // rules; the control plane's own addresses mean nothing there.
    if region.is_none() {
        st.target_policy
            .check_configured(&t.host, t.port)
            .map_err(|e| ApiError::forbidden(ErrorCode::TargetNotAllowed, e.to_string()))?;
    }
    let row = st
        .store
        .create_target_in(&t.name, &t.host, t.port, t.require_approval, region)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict(
                ErrorCode::TargetExists,
                format!("a target named `{}` already exists", t.name),
            ),
            other => other.into(),
        })?;
    if let Some(login) = &t.ssh_user {
        st.store
            .set_ssh_target(
                &row.id,
                crate::store::SshSettings {
                    login,
                    record_input: t.ssh_record_input,
                    host_key: host_key.as_deref(),
                    source_address: source_address.as_deref(),
                    forward_to: forward_to.as_deref(),
                },
            )
            .await?;
    }
    let _ = st
        .store
        .audit(
            &caller.token_id,
            "target.create",
            &row.name,
            &format!("{}:{}", row.host, row.port),
        )
        .await;
    let mut view = TargetView::from(row);
    view.ssh_user = t.ssh_user.clone();
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn list(
    State(st): State<Arc<AppState>>,
    _caller: Caller,
) -> Result<Json<Vec<TargetView>>, ApiError> {
    let rows = st.store.list_targets().await?;
    Ok(Json(rows.into_iter().map(TargetView::from).collect()))
}

pub async fn get(
    State(st): State<Arc<AppState>>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TargetView>, ApiError> {
    st.store
        .target(&name)
        .await?
        .map(|row| Json(row.into()))
        .ok_or_else(|| not_found(&name))
}

pub async fn delete(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if !st.store.delete_target(&name).await? {
        return Err(not_found(&name));
    }
    let _ = st
        .store
        .audit(&caller.token_id, "target.delete", &name, "")
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// 404 for an unknown target.
pub fn not_found(name: &str) -> ApiError {
    ApiError::not_found(
        ErrorCode::TargetNotFound,
        format!("no target named `{name}`"),
    )
}

/// A terminated-SSH setting `field` of a new target: refused without `ssh_user`, or when it
/// does not parse as `T` (the reason names the field); stored in its canonical form.
fn ssh_setting<T>(
    field: &str,
    value: Option<&str>,
    ssh_user: &Option<String>,
) -> Result<Option<String>, ApiError>
where
    T: std::str::FromStr + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    let Some(v) = value else {
        return Ok(None);
    };
    if ssh_user.is_none() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("{field}: only for a terminated SSH target (set ssh_user too)"),
        ));
    }
    v.parse::<T>()
        .map(|p| Some(p.to_string()))
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, format!("{field}: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert!(super::valid_name("db-1.prod_eu"));
        assert!(!super::valid_name(""));
        assert!(!super::valid_name("a b"));
        assert!(!super::valid_name("x/y"));
        assert!(!super::valid_name(&"a".repeat(64)));
    }
}
