//! The browser terminal's seam to the terminating SSH front end. The console's WebSocket
//! ([`super::ws`]) speaks to a [`TerminalBackend`]; the SSH module implements it
//! ([`crate::ssh::SshTerminals`]: authorising the session through the session core, approvals
//! and recording included, then opening a pty channel to the target), and the server installs
//! it whenever terminating SSH is configured. Without one, or when a target is not in SSH mode,
//! the page says so: there is no fallback shell.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::token::Role;

/// Who opens the terminal: the console caller's token, as the session core knows it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Token id (the session's owner).
    pub token_id: String,
    /// Token label, for messages and logs.
    pub name: String,
    /// The token's role.
    pub role: Role,
    /// The browser's address (TCP peer or PROXY header), when known.
    pub from: Option<SocketAddr>,
}

/// The pseudo-terminal the browser asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    /// Columns, 1..=[`MAX_DIMENSION`].
    pub cols: u16,
    /// Rows, 1..=[`MAX_DIMENSION`].
    pub rows: u16,
}

/// Largest accepted column or row count (a bound on what a browser can ask the target for).
pub const MAX_DIMENSION: u16 = 1000;

impl PtySize {
    /// The size, if both dimensions are within 1..=[`MAX_DIMENSION`].
    pub fn new(cols: u16, rows: u16) -> Option<Self> {
        let ok = |v: u16| (1..=MAX_DIMENSION).contains(&v);
        (ok(cols) && ok(rows)).then_some(Self { cols, rows })
    }
}

impl Default for PtySize {
    fn default() -> Self {
        Self { cols: 80, rows: 24 }
    }
}

/// A request to open an interactive session to a target.
#[derive(Debug, Clone)]
pub struct OpenTerminal {
    /// Target name.
    pub target: String,
    /// Who asks.
    pub identity: Identity,
    /// Initial pty size.
    pub size: PtySize,
    /// `TERM` for the pty.
    pub term: String,
}

/// What the browser sends to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalInput {
    /// Keystrokes and pastes, as bytes.
    Data(Bytes),
    /// The browser's terminal changed size.
    Resize(PtySize),
}

/// What the session sends to the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalOutput {
    /// Terminal output bytes.
    Data(Bytes),
    /// A line for the user outside the terminal stream ("waiting for approval …").
    Notice(String),
    /// The session is over; why, in words the user can act on. Nothing follows.
    Ended(String),
}

/// An open terminal: input goes in, output comes out. Dropping `input` ends the session from
/// the browser's side (it closed the page); `output` closing without [`TerminalOutput::Ended`]
/// means the backend went away.
#[derive(Debug)]
pub struct TerminalSession {
    /// Session id, for the page (watch, recording).
    pub session_id: String,
    /// Towards the target.
    pub input: mpsc::Sender<TerminalInput>,
    /// From the target.
    pub output: mpsc::Receiver<TerminalOutput>,
}

/// Why a terminal could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminalError {
    /// The target is not set up for terminating SSH mode (or this server has no SSH mode).
    #[error("SSH mode is not available for target `{target}`{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    NotSsh {
        /// Target name.
        target: String,
        /// Why, when the backend knows more.
        detail: Option<String>,
    },
    /// No such target (or not visible to the caller).
    #[error("no target `{0}`")]
    UnknownTarget(String),
    /// Refused: role, approval denied, rate limit.
    #[error("refused: {0}")]
    Refused(String),
    /// A dependency failed; retrying may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl TerminalError {
    /// The stable code the page branches on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotSsh { .. } => "ssh_unavailable",
            Self::UnknownTarget(_) => "target_not_found",
            Self::Refused(_) => "refused",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// A boxed future, so [`TerminalBackend`] can be used as a trait object.
pub type OpenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<TerminalSession, TerminalError>> + Send + 'a>>;

/// Opens interactive sessions for the browser terminal. Implemented by the SSH front end.
pub trait TerminalBackend: Send + Sync + fmt::Debug {
    /// Opens a pty session to `req.target` as `req.identity`: authorises it through the session
    /// core and returns its id and byte channels at once; waiting for an approver is reported
    /// as [`TerminalOutput::Notice`] afterwards, and a denial as [`TerminalOutput::Ended`].
    fn open(&self, req: OpenTerminal) -> OpenFuture<'_>;
}

/// The installed backend, if any (the SSH front end's, when the server has one).
#[derive(Debug, Clone, Default)]
pub struct Terminals(Option<Arc<dyn TerminalBackend>>);

impl Terminals {
    /// No SSH mode: every terminal request is answered [`TerminalError::NotSsh`].
    pub fn none() -> Self {
        Self(None)
    }

    /// Terminals served by `backend`.
    pub fn with(backend: Arc<dyn TerminalBackend>) -> Self {
        Self(Some(backend))
    }

    /// Opens a session through the backend, or says SSH mode is not available.
    pub async fn open(&self, req: OpenTerminal) -> Result<TerminalSession, TerminalError> {
        match &self.0 {
            Some(b) => b.open(req).await,
            None => Err(TerminalError::NotSsh {
                target: req.target,
                detail: Some(
                    "this server has no terminating SSH front end (it is started with --ssh-listen)"
                        .into(),
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_sizes_are_bounded() {
        assert_eq!(
            PtySize::new(120, 40),
            Some(PtySize {
                cols: 120,
                rows: 40
            })
        );
        assert_eq!(PtySize::new(0, 40), None);
        assert_eq!(PtySize::new(80, MAX_DIMENSION + 1), None);
        assert!(PtySize::new(MAX_DIMENSION, MAX_DIMENSION).is_some());
    }

    #[tokio::test]
    async fn without_a_backend_the_target_is_not_in_ssh_mode() {
        let req = OpenTerminal {
            target: "db1".into(),
            identity: Identity {
                token_id: "t".into(),
                name: "alice".into(),
                role: Role::User,
                from: None,
            },
            size: PtySize::default(),
            term: "xterm-256color".into(),
        };
        let Err(e) = Terminals::none().open(req).await else {
            panic!("opened a terminal with no backend")
        };
        assert_eq!(e.code(), "ssh_unavailable");
        assert!(e.to_string().contains("`db1`"), "{e}");
    }
}
