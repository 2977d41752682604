//! The session core: the one place where a session lives. Every front end (the HTTP API and its
//! relay, the cleanup job, later the agent link and the SSH server) calls [`Sessions`]; none of
//! them touches grants or session rows. No HTTP in here.
//!
//! A session has two records: the durable row in Postgres ([`SessionStatus`], the truth for
//! history and decisions) and a signed live grant in Redis ([`GrantState`], what any replica
//! reads to relay it, with a TTL). Transitions, each owned by one operation:
//!
//! | operation          | row before                 | row after                        | live grant after                        | event                 |
//! |--------------------|----------------------------|----------------------------------|-----------------------------------------|-----------------------|
//! | `authorise`        | —                          | `authorized` (or `pending`)      | `Authorized` 10 min (`Pending` 10 min)  | `approval.requested`* |
//! | `decide` approve   | `pending`                  | `authorized`                     | `Authorized`, 10 min from the decision  | `approval.approved`   |
//! | `decide` deny      | `pending`                  | `ended` (`denied`)               | `Terminated`                            | `approval.denied`     |
//! | `claim`            | `authorized`               | `active` (replica, started_at)   | `Active`, CAS on the grant `open` read  | `session.started`     |
//! | `start_direct`     | — (no approval needed)     | `active` (replica, started_at)   | `Active` (authorised and claimed at once) | `session.started`** |
//! | `watch` (renew)    | `active`                   | `active`                         | `Active` re-signed, CAS on last write   | —                     |
//! | `terminate`        | `pending`/`authorized`     | `ended` (`terminated`)           | `Terminated` 60 s                       | `session.terminated`  |
//! | `terminate`        | `active`                   | `terminating`                    | `Terminated` 60 s: the relay ends       | `session.terminated`  |
//! | `end`              | `active`/`terminating`     | `ended` (the relay's reason)     | deleted                                 | `session.ended`**     |
//! | `mark_lost`        | `active`/`terminating`     | `ended` (`replica_lost`), fenced | — (lapses with its TTL)                 | `session.ended`       |
//! | `expire_unused`    | `pending` > 10 min, `authorized` unused > 10 min | `ended` (`expired`), fenced | — (lapses with its TTL) | —       |
//!
//! \* only for `pending`. \*\* `decide`, `start_direct` and `end` write their event in the same
//! transaction as the row: `end` only when it changed the row (never twice), and `start_direct`
//! after re-checking the target and the token's cap there, so its target may come from a
//! two-second cache. The others append to the outbox in the background (events inform, they
//! never fail an operation).
//! `open` checks without changing anything: the grant verifies, is the caller's (or the caller
//! is an admin), and is `Authorized` — or `Pending` while the row says `authorized` (Redis was
//! down when the approver decided).

mod core;
mod error;
mod grant;
mod remote;
mod state;
mod target_cache;

pub use self::core::{Active, Authorization, Moved, Opening, Requester, Sessions, SessionsConfig};
pub use self::error::SessionError;
pub use self::grant::{
    APPROVAL_WINDOW_MS, AUTHORIZED_TTL_MS, DEFAULT_LIVE_SESSION_TTL, Grant, GrantState,
    TERMINATED_GRANT_TTL,
};
pub use self::remote::{DEFAULT_GATEWAY_LOST_AFTER_MS, gateway_gone};
pub(crate) use self::state::stored_as_text;
pub use self::state::{EndReason, SessionStatus};
pub use self::target_cache::{TARGET_CACHE_MAX, TARGET_CACHE_TTL};

#[cfg(test)]
mod tests;
