//! [`Sessions`]: the operations on a session, each owning its Postgres and Redis effects, its
//! metrics and its events. Front ends (the HTTP API, the cleanup job, later the agent link and the
//! SSH server) decide who may call what; this module decides what happens.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::grant::{
    APPROVAL_WINDOW_MS, AUTHORIZED_TTL_MS, Grant, GrantState, TERMINATED_GRANT_TTL,
};
use super::{EndReason, SessionError, SessionStatus};
use crate::live::{Live, LiveError, Swap, session_key};
use crate::metrics::Metrics;
use crate::ratelimit::{KeyedLimit, Rate};
use crate::signing::Keyring;
use crate::store::{Decided, Decision, SessionRow, Store, TargetRow, now_ms};

/// Who asks to use a session: its owner, or an admin acting for anyone.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The caller's token id.
    pub token_id: &'a str,
    /// True when the caller may use sessions authorised for other tokens.
    pub admin: bool,
    /// The client's address (behind a load balancer, from its PROXY header), recorded with
    /// the session.
    pub from: Option<std::net::SocketAddr>,
}

impl Requester<'_> {
    fn address(&self) -> Option<String> {
        self.from.map(|a| a.to_string())
    }
}

/// A new authorisation, as `authorise` granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Session id.
    pub id: String,
    /// Target name.
    pub target: String,
    /// `Authorized`, or `Pending` when an approver must decide first.
    pub status: SessionStatus,
    /// Unix ms after which the authorisation can no longer be used to connect.
    pub expires_at_ms: i64,
    /// A regional target's gateway (`https://HOST:PORT`) to connect to with `grant`.
    pub gateway: Option<String>,
    /// The Ed25519 grant for `gateway`.
    pub grant: Option<String>,
}

/// A session checked and ready to be claimed: its live grant verified, its state authorised.
/// Made only by [`Sessions::open`].
#[derive(Debug, Clone)]
pub struct Opening {
    grant: Grant,
    signed: String,
    by: String,
    from: Option<String>,
}

impl Opening {
    /// The verified grant: where to dial, whose it is.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }
}

/// A session about to be authorised and claimed in one request. Made only by
/// [`Sessions::prepare_direct`]; started by [`Sessions::start_direct`].
#[derive(Debug, Clone)]
pub struct Direct {
    grant: Grant,
    from: Option<String>,
    target_id: String,
    recording_replica: Option<String>,
}

impl Direct {
    /// The grant it will start with: where to dial.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Writes the session's recording row (recorded by this replica) with the session row, in
    /// the same round trip: for a front end that records every session it carries.
    pub fn recorded_by(mut self, replica: &str) -> Self {
        self.recording_replica = Some(replica.to_string());
        self
    }
}

/// A session this replica carries: claimed in Postgres, its live grant active and renewed by
/// [`Sessions::watch`]. Made only by [`Sessions::claim`] and [`Sessions::start_direct`]; holds
/// one of the replica's relay places until the last copy is dropped.
#[derive(Debug, Clone)]
pub struct Active {
    grant: Grant,
    signed: String,
    recording_row: bool,
    _place: Option<Arc<OwnedSemaphorePermit>>,
}

impl Active {
    /// The active grant.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Session id.
    pub fn id(&self) -> &str {
        &self.grant.session_id
    }

    /// Whether its recording row was written when it started ([`Direct::recorded_by`]), so
    /// the front end need not write it again.
    pub fn recording_row_written(&self) -> bool {
        self.recording_row
    }
}

/// Bytes a relay moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Client → target.
    pub up: u64,
    /// Target → client.
    pub down: u64,
}

/// What the relay must do after one renewal of its grant.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Renewal {
    /// Carry on.
    Renewed,
    /// Redis did not answer; try again next poll.
    Unreachable,
    /// The session must end.
    End(EndReason),
}

/// Settings of [`Sessions`].
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// This replica's id (recorded on the sessions it carries).
    pub replica: String,
    /// How long an active grant stays valid without its relay renewing it.
    pub live_session_ttl: Duration,
    /// How often a relay renews its grant and checks it.
    pub poll: Duration,
    /// Consecutive failed renewals after which the relay ends (`session_state_lost`).
    pub max_failed_renewals: u32,
    /// New sessions per token on this replica.
    pub session_rate_per_token: Rate,
    /// Sessions a token holds at once across the fleet (pending, authorised, relayed); 0: no
    /// cap.
    pub max_sessions_per_token: u32,
    /// Relays this replica carries at once; 0: no cap.
    pub max_relays: usize,
}

impl SessionsConfig {
    /// Defaults for `replica`: the default live session TTL, a 1 s poll, three missed renewals.
    pub fn for_replica(replica: impl Into<String>) -> Self {
        Self {
            replica: replica.into(),
            live_session_ttl: super::DEFAULT_LIVE_SESSION_TTL,
            poll: Duration::from_secs(1),
            max_failed_renewals: 3,
            session_rate_per_token: crate::limits::Limits::default().session_rate_per_token,
            max_sessions_per_token: crate::limits::DEFAULT_MAX_SESSIONS_PER_TOKEN,
            max_relays: crate::limits::DEFAULT_MAX_RELAYS,
        }
    }
}

/// The session core: one per replica, shared by every front end.
#[derive(Debug, Clone)]
pub struct Sessions {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) store: Store,
    live: Live,
    pub(super) keyring: Keyring,
    pub(super) metrics: Metrics,
    config: SessionsConfig,
    /// New sessions per token.
    rate: KeyedLimit<String>,
    /// Relay places of this replica (`None`: no cap).
    places: Option<Arc<Semaphore>>,
    /// Targets read by the one-request relay in the last two seconds.
    targets: super::target_cache::TargetCache,
}

/// How long [`Sessions::end`] waits for Postgres to record an end before retrying in the
/// background.
pub const END_RECORD_WAIT: Duration = Duration::from_secs(1);

/// The detail of a relay's `session.started` event: `by` connected it from `client`.
fn started_event(
    id: &str,
    target: &str,
    replica: &str,
    by: &str,
    client: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({"session": id, "target": target, "replica": replica, "by": by, "client": client})
}

/// The detail of a relay's `session.ended` event.
fn ended_event(id: &str, reason: EndReason, moved: Moved, replica: &str) -> String {
    serde_json::json!({"session": id, "reason": reason, "bytes_up": moved.up, "bytes_down": moved.down, "replica": replica}).to_string()
}

/// Refuses a target a session cannot be authorised and claimed at once for: one relayed by its
/// region's gateways, or one that needs an approver.
fn direct_allowed(target: &TargetRow) -> Result<(), SessionError> {
    if target.region.is_some() {
        return Err(SessionError::Regional(target.name.clone()));
    }
    if target.require_approval != 0 {
        return Err(SessionError::ApprovalRequired(target.name.clone()));
    }
    Ok(())
}

/// The grant of a new session `id` to `target` for `token_id`.
fn grant_to(
    id: String,
    token_id: &str,
    target: &TargetRow,
    state: GrantState,
    replica: Option<String>,
    expires_at_ms: i64,
) -> Grant {
    Grant {
        session_id: id,
        token_id: token_id.to_string(),
        target: target.name.clone(),
        host: target.host.clone(),
        port: u16::try_from(target.port).unwrap_or(0),
        state,
        replica,
        expires_at_ms,
        terminated_by: None,
    }
}

/// The durable record of a session starting, at `now`, as `grant` says (started already when
/// `status` is active).
fn new_row(grant: &Grant, target_id: &str, status: SessionStatus, now: i64) -> SessionRow {
    SessionRow {
        id: grant.session_id.clone(),
        token_id: grant.token_id.clone(),
        target_id: target_id.to_string(),
        target_name: grant.target.clone(),
        host: grant.host.clone(),
        port: i64::from(grant.port),
        status,
        replica: grant.replica.clone(),
        created_at: now,
        started_at: (status == SessionStatus::Active).then_some(now),
        ended_at: None,
        bytes_up: 0,
        bytes_down: 0,
        end_reason: None,
        requested_from: None,
        connected_by: None,
        connected_from: None,
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1))
}

impl Sessions {
    /// The core over this replica's stores and keys.
    pub fn new(
        store: Store,
        live: Live,
        keyring: Keyring,
        metrics: Metrics,
        config: SessionsConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                live,
                keyring,
                metrics,
                rate: KeyedLimit::new(config.session_rate_per_token),
                places: (config.max_relays > 0)
                    .then(|| Arc::new(Semaphore::new(config.max_relays))),
                targets: Default::default(),
                config,
            }),
        }
    }

    /// How often a relay renews its grant and checks it.
    pub fn poll(&self) -> Duration {
        self.inner.config.poll
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.inner.config.replica
    }

    /// Appends an event to the outbox in the background: events inform subscribers, they never
    /// hold up or fail the operation that caused them.
    pub(super) fn emit(&self, kind: &'static str, subject: &str, detail: serde_json::Value) {
        let (store, subject) = (self.inner.store.clone(), subject.to_string());
        tokio::spawn(async move {
            if let Err(e) = store.emit(kind, &subject, &detail).await {
                tracing::warn!(kind, subject = %subject, error = %e, "could not record an event");
            }
        });
    }

    pub(super) fn audit(&self, by: &str, action: &'static str, subject: &str, detail: String) {
        let (store, by, subject) = (
            self.inner.store.clone(),
            by.to_string(),
            subject.to_string(),
        );
        tokio::spawn(async move {
            let _ = store.audit(&by, action, &subject, &detail).await;
        });
    }

    fn sign(&self, grant: &Grant) -> String {
        self.inner.keyring.sign(grant)
    }

    fn verify(&self, id: &str, signed: &str) -> Result<Grant, SessionError> {
        let grant: Grant = self
            .inner
            .keyring
            .verify(signed, now_ms())
            .map_err(|e| {
                tracing::warn!(event = "session_state_rejected", session = %id, error = %e, "refusing session state");
                SessionError::InvalidState(e.to_string())
            })?;
        if grant.session_id != id {
            tracing::warn!(event = "session_state_rejected", session = %id, grant_for = %grant.session_id, "grant stored under another session's key");
            return Err(SessionError::InvalidState(
                "session state belongs to another session".into(),
            ));
        }
        Ok(grant)
    }

    // ---- limits ----

    fn limited(&self, limit: &'static str) {
        self.inner
            .metrics
            .rate_limited
            .with_label_values(&[limit])
            .inc();
    }

    /// Whether `token_id` may start another session now: within its session rate, and holding
    /// (`held`, read with the target by [`Store::target_and_held`]) fewer sessions than the
    /// per-token cap (counted in Postgres, so fleet-wide; requests racing each other may pass
    /// it by as many as arrive at once).
    pub(super) fn admit(&self, token_id: &str, held: i64) -> Result<(), SessionError> {
        self.admit_rate(token_id)?;
        self.admit_held(token_id, held)
    }

    /// The per-token new-session rate (in memory, checked before any query).
    fn admit_rate(&self, token_id: &str) -> Result<(), SessionError> {
        if let Err(wait) = self.inner.rate.check(&token_id.to_string()) {
            self.limited("session_rate");
            tracing::warn!(event = "session_rate_limited", token = %token_id, retry_after = ?wait);
            return Err(SessionError::RateLimited(wait));
        }
        Ok(())
    }

    /// The per-token cap on sessions held at once, given how many `token_id` holds now.
    fn admit_held(&self, token_id: &str, held: i64) -> Result<(), SessionError> {
        let max = self.inner.config.max_sessions_per_token;
        if max > 0 && held >= i64::from(max) {
            self.limited("token_sessions");
            tracing::warn!(event = "token_sessions_capped", token = %token_id, held, max);
            return Err(SessionError::TooManySessions(max));
        }
        Ok(())
    }

    /// One of this replica's relay places, or [`SessionError::AtCapacity`].
    fn place(&self) -> Result<Option<Arc<OwnedSemaphorePermit>>, SessionError> {
        let Some(places) = &self.inner.places else {
            return Ok(None);
        };
        match places.clone().try_acquire_owned() {
            Ok(p) => Ok(Some(Arc::new(p))),
            Err(_) => {
                self.limited("replica_relays");
                tracing::warn!(
                    event = "replica_at_capacity",
                    max = self.inner.config.max_relays
                );
                Err(SessionError::AtCapacity(self.inner.config.max_relays))
            }
        }
    }

    // ---- authorise and decide ----

    /// Authorises `token_id` to connect to `target`: pending when the target needs an approver,
    /// else authorised at once. The live grant is written first, so when Redis is down nothing
    /// durable is left behind.
    pub async fn authorise(
        &self,
        who: Requester<'_>,
        target: &str,
    ) -> Result<Authorization, SessionError> {
        let (target, held) = self
            .inner
            .store
            .target_and_held(target, who.token_id)
            .await?
            .ok_or_else(|| SessionError::TargetNotFound(target.to_string()))?;
        if let Some(region) = target.region.clone() {
            return self.authorise_regional(who, &target, &region, held).await;
        }
        self.admit(who.token_id, held)?;
        self.authorise_target(who, &target).await
    }

    async fn authorise_target(
        &self,
        who: Requester<'_>,
        target: &TargetRow,
    ) -> Result<Authorization, SessionError> {
        let token_id = who.token_id;
        let id = uuid::Uuid::new_v4().to_string();
        let pending = target.require_approval != 0;
        let now = now_ms();
        let (state, status, window) = if pending {
            (
                GrantState::Pending,
                SessionStatus::Pending,
                APPROVAL_WINDOW_MS,
            )
        } else {
            (
                GrantState::Authorized,
                SessionStatus::Authorized,
                AUTHORIZED_TTL_MS,
            )
        };
        let grant = grant_to(id.clone(), token_id, target, state, None, now + window);
        self.inner
            .live
            .set(&session_key(&id), &self.sign(&grant), ms(window))
            .await?;
        let row = SessionRow {
            requested_from: who.address(),
            ..new_row(&grant, &target.id, status, now)
        };
        // The audit row is written by the same statement: no round trip of its own.
        self.inner
            .store
            .create_session_audited(&row, token_id, "session.authorize", &target.name)
            .await?;
        tracing::info!(event = "session_authorized", session = %id, target = %target.name, token = %token_id, client = ?row.requested_from, pending);
        if pending {
            self.emit(
                "approval.requested",
                &id,
                serde_json::json!({"session": id, "target": target.name, "requester": token_id, "client": row.requested_from}),
            );
        }
        Ok(Authorization {
            id,
            target: target.name.clone(),
            status,
            expires_at_ms: grant.expires_at_ms,
            gateway: None,
            grant: None,
        })
    }

    /// Records an approver's decision (durable first, with its outbox event, in one
    /// transaction), then mirrors it into the live grant. If Redis is down the decision still
    /// stands: [`Sessions::open`] consults Postgres when it finds a grant still pending.
    pub async fn decide(
        &self,
        id: &str,
        decision: Decision,
        by: &str,
        reason: &str,
    ) -> Result<SessionRow, SessionError> {
        let store = &self.inner.store;
        let row = store
            .session(id)
            .await?
            .ok_or_else(|| SessionError::NotFound(id.to_string()))?;
        if row.token_id == by {
            return Err(SessionError::SelfApproval);
        }
        let session = match store.decide(id, decision, by, reason).await? {
            Decided::Now(s) => s,
            Decided::Already(a) => {
                return Err(SessionError::AlreadyDecided {
                    id: id.to_string(),
                    decision: a.decision,
                    by: a.decided_by,
                });
            }
            Decided::NotPending if row.end_reason == Some(EndReason::Expired) => {
                return Err(SessionError::ApprovalExpired(id.to_string()));
            }
            Decided::NotPending => {
                return Err(SessionError::NotPending {
                    id: id.to_string(),
                    status: row.status,
                });
            }
        };
        let grant = Grant {
            session_id: id.to_string(),
            token_id: session.token_id.clone(),
            target: session.target_name.clone(),
            host: session.host.clone(),
            port: u16::try_from(session.port).unwrap_or(0),
            state: match decision {
                Decision::Approved => GrantState::Authorized,
                Decision::Denied => GrantState::Terminated,
            },
            replica: None,
            expires_at_ms: now_ms() + AUTHORIZED_TTL_MS,
            terminated_by: None,
        };
        if let Err(e) = self
            .inner
            .live
            .set(&session_key(id), &self.sign(&grant), ms(AUTHORIZED_TTL_MS))
            .await
        {
            tracing::warn!(session = %id, error = %e, "decision recorded; live grant not updated (the relay will read Postgres)");
        }
        let action = match decision {
            Decision::Approved => "approval.approved",
            Decision::Denied => "approval.denied",
        };
        self.audit(by, action, id, reason.to_string());
        self.inner
            .metrics
            .approvals
            .with_label_values(&[decision.as_str()])
            .inc();
        tracing::info!(event = "approval_decided", session = %id, decision = decision.as_str(), by = %by);
        Ok(session)
    }

    /// Prepares a session authorised and claimed in one request (`GET
    /// /v1/targets/{name}/relay`), for a target that needs no approval: looks the target up and
    /// builds the active grant, changing nothing yet. Saves the client a round trip and the
    /// server a Redis read and a Postgres update per session.
    ///
    /// A target read in the last two seconds comes from the replica's cache, so the relay can
    /// dial while [`Sessions::start_direct`] writes the session in one statement; that
    /// statement re-checks the target and the token's cap, so a stale entry never lets through
    /// what the current target refuses. A fresh read checks the cap here already.
    pub async fn prepare_direct(
        &self,
        who: Requester<'_>,
        target: &str,
    ) -> Result<Direct, SessionError> {
        self.admit_rate(who.token_id)?;
        let row = match self.inner.targets.get(target) {
            Some(row) => row,
            None => self.read_direct_target(who.token_id, target).await?,
        };
        let ttl = self.inner.config.live_session_ttl;
        let now = now_ms();
        let grant = grant_to(
            uuid::Uuid::new_v4().to_string(),
            who.token_id,
            &row,
            GrantState::Active,
            Some(self.replica().to_string()),
            now + ttl_ms(ttl),
        );
        Ok(Direct {
            grant,
            from: who.address(),
            target_id: row.id,
            recording_replica: None,
        })
    }

    /// Reads `target` and how many sessions `token_id` holds, refuses what a direct session may
    /// not do now, and caches a target it may use for the next [`Sessions::prepare_direct`].
    async fn read_direct_target(
        &self,
        token_id: &str,
        target: &str,
    ) -> Result<TargetRow, SessionError> {
        let (row, held) = self
            .inner
            .store
            .target_and_held(target, token_id)
            .await?
            .ok_or_else(|| SessionError::TargetNotFound(target.to_string()))?;
        // Only a target a direct session may use is cached: a refusal is always read afresh.
        direct_allowed(&row)?;
        self.inner.targets.put(row.clone());
        self.admit_held(token_id, held)?;
        Ok(row)
    }

    /// Starts a prepared direct session: the active grant in Redis and, in one statement, the
    /// `active` row with its audit row, recording row and `session.started` event in Postgres,
    /// written concurrently. If either write fails, the other is undone (the row ends as
    /// `session_state_lost`) and the error returned. When the store refuses the row (the
    /// target changed since it was cached, or the token reached its cap), the target is read
    /// afresh to say why.
    pub async fn start_direct(&self, direct: Direct) -> Result<Active, SessionError> {
        let Direct {
            grant,
            from,
            target_id,
            recording_replica,
        } = direct;
        let place = self.place()?;
        let id = grant.session_id.clone();
        let signed = self.sign(&grant);
        let ttl = self.inner.config.live_session_ttl;
        let row = SessionRow {
            requested_from: from.clone(),
            connected_by: Some(grant.token_id.clone()),
            connected_from: from.clone(),
            ..new_row(&grant, &target_id, SessionStatus::Active, now_ms())
        };
        let event = started_event(
            &id,
            &grant.target,
            self.replica(),
            &grant.token_id,
            from.as_deref(),
        )
        .to_string();
        let start = crate::store::DirectStart {
            row: &row,
            actor: &grant.token_id,
            action: "session.authorize",
            detail: &grant.target,
            max_held: i64::from(self.inner.config.max_sessions_per_token),
            recording_replica: recording_replica.as_deref(),
            started_event: &event,
        };
        let key = session_key(&id);
        let (live, durable) = tokio::join!(
            self.inner.live.set(&key, &signed, ttl),
            self.inner.store.start_direct_session(&start)
        );
        match (live, durable) {
            (Ok(()), Ok(true)) => {}
            (Ok(()), Ok(false)) => {
                let _ = self.inner.live.del(&key).await;
                return Err(self.explain_refused_start(&grant).await);
            }
            (Err(e), durable) => {
                if matches!(durable, Ok(true)) {
                    // Its `session.started` was written with the row: announce the end too.
                    let reason = EndReason::SessionStateLost;
                    let ended = ended_event(&id, reason, Moved::default(), self.replica());
                    let _ = self
                        .inner
                        .store
                        .end_session(&id, self.replica(), (0, 0), reason, Some(&ended))
                        .await;
                }
                return Err(e.into());
            }
            (Ok(()), Err(e)) => {
                let _ = self.inner.live.del(&key).await;
                return Err(e.into());
            }
        }
        tracing::info!(event = "session_authorized", session = %id, target = %grant.target, token = %grant.token_id, client = ?from, direct = true);
        Ok(Active {
            grant,
            signed,
            recording_row: recording_replica.is_some(),
            _place: place,
        })
    }

    /// Why the store refused to start a direct session to `grant`'s target: read afresh (and
    /// cached again), it is gone, needs approval, has a region, or the token is at its cap —
    /// or, when none of those holds, the target was changed since it was cached (retry).
    async fn explain_refused_start(&self, grant: &Grant) -> SessionError {
        self.inner.targets.forget(&grant.target);
        match self
            .read_direct_target(&grant.token_id, &grant.target)
            .await
        {
            Err(e) => e,
            Ok(row) => {
                tracing::info!(event = "target_changed", target = %row.name, "the target changed while a session started; the client retries");
                SessionError::TargetChanged(row.name)
            }
        }
    }

    // ---- connect: open, claim, watch, end ----

    /// Checks that `id` may be connected now by `who`: its live grant verifies, belongs to
    /// `who` (or `who` is an admin), and is authorised (a grant still pending counts when the
    /// durable decision says approved: Redis was down when the approver decided).
    pub async fn open(&self, id: &str, who: Requester<'_>) -> Result<Opening, SessionError> {
        let signed = self
            .inner
            .live
            .get(&session_key(id))
            .await?
            .ok_or_else(|| SessionError::NoLiveGrant(id.to_string()))?;
        let grant = self.verify(id, &signed)?;
        if grant.token_id != who.token_id && !who.admin {
            return Err(SessionError::NotYours);
        }
        match grant.state {
            GrantState::Authorized => {}
            GrantState::Pending => {
                let approved = self
                    .inner
                    .store
                    .session(id)
                    .await?
                    .is_some_and(|s| s.status == SessionStatus::Authorized);
                if !approved {
                    return Err(SessionError::ApprovalPending);
                }
            }
            GrantState::Active => return Err(SessionError::InUse),
            GrantState::Terminated => return Err(SessionError::Terminated),
        }
        Ok(Opening {
            grant,
            signed,
            by: who.token_id.to_string(),
            from: who.address(),
        })
    }

    /// Claims an opened session for this replica: exactly one replica wins in Postgres, then the
    /// live grant turns active with a compare-and-set against the grant `open` read, so a
    /// terminate (or a decision) that landed since is never overwritten. Emits
    /// `session.started`. On a lost race the session ends with the matching reason.
    pub async fn claim(&self, opening: Opening) -> Result<Active, SessionError> {
        let Opening {
            grant,
            signed,
            by,
            from,
        } = opening;
        let place = self.place()?;
        let id = grant.session_id.clone();
        let replica = self.replica().to_string();
        if !self
            .inner
            .store
            .claim_session(&id, &replica, &by, from.as_deref())
            .await?
        {
            return Err(SessionError::InUse);
        }
        if by != grant.token_id {
            // An admin connecting another user's session: the record names who really did.
            self.audit(&by, "session.connect_for", &id, grant.token_id.clone());
            tracing::warn!(event = "session_connected_for_owner", session = %id, by = %by, owner = %grant.token_id, client = ?from);
        }
        let ttl = self.inner.config.live_session_ttl;
        let active = Grant {
            state: GrantState::Active,
            replica: Some(replica.clone()),
            expires_at_ms: now_ms() + ttl_ms(ttl),
            ..grant
        };
        let active_signed = self.sign(&active);
        let refused = match self
            .inner
            .live
            .compare_and_set(&session_key(&id), &signed, &active_signed, ttl)
            .await
        {
            Ok(Swap::Swapped) => None,
            Ok(Swap::Current(now)) => Some(
                match now.and_then(|s| self.verify(&id, &s).ok()).map(|g| g.state) {
                    Some(GrantState::Terminated) => {
                        (EndReason::Terminated, SessionError::Terminated)
                    }
                    _ => (
                        EndReason::SessionStateLost,
                        SessionError::ChangedWhileConnecting(id.clone()),
                    ),
                },
            ),
            Err(e) => Some((EndReason::SessionStateLost, e.into())),
        };
        if let Some((reason, error)) = refused {
            let _ = self
                .inner
                .store
                .end_session(&id, &replica, (0, 0), reason, None)
                .await;
            return Err(error);
        }
        self.emit(
            "session.started",
            &id,
            started_event(&id, &active.target, &replica, &by, from.as_deref()),
        );
        Ok(Active {
            grant: active,
            signed: active_signed,
            recording_row: false,
            _place: place,
        })
    }

    /// Re-signs the active grant with a fresh expiry and writes it with a compare-and-set on
    /// what this relay wrote last.
    async fn renew(&self, active: &mut Active) -> Renewal {
        let key = session_key(active.id());
        let ttl = self.inner.config.live_session_ttl;
        let renewed = self.sign(&Grant {
            expires_at_ms: now_ms() + ttl_ms(ttl),
            ..active.grant.clone()
        });
        match self
            .inner
            .live
            .compare_and_set(&key, &active.signed, &renewed, ttl)
            .await
        {
            Ok(Swap::Swapped) => {
                active.signed = renewed;
                Renewal::Renewed
            }
            Ok(Swap::Current(Some(current))) => match self.verify(active.id(), &current) {
                Ok(g) if g.state == GrantState::Terminated => Renewal::End(EndReason::Terminated),
                // An earlier renewal of ours, brought back by a Redis failover that lost the
                // latest write: carry on from it.
                Ok(g) if g.state == GrantState::Active && g.replica == active.grant.replica => {
                    active.signed = current;
                    Renewal::Renewed
                }
                Ok(g) => {
                    tracing::warn!(event = "session_state_rejected", session = %active.id(), state = ?g.state, "live state changed under the relay");
                    Renewal::End(EndReason::SessionStateLost)
                }
                Err(_) => Renewal::End(EndReason::SessionStateLost),
            },
            Ok(Swap::Current(None)) => Renewal::End(EndReason::SessionStateLost),
            Err(LiveError::Unavailable(_)) | Err(LiveError::Command(_)) => Renewal::Unreachable,
        }
    }

    /// Keeps `active`'s live state valid for as long as the relay carries it, and returns when
    /// the session must end: terminated, its state vanished, Redis unreachable for
    /// `max_failed_renewals` polls, this replica isolated, or its drain window passed. A session
    /// lasts as long as its user; a relay that stops renewing lets its grant lapse within the
    /// live session TTL.
    pub async fn watch(
        &self,
        mut active: Active,
        mut isolated: watch::Receiver<bool>,
        mut evictions: watch::Receiver<bool>,
    ) -> EndReason {
        let mut tick = tokio::time::interval(self.inner.config.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = isolated.changed() => {
                    if changed.is_ok() && *isolated.borrow() {
                        return EndReason::ReplicaIsolated;
                    }
                    continue;
                }
                changed = evictions.changed() => {
                    if changed.is_ok() && *evictions.borrow() {
                        return EndReason::Drained;
                    }
                    continue;
                }
            }
            match self.renew(&mut active).await {
                Renewal::Renewed => failures = 0,
                Renewal::End(reason) => return reason,
                Renewal::Unreachable => {
                    failures += 1;
                    if failures >= self.inner.config.max_failed_renewals {
                        return EndReason::SessionStateLost;
                    }
                }
            }
        }
    }

    /// Ends a session this replica claimed: counts it, records it in Postgres (waiting at most
    /// [`END_RECORD_WAIT`], then retried in the background with jittered backoff for up to an
    /// hour — an isolated replica must not lose history) with its `session.ended` event in the
    /// same statement (written only if this call ended it, so never twice), and drops its live
    /// state. Call it before telling the client the session is over.
    pub async fn end(&self, id: &str, reason: EndReason, moved: Moved) {
        let m = &self.inner.metrics;
        m.relay_bytes.with_label_values(&["up"]).inc_by(moved.up);
        m.relay_bytes
            .with_label_values(&["down"])
            .inc_by(moved.down);
        m.relays_ended.with_label_values(&[reason.as_str()]).inc();
        let replica = self.replica().to_string();
        let record = {
            let event = ended_event(id, reason, moved, &replica);
            let (store, id, replica) = (self.inner.store.clone(), id.to_string(), replica.clone());
            move || {
                let (store, id, replica, event) =
                    (store.clone(), id.clone(), replica.clone(), event.clone());
                async move {
                    store
                        .end_session(&id, &replica, (moved.up, moved.down), reason, Some(&event))
                        .await
                }
            }
        };
        // Bounded: a caller closes its client right after (so one that asks next sees the
        // session ended), and a replica cut off from Postgres must still close promptly.
        let first = tokio::time::timeout(END_RECORD_WAIT, record())
            .await
            .unwrap_or_else(|_| {
                Err(crate::store::StoreError::Unavailable(format!(
                    "no answer within {END_RECORD_WAIT:?}"
                )))
            });
        if let Err(e) = first {
            tracing::warn!(session = %id, error = %e, "could not record the end of a session yet; retrying in the background");
            let id = id.to_string();
            tokio::spawn(async move {
                use backon::Retryable;
                match record
                    .retry(crate::retry::background(Duration::from_secs(3600)))
                    .await
                {
                    Ok(()) => tracing::info!(event = "session_end_recorded_late", session = %id),
                    Err(e) => {
                        tracing::error!(session = %id, error = %e, "gave up recording the end of a session; the cleanup job will")
                    }
                }
            });
        }
        let _ = self.inner.live.del(&session_key(id)).await;
        tracing::info!(event = "relay_ended", session = %id, reason = reason.as_str(), bytes_up = moved.up, bytes_down = moved.down);
    }

    // ---- terminate ----

    /// Terminates a session: durable in Postgres first (an active one becomes `terminating`
    /// until its relay notices; one not started ends at once), then the live grant is marked so
    /// the relay, wherever it runs, closes within a poll. Returns the row after the change.
    pub async fn terminate(&self, id: &str, by: &str) -> Result<SessionRow, SessionError> {
        let store = &self.inner.store;
        let after = match store.terminate_session(id).await? {
            Some(row) => row,
            None => store
                .session(id)
                .await?
                .ok_or_else(|| SessionError::NotFound(id.to_string()))?,
        };
        let key = session_key(id);
        if let Some(signed) = self.inner.live.get(&key).await?
            && let Ok(mut g) = self.verify(id, &signed)
        {
            g.state = GrantState::Terminated;
            g.expires_at_ms = now_ms() + ttl_ms(TERMINATED_GRANT_TTL);
            // Best effort: the name the user and watchers are told (the id if unknown).
            g.terminated_by = Some(match store.token_by_id(by).await {
                Ok(Some(t)) => t.name,
                _ => by.to_string(),
            });
            self.inner
                .live
                .set(&key, &self.sign(&g), TERMINATED_GRANT_TTL)
                .await?;
        }
        if let Some(holder) = after.replica.as_deref() {
            self.tell_gateway(holder, id, by).await?;
        }
        self.audit(by, "session.terminate", id, String::new());
        tracing::info!(event = "session_terminated", session = %id, by = %by);
        self.emit(
            "session.terminated",
            id,
            serde_json::json!({"session": id, "by": by}),
        );
        Ok(after)
    }

    /// Who terminated `id` (their token name), while its terminated grant is still in the
    /// live store: for the message the user and watchers see. `None` if it was not terminated
    /// by an operator or the grant is gone.
    pub async fn terminator(&self, id: &str) -> Option<String> {
        let signed = self.inner.live.get(&session_key(id)).await.ok()??;
        let g = self.verify(id, &signed).ok()?;
        (g.state == GrantState::Terminated)
            .then_some(g.terminated_by)
            .flatten()
    }

    /// Audits that `by` (a token id) started watching live session `id`.
    pub fn watched(&self, id: &str, by: &str) {
        self.audit(by, "session.watch", id, String::new());
        tracing::info!(event = "session_watched", session = %id, by = %by);
    }

    // ---- cleanup ----

    /// Ends `id`, carried by `replica` which stopped heartbeating, as `replica_lost`, if `epoch`
    /// is still the cleanup job's fencing epoch. Returns whether this call ended it.
    pub async fn mark_lost(
        &self,
        id: &str,
        replica: &str,
        job: &str,
        epoch: i64,
    ) -> Result<bool, SessionError> {
        let ended = self
            .inner
            .store
            .end_lost_session(id, replica, job, epoch)
            .await?;
        if ended {
            self.inner
                .metrics
                .relays_ended
                .with_label_values(&[EndReason::ReplicaLost.as_str()])
                .inc();
            self.emit(
                "session.ended",
                id,
                serde_json::json!({"session": id, "reason": EndReason::ReplicaLost, "replica": replica}),
            );
            tracing::warn!(event = "session_replica_lost", session = %id, replica, epoch);
        }
        Ok(ended)
    }

    /// Ends as `expired` requests that waited longer than the approval window and
    /// authorisations unused for longer than their validity, fenced by `epoch`. Returns how many.
    pub async fn expire_unused(&self, job: &str, epoch: i64) -> Result<u64, SessionError> {
        let now = now_ms();
        let n = self
            .inner
            .store
            .expire_unused_sessions(
                now - APPROVAL_WINDOW_MS,
                now - AUTHORIZED_TTL_MS,
                job,
                epoch,
            )
            .await?;
        if n > 0 {
            tracing::info!(event = "sessions_expired", count = n, epoch);
        }
        Ok(n)
    }

    // ---- reads ----

    /// One session's record.
    pub async fn get(&self, id: &str) -> Result<Option<SessionRow>, SessionError> {
        Ok(self.inner.store.session(id).await?)
    }

    /// Recent sessions, newest first; only `owner`'s when given.
    pub async fn list(
        &self,
        owner: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SessionRow>, SessionError> {
        Ok(self.inner.store.list_sessions(owner, limit).await?)
    }

    /// Sessions waiting for a decision.
    pub async fn pending(&self) -> Result<Vec<SessionRow>, SessionError> {
        Ok(self.inner.store.pending_sessions().await?)
    }

    /// Sessions a relay carries or carried (`active`, `terminating`): the cleanup job's input.
    pub async fn live_sessions(&self) -> Result<Vec<SessionRow>, SessionError> {
        Ok(self.inner.store.live_sessions().await?)
    }
}
