//! The HTTPS API on 8443: health, readiness and system status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// State every handler shares: who this replica is and whether it is draining.
#[derive(Debug)]
pub struct Replica {
    /// Stable id of this replica (pod name, or generated).
    pub id: String,
    /// Set by a drain; makes `/readyz` fail so new sessions go elsewhere.
    pub draining: AtomicBool,
}

impl Replica {
    /// A replica that is not draining.
    pub fn new(id: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            draining: AtomicBool::new(false),
        })
    }
}

/// `GET /v1/system/status` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SystemStatus {
    /// Replica id.
    pub replica: String,
    /// True once a drain started.
    pub draining: bool,
    /// Live sessions whose relay this replica carries.
    pub owned_sessions: u64,
    /// Server version.
    pub version: String,
}

/// The router for a replica.
pub fn router(replica: Arc<Replica>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/system/status", get(status))
        .with_state(replica)
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(r): State<Arc<Replica>>) -> Response {
    let draining = r.draining.load(Ordering::Relaxed);
    let body = Json(serde_json::json!({
        "ready": !draining,
        "checks": {"drain": if draining { "draining" } else { "ok" }},
    }));
    let code = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, body).into_response()
}

async fn status(State(r): State<Arc<Replica>>) -> Json<SystemStatus> {
    Json(SystemStatus {
        replica: r.id.clone(),
        draining: r.draining.load(Ordering::Relaxed),
        owned_sessions: 0,
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}
