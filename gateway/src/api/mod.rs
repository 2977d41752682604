//! The HTTPS API on 8443: health, metrics, system status, the session API and the relay.

mod approvals;
mod auth;
pub mod error;
mod events;
mod gateways;
mod guard;
mod health;
pub mod observer;
mod recordings;
mod relay;
mod sessions;
mod ssh;
mod starting;
pub mod system;
mod targets;
mod tokens;
mod watch;
mod ws_upgrade;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub(crate) use auth::lookup;
pub use auth::{Caller, TOKEN_CACHE_TTL, TokenCache};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use guard::{Guard, client_ip};
pub use health::{REDACTED, render_metrics};
pub use starting::{StartPhase, Starting};
pub use system::{DEFAULT_DRAIN_TIMEOUT, DRAIN_OUTCOME_HEADER, SystemStatus};
pub use tokens::{MAX_TTL_SECONDS, MIN_TTL_SECONDS, rotate_bootstrap_token};

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
    /// The session core every session handler calls.
    pub sessions: crate::session::Sessions,
    /// Recording storage, when sessions are recorded.
    pub recordings: Option<crate::recording::Recordings>,
    /// Deadline of a non-streaming request.
    pub request_timeout: Duration,
    /// Recent successful token lookups (see [`TOKEN_CACHE_TTL`]).
    pub tokens: TokenCache,
    /// Pings and idle timeout of relays.
    pub relay_keepalive: crate::pump::Keepalive,
    /// Which addresses targets may point at (checked when added and at every dial).
    pub target_policy: Arc<crate::target_policy::TargetPolicy>,
    /// Per-address limits before authentication.
    pub guard: Guard,
    /// The operator's read-only identity (status and metrics only).
    pub observer: observer::ObserverTokens,
    /// The browser terminal's backend (the terminating SSH front end), when there is one.
    pub terminals: crate::console::Terminals,
    /// The terminating SSH front end's keys, when it is configured.
    pub ssh: Option<Arc<crate::ssh::SshKeys>>,
    /// The port the SSH front end listens on (told to `wgctl ssh`).
    pub ssh_port: u16,
}

/// Who is asking, for the session core: the caller's token and role, and the connection's
/// client address (absent only when the router is served without [`crate::client_addr`]'s
/// acceptor, as in unit tests).
pub(crate) fn requester(
    caller: &Caller,
    client: Option<axum::Extension<crate::client_addr::ClientAddr>>,
) -> crate::session::Requester<'_> {
    crate::session::Requester {
        token_id: &caller.token_id,
        admin: caller.role.allows(crate::token::Role::Admin),
        from: client.map(|axum::Extension(c)| c.addr),
    }
}

/// Builds the router for `state`'s role. Every request but the long-lived ones (relays, the
/// event stream, a drain that waits for sessions) must finish within the request timeout.
pub fn router(state: Arc<AppState>) -> Router {
    let mut bounded = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/system/status", get(system::status));
    let mut long_lived =
        Router::new().route("/v1/system/drain", axum::routing::post(system::drain));
    if state.replica.role.has_api() {
        bounded = bounded
            .route("/v1/targets", get(targets::list).post(targets::create))
            .route(
                "/v1/targets/{name}",
                get(targets::get).delete(targets::delete),
            )
            .route("/v1/tokens", get(tokens::list).post(tokens::create))
            .route("/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
            .route(
                "/v1/gateways/join-tokens",
                axum::routing::post(gateways::create_join_token),
            )
            .route("/v1/gateways", get(gateways::list))
            .route("/v1/gateways/{id}", axum::routing::delete(gateways::revoke))
            .route(
                "/v1/gateways/{id}/commands",
                axum::routing::post(gateways::command),
            )
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
            .route("/v1/recordings/public-keys", get(recordings::public_keys))
            .route("/v1/recordings/{id}/verify", get(recordings::verify))
            .route("/v1/recordings/{id}/cast", get(recordings::cast))
            .route("/v1/ssh/ca.pub", get(ssh::ca_pub))
            .route(
                "/v1/ssh/certificates",
                axum::routing::post(ssh::certificate),
            )
            .route("/v1/recordings/{id}/objects", get(recordings::objects))
            .route(
                "/v1/recordings/{id}/objects/{*key}",
                get(recordings::object),
            );
        long_lived = long_lived
            .route("/v1/events", get(events::stream))
            .route("/v1/sessions/{id}/watch", get(watch::watch));
        bounded = bounded.merge(crate::console::bounded_routes());
        long_lived = long_lived.merge(crate::console::long_lived_routes());
    }
    if state.replica.role.has_relay() {
        long_lived = long_lived
            .route("/v1/sessions/{id}/relay", get(relay::relay))
            .route("/v1/targets/{name}/relay", get(relay::relay_target));
    }
    let r = bounded
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            request_deadline,
        ))
        .merge(long_lived);
    r.fallback(|| async { ApiError::not_found(ErrorCode::NotFound, "no such endpoint") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::per_address,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Answers 503 `request_timeout` (with `Retry-After`) when a request outlives the request
/// timeout, instead of holding the connection.
async fn request_deadline(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(st.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::unavailable(
            ErrorCode::RequestTimeout,
            format!(
                "the request took longer than {}; retry",
                humantime::format_duration(st.request_timeout)
            ),
            1,
        )
        .into_response(),
    }
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

/// Counts requests by a fixed method set, the matched route template and the status: labels
/// come only from values the server defines, so unauthenticated input (`curl -X M$i`, random
/// paths) cannot create new series.
async fn count_requests(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    st.metrics
        .http_requests
        .with_label_values(&[method, route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

/// The method as a metric label: the standard methods, anything else `other`.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
