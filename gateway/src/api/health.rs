//! `/healthz` (liveness: isolation only), `/readyz` (dependencies and drain), `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::health::Liveness;
use crate::wire::{Check, Healthz, LiveState, ReadinessChecks, Readyz};

/// Liveness: reads the checker's state; fails only when the replica is isolated.
pub async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let (code, status, reason) = match st.health.liveness() {
        Liveness::Live => (StatusCode::OK, LiveState::Ok, None),
        Liveness::Isolated(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            LiveState::Isolated,
            Some(reason),
        ),
    };
    let body = Healthz {
        status,
        reason,
        waiting_for: None,
    };
    (code, Json(body)).into_response()
}

/// Readiness: not ready while draining, while isolated (see `/healthz`), or while Postgres or
/// Redis has been failing for longer than the isolation grace (a stale checker counts as
/// failing). A shorter hiccup keeps the replica ready: pulling every replica out of the
/// Service on a brief database blip makes the outage worse, not shorter. The body names each
/// check, its last error and how long it has been failing.
pub async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let o = st.health.observations();
    let now = Instant::now();
    let grace = st.health.grace();
    let fresh = o
        .checked_at
        .is_some_and(|t| now.duration_since(t) < st.health_interval_bound());
    let failing_for = |since: Option<Instant>| since.map(|s| now.duration_since(s));
    let check = |failing: Option<std::time::Duration>, error: Option<String>, ever_ok: bool| {
        let within_grace = failing.is_none_or(|d| d <= grace);
        let ok = fresh && ever_ok && within_grace;
        let mut c = Check {
            ok,
            ..Check::default()
        };
        if let Some(d) = failing {
            c.failing_for_ms = Some(d.as_millis() as u64);
            c.grace_ms = Some(grace.as_millis() as u64);
        }
        if !fresh {
            c.error = Some("health check is stale".into());
        } else if let Some(e) = error.filter(|_| failing.is_some()) {
            c.error = Some(e);
        }
        (ok, c)
    };
    let (db_ok, mut postgres) = check(
        failing_for(o.db_failing_since),
        o.db_error.clone(),
        o.db_last_ok.is_some(),
    );
    if let (None, Some(rt)) = (o.db_failing_since, o.db_roundtrip) {
        postgres.roundtrip_ms = Some(rt.as_secs_f64() * 1000.0);
    }
    let (redis_ok, redis) = check(
        failing_for(o.redis_failing_since),
        o.redis_error.clone(),
        true,
    );
    let draining = st.replica.draining();
    let isolation = match st.health.liveness() {
        Liveness::Live => Check {
            ok: true,
            ..Check::default()
        },
        Liveness::Isolated(reason) => Check {
            ok: false,
            error: Some(reason),
            ..Check::default()
        },
    };
    let isolated = !isolation.ok;
    let ready = db_ok && redis_ok && !draining && !isolated;
    let drain = Check {
        ok: !draining,
        error: draining.then(|| "draining".to_string()),
        ..Check::default()
    };
    let body = Readyz {
        ready,
        replica: Some(st.replica.id.clone()),
        starting: None,
        checks: Some(ReadinessChecks {
            postgres,
            redis,
            isolation,
            drain,
        }),
    };
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
        (self.sessions.poll() * 3).max(std::time::Duration::from_secs(5))
    }
}
