//! One client channel of a terminated SSH session, carried to a channel on the target's
//! connection: requests (pty, shell, exec, subsystem, window changes, signals) forwarded in
//! order with their replies passed back, data both ways with SSH flow control, exit status and
//! signal passed back, and everything recorded. Nothing the client sends is dropped: messages
//! that arrive before the first request (or while the session waits for an approver) stay
//! queued on the channel.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use russh::server::Msg;
use russh::{Channel, ChannelMsg};

use super::cast::ExecStream;
use super::link::{Link, LinkState};
use super::sftp::{SftpDecoder, Side};

/// What a channel turned out to carry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    #[default]
    Unknown,
    Shell,
    Exec,
    Sftp,
    Other,
}

#[derive(Default)]
struct ChanState {
    kind: Kind,
    /// A terminal was requested: output is terminal text, not a byte stream.
    pty: bool,
    sftp: SftpDecoder,
    /// Standard output of an exec without a terminal (kept byte for byte when binary).
    stdout: ExecStream,
}

impl ChanState {
    /// An exec without a terminal: its standard output is a byte stream, not terminal text.
    fn byte_stream(&self) -> bool {
        self.kind == Kind::Exec && !self.pty
    }
}

fn is_request(m: &ChannelMsg) -> bool {
    matches!(
        m,
        ChannelMsg::RequestPty { .. }
            | ChannelMsg::RequestShell { .. }
            | ChannelMsg::Exec { .. }
            | ChannelMsg::RequestSubsystem { .. }
    )
}

/// Writes `text` to the client's stderr on `id`.
async fn say(h: &russh::server::Handle, id: russh::ChannelId, text: &str) {
    let _ = h
        .extended_data(id, 1, bytes::Bytes::from(format!("{text}\r\n")))
        .await;
}

/// Ends a client channel that cannot be carried: the reason on stderr, exit status 255.
async fn refuse(h: &russh::server::Handle, id: russh::ChannelId, why: &str) {
    say(h, id, &format!("wardengate: {why}")).await;
    let _ = h.exit_status_request(id, 255).await;
    let _ = h.eof(id).await;
    let _ = h.close(id).await;
}

/// Ends a channel whose first request cannot be carried. The request is answered with success
/// and the channel then ends with the reason on stderr and exit status 255: OpenSSH exits at
/// once on a failed request, without showing what was said on stderr.
async fn refuse_request(h: &russh::server::Handle, id: russh::ChannelId, why: &str) {
    let _ = h.channel_success(id).await;
    say(h, id, &format!("wardengate: {why}")).await;
    let _ = h.exit_status_request(id, 255).await;
    let _ = h.eof(id).await;
    let _ = h.close(id).await;
}

/// Waits until the connection's session is claimed and returns it, handing `waiting` each new
/// message about what it waits for (an approver, …); `Err` says why it never will be.
async fn claimed_link<F: std::future::Future<Output = ()>>(
    link_state: &mut tokio::sync::watch::Receiver<LinkState>,
    mut waiting: impl FnMut(String) -> F,
) -> Result<Arc<Link>, String> {
    let mut said = String::new();
    loop {
        let state = link_state.borrow_and_update().clone();
        match state {
            LinkState::Ready(l) => return Ok(l),
            LinkState::Failed(why) => return Err(why),
            LinkState::Waiting(msg) => {
                if msg != said && !msg.is_empty() {
                    said.clone_from(&msg);
                    waiting(msg).await;
                }
            }
        }
        if link_state.changed().await.is_err() {
            return Err("the session could not be set up".into());
        }
    }
}

/// Carries one accepted client session channel for the life of the channel.
pub(crate) async fn carry(
    channel: Channel<Msg>,
    handle: russh::server::Handle,
    mut link_state: tokio::sync::watch::Receiver<LinkState>,
) {
    let id = channel.id();
    // Wait for the session (approval, claim); say what we wait for.
    let waiting = |msg: String| {
        let handle = handle.clone();
        async move { say(&handle, id, &msg).await }
    };
    let link = match claimed_link(&mut link_state, waiting).await {
        Ok(l) => l,
        Err(why) => return refuse(&handle, id, &why).await,
    };
    let _busy = link.channel_guard();
    link.channels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id);
    let (mut crx, cwx) = channel.split();
    // Queue everything up to the first request: it decides whether the target's certificate
    // permits a terminal.
    let mut early = Vec::new();
    let first = loop {
        match crx.wait().await {
            Some(m) if is_request(&m) => break m,
            Some(ChannelMsg::Close) | None => return,
            Some(m) => early.push(m),
        }
    };
    let pty = matches!(first, ChannelMsg::RequestPty { .. });
    let up = match link.upstream(pty).await {
        Ok(u) => u,
        Err(why) => return refuse_request(&handle, id, &why).await,
    };
    let target = match up.handle.channel_open_session().await {
        Ok(c) => c,
        Err(e) => {
            return refuse_request(&handle, id, &format!("the target refused a channel: {e}"))
                .await;
        }
    };
    let (mut trx, twx) = target.split();
    let state = Arc::new(std::sync::Mutex::new(ChanState::default()));
    // Target → client.
    let down = {
        let (link, state, handle) = (link.clone(), state.clone(), handle.clone());
        tokio::spawn(async move {
            while let Some(m) = trx.wait().await {
                match m {
                    ChannelMsg::Data { data } => {
                        link.down.fetch_add(data.len() as u64, Ordering::Relaxed);
                        record_down(&link, &state, &data);
                        if cwx.data_bytes(data).await.is_err() {
                            break;
                        }
                    }
                    ChannelMsg::ExtendedData { data, ext } => {
                        link.down.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if let Some(r) = &link.recorder {
                            r.output(&data);
                        }
                        if cwx.extended_data_bytes(ext, data).await.is_err() {
                            break;
                        }
                    }
                    ChannelMsg::Eof => {
                        end_stdout(&link, &state);
                        let _ = cwx.eof().await;
                    }
                    ChannelMsg::ExitStatus { exit_status } => {
                        if let Some(r) = &link.recorder {
                            r.marker(&format!("exit-status {exit_status}"));
                        }
                        let _ = cwx.exit_status(exit_status).await;
                    }
                    ChannelMsg::ExitSignal {
                        signal_name,
                        core_dumped,
                        error_message,
                        lang_tag,
                    } => {
                        if let Some(r) = &link.recorder {
                            r.marker(&format!("exit-signal {signal_name:?}"));
                        }
                        let _ = handle
                            .exit_signal_request(
                                id,
                                signal_name,
                                core_dumped,
                                error_message,
                                lang_tag,
                            )
                            .await;
                    }
                    ChannelMsg::Success => {
                        let _ = handle.channel_success(id).await;
                    }
                    ChannelMsg::Failure => {
                        let _ = handle.channel_failure(id).await;
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            end_stdout(&link, &state);
            let _ = cwx.close().await;
        })
    };
    // Client → target, starting with what was queued: environment first (it applies to the
    // request that follows it), then the first request, then the rest in order.
    let (env, rest): (Vec<_>, Vec<_>) = early
        .into_iter()
        .partition(|m| matches!(m, ChannelMsg::SetEnv { .. }));
    let mut queued = env.into_iter().chain(std::iter::once(first)).chain(rest);
    let mut next = queued.next();
    loop {
        let m = match next.take().or_else(|| queued.next()) {
            Some(m) => m,
            None => match crx.wait().await {
                Some(m) => m,
                None => break,
            },
        };
        let rec = link.recorder.as_ref();
        let sent = match m {
            ChannelMsg::Data { data } => {
                link.up.fetch_add(data.len() as u64, Ordering::Relaxed);
                record_up(&link, &state, &data);
                twx.data_bytes(data).await
            }
            ChannelMsg::Eof => twx.eof().await,
            ChannelMsg::Close => break,
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                state.lock().unwrap_or_else(|p| p.into_inner()).pty = true;
                if let Some(r) = rec {
                    r.marker(&format!("pty {term}"));
                    r.resize(col_width, row_height);
                }
                twx.request_pty(
                    true,
                    &term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    &terminal_modes,
                )
                .await
            }
            ChannelMsg::RequestShell { .. } => {
                set_kind(&state, Kind::Shell);
                if let Some(r) = rec {
                    r.marker("shell");
                }
                twx.request_shell(true).await
            }
            ChannelMsg::Exec { command, .. } => {
                set_kind(&state, Kind::Exec);
                if let Some(r) = rec {
                    r.marker(&format!("exec {}", String::from_utf8_lossy(&command)));
                }
                twx.exec(true, command).await
            }
            ChannelMsg::RequestSubsystem { name, .. } => {
                set_kind(
                    &state,
                    if name == "sftp" {
                        Kind::Sftp
                    } else {
                        Kind::Other
                    },
                );
                if let Some(r) = rec {
                    r.marker(&format!("subsystem {name}"));
                }
                twx.request_subsystem(true, name).await
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(r) = rec {
                    r.resize(col_width, row_height);
                }
                twx.window_change(col_width, row_height, pix_width, pix_height)
                    .await
            }
            ChannelMsg::Signal { signal } => twx.signal(signal).await,
            // Environment (`SendEnv`, `SetEnv`): passed on for the target's `AcceptEnv` to
            // decide, without asking for a reply (russh does not say whether the client asked
            // for one, and OpenSSH never does; an unasked reply would be taken as the answer
            // to the next request). The name is recorded, never the value: it may be a secret.
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => {
                if let Some(r) = rec {
                    r.marker(&format!("env {variable_name}"));
                }
                twx.set_env(false, variable_name, variable_value).await
            }
            // Refused by the handler (agent, X11).
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = twx.close().await;
    let _ = down.await;
    link.channels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
}

/// Where a `direct-tcpip` channel asks to go, and where it comes from.
pub(crate) struct ForwardRequest {
    /// Destination host, as the target resolves it.
    pub host: String,
    /// Destination port.
    pub port: u32,
    /// The client's listening side (`ssh -L`'s local peer), passed on as OpenSSH does.
    pub originator: (String, u32),
}

/// Carries one `direct-tcpip` channel (`ssh -L`, `ssh -W`): once the session is claimed, a
/// destination the target's policy lists is opened by the target's own sshd and bytes flow both
/// ways; anything else is refused with the reason, which OpenSSH prints. The recording holds a
/// marker for its opening and one with its byte counts at its end (not its bytes: they are
/// another protocol, often encrypted).
pub(crate) async fn forward(
    channel: Channel<Msg>,
    reply: russh::server::ChannelOpenHandle,
    mut link_state: tokio::sync::watch::Receiver<LinkState>,
    req: ForwardRequest,
) {
    use russh::ChannelOpenFailure;
    let prohibited = |reason: String| ChannelOpenFailure::Other { code: 1, reason };
    let link = match claimed_link(&mut link_state, |_| async {}).await {
        Ok(l) => l,
        Err(why) => return reply.reject(prohibited(why)).await,
    };
    let _busy = link.channel_guard();
    let dest = format!("{}:{}", req.host, req.port);
    let allowed = link
        .forwarding
        .as_ref()
        .is_some_and(|p| p.allows(&req.host, req.port));
    if !allowed {
        tracing::info!(event = "ssh_forward_refused", session = %link.id, destination = %dest);
        if let Some(r) = &link.recorder {
            r.marker(&format!("direct-tcpip {dest} refused"));
        }
        let why = match &link.forwarding {
            None => "wardengate: port forwarding is not allowed to this target (an admin allows                      destinations with `wgctl targets add … --ssh-forward-to HOST:PORT`)"
                .to_string(),
            Some(p) => format!(
                "wardengate: port forwarding to {dest} is not allowed for this target (allowed: {p})"
            ),
        };
        return reply.reject(prohibited(why)).await;
    }
    let up = match link.upstream(false).await {
        Ok(u) => u,
        Err(why) => {
            return reply
                .reject(ChannelOpenFailure::Other {
                    code: 2,
                    reason: format!("wardengate: {why}"),
                })
                .await;
        }
    };
    let target = match up
        .handle
        .channel_open_direct_tcpip(
            req.host.clone(),
            req.port,
            req.originator.0.clone(),
            req.originator.1,
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let why = match e {
                russh::Error::ChannelOpenFailure(f) => f.description().to_string(),
                other => other.to_string(),
            };
            if let Some(r) = &link.recorder {
                r.marker(&format!("direct-tcpip {dest} failed: {why}"));
            }
            return reply
                .reject(ChannelOpenFailure::Other {
                    code: 2,
                    reason: format!("wardengate: the target could not open {dest}: {why}"),
                })
                .await;
        }
    };
    reply.accept().await;
    if let Some(r) = &link.recorder {
        r.marker(&format!("direct-tcpip {dest} opened"));
    }
    let (mut crx, cwx) = channel.split();
    let (mut trx, twx) = target.split();
    let down = {
        let link = link.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(m) = trx.wait().await {
                match m {
                    ChannelMsg::Data { data } => {
                        n += data.len() as u64;
                        link.down.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if cwx.data_bytes(data).await.is_err() {
                            break;
                        }
                    }
                    ChannelMsg::Eof => {
                        let _ = cwx.eof().await;
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            let _ = cwx.close().await;
            n
        })
    };
    let mut up_bytes = 0u64;
    while let Some(m) = crx.wait().await {
        let sent = match m {
            ChannelMsg::Data { data } => {
                up_bytes += data.len() as u64;
                link.up.fetch_add(data.len() as u64, Ordering::Relaxed);
                twx.data_bytes(data).await
            }
            ChannelMsg::Eof => twx.eof().await,
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = twx.close().await;
    let down_bytes = down.await.unwrap_or(0);
    if let Some(r) = &link.recorder {
        r.marker(&format!(
            "direct-tcpip {dest} closed: {up_bytes} bytes up, {down_bytes} down"
        ));
    }
}

fn set_kind(state: &std::sync::Mutex<ChanState>, kind: Kind) {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    if s.kind == Kind::Unknown {
        s.kind = kind;
    }
}

fn record_sftp(link: &Link, state: &std::sync::Mutex<ChanState>, side: Side, data: &[u8]) -> bool {
    let lines = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        if s.kind != Kind::Sftp {
            return false;
        }
        s.sftp.push(side, data)
    };
    if let Some(r) = &link.recorder {
        for l in lines {
            r.marker(&l);
        }
    }
    true
}

fn record_up(link: &Link, state: &std::sync::Mutex<ChanState>, data: &[u8]) {
    if link.recorder.is_none() || record_sftp(link, state, Side::Client, data) {
        return;
    }
    if let Some(r) = &link.recorder {
        r.input(data);
    }
}

fn record_down(link: &Link, state: &std::sync::Mutex<ChanState>, data: &[u8]) {
    let Some(r) = &link.recorder else {
        return;
    };
    if record_sftp(link, state, Side::Server, data) {
        return;
    }
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    if s.byte_stream() {
        r.exec_output(&mut s.stdout, Some(data));
    } else {
        drop(s);
        r.output(data);
    }
}

/// The end of an exec channel's standard output: what its stream still holds is written.
fn end_stdout(link: &Link, state: &std::sync::Mutex<ChanState>) {
    if let Some(r) = &link.recorder {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        if s.byte_stream() {
            r.exec_output(&mut s.stdout, None);
        }
    }
}
