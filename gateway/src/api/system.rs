//! `GET /v1/system/status`: what the operator and `wgctl system status` read from each replica.

use std::sync::Arc;

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::metrics::Metrics;
use crate::replica::{DrainOutcome, Replica};
use crate::token::Role;
pub use crate::wire::SystemStatus;

/// Drain timeout when the request does not name one (the chart's 300 s grace minus margins).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(270);
/// Header telling how a drain ended: `drained` or `evicted=N`.
pub const DRAIN_OUTCOME_HEADER: &str = "wardengate-drain-outcome";

/// Handler.
pub async fn status(State(st): State<Arc<AppState>>) -> Json<SystemStatus> {
    Json(status_of(&st.replica))
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
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidTimeout,
                format!("timeout `{t}`: {e}; use e.g. 90s or 10m"),
            )
        }),
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
    Ok(drain_replica(&st.replica, &st.metrics, timeout).await)
}

/// The one drain path behind the API, the local admin socket and SIGTERM's caller: flips
/// readiness, waits for owned sessions up to `timeout`, closes the rest recoverably, and answers
/// 204 with the outcome in [`DRAIN_OUTCOME_HEADER`].
pub async fn drain_replica(replica: &Replica, metrics: &Metrics, timeout: Duration) -> Response {
    let deadline = replica.begin_drain(timeout);
    metrics.draining.set(1);
    let outcome = replica.wait_drained(deadline).await;
    let label = match outcome {
        DrainOutcome::Drained => "drained".to_string(),
        DrainOutcome::Evicted(n) => format!("evicted={n}"),
    };
    metrics
        .drains
        .with_label_values(&[if matches!(outcome, DrainOutcome::Drained) {
            "drained"
        } else {
            "evicted"
        }])
        .inc();
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&label) {
        resp.headers_mut().insert(DRAIN_OUTCOME_HEADER, v);
    }
    resp
}
