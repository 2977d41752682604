//! The browser terminal's backend: the console's [`TerminalBackend`] seam implemented by the
//! terminating SSH front end, so a signed-in token gets an interactive shell on a pty of a
//! terminated SSH target with the same session core, approvals, certificate and cast recording
//! as a stock OpenSSH client.
//!
//! [`SshTerminals::open`] answers at once with the session id (started directly, or authorised
//! and waiting for an approver); everything after that happens in one task per terminal and
//! reaches the page as [`TerminalOutput`]: the waiting message and the approval as notices,
//! the shell's bytes, and at the end the reason in words (an approver's denial, a terminate,
//! drain or isolation, the target going away, the shell exiting). Input typed and resizes made
//! before the shell exists are kept (up to [`EARLY_INPUT_LIMIT`]) and applied once it does.
//! When the page goes, a request still waiting for an approver is withdrawn and a running
//! session ends as `client_closed`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use russh::ChannelMsg;
use tokio::sync::{mpsc, watch};

use super::keys::SshKeys;
use super::link::{BeginError, Begun, Identity, Link, end_message};
use crate::api::AppState;
use crate::console::terminal::{
    OpenFuture, OpenTerminal, PtySize, TerminalBackend, TerminalError, TerminalInput,
    TerminalOutput, TerminalSession,
};
use crate::session::{EndReason, SessionError};
use crate::token::Role;

/// Most input bytes kept while the shell is not there yet (waiting for an approver, dialling);
/// beyond it keystrokes are dropped, as a terminal with no reader would.
pub const EARLY_INPUT_LIMIT: usize = 64 * 1024;

/// Messages buffered each way between the page's socket and the session.
const CHANNEL_DEPTH: usize = 64;

/// The browser terminal's backend, installed by the server whenever terminating SSH is
/// configured. Holds the replica's state weakly: the state owns the backend.
#[derive(Debug)]
pub struct SshTerminals {
    app: Weak<AppState>,
}

impl SshTerminals {
    /// A backend opening terminals with `app` (made with [`Arc::new_cyclic`] by the server).
    pub fn new(app: Weak<AppState>) -> Self {
        Self { app }
    }
}

impl TerminalBackend for SshTerminals {
    fn open(&self, req: OpenTerminal) -> OpenFuture<'_> {
        Box::pin(open(self.app.upgrade(), req))
    }
}

async fn open(
    app: Option<Arc<AppState>>,
    req: OpenTerminal,
) -> Result<TerminalSession, TerminalError> {
    let app =
        app.ok_or_else(|| TerminalError::Unavailable("this replica is shutting down".into()))?;
    let Some(keys) = app.ssh.clone() else {
        return Err(TerminalError::NotSsh {
            target: req.target,
            detail: Some("this replica has no terminating SSH front end (--ssh-listen)".into()),
        });
    };
    let who = Identity {
        token_id: req.identity.token_id.clone(),
        name: req.identity.name.clone(),
        admin: req.identity.role.allows(Role::Admin),
        from: req.identity.from,
    };
    let begun = Link::begin(&app, &who, &req.target)
        .await
        .map_err(|e| refusal(&req.target, e))?;
    let session_id = begun.id().to_string();
    tracing::info!(event = "console_terminal_opening", session = %session_id, target = %req.target, token = %who.token_id);
    let (input, in_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (out_tx, output) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(drive(app, keys, who, begun, req, in_rx, out_tx));
    Ok(TerminalSession {
        session_id,
        input,
        output,
    })
}

/// The page's view of a refusal before the session had an id.
fn refusal(target: &str, e: BeginError) -> TerminalError {
    match e {
        BeginError::NotSsh(t) => TerminalError::NotSsh {
            target: t,
            detail: Some(
                "it is not a terminated SSH target (an admin adds it with `wgctl targets add … --ssh-user LOGIN`)"
                    .into(),
            ),
        },
        BeginError::Session(SessionError::TargetNotFound(_)) => {
            TerminalError::UnknownTarget(target.into())
        }
        BeginError::NotTaking
        | BeginError::Store(_)
        | BeginError::Session(
            SessionError::AtCapacity(_)
            | SessionError::TargetChanged(_)
            | SessionError::NoRegionalGateway(_)
            | SessionError::Store(_)
            | SessionError::Live(_),
        ) => TerminalError::Unavailable(e.to_string()),
        BeginError::Session(_) => TerminalError::Refused(e.to_string()),
    }
}

/// What the page did while the shell was not there yet.
struct Early {
    data: Vec<Bytes>,
    len: usize,
    size: PtySize,
}

impl Early {
    fn keep(&mut self, input: TerminalInput) {
        match input {
            TerminalInput::Resize(size) => self.size = size,
            TerminalInput::Data(b) if self.len + b.len() <= EARLY_INPUT_LIMIT => {
                self.len += b.len();
                self.data.push(b);
            }
            TerminalInput::Data(b) => {
                tracing::debug!(
                    event = "console_terminal_early_input_dropped",
                    bytes = b.len()
                );
            }
        }
    }
}

/// Runs `work` while keeping what the page sends meanwhile; `page_open` turns false (and
/// `gone` true) if the page goes.
async fn meanwhile<T>(
    work: impl std::future::Future<Output = T>,
    in_rx: &mut mpsc::Receiver<TerminalInput>,
    early: &mut Early,
    page_open: &mut bool,
    gone: &watch::Sender<bool>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            i = in_rx.recv(), if *page_open => match i {
                Some(i) => early.keep(i),
                None => {
                    *page_open = false;
                    let _ = gone.send(true);
                }
            },
        }
    }
}

/// Opens the shell channel on the target with a pty of `size`.
async fn open_shell(
    link: &Link,
    term: &str,
    size: PtySize,
) -> Result<russh::Channel<russh::client::Msg>, String> {
    let up = link.upstream(true).await?;
    let ch = up
        .handle
        .channel_open_session()
        .await
        .map_err(|e| format!("the target refused a channel: {e}"))?;
    ch.request_pty(false, term, size.cols.into(), size.rows.into(), 0, 0, &[])
        .await
        .map_err(|e| format!("the target refused a terminal: {e}"))?;
    ch.request_shell(false)
        .await
        .map_err(|e| format!("the target refused a shell: {e}"))?;
    Ok(ch)
}

/// How the shell's pump stopped.
enum Stopped {
    /// The page went.
    PageClosed,
    /// The target closed the shell's channel (exit status, when it said one).
    ShellExited(Option<u32>),
    /// The session ended (terminate, drain, isolation, lost state, target gone).
    SessionEnded,
}

/// The words the page shows for the end: the shell's exit, or what the session's end told its
/// SSH clients (`notice`, e.g. who terminated it), or the reason's own words.
fn ended_text(stopped: &Stopped, reason: EndReason, notice: Option<&str>) -> String {
    match (stopped, reason) {
        (Stopped::ShellExited(status), EndReason::ClientClosed | EndReason::TargetClosed) => {
            match status {
                Some(s) => format!("the shell exited with status {s}"),
                None => "the shell exited".to_string(),
            }
        }
        _ => notice.unwrap_or(end_message(reason)).to_string(),
    }
}

/// One terminal from the session id to its end: wait for an approver, claim, open the shell,
/// carry bytes and resizes, say why it ended.
async fn drive(
    app: Arc<AppState>,
    keys: Arc<SshKeys>,
    who: Identity,
    begun: Begun,
    req: OpenTerminal,
    mut in_rx: mpsc::Receiver<TerminalInput>,
    out: mpsc::Sender<TerminalOutput>,
) {
    let id = begun.id().to_string();
    let (gone_tx, gone_rx) = watch::channel(false);
    let mut page_open = true;
    let mut early = Early {
        data: Vec::new(),
        len: 0,
        size: req.size,
    };
    let status = {
        let out = out.clone();
        move |m: String| {
            let _ = out.try_send(TerminalOutput::Notice(m));
        }
    };
    let finished = meanwhile(
        Link::finish(app.clone(), keys, &who, begun, &status, gone_rx),
        &mut in_rx,
        &mut early,
        &mut page_open,
        &gone_tx,
    )
    .await;
    let (link, active) = match finished {
        Ok(x) => x,
        Err(why) => {
            tracing::info!(event = "console_terminal_refused", session = %id, reason = %why);
            let _ = out.send(TerminalOutput::Ended(why)).await;
            return;
        }
    };
    // The session is claimed: from here `run` owns its end (page gone → client_closed).
    let (closed, mut closed_rx) = watch::channel(!page_open);
    let runner = {
        let link = link.clone();
        tokio::spawn(async move {
            let gone = async move {
                let _ = closed_rx.wait_for(|c| *c).await;
            };
            link.run(active, gone, None).await
        })
    };
    let mut ended_rx = link.ended.subscribe();
    let opened_size = early.size;
    let shell = tokio::select! {
        r = meanwhile(open_shell(&link, &req.term, opened_size), &mut in_rx, &mut early, &mut page_open, &closed) => r,
        _ = async { let _ = ended_rx.wait_for(Option::is_some).await; } => Err(String::new()),
    };
    let ch = match shell {
        Ok(ch) if page_open => ch,
        other => {
            let _ = closed.send(true);
            let reason = runner.await.unwrap_or(EndReason::ClientClosed);
            if let Err(why) = other {
                let why = if why.is_empty() {
                    end_message(reason).to_string()
                } else {
                    why
                };
                tracing::info!(event = "console_terminal_failed", session = %id, reason = %why);
                let _ = out.send(TerminalOutput::Ended(why)).await;
            }
            return;
        }
    };
    if let Some(r) = &link.recorder {
        r.marker(&format!("pty {}", req.term));
        r.resize(opened_size.cols.into(), opened_size.rows.into());
        r.marker("shell");
    }
    let _ = out
        .send(TerminalOutput::Notice(format!(
            "wardengate: connected to `{}` (session {id})",
            req.target
        )))
        .await;
    let (mut rx, tx) = ch.split();
    let mut size = opened_size;
    let queued = std::mem::take(&mut early.data)
        .into_iter()
        .map(TerminalInput::Data)
        .chain((early.size != size).then_some(TerminalInput::Resize(early.size)));
    let mut stopped = None;
    for input in queued {
        if !send_input(&link, &tx, &mut size, input).await {
            stopped = Some(Stopped::SessionEnded);
            break;
        }
    }
    let mut exit = None;
    let stopped = match stopped {
        Some(s) => s,
        None => loop {
            tokio::select! {
                m = rx.wait() => match m {
                    Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                        link.down.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if let Some(r) = &link.recorder {
                            r.output(&data);
                        }
                        if out.send(TerminalOutput::Data(data)).await.is_err() {
                            break Stopped::PageClosed;
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        exit = Some(exit_status);
                        if let Some(r) = &link.recorder {
                            r.marker(&format!("exit-status {exit_status}"));
                        }
                    }
                    Some(ChannelMsg::Close) | None => break Stopped::ShellExited(exit),
                    Some(_) => {}
                },
                i = in_rx.recv() => match i {
                    Some(input) => {
                        if !send_input(&link, &tx, &mut size, input).await {
                            break Stopped::ShellExited(exit);
                        }
                    }
                    None => break Stopped::PageClosed,
                },
                _ = async { let _ = ended_rx.wait_for(Option::is_some).await; } => break Stopped::SessionEnded,
            }
        },
    };
    let _ = tx.close().await;
    let _ = closed.send(true);
    let reason = runner.await.unwrap_or(EndReason::ClientClosed);
    tracing::info!(event = "console_terminal_ended", session = %id, reason = reason.as_str());
    if !matches!(stopped, Stopped::PageClosed) {
        let _ = out
            .send(TerminalOutput::Ended(ended_text(
                &stopped,
                reason,
                link.notice.get().map(String::as_str),
            )))
            .await;
    }
}

/// Carries one input from the page to the shell (recorded per the target's policy); false
/// once the channel is gone.
async fn send_input(
    link: &Link,
    tx: &russh::ChannelWriteHalf<russh::client::Msg>,
    size: &mut PtySize,
    input: TerminalInput,
) -> bool {
    match input {
        TerminalInput::Data(d) => {
            link.up.fetch_add(d.len() as u64, Ordering::Relaxed);
            if let Some(r) = &link.recorder {
                r.input(&d);
            }
            tx.data_bytes(d).await.is_ok()
        }
        TerminalInput::Resize(s) => {
            if s != *size {
                *size = s;
                if let Some(r) = &link.recorder {
                    r.resize(s.cols.into(), s.rows.into());
                }
                let _ = tx.window_change(s.cols.into(), s.rows.into(), 0, 0).await;
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_input_is_kept_up_to_the_limit_and_the_last_size_wins() {
        let mut e = Early {
            data: Vec::new(),
            len: 0,
            size: PtySize::default(),
        };
        e.keep(TerminalInput::Data(Bytes::from_static(b"ls\r")));
        e.keep(TerminalInput::Resize(PtySize {
            cols: 100,
            rows: 30,
        }));
        e.keep(TerminalInput::Data(Bytes::from(vec![
            b'x';
            EARLY_INPUT_LIMIT
        ])));
        e.keep(TerminalInput::Resize(PtySize {
            cols: 120,
            rows: 40,
        }));
        e.keep(TerminalInput::Data(Bytes::from_static(b"pwd\r")));
        assert_eq!(e.data.len(), 2, "the paste past the limit is dropped");
        assert_eq!(e.len, 7);
        assert_eq!(
            e.size,
            PtySize {
                cols: 120,
                rows: 40
            }
        );
    }

    #[test]
    fn the_end_is_said_in_words() {
        assert_eq!(
            ended_text(
                &Stopped::ShellExited(Some(3)),
                EndReason::ClientClosed,
                None
            ),
            "the shell exited with status 3"
        );
        assert_eq!(
            ended_text(&Stopped::SessionEnded, EndReason::Terminated, None),
            "session terminated by an operator"
        );
        assert_eq!(
            ended_text(
                &Stopped::SessionEnded,
                EndReason::Terminated,
                Some("session terminated by an operator: alice")
            ),
            "session terminated by an operator: alice",
            "the session's own notice names who"
        );
        assert_eq!(
            ended_text(&Stopped::ShellExited(None), EndReason::Drained, None),
            end_message(EndReason::Drained)
        );
    }

    #[test]
    fn refusals_keep_their_codes() {
        let code = |e| refusal("db1", e).code();
        assert_eq!(code(BeginError::NotSsh("db1".into())), "ssh_unavailable");
        assert_eq!(
            code(BeginError::Session(SessionError::TargetNotFound(
                "db1".into()
            ))),
            "target_not_found"
        );
        assert_eq!(code(BeginError::NotTaking), "unavailable");
        assert_eq!(
            code(BeginError::Session(SessionError::TooManySessions(3))),
            "refused"
        );
    }
}
