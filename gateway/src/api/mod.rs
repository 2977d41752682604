//! The HTTPS API on 8443: health, metrics, system status, the session API and the relay.

mod approvals;
mod auth;
pub mod error;
mod events;
mod health;
mod recordings;
mod relay;
mod sessions;
mod starting;
pub mod system;
mod targets;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;

pub use auth::Caller;
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use starting::{StartPhase, Starting};
pub use system::{DEFAULT_DRAIN_TIMEOUT, DRAIN_OUTCOME_HEADER, SystemStatus};

use crate::health::HealthState;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::replica::Replica;
use crate::signing::Keyring;
use crate::store::Store;

/// Everything a handler may need.
#[derive(Debug)]
pub struct AppState {
    /// This replica.
    pub replica: Arc<Replica>,
    /// Durable store.
    pub store: Store,
    /// Live store.
    pub live: Live,
    /// Signing keys for grants.
    pub keyring: Keyring,
    /// Metrics.
    pub metrics: Metrics,
    /// Latest health observations.
    pub health: Arc<HealthState>,
    /// Timeout for dialling a target.
    pub dial_timeout: Duration,
    /// How often a relay renews its grant and checks it (termination, state loss).
    pub relay_poll: Duration,
    /// How long a live session's state stays valid without its relay renewing it.
    pub live_session_ttl: Duration,
    /// Recording storage, when sessions are recorded.
    pub recordings: Option<crate::recording::Recordings>,
}

/// Builds the router for `state`'s role.
pub fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/system/status", get(system::status))
        .route("/v1/system/drain", axum::routing::post(system::drain));
    if state.replica.role.has_api() {
        r = r
            .route("/v1/targets", get(targets::list).post(targets::create))
            .route(
                "/v1/targets/{name}",
                get(targets::get).delete(targets::delete),
            )
            .route("/v1/tokens", axum::routing::post(tokens::create))
            .route("/v1/sessions", get(sessions::list).post(sessions::create))
            .route(
                "/v1/sessions/{id}",
                get(sessions::get).delete(sessions::terminate),
            )
            .route("/v1/approvals", get(approvals::list))
            .route(
                "/v1/approvals/{id}/approve",
                axum::routing::post(approvals::approve),
            )
            .route(
                "/v1/approvals/{id}/deny",
                axum::routing::post(approvals::deny),
            )
            .route("/v1/events", get(events::stream))
            .route("/v1/recordings/{id}/verify", get(recordings::verify));
    }
    if state.replica.role.has_relay() {
        r = r.route("/v1/sessions/{id}/relay", get(relay::relay));
    }
    r.fallback(|| async { ApiError::not_found(ErrorCode::NotFound, "no such endpoint") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Appends an event to the outbox in the background: events inform subscribers, they never
/// hold up or fail the request that caused them.
pub(crate) fn emit(
    st: &Arc<AppState>,
    kind: &'static str,
    subject: &str,
    detail: serde_json::Value,
) {
    let (st, subject) = (st.clone(), subject.to_string());
    tokio::spawn(async move {
        if let Err(e) = st.store.emit(kind, &subject, &detail).await {
            tracing::warn!(kind, subject = %subject, error = %e, "could not record an event");
        }
    });
}

/// `GET /v1/openapi.json`: the document built once per process (see [`crate::openapi`]); no
/// token, since it describes the API and none of its data.
async fn openapi_json() -> Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
        .into_response()
}

async fn count_requests(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    st.metrics
        .http_requests
        .with_label_values(&[method.as_str(), resp.status().as_str()])
        .inc();
    resp
}
