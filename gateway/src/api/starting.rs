//! The service bound at start-up. A replica listens before its dependencies answer: while Redis
//! is being connected and migrations run, `/healthz` answers 200 (a starting replica must not be
//! restarted for an outage it cannot fix), `/readyz` 503 naming what start-up waits for, and any
//! other request 503 with `Retry-After`. Once the replica is ready, every request goes to the
//! full router.

use std::sync::{Arc, OnceLock, RwLock};

use axum::Json;
use axum::Router;
use axum::extract::Request;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use tower::ServiceExt;

use super::{ApiError, ErrorCode};
use crate::wire::{Healthz, LiveState, Readyz};

/// What start-up is waiting for, shown by `/readyz` until the replica serves.
#[derive(Debug, Clone)]
pub struct StartPhase(Arc<RwLock<&'static str>>);

impl StartPhase {
    /// Starts in `phase`.
    pub fn new(phase: &'static str) -> Self {
        Self(Arc::new(RwLock::new(phase)))
    }

    /// Moves on to `phase`.
    pub fn set(&self, phase: &'static str) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    fn get(&self) -> &'static str {
        *self.0.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Answers for a starting replica until [`Starting::ready`] hands it the full router.
#[derive(Debug, Clone)]
pub struct Starting {
    phase: StartPhase,
    full: Arc<OnceLock<Router>>,
}

impl Starting {
    /// A service that reports `phase` until it is ready.
    pub fn new(phase: StartPhase) -> Self {
        Self {
            phase,
            full: Arc::new(OnceLock::new()),
        }
    }

    /// From now on every request goes to `router`.
    pub fn ready(&self, router: Router) {
        let _ = self.full.set(router);
    }

    /// The make-service to bind; requests carry the peer address (`ConnectInfo<SocketAddr>`)
    /// for the per-address limits.
    pub fn into_make_service(self) -> IntoMakeServiceWithConnectInfo<Router, SocketAddr> {
        Router::new()
            .fallback(move |req: Request| {
                let this = self.clone();
                async move { this.handle(req).await }
            })
            .into_make_service_with_connect_info::<SocketAddr>()
    }

    async fn handle(&self, req: Request) -> Response {
        if let Some(full) = self.full.get() {
            return match full.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        }
        let phase = self.phase.get();
        match req.uri().path() {
            "/healthz" => (
                StatusCode::OK,
                Json(Healthz {
                    status: LiveState::Starting,
                    reason: None,
                    waiting_for: Some(phase.to_string()),
                }),
            )
                .into_response(),
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Readyz {
                    ready: false,
                    replica: None,
                    starting: Some(phase.to_string()),
                    checks: None,
                }),
            )
                .into_response(),
            _ => ApiError::unavailable(
                ErrorCode::Starting,
                format!("this replica is starting ({phase}); retry"),
                2,
            )
            .into_response(),
        }
    }
}
