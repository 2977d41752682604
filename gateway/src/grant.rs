//! The signed session grant kept in Redis: what a session may connect to, whose it is, and
//! where it stands. Any replica can read it and serve the session; none trusts it unsigned.

use serde::{Deserialize, Serialize};

use crate::signing::Expiring;

/// How long an authorisation may wait before its relay connects.
pub const AUTHORIZED_TTL_MS: i64 = 10 * 60 * 1000;
/// How long an active grant lives without its relay renewing it.
pub const ACTIVE_TTL_MS: i64 = 60 * 1000;

/// Where a session stands, as the live state says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// Waiting for an approver.
    Pending,
    /// May connect.
    Authorized,
    /// A relay carries it.
    Active,
    /// An operator ended it; the relay must close.
    Terminated,
}

/// The signed grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Session id (must equal the key it is stored under).
    pub session_id: String,
    /// Owner's token id.
    pub token_id: String,
    /// Target name.
    pub target: String,
    /// Host to dial.
    pub host: String,
    /// Port to dial.
    pub port: u16,
    /// State.
    pub state: GrantState,
    /// Replica carrying the relay, once active.
    pub replica: Option<String>,
    /// Unix ms after which the grant is void.
    pub expires_at_ms: i64,
}

impl Expiring for Grant {
    fn expires_at_ms(&self) -> i64 {
        self.expires_at_ms
    }
}
