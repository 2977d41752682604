//! `GET /v1/system/status`: what the operator and `wgctl system status` read from each replica.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;

/// Status of one replica.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SystemStatus {
    /// Replica id.
    pub replica: String,
    /// Served role.
    pub role: String,
    /// True once a drain started.
    pub draining: bool,
    /// Relays this replica carries.
    pub owned_sessions: i64,
    /// Server version.
    pub version: String,
}

/// Handler.
pub async fn status(State(st): State<Arc<AppState>>) -> Json<SystemStatus> {
    Json(SystemStatus {
        replica: st.replica.id.clone(),
        role: serde_json::to_value(st.replica.role)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        draining: st.replica.draining(),
        owned_sessions: st.replica.relays(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}
