//! Row types of the store, shared by Postgres and SQLite (only i64 and text columns).

use serde::{Deserialize, Serialize};

use crate::session::{EndReason, SessionStatus};

/// A target people connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TargetRow {
    /// Stable id.
    pub id: String,
    /// Unique name used by `wgctl connect NAME`.
    pub name: String,
    /// Host the gateway dials.
    pub host: String,
    /// Port the gateway dials.
    pub port: i64,
    /// 1 when sessions need an approver's decision first.
    pub require_approval: i64,
    /// Unix ms.
    pub created_at: i64,
    /// The region whose remote gateways relay it (None: the control plane's replicas do).
    pub region: Option<String>,
}

/// A token's identity (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRow {
    /// Token id, shown in session history.
    pub id: String,
    /// Human label.
    pub name: String,
    /// Stored role name.
    pub role: String,
    /// Unix ms after which the token is refused; `None`: never expires.
    pub expires_at: Option<i64>,
    /// Unix ms when it was revoked.
    pub revoked_at: Option<i64>,
}

/// `SELECT <every SessionRow column> FROM sessions <tail>`, as a literal (sqlx only takes
/// literal SQL without an audit marker).
macro_rules! select_sessions {
    ($tail:literal) => {
        concat!(
            "SELECT id, token_id, target_id, target_name, host, port, status, replica, created_at, \
             started_at, ended_at, bytes_up, bytes_down, end_reason, requested_from, connected_by, \
             connected_from FROM sessions ",
            $tail
        )
    };
}

/// A session and its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// Owner's token id.
    pub token_id: String,
    /// Target id at authorisation time.
    pub target_id: String,
    /// Target name at authorisation time.
    pub target_name: String,
    /// Dialled host.
    pub host: String,
    /// Dialled port.
    pub port: i64,
    /// Where the session stands.
    pub status: SessionStatus,
    /// Replica that carried (or carries) the relay.
    pub replica: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms when the relay connected to the target.
    pub started_at: Option<i64>,
    /// Unix ms when it ended.
    pub ended_at: Option<i64>,
    /// Bytes client → target.
    pub bytes_up: i64,
    /// Bytes target → client.
    pub bytes_down: i64,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// Client address that asked for it (behind a load balancer, from its PROXY header).
    pub requested_from: Option<String>,
    /// Token that connected it: the owner, or an admin acting for them.
    pub connected_by: Option<String>,
    /// Client address that connected it.
    pub connected_from: Option<String>,
}
