//! `/healthz` (liveness: isolation only), `/readyz` (dependencies and drain), `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, Caller};
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
/// check and how long it has been failing; its last error (host names, addresses, driver
/// messages) only for a caller with a valid token — probes and strangers see `unavailable`.
pub async fn readyz(State(st): State<Arc<AppState>>, caller: Result<Caller, ApiError>) -> Response {
    let (postgres, redis) = st.dependency_checks();
    let (db_ok, redis_ok) = (postgres.ok, redis.ok);
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
    let mut checks = ReadinessChecks {
        postgres,
        redis,
        isolation,
        drain,
    };
    if caller.is_err() {
        for c in [
            &mut checks.postgres,
            &mut checks.redis,
            &mut checks.isolation,
        ] {
            if c.error.is_some() {
                c.error = Some(REDACTED.into());
            }
        }
    }
    let body = Readyz {
        ready,
        replica: Some(st.replica.id.clone()),
        starting: None,
        checks: Some(checks),
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// What a caller without a token reads instead of a dependency's error.
pub const REDACTED: &str = "unavailable (send a token for details)";

/// Prometheus text exposition, for callers with a token (any role) or the observer token on
/// 8443; Prometheus sends one with `authorization: {credentials_file: …}`, or scrapes
/// `--metrics-listen` instead.
pub async fn metrics(
    State(st): State<Arc<AppState>>,
    _reader: super::observer::Reader,
) -> Response {
    render_metrics(&st.metrics, &st.replica)
}

/// The metrics text of `replica`, for 8443 and `--metrics-listen`.
pub fn render_metrics(
    metrics: &crate::metrics::Metrics,
    replica: &crate::replica::Replica,
) -> Response {
    metrics.sessions_active.set(replica.relays());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}

impl AppState {
    /// The Postgres and Redis checks of `/readyz`: failing only past the isolation grace, or
    /// when the checker's last observation is stale.
    pub(crate) fn dependency_checks(&self) -> (Check, Check) {
        let o = self.health.observations();
        let now = Instant::now();
        let grace = self.health.grace();
        let fresh = o
            .checked_at
            .is_some_and(|t| now.duration_since(t) < self.health_interval_bound());
        let failing_for = |since: Option<Instant>| since.map(|s| now.duration_since(s));
        let check = |failing: Option<std::time::Duration>, error: Option<String>, ever_ok: bool| {
            let within_grace = failing.is_none_or(|d| d <= grace);
            let mut c = Check {
                ok: fresh && ever_ok && within_grace,
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
            c
        };
        let mut postgres = check(
            failing_for(o.db_failing_since),
            o.db_error.clone(),
            o.db_last_ok.is_some(),
        );
        if let (None, Some(rt)) = (o.db_failing_since, o.db_roundtrip) {
            postgres.roundtrip_ms = Some(rt.as_secs_f64() * 1000.0);
        }
        let redis = check(
            failing_for(o.redis_failing_since),
            o.redis_error.clone(),
            true,
        );
        (postgres, redis)
    }

    /// The dependency verdicts of `GET /v1/system/status`.
    pub(crate) fn dependencies(&self) -> crate::wire::Dependencies {
        let (postgres, redis) = self.dependency_checks();
        crate::wire::Dependencies {
            postgres: postgres.ok,
            redis: redis.ok,
        }
    }

    /// A check older than this is stale: three relay polls or at least 5 s.
    fn health_interval_bound(&self) -> std::time::Duration {
        (self.sessions.poll() * 3).max(std::time::Duration::from_secs(5))
    }
}
