//! The relay's WebSocket conventions, shared by server and `wgctl`.
//!
//! Bytes travel as binary messages. The client half-closes (stdin reached EOF) by sending the
//! text message [`HALF_CLOSE`]; the server then shuts down the write side of the target
//! connection and keeps relaying the other way. The server ends a relay with a close frame
//! whose code says why; codes in [`RECOVERABLE`] mean "this replica cannot carry the session
//! any more: reconnect through another".

/// Text message a client sends when its input ended.
pub const HALF_CLOSE: &str = "eof";

/// The target closed the connection (normal end).
pub const CLOSE_NORMAL: u16 = 1000;
/// A relay error that retrying will not fix.
pub const CLOSE_ERROR: u16 = 4000;
/// An operator terminated the session.
pub const CLOSE_TERMINATED: u16 = 4002;
/// The replica drained and its drain deadline passed.
pub const CLOSE_DRAINED: u16 = 4003;
/// The replica is isolated from its dependencies.
pub const CLOSE_ISOLATED: u16 = 4004;
/// The live session state became unreachable or vanished.
pub const CLOSE_STATE_LOST: u16 = 4005;
/// No data moved for the gateway's relay idle timeout.
pub const CLOSE_IDLE: u16 = 4006;

/// Close codes after which a client should retry through another replica.
pub const RECOVERABLE: &[u16] = &[CLOSE_DRAINED, CLOSE_ISOLATED, CLOSE_STATE_LOST];

/// True when `code` is recoverable.
pub fn is_recoverable(code: u16) -> bool {
    RECOVERABLE.contains(&code)
}

/// Relay path of a session.
pub fn relay_path(session_id: &str) -> String {
    format!("/v1/sessions/{session_id}/relay")
}

/// Relay path that authorises and connects a session to `target` in one request (targets that
/// need no approval; others answer 409 `approval_required`).
pub fn target_relay_path(target: &str) -> String {
    format!("/v1/targets/{target}/relay")
}

/// Response header of the upgrade that names the session [`target_relay_path`] created.
pub const SESSION_HEADER: &str = "wardengate-session";
