//! `/healthz` (liveness: isolation only), `/readyz` (dependencies and drain), `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::health::Liveness;

/// Liveness: reads the checker's state; fails only when the replica is isolated.
pub async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    match st.health.liveness() {
        Liveness::Live => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Liveness::Isolated(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "isolated", "reason": reason})),
        )
            .into_response(),
    }
}

/// Readiness: Postgres and Redis as of the last check (stale checks count as failing), and the
/// drain bit; the body names each check and its result.
pub async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let o = st.health.observations();
    let fresh = o
        .checked_at
        .is_some_and(|t| Instant::now().duration_since(t) < st.health_interval_bound());
    let db_ok = fresh && o.db_failing_since.is_none() && o.db_last_ok.is_some();
    let redis_ok = fresh && o.redis_failing_since.is_none();
    let draining = st.replica.draining();
    let check = |ok: bool, err: Option<String>| {
        if ok {
            json!({"ok": true})
        } else {
            json!({"ok": false, "error": err.unwrap_or_else(|| if fresh { "not checked yet".into() } else { "health check is stale".into() })})
        }
    };
    let mut postgres = check(db_ok, o.db_error.clone());
    if let (true, Some(rt)) = (db_ok, o.db_roundtrip) {
        postgres["roundtrip_ms"] = json!(rt.as_secs_f64() * 1000.0);
    }
    let ready = db_ok && redis_ok && !draining;
    let body = json!({
        "ready": ready,
        "replica": st.replica.id,
        "checks": {
            "postgres": postgres,
            "redis": check(redis_ok, o.redis_error.clone()),
            "drain": if draining { json!({"ok": false, "error": "draining"}) } else { json!({"ok": true}) },
        },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Prometheus text exposition.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    st.metrics.sessions_active.set(st.replica.relays());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

impl AppState {
    /// A check older than this is stale: three relay polls or at least 5 s.
    fn health_interval_bound(&self) -> std::time::Duration {
        (self.relay_poll * 3).max(std::time::Duration::from_secs(5))
    }
}
