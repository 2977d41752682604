//! The signed session grant kept in Redis: what a session may connect to, whose it is, and
//! where it stands. Any replica can read it and serve the session; none trusts it unsigned.

use serde::{Deserialize, Serialize};

use crate::signing::Expiring;

/// How long an authorisation may wait before its relay connects, counted from when it was
/// granted (at creation, or at the approver's decision).
pub const AUTHORIZED_TTL_MS: i64 = 10 * 60 * 1000;
/// How long a request that needs approval waits for a decision. After that it ends as
/// `expired`: a late decision is refused with `approval_expired`, and `wgctl connect` says the
/// request expired (connect again to ask anew).
pub const APPROVAL_WINDOW_MS: i64 = 10 * 60 * 1000;
/// How long an active grant stays valid without its relay renewing it (`--live-session-ttl`).
/// The relay re-signs it with a fresh expiry on every poll, so a session lasts as long as it is
/// carried; this bounds only a relay that stopped renewing.
pub const DEFAULT_LIVE_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a terminated grant stays in Redis: long enough for the relay carrying the session to
/// see it on its next poll (the session row is already `terminating` or `ended`).
pub const TERMINATED_GRANT_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a session stands, as its live grant says (the durable truth is
/// [`super::SessionStatus`]).
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
    /// Who terminated it (the terminator's token name), once terminated: what the user and
    /// watchers are told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated_by: Option<String>,
}

impl Expiring for Grant {
    fn expires_at_ms(&self) -> i64 {
        self.expires_at_ms
    }
}
