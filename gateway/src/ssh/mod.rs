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
//! (sftp decoded for the recording); agent and X11 forwarding and other channel types refused.
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
//! **Public API for other front ends (the web console).** [`open_terminal`] opens an
//! interactive session to target T as identity I with a pty of (cols, rows) and returns a
//! [`Terminal`]: [`Terminal::recv`] yields the target's output bytes, [`Terminal::send`]
//! writes input, [`Terminal::resize`] changes the window, [`Terminal::close`] ends it, and
//! [`Terminal::end_reason`] says why it ended. Approvals, recording, terminate and drain apply
//! exactly as for SSH clients.

pub mod cast;
mod channel;
pub mod keys;
mod link;
pub mod live_cast;
pub mod server;
pub mod sftp;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use russh::ChannelMsg;
use tokio::sync::{mpsc, watch};

pub use keys::{KeyError, SshKeys};
pub use link::{Identity, end_message};

use crate::api::AppState;
use crate::session::EndReason;

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
) -> tokio::task::JoinHandle<()> {
    let config = Arc::new(server::config(&keys));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    tokio::spawn(server::serve_connection(
                        app.clone(),
                        keys.clone(),
                        config.clone(),
                        socket,
                        peer,
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

enum TerminalInput {
    Data(Bytes),
    Resize(u32, u32),
}

/// An interactive terminal session opened by [`open_terminal`].
pub struct Terminal {
    /// The Wardengate session id.
    pub session_id: String,
    output: mpsc::Receiver<Bytes>,
    input: mpsc::Sender<TerminalInput>,
    closed: watch::Sender<bool>,
    ended: watch::Receiver<Option<EndReason>>,
}

impl Terminal {
    /// The target's next output bytes; `None` once the session is over.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.output.recv().await
    }

    /// Sends input bytes; false once the session is over.
    pub async fn send(&self, data: Bytes) -> bool {
        self.input.send(TerminalInput::Data(data)).await.is_ok()
    }

    /// Changes the terminal size; false once the session is over.
    pub async fn resize(&self, cols: u32, rows: u32) -> bool {
        self.input
            .send(TerminalInput::Resize(cols, rows))
            .await
            .is_ok()
    }

    /// Ends the session from the user's side.
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }

    /// Why the session ended (waits for it).
    pub async fn end_reason(&mut self) -> EndReason {
        let reason = match self.ended.wait_for(Option::is_some).await {
            Ok(r) => *r,
            Err(_) => None,
        };
        reason.unwrap_or(EndReason::ClientClosed)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.closed.send(true);
    }
}

/// Opens an interactive shell on terminated SSH target `target` for `who`, with a pty of
/// `cols`×`rows`. `status` hears what the session waits for (an approver). Errors are messages
/// for the user.
pub async fn open_terminal(
    app: &Arc<AppState>,
    who: Identity,
    target: &str,
    cols: u32,
    rows: u32,
    status: &(dyn Fn(String) + Send + Sync),
) -> Result<Terminal, String> {
    let keys = app
        .ssh
        .clone()
        .ok_or_else(|| "terminating SSH is not configured on this replica".to_string())?;
    let (link, active) = link::Link::establish(app.clone(), keys, &who, target, status).await?;
    let (closed, mut closed_rx) = watch::channel(false);
    let ended = link.ended.subscribe();
    let session_id = link.id.clone();
    let runner = {
        let link = link.clone();
        tokio::spawn(async move {
            let gone = async move {
                let _ = closed_rx.wait_for(|c| *c).await;
            };
            link.run(active, gone, None).await
        })
    };
    let opened = async {
        let up = link.upstream(true).await?;
        let ch = up
            .handle
            .channel_open_session()
            .await
            .map_err(|e| format!("the target refused a channel: {e}"))?;
        ch.request_pty(false, "xterm-256color", cols, rows, 0, 0, &[])
            .await
            .map_err(|e| e.to_string())?;
        ch.request_shell(false).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(ch)
    };
    let ch = match opened.await {
        Ok(ch) => ch,
        Err(e) => {
            let _ = closed.send(true);
            let _ = runner.await;
            return Err(e);
        }
    };
    if let Some(r) = &link.recorder {
        r.marker("pty xterm-256color");
        r.resize(cols, rows);
        r.marker("shell");
    }
    let (out_tx, output) = mpsc::channel(64);
    let (input, mut in_rx) = mpsc::channel(64);
    let done = closed.clone();
    let mut ended_rx = link.ended.subscribe();
    tokio::spawn(async move {
        let (mut rx, tx) = ch.split();
        loop {
            tokio::select! {
                m = rx.wait() => match m {
                    Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                        link.down.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        if let Some(r) = &link.recorder {
                            r.output(&data);
                        }
                        if out_tx.send(data).await.is_err() {
                            break;
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        if let Some(r) = &link.recorder {
                            r.marker(&format!("exit-status {exit_status}"));
                        }
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
                i = in_rx.recv() => match i {
                    Some(TerminalInput::Data(d)) => {
                        link.up.fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        if let Some(r) = &link.recorder {
                            r.input(&d);
                        }
                        if tx.data_bytes(d).await.is_err() {
                            break;
                        }
                    }
                    Some(TerminalInput::Resize(c, r)) => {
                        if let Some(rec) = &link.recorder {
                            rec.resize(c, r);
                        }
                        let _ = tx.window_change(c, r, 0, 0).await;
                    }
                    None => break,
                },
                _ = async { let _ = ended_rx.wait_for(Option::is_some).await; } => break,
            }
        }
        let _ = tx.close().await;
        let _ = done.send(true);
    });
    Ok(Terminal {
        session_id,
        output,
        input,
        closed,
        ended,
    })
}

/// The SSH front end's parts of a replica.
#[derive(Debug, Clone)]
pub struct SshParts {
    /// `--ssh-listen`.
    pub listen: SocketAddr,
    /// Host key and CAs.
    pub keys: SshKeys,
}

/// Client → target and target → client bytes of `addr`'s port, for logs.
pub fn describe(listen: SocketAddr) -> String {
    format!("ssh -p {} USER:TARGET@{}", listen.port(), listen.ip())
}

#[allow(dead_code)]
fn _assert_send(app: Arc<AppState>) {
    fn is_send<T: Send>(_: T) {}
    is_send(open_terminal(
        &app,
        Identity {
            token_id: String::new(),
            admin: false,
            from: None,
        },
        "",
        80,
        24,
        &|_| {},
    ));
}
