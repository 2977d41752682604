//! `GET /v1/system/status`: what the operator and `wgctl system status` read from each replica.

use std::sync::Arc;

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::replica::{DrainOutcome, Replica};
use crate::token::Role;
pub use crate::wire::SystemStatus;

pub use crate::replica::DEFAULT_DRAIN_TIMEOUT;
/// The longest drain a request may ask for (a day; the deadline must stay representable).
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Header telling how a drain ended: `drained` or `evicted=N`.
pub const DRAIN_OUTCOME_HEADER: &str = "wardengate-drain-outcome";

/// Handler: for any valid token, or the operator's observer token (see [`super::observer`]).
pub async fn status(
    State(st): State<Arc<AppState>>,
    _reader: super::observer::Reader,
) -> Json<SystemStatus> {
    let mut s = status_of(&st.replica);
    s.dependencies = Some(st.dependencies());
    Json(s)
}

/// The status of `replica`, for the API and the local admin socket.
pub fn status_of(replica: &Replica) -> SystemStatus {
    SystemStatus {
        replica: replica.id.clone(),
        role: serde_json::to_value(replica.role)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        draining: replica.draining(),
        owned_sessions: replica.relays(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        drain_remaining_seconds: replica.drain_remaining().map(|d| d.as_secs_f64()),
        dependencies: None,
    }
}

/// `POST /v1/system/drain?timeout=10m` query.
#[derive(Debug, Deserialize)]
pub struct DrainQuery {
    /// Eviction window (`90s`, `10m`); default [`DEFAULT_DRAIN_TIMEOUT`].
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The drain window a request asks for, or the default.
pub fn drain_timeout(q: &DrainQuery) -> Result<Duration, ApiError> {
    match q.timeout.as_deref() {
        None => Ok(DEFAULT_DRAIN_TIMEOUT),
        Some(t) => match humantime::parse_duration(t) {
            Ok(d) if d <= MAX_DRAIN_TIMEOUT => Ok(d),
            Ok(_) => Err(ApiError::bad_request(
                ErrorCode::InvalidTimeout,
                format!(
                    "timeout `{t}` is longer than the maximum {}; use e.g. 90s or 10m",
                    humantime::format_duration(MAX_DRAIN_TIMEOUT)
                ),
            )),
            Err(e) => Err(ApiError::bad_request(
                ErrorCode::InvalidTimeout,
                format!("timeout `{t}`: {e}; use e.g. 90s or 10m"),
            )),
        },
    }
}

/// Drains this replica: readiness fails at once and new relays are refused with 503; returns
/// 204 when every owned session has ended, or when the timeout elapsed and the rest were closed
/// with a recoverable error. Idempotent: a second call joins the running drain.
pub async fn drain(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<DrainQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let timeout = drain_timeout(&q)?;
    let _ = st
        .store
        .audit(
            &caller.token_id,
            "replica.drain",
            &st.replica.id,
            &format!("{timeout:?}"),
        )
        .await;
    Ok(drain_response(st.replica.drain(timeout).await))
}

/// 204 with the drain's outcome in [`DRAIN_OUTCOME_HEADER`] (`drained` or `evicted=N`), for the
/// API and the local admin socket.
pub fn drain_response(outcome: DrainOutcome) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&outcome.to_string()) {
        resp.headers_mut().insert(DRAIN_OUTCOME_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(t: &str) -> DrainQuery {
        DrainQuery {
            timeout: Some(t.into()),
        }
    }

    #[test]
    fn drain_timeouts_are_bounded_and_explained() {
        assert_eq!(
            drain_timeout(&DrainQuery { timeout: None }).unwrap(),
            DEFAULT_DRAIN_TIMEOUT
        );
        assert_eq!(drain_timeout(&q("90s")).unwrap(), Duration::from_secs(90));
        assert_eq!(drain_timeout(&q("24h")).unwrap(), MAX_DRAIN_TIMEOUT);
        // Once an `Instant` overflow (a panic in the handler).
        let e = drain_timeout(&q("500000000years")).unwrap_err();
        assert_eq!(e.body.code, ErrorCode::InvalidTimeout);
        assert!(e.body.message.contains("maximum"), "{}", e.body.message);
        assert_eq!(
            drain_timeout(&q("soon")).unwrap_err().body.code,
            ErrorCode::InvalidTimeout
        );
    }
}
