//! The terminating SSH front end (issue 16): users' stock OpenSSH clients log in to the gateway
//! as `ssh -p 2222 USER:TARGET@gateway`; the gateway opens its own SSH connection to the target
//! with a short-lived certificate and carries the channels between the two, recording what
//! happens as asciicast v2 inside the signed chunk stream.
//!
//! **Authentication (front end).** Only OpenSSH user certificates signed by the gateway's
//! *login CA* are accepted. `wgctl ssh TARGET` makes an ephemeral Ed25519 key, has it signed
//! (`POST /v1/ssh/certificates`, any valid token: principals = the token's name and id, key id
//! = the token id, valid [`keys::LOGIN_CERT_TTL`]), writes a `known_hosts` line for the
//! gateway's host key and runs the stock `ssh`. On every login the front end checks the
//! certificate (CA, validity, `USER` among its principals) and then the token it names in
//! Postgres, so revoking or expiring a token stops its certificates at once. Plain public keys
//! and passwords are refused.
//!
//! **Session.** Authentication success starts the session through
//! [`crate::session::Sessions`] exactly as a relay does (direct when the target needs no
//! approval; otherwise authorised, then waiting — each channel is told on stderr which session
//! an approver must decide — then claimed). The session is watched like a relay: terminate,
//! drain, isolation and lost state end it, and the user reads the reason on stderr before the
//! gateway disconnects. This module never writes session rows or grants itself.
//!
//! **Target.** The first channel's first request opens the connection to the target (policy-
//! checked dial, host key pinned on first use or configured — a mismatch is refused naming both
//! keys), logging in as the target's `--ssh-user` with a certificate from the *user CA*
//! (principal = that login, `permit-pty` only if that first request is a pty request, valid
//! [`keys::TARGET_CERT_TTL`]). Channels: shell with pty and window changes, exec, subsystems
//! (sftp decoded for the recording); `direct-tcpip` port forwards to the destinations the target
//! lists ([`forwarding`]), opened by the target's sshd; agent and X11 forwarding and other
//! channel types refused.
//! Client messages are queued on the channel until the target's channel is open, and target
//! output only flows to an already accepted channel, so nothing is dropped either way.
//!
//! **Recording.** See [`cast`] and [`sftp`]: the chunk stream of a terminated SSH session holds
//! cast lines (`meta.json`'s note starts with [`CAST_NOTE_PREFIX`]); concatenated in order they
//! are the cast `GET /v1/recordings/{id}/cast` serves.
//!
//! **Live watch.** Every cast line also goes to the session's [`live_cast::CastFeed`], which
//! publishes it to the live store (bounded; it never slows the session), so an approver or
//! admin on any replica can follow it (`GET /v1/sessions/{id}/watch`); the end, with who
//! terminated it, is the feed's last entry. See [`live_cast`].
//!
//! **The browser terminal.** [`terminal::SshTerminals`] is the one terminal API other front
//! ends use: it implements the console's [`crate::console::TerminalBackend`] seam, opening an
//! interactive shell on a pty to a terminated SSH target for a signed-in token. The session has
//! an id at once; approvals (the waiting message as a notice), recording, terminate, drain and
//! isolation apply exactly as for SSH clients, and the end comes with the reason in words.

pub mod cast;
mod channel;
pub mod forwarding;
pub mod keys;
mod link;
pub mod live_cast;
pub mod server;
pub mod sftp;
pub mod source_address;
pub mod terminal;

use std::net::SocketAddr;
use std::sync::Arc;

pub use keys::{KeyError, SshKeys};
pub use link::{BeginError, Identity, end_message};
pub use terminal::SshTerminals;

use crate::api::AppState;

/// How the note of a terminated SSH session's `meta.json` starts.
pub const CAST_NOTE_PREFIX: &str = "asciicast v2: ";

/// Whether a recording is a cast, from its metadata note.
pub fn is_cast_note(note: &str) -> bool {
    note.starts_with(CAST_NOTE_PREFIX)
}

/// Accepts SSH connections on `listener` for as long as the task runs.
pub fn spawn(
    app: Arc<AppState>,
    keys: Arc<SshKeys>,
    listener: tokio::net::TcpListener,
    limits: SshLimits,
) -> tokio::task::JoinHandle<()> {
    let config = Arc::new(server::config(&keys));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((socket, _)) => {
                    // A second handle on the socket, so a connection past its login grace can
                    // be shut down from outside the session task that owns it.
                    let Ok((socket, cut)) = server::with_cut_handle(socket) else {
                        continue;
                    };
                    // Over the cap the connection is closed at once (and counted).
                    let Ok(socket) = limits.acceptor.accept_now(socket) else {
                        continue;
                    };
                    let peer = socket.peer();
                    tokio::spawn(server::serve_connection(
                        app.clone(),
                        keys.clone(),
                        config.clone(),
                        socket,
                        cut,
                        peer,
                        limits.login_grace,
                    ));
                }
                Err(e) => {
                    tracing::warn!(event = "ssh_accept_failed", error = %e);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Binds the SSH listener (at start-up, so a taken port fails the replica at once).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// The SSH front end's parts of a replica.
#[derive(Debug, Clone)]
pub struct SshParts {
    /// `--ssh-listen`.
    pub listen: SocketAddr,
    /// Host key and CAs.
    pub keys: SshKeys,
    /// `--ssh-login-grace`: how long a connection may take to log in.
    pub login_grace: std::time::Duration,
}

/// Default of `--ssh-login-grace` (OpenSSH's `LoginGraceTime` is 2 minutes; our clients are
/// `wgctl ssh` and scripts with a certificate in hand, so a shorter bound costs nobody). The
/// flag's default text says the same; a config test holds them together.
pub const DEFAULT_LOGIN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Bounds on the SSH listener before authentication: what a hostile network in front of 2222
/// can hold.
#[derive(Debug, Clone)]
pub struct SshLimits {
    /// At most `--max-connections` connections at once on 2222 (counted apart from 8443's).
    pub acceptor: crate::limits::CappedAcceptor,
    /// A connection that has not logged in within this is disconnected.
    pub login_grace: std::time::Duration,
}

/// Client → target and target → client bytes of `addr`'s port, for logs.
pub fn describe(listen: SocketAddr) -> String {
    format!("ssh -p {} USER:TARGET@{}", listen.port(), listen.ip())
}
