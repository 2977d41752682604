//! What can go wrong in a session operation, one variant per failure a front end answers
//! differently (the HTTP API maps each to a status and error code; `wgctl` and the SSH front end
//! print them).

use crate::live::LiveError;
use crate::store::{Decision, StoreError};

use super::SessionStatus;

/// A session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No target by that name.
    #[error("no target named `{0}`")]
    TargetNotFound(String),
    /// The target needs an approver: authorise with `POST /v1/sessions` and wait.
    #[error("target `{0}` requires approval; request a session and wait for an approver")]
    ApprovalRequired(String),
    /// No session by that id (or not one the caller may see).
    #[error("no session `{0}`")]
    NotFound(String),
    /// The live authorisation is gone: never existed, expired, or the session ended.
    #[error("session `{0}` has no live authorisation (expired or ended)")]
    NoLiveGrant(String),
    /// The live state did not verify (bad signature, expired, or stored under another key).
    #[error("session state rejected: {0}")]
    InvalidState(String),
    /// The session belongs to another token and the caller may not use it.
    #[error("this session was authorised for another token")]
    NotYours,
    /// An approver has not decided yet.
    #[error("the session is waiting for approval")]
    ApprovalPending,
    /// Another relay carries (or carried) the session.
    #[error("the session is already connected or ended")]
    InUse,
    /// An operator terminated the session (or an approver denied it).
    #[error("the session was terminated")]
    Terminated,
    /// The live state changed between reading and claiming it.
    #[error("session `{0}` changed while connecting; authorise it again")]
    ChangedWhileConnecting(String),
    /// The target was changed (address, approval, or recreated) between the replica's cached
    /// read and the session's start; nothing was written. Retry at once.
    #[error("target `{0}` changed while the session started; retry")]
    TargetChanged(String),
    /// An approver tried to decide on their own request.
    #[error("a request cannot be decided by the token that made it; ask another approver")]
    SelfApproval,
    /// Someone decided first.
    #[error("session `{id}` was already {decision} by {by}")]
    AlreadyDecided {
        /// Session id.
        id: String,
        /// The earlier decision.
        decision: Decision,
        /// Who made it.
        by: String,
    },
    /// The request waited longer than the approval window.
    #[error(
        "session `{0}` waited longer than {minutes} minutes for a decision and expired; the requester must connect again",
        minutes = super::APPROVAL_WINDOW_MS / 60_000
    )]
    ApprovalExpired(String),
    /// The session is not waiting for a decision.
    #[error("session `{id}` is not waiting for approval (status {status})")]
    NotPending {
        /// Session id.
        id: String,
        /// Its status.
        status: SessionStatus,
    },
    /// The token opens sessions faster than its rate; retry after the duration.
    #[error("this token opens sessions faster than allowed; retry in {}", humantime::format_duration(std::time::Duration::from_secs(.0.as_secs().max(1))))]
    RateLimited(std::time::Duration),
    /// The token holds as many sessions as the cap allows.
    #[error(
        "this token holds {0} sessions, the most allowed at once; end one (or let an unused authorisation expire) first"
    )]
    TooManySessions(u32),
    /// This replica carries as many relays as it may.
    #[error("this replica carries {0} relays, the most it may; retry through the load balancer")]
    AtCapacity(usize),
    /// The target is relayed by its region's gateways, not by this control plane.
    #[error(
        "target `{0}` is relayed by a remote gateway of its region; authorise it with POST /v1/sessions and connect to the gateway named"
    )]
    Regional(String),
    /// No gateway of the region is connected.
    #[error("no remote gateway of region `{0}` is connected; retry shortly")]
    NoRegionalGateway(String),
    /// Regional targets cannot wait for an approver yet.
    #[error(
        "target `{0}` needs an approver and has a region: approvals for regional targets are not supported"
    )]
    RegionalApproval(String),
    /// The durable store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The live store failed.
    #[error(transparent)]
    Live(#[from] LiveError),
}
