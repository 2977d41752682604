//! One terminated SSH session: the Wardengate session (authorised, approved, claimed and
//! watched through [`crate::session::Sessions`]), the gateway's own SSH connection to the
//! target (opened by the first channel, with a certificate from the user CA), its cast
//! recording, and the supervisor that ends all three together with one reason.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{Algorithm, PrivateKey, PublicKeyOrCertificate};
use tokio::sync::{OnceCell, watch};

use super::cast::{CastWriter, Header};
use super::keys::{SshKeys, public_line};
use super::live_cast::CastFeed;
use crate::api::AppState;
use crate::session::{Active, EndReason, Moved, Requester, SessionError, SessionStatus};
use crate::store::{SshTargetRow, TargetRow, now_ms};

/// Who opens the session: the token (from a login certificate, or the console's sign-in).
#[derive(Debug, Clone)]
pub struct Identity {
    /// Token id.
    pub token_id: String,
    /// Token name, for people reading the cast's title (watchers, players).
    pub name: String,
    /// Whether the token is an admin's.
    pub admin: bool,
    /// The client's address.
    pub from: Option<std::net::SocketAddr>,
}

impl Identity {
    fn requester(&self) -> Requester<'_> {
        Requester {
            token_id: &self.token_id,
            admin: self.admin,
            from: self.from,
        }
    }
}

/// A session's cast: cast lines into the signed chunk stream (when recordings are on) and to
/// the live feed watchers follow.
#[derive(Clone)]
pub(crate) struct CastRecorder {
    rec: Option<crate::recording::Recorder>,
    feed: CastFeed,
    cast: Arc<Mutex<CastWriter>>,
    /// Whether terminal input is recorded (per target; off by default).
    pub input: bool,
}

impl CastRecorder {
    fn with(&self, f: impl FnOnce(&mut CastWriter) -> Option<String>) {
        let line = {
            let mut c = self.cast.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        };
        if let Some(l) = line {
            if let Some(rec) = &self.rec {
                rec.record(crate::recording::Direction::Down, l.as_bytes());
            }
            self.feed.push(&l);
        }
    }
    /// Terminal output.
    pub fn output(&self, b: &[u8]) {
        self.with(|c| c.output(b));
    }
    /// Output of an exec channel without a terminal, through its [`ExecStream`] (`None`: the
    /// end of the stream), so a binary stream is kept byte for byte.
    pub fn exec_output(&self, stream: &mut super::cast::ExecStream, b: Option<&[u8]>) {
        let pieces = match b {
            Some(b) => stream.push(b),
            None => stream.finish().into_iter().collect(),
        };
        for p in pieces {
            self.with(|c| c.piece(&p));
        }
    }
    /// Terminal input, when the target records it.
    pub fn input(&self, b: &[u8]) {
        if self.input {
            self.with(|c| c.input(b));
        }
    }
    /// A resize.
    pub fn resize(&self, cols: u32, rows: u32) {
        self.with(|c| Some(c.resize(cols, rows)));
    }
    /// A marker.
    pub fn marker(&self, text: &str) {
        self.with(|c| Some(c.marker(text)));
    }
}

/// The gateway's SSH connection to the target.
pub(crate) struct Upstream {
    /// The russh client handle (channels are opened on it).
    pub handle: client::Handle<UpHandler>,
}

/// The russh client handler: pins the target's host key, notices the connection ending.
pub(crate) struct UpHandler {
    app: Arc<AppState>,
    target: TargetRow,
    pinned: Option<String>,
    refusal: Arc<Mutex<Option<String>>>,
    closed: Arc<tokio::sync::Notify>,
    /// Set once the gateway has logged in to the target: only then does the connection's end
    /// end the session. Before, a refused handshake or login is the channel's to report (on
    /// the client's stderr, exit status 255); ending the session too would race that message
    /// with a disconnect that says only "the target closed the connection".
    logged_in: Arc<AtomicBool>,
}

impl client::Handler for UpHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let offered = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => public_line(key),
            PublicKeyOrCertificate::Certificate(c) => {
                let k = russh::keys::PublicKey::from(c.public_key().clone());
                public_line(&k)
            }
        };
        let pinned = match &self.pinned {
            Some(p) => Some(p.clone()),
            None => match self
                .app
                .store
                .pin_ssh_host_key(&self.target.id, &offered)
                .await
            {
                Ok(p) => {
                    tracing::info!(event = "ssh_host_key_pinned", target = %self.target.name, key = %offered);
                    p
                }
                Err(e) => {
                    *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                        "cannot pin the host key of target `{}`: {e}",
                        self.target.name
                    ));
                    return Ok(false);
                }
            },
        };
        if pinned.as_deref() == Some(offered.as_str()) {
            return Ok(true);
        }
        let msg = format!(
            "host key of target `{}` does not match the pinned key: refusing to connect (pinned {}, offered {}); \
             if the target's key really changed, an admin re-adds the target with --ssh-host-key",
            self.target.name,
            pinned.unwrap_or_default(),
            offered
        );
        tracing::warn!(event = "ssh_host_key_mismatch", target = %self.target.name, offered = %offered);
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
        Ok(false)
    }

    async fn disconnected(
        &mut self,
        _reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        if self.logged_in.load(Ordering::SeqCst) {
            self.closed.notify_waiters();
            self.closed.notify_one();
        }
        Ok(())
    }
}

/// How long a session whose client left waits for its channels' last records.
const CHANNELS_FINISH_WITHIN: Duration = Duration::from_secs(2);

/// Where the session of a connection stands, for its channels.
#[derive(Clone)]
pub(crate) enum LinkState {
    /// Authenticating, authorising or waiting for an approver (the message says which).
    Waiting(String),
    /// Claimed: channels may open.
    Ready(Arc<Link>),
    /// Refused (the message says why).
    Failed(String),
}

/// A claimed session and everything that hangs off it.
pub(crate) struct Link {
    pub app: Arc<AppState>,
    keys: Arc<SshKeys>,
    /// Session id.
    pub id: String,
    target: TargetRow,
    ssh: SshTargetRow,
    upstream: OnceCell<Result<Arc<Upstream>, String>>,
    up_closed: Arc<tokio::sync::Notify>,
    /// The cast (recorded when recordings are on, and always fed to watchers).
    pub recorder: Option<CastRecorder>,
    /// Bytes client → target.
    pub up: AtomicU64,
    /// Bytes target → client.
    pub down: AtomicU64,
    /// Set once with the reason the session ends; channels close when it is.
    pub ended: watch::Sender<Option<EndReason>>,
    /// Open client channels (to tell them why the session ended).
    pub channels: Mutex<HashSet<russh::ChannelId>>,
    /// The words the user is told when the session ends (e.g. who terminated it), set once
    /// before [`Link::run`] returns, for front ends that say it their own way.
    pub notice: std::sync::OnceLock<String>,
    /// Where `direct-tcpip` channels may go; `None`: port forwarding refused.
    pub forwarding: Option<super::forwarding::ForwardPolicy>,
    /// Client channels still being carried (see [`Link::channel_guard`]).
    busy: AtomicUsize,
    /// Notified when `busy` drops to zero.
    idle: tokio::sync::Notify,
}

/// Held by a channel's task while it carries one channel of the link: the session's last
/// records wait (bounded) for the channels' own last records (a forward's byte counts).
pub(crate) struct ChannelGuard(Arc<Link>);

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The message a user sees when the session ends for `reason`.
pub fn end_message(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Terminated | EndReason::Denied => "session terminated by an operator",
        EndReason::Drained => "this gateway replica is draining; reconnect",
        EndReason::ReplicaIsolated => "this gateway replica lost its dependencies; reconnect",
        EndReason::SessionStateLost => "session state unavailable; reconnect",
        EndReason::TargetClosed => "the target closed the connection",
        _ => "session ended",
    }
}

/// Why a session could not be started: nothing was authorised, or the session core refused.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    /// The replica is draining or isolated.
    #[error(
        "this gateway replica is not taking new sessions; retry (the load balancer sends you elsewhere)"
    )]
    NotTaking,
    /// The target exists but is not in terminating SSH mode.
    #[error(
        "target `{0}` is not a terminated SSH target (an admin adds it with `wgctl targets add … --ssh-user LOGIN`)"
    )]
    NotSsh(String),
    /// The durable store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The session core refused (no such target, rate, cap, live store down …).
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A session that has an id: started at once (no approval needed) or authorised and perhaps
/// waiting for an approver. [`Begun::finish`] turns it into a claimed [`Link`].
pub(crate) struct Begun {
    target: TargetRow,
    ssh: SshTargetRow,
    step: Step,
}

enum Step {
    /// Started directly (the target needs no approver).
    Active(Active),
    /// Authorised; open and claim it (after an approver decides, if pending).
    Authorised(crate::session::Authorization),
}

impl Begun {
    /// The Wardengate session id.
    pub fn id(&self) -> &str {
        match &self.step {
            Step::Active(a) => a.id(),
            Step::Authorised(a) => &a.id,
        }
    }
}

impl Link {
    /// Authorises `who` for `target` (waiting for an approver if the target needs one, telling
    /// `status` what it waits for), claims the session and starts its recording. `gone` turns
    /// true when the client leaves: a request still waiting for an approver is then withdrawn.
    pub async fn establish(
        app: Arc<AppState>,
        keys: Arc<SshKeys>,
        who: &Identity,
        target: &str,
        status: &(dyn Fn(String) + Send + Sync),
        gone: watch::Receiver<bool>,
    ) -> Result<(Arc<Link>, Active), String> {
        let begun = Self::begin(&app, who, target)
            .await
            .map_err(|e| e.to_string())?;
        Self::finish(app, keys, who, begun, status, gone).await
    }

    /// The first half of [`Link::establish`]: checks the target is in SSH mode and starts the
    /// session (direct) or authorises it (pending when it needs an approver), so its id is
    /// known before any waiting.
    pub async fn begin(
        app: &Arc<AppState>,
        who: &Identity,
        target: &str,
    ) -> Result<Begun, BeginError> {
        if app.replica.draining() || *app.health.isolated().borrow() {
            return Err(BeginError::NotTaking);
        }
        let row = app
            .store
            .target(target)
            .await?
            .ok_or_else(|| SessionError::TargetNotFound(target.into()))?;
        let ssh = app
            .store
            .ssh_target(&row.id)
            .await?
            .ok_or_else(|| BeginError::NotSsh(target.into()))?;
        let step = if row.require_approval == 0 {
            // Nothing is dialled yet, so a target that changed under the replica's cache is
            // simply tried again, read afresh.
            let mut tries = 0;
            loop {
                tries += 1;
                let mut direct = app.sessions.prepare_direct(who.requester(), target).await?;
                if app.recordings.is_some() {
                    direct = direct.recorded_by(&app.replica.id);
                }
                match app.sessions.start_direct(direct).await {
                    Err(SessionError::TargetChanged(_)) if tries < 2 => continue,
                    started => break Step::Active(started?),
                }
            }
        } else {
            Step::Authorised(app.sessions.authorise(who.requester(), target).await?)
        };
        Ok(Begun {
            target: row,
            ssh,
            step,
        })
    }

    /// The second half of [`Link::establish`]: waits for an approver when the session is
    /// pending (telling `status`; withdrawing the request if `gone` turns true first), claims
    /// it and starts its recording.
    pub async fn finish(
        app: Arc<AppState>,
        keys: Arc<SshKeys>,
        who: &Identity,
        begun: Begun,
        status: &(dyn Fn(String) + Send + Sync),
        mut gone: watch::Receiver<bool>,
    ) -> Result<(Arc<Link>, Active), String> {
        let Begun {
            target: row,
            ssh,
            step,
        } = begun;
        let target = row.name.as_str();
        let active = match step {
            Step::Active(active) => active,
            Step::Authorised(auth) => {
                if auth.status == SessionStatus::Pending {
                    status(format!(
                        "wardengate: target `{target}` needs an approval; waiting for an approver to decide session {} (wgctl approvals approve {})",
                        auth.id, auth.id
                    ));
                }
                let deadline = tokio::time::Instant::now()
                    + Duration::from_millis(crate::session::APPROVAL_WINDOW_MS as u64);
                let opening = loop {
                    match app.sessions.open(&auth.id, who.requester()).await {
                        Ok(o) => break o,
                        Err(SessionError::ApprovalPending)
                            if tokio::time::Instant::now() < deadline =>
                        {
                            tokio::select! {
                                _ = tokio::time::sleep(app.sessions.poll()) => {}
                                _ = async { let _ = gone.wait_for(|g| *g).await; } => {
                                    return Err(Self::withdraw(&app, &auth.id, who).await);
                                }
                            }
                        }
                        Err(SessionError::Terminated) => {
                            return Err(Self::refused_before_start(&app, &auth.id).await);
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                };
                status(format!("wardengate: session {} approved", auth.id));
                app.sessions
                    .claim(opening)
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        let id = active.id().to_string();
        let recorder = match Self::record(&app, &active, &ssh, who) {
            Ok(r) => Some(r),
            Err(e) => {
                app.sessions
                    .end(&id, EndReason::RecordingUnavailable, Moved::default())
                    .await;
                return Err(format!("the session cannot be recorded: {e}"));
            }
        };
        if app.recordings.is_some()
            && !active.recording_row_written()
            && let Err(e) = app.store.start_recording(&id, &app.replica.id).await
        {
            app.sessions
                .end(&id, EndReason::RecordingUnavailable, Moved::default())
                .await;
            return Err(format!("the session cannot be recorded: {e}"));
        }
        // Written validated; a value that no longer parses allows nothing.
        let forwarding = ssh.forward_to.as_deref().and_then(|f| f.parse().ok());
        let (ended, _) = watch::channel(None);
        Ok((
            Arc::new(Link {
                app,
                keys,
                id,
                target: row,
                ssh,
                upstream: OnceCell::new(),
                up_closed: Arc::new(tokio::sync::Notify::new()),
                recorder,
                up: AtomicU64::new(0),
                down: AtomicU64::new(0),
                ended,
                channels: Mutex::new(HashSet::new()),
                notice: std::sync::OnceLock::new(),
                forwarding,
                busy: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
            }),
            active,
        ))
    }

    /// Ends a request whose client left while it waited for an approver, so it leaves the
    /// approvals queue instead of lingering until the approval window passes.
    async fn withdraw(app: &AppState, id: &str, who: &Identity) -> String {
        match app.sessions.terminate(id, &who.token_id).await {
            Ok(_) => {
                tracing::info!(event = "ssh_request_withdrawn", session = %id, token = %who.token_id)
            }
            Err(e) => {
                tracing::warn!(event = "ssh_request_withdraw_failed", session = %id, error = %e)
            }
        }
        format!(
            "the client left while session {id} waited for an approver; the request was withdrawn"
        )
    }

    /// Why a session that never started was ended: an approver's denial or a terminate.
    async fn refused_before_start(app: &AppState, id: &str) -> String {
        let denied = matches!(
            app.sessions.get(id).await,
            Ok(Some(row)) if row.end_reason == Some(EndReason::Denied)
        );
        if denied {
            format!("session {id} was denied by an approver")
        } else {
            format!("session {id} was terminated before it started")
        }
    }

    fn record(
        app: &AppState,
        active: &Active,
        ssh: &SshTargetRow,
        who: &Identity,
    ) -> Result<CastRecorder, String> {
        let grant = active.grant();
        let meta = crate::recording::Meta {
            session: active.id().to_string(),
            target: grant.target.clone(),
            address: format!("{}:{}", grant.host, grant.port),
            token_id: grant.token_id.clone(),
            replica: app.replica.id.clone(),
            started_ms: now_ms(),
            note: format!(
                "{}terminated SSH as `{}`: the chunks' bytes, in order, are an asciicast v2 file \
                 (terminal output; input {}; resizes; exec command lines, exit statuses and SFTP \
                 file operations as markers; a binary exec stream's raw bytes as `b` events, \
                 base64)",
                super::CAST_NOTE_PREFIX,
                ssh.login,
                if ssh.record_input != 0 {
                    "recorded"
                } else {
                    "not recorded"
                }
            ),
        };
        let recorder = match &app.recordings {
            Some(rec) => Some(rec.start(&meta).map_err(|e| e.to_string())?),
            None => None,
        };
        let header = Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: now_ms() / 1000,
            title: format!(
                "{} {} as {} by {} ({})",
                active.id(),
                grant.target,
                ssh.login,
                who.name,
                who.token_id
            ),
            env: Default::default(),
        };
        let (writer, line) = CastWriter::start(&header);
        if let Some(r) = &recorder {
            r.record(crate::recording::Direction::Down, line.as_bytes());
        }
        Ok(CastRecorder {
            rec: recorder,
            feed: CastFeed::start(app.live.clone(), active.id(), &line),
            cast: Arc::new(Mutex::new(writer)),
            input: ssh.record_input != 0,
        })
    }

    /// The SSH connection to the target, opened by the first caller (`pty`: whether its
    /// certificate permits a terminal).
    pub async fn upstream(&self, pty: bool) -> Result<Arc<Upstream>, String> {
        self.upstream
            .get_or_init(|| async move { self.connect(pty).await.map(Arc::new) })
            .await
            .clone()
    }

    /// The `source-address` for a certificate used on `tcp`, when the target is bound to one.
    fn source_address(&self, tcp: &tokio::net::TcpStream) -> Result<Option<String>, String> {
        let Some(text) = &self.ssh.source_address else {
            return Ok(None);
        };
        let bound: super::source_address::SourceAddress = text
            .parse()
            .map_err(|e| format!("target `{}`: ssh source address {e}", self.target.name))?;
        let local = tcp
            .local_addr()
            .map_err(|e| format!("reading the local address dialled from: {e}"))?;
        Ok(Some(bound.option_for(local.ip())))
    }

    async fn connect(&self, pty: bool) -> Result<Upstream, String> {
        let app = &self.app;
        let (host, port) = (self.target.host.clone(), self.target.port as u16);
        let tcp = app
            .target_policy
            .dial(&host, port, app.dial_timeout)
            .await
            .map_err(|e| {
                format!(
                    "cannot reach target `{}` at {host}:{port}: {e}",
                    self.target.name
                )
            })?;
        let key =
            PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| e.to_string())?;
        let source = self.source_address(&tcp)?;
        let cert = self
            .keys
            .target_certificate(
                key.public_key(),
                &self.ssh.login,
                &self.id,
                super::keys::Permits {
                    pty,
                    port_forwarding: self.forwarding.is_some(),
                },
                source.as_deref(),
            )
            .map_err(|e| e.to_string())?;
        let refusal = Arc::new(Mutex::new(None));
        let logged_in = Arc::new(AtomicBool::new(false));
        let handler = UpHandler {
            app: app.clone(),
            target: self.target.clone(),
            pinned: self.ssh.host_key.clone(),
            refusal: refusal.clone(),
            closed: self.up_closed.clone(),
            logged_in: logged_in.clone(),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            ..Default::default()
        });
        let mut handle = match client::connect_stream(config, tcp, handler).await {
            Ok(h) => h,
            Err(e) => {
                let why = refusal.lock().unwrap_or_else(|p| p.into_inner()).take();
                return Err(why.unwrap_or_else(|| {
                    format!(
                        "SSH handshake with target `{}` failed: {e}",
                        self.target.name
                    )
                }));
            }
        };
        let auth = handle
            .authenticate_openssh_cert(self.ssh.login.clone(), Arc::new(key), cert)
            .await
            .map_err(|e| format!("authenticating to target `{}`: {e}", self.target.name))?;
        if !auth.success() {
            let bound = match &source {
                Some(a) => format!(
                    "; the certificate is bound to source-address {a}: is that where the target \
                     sees the gateway come from?"
                ),
                None => String::new(),
            };
            return Err(format!(
                "target `{}` refused the gateway's certificate for login `{}` (does it trust the \
                 Wardengate SSH user CA with TrustedUserCAKeys, and may `{}` log in?{bound})",
                self.target.name, self.ssh.login, self.ssh.login
            ));
        }
        logged_in.store(true, Ordering::SeqCst);
        tracing::info!(event = "ssh_upstream_ready", session = %self.id, target = %self.target.name, login = %self.ssh.login, pty);
        Ok(Upstream { handle })
    }

    /// Marks a channel as carried until the guard drops.
    pub(crate) fn channel_guard(self: &Arc<Self>) -> ChannelGuard {
        self.busy.fetch_add(1, Ordering::SeqCst);
        ChannelGuard(self.clone())
    }

    /// Waits until no channel is carried, for at most `within`.
    async fn channels_finished(&self, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.busy.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
    }

    /// Carries the session until the client goes (`client_gone`), the target's connection
    /// ends, or the session core says it must end (terminate, drain, isolation, lost state);
    /// then tells the client why (`notify`), finishes the recording and ends the session.
    pub async fn run(
        self: Arc<Self>,
        active: Active,
        client_gone: impl std::future::Future<Output = ()>,
        notify: Option<russh::server::Handle>,
    ) -> EndReason {
        let app = self.app.clone();
        // The SSH front end hands in its connection to tell the client why the session ended;
        // the browser terminal says it on its page instead.
        let _guard = app.replica.relay_guard(if notify.is_some() {
            crate::metrics::SessionMode::Ssh
        } else {
            crate::metrics::SessionMode::Console
        });
        let watch = app
            .sessions
            .watch(active, app.health.isolated(), app.replica.evictions());
        let up_closed = self.up_closed.clone();
        let reason = tokio::select! {
            r = watch => r,
            _ = client_gone => EndReason::ClientClosed,
            _ = up_closed.notified() => EndReason::TargetClosed,
        };
        let _ = self.ended.send(Some(reason));
        if reason == EndReason::ClientClosed {
            // The client is gone, so its channels are ending: their last records (an exit
            // status, a forward's byte counts) go before the session's end.
            self.channels_finished(CHANNELS_FINISH_WITHIN).await;
        }
        let notice = match reason {
            EndReason::Terminated => match app.sessions.terminator(&self.id).await {
                Some(by) => format!("{}: {by}", end_message(reason)),
                None => end_message(reason).to_string(),
            },
            _ => end_message(reason).to_string(),
        };
        let _ = self.notice.set(notice.clone());
        if let Some(r) = &self.recorder {
            r.marker(&format!("session ended: {}", reason.as_str()));
            r.feed.end(reason, &notice);
        }
        if let Some(h) = &notify
            && !matches!(reason, EndReason::ClientClosed)
        {
            let msg = format!("\r\nwardengate: {notice}\r\n");
            let ids: Vec<_> = self
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect();
            for id in ids {
                let _ = h
                    .extended_data(id, 1, bytes::Bytes::from(msg.clone()))
                    .await;
                let _ = h.close(id).await;
            }
            let _ = h
                .disconnect(
                    russh::Disconnect::ByApplication,
                    format!("wardengate: {notice}"),
                    String::new(),
                )
                .await;
        }
        if let Some(Ok(up)) = self.upstream.get() {
            let _ = up
                .handle
                .disconnect(russh::Disconnect::ByApplication, "session ended", "")
                .await;
        }
        let moved = Moved {
            up: self.up.load(Ordering::Relaxed),
            down: self.down.load(Ordering::Relaxed),
        };
        if let Some(rec) = self.recorder.as_ref().and_then(|r| r.rec.clone()) {
            rec.finish(reason.as_str(), moved.up, moved.down);
        }
        app.sessions.end(&self.id, reason, moved).await;
        reason
    }
}
