//! Identity and local, in-memory facts of this replica: its id and role, the drain state, and
//! the relays it carries. Nothing here is durable: a replica can be lost and recycled freely.
//!
//! Drain: [`Replica::drain`] is the one drain path (SIGTERM, the API and the local admin socket
//! all call it). [`Replica::begin_drain`] flips the drain bit (readiness fails, new relays get 503) and
//! sets an eviction window; [`Replica::wait_drained`] returns once every owned relay has ended,
//! or at the window's end tells the remaining relays to close with a recoverable error and
//! waits (bounded) for them to go.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::metrics::{Metrics, ModeGuard, SessionMode};

/// Which parts of the product this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Session API, tokens, targets, approvals, background jobs.
    ControlPlane,
    /// Relays only.
    Gateway,
    /// Both (the default; most topologies run one replica set for both).
    All,
}

impl Role {
    /// Serves the session API.
    pub fn has_api(self) -> bool {
        matches!(self, Role::ControlPlane | Role::All)
    }

    /// Carries relays.
    pub fn has_relay(self) -> bool {
        matches!(self, Role::Gateway | Role::All)
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainOutcome {
    /// Every owned session ended by itself within the window.
    Drained,
    /// The window passed; this many sessions were closed with a recoverable error.
    Evicted(i64),
}

impl DrainOutcome {
    /// The `wg_drains_total` outcome label.
    pub fn label(self) -> &'static str {
        match self {
            DrainOutcome::Drained => "drained",
            DrainOutcome::Evicted(_) => "evicted",
        }
    }
}

impl std::fmt::Display for DrainOutcome {
    /// `drained` or `evicted=N`: the drain outcome header and log field.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainOutcome::Drained => f.write_str("drained"),
            DrainOutcome::Evicted(n) => write!(f, "evicted={n}"),
        }
    }
}

/// How long a drain lets owned sessions continue when nobody says otherwise: the chart's 300 s
/// termination grace minus margins for the preStop hook and the shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(270);
/// [`DEFAULT_DRAIN_TIMEOUT`] as the `--drain-timeout`/`--timeout` flags spell it.
pub const DEFAULT_DRAIN_TIMEOUT_FLAG: &str = "270s";

/// How long evicted relays get to close before the drain reports anyway.
const EVICTION_GRACE: Duration = Duration::from_secs(10);

/// This replica.
#[derive(Debug)]
pub struct Replica {
    /// Stable id (pod name in Kubernetes).
    pub id: String,
    /// Served role.
    pub role: Role,
    draining: AtomicBool,
    relays: AtomicI64,
    relay_ended: Notify,
    deadline: Mutex<Option<Instant>>,
    evict: watch::Sender<bool>,
    metrics: Metrics,
}

impl Replica {
    /// A replica that is not draining and carries nothing; drains are counted in `metrics`.
    pub fn new(id: impl Into<String>, role: Role, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            role,
            draining: AtomicBool::new(false),
            relays: AtomicI64::new(0),
            relay_ended: Notify::new(),
            deadline: Mutex::new(None),
            evict: watch::channel(false).0,
            metrics,
        })
    }

    /// Drains this replica: readiness fails at once and new relays are refused; returns when
    /// every owned session has ended, or when `timeout` passed and the rest were told to close
    /// with a recoverable error. Idempotent: a second call joins the running drain (the earlier
    /// deadline wins). Counted in `wg_draining` and `wg_drains_total{outcome}`.
    pub async fn drain(&self, timeout: Duration) -> DrainOutcome {
        let deadline = self.begin_drain(timeout);
        self.metrics.draining.set(1);
        let outcome = self.wait_drained(deadline).await;
        self.metrics
            .drains
            .with_label_values(&[outcome.label()])
            .inc();
        outcome
    }

    /// True once a drain started.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts a drain (idempotent): sets the drain bit and an eviction window of `timeout`. A
    /// second drain joins the first; the earlier deadline wins. Returns the deadline.
    pub fn begin_drain(&self, timeout: Duration) -> Instant {
        let first = !self.draining.swap(true, Ordering::SeqCst);
        let mut d = self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        let proposed = Instant::now() + timeout;
        let deadline = d.map_or(proposed, |existing| existing.min(proposed));
        *d = Some(deadline);
        if first {
            tracing::info!(event = "drain_started", replica = %self.id, timeout = ?timeout, sessions = self.relays());
        }
        deadline
    }

    /// Time left in the eviction window, while draining.
    pub fn drain_remaining(&self) -> Option<Duration> {
        let d = *self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        d.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Waits until every owned relay has ended, or evicts the rest at `deadline`.
    pub async fn wait_drained(&self, deadline: Instant) -> DrainOutcome {
        if self.wait_empty(deadline).await {
            tracing::info!(event = "drain_complete", replica = %self.id);
            return DrainOutcome::Drained;
        }
        let remaining = self.relays();
        tracing::warn!(event = "drain_evicting", replica = %self.id, sessions = remaining);
        self.evict.send_replace(true);
        self.wait_empty(Instant::now() + EVICTION_GRACE).await;
        DrainOutcome::Evicted(remaining)
    }

    /// Waits until no relay is left (true) or `until` passes (false).
    async fn wait_empty(&self, until: Instant) -> bool {
        loop {
            // Register before checking, so an end between the check and the wait is not missed.
            let ended = self.relay_ended.notified();
            if self.relays() == 0 {
                return true;
            }
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep_until(until) => return self.relays() == 0,
            }
        }
    }

    /// Flips to `true` when relays must close because the drain window passed.
    pub fn evictions(&self) -> watch::Receiver<bool> {
        self.evict.subscribe()
    }

    /// Relays carried now.
    pub fn relays(&self) -> i64 {
        self.relays.load(Ordering::SeqCst)
    }

    /// Counts a session of `mode` for as long as the guard lives: in the drain count, in
    /// `wg_sessions_active` and in the per-mode metrics (the one place every front end calls).
    pub fn relay_guard(self: &Arc<Self>, mode: SessionMode) -> RelayGuard {
        self.relays.fetch_add(1, Ordering::SeqCst);
        let mode = self.metrics.session_of(mode);
        self.metrics.sessions_active.set(self.relays());
        RelayGuard {
            replica: self.clone(),
            _mode: mode,
        }
    }
}

/// Decrements the relay count (and `wg_sessions_active`) on drop and wakes drain waiters.
#[derive(Debug)]
pub struct RelayGuard {
    replica: Arc<Replica>,
    _mode: ModeGuard,
}

impl Drop for RelayGuard {
    fn drop(&mut self) {
        let r = &self.replica;
        r.relays.fetch_sub(1, Ordering::SeqCst);
        r.metrics.sessions_active.set(r.relays());
        r.relay_ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_without_sessions_returns_at_once() {
        let r = Replica::new("r", Role::All, Metrics::new("t"));
        let d = r.begin_drain(Duration::from_secs(60));
        assert!(r.draining());
        assert_eq!(r.wait_drained(d).await, DrainOutcome::Drained);
    }

    #[tokio::test]
    async fn drain_waits_for_sessions_to_end_by_themselves() {
        let r = Replica::new("r", Role::All, Metrics::new("t"));
        let g = r.relay_guard(SessionMode::Relay);
        let d = r.begin_drain(Duration::from_secs(60));
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait_drained(d).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "drain returned while a session was live"
        );
        drop(g);
        assert_eq!(waiter.await.unwrap(), DrainOutcome::Drained);
        assert!(!*r.evictions().borrow(), "nothing should have been evicted");
    }

    #[tokio::test(start_paused = true)]
    async fn window_end_evicts_the_rest() {
        let r = Replica::new("r", Role::All, Metrics::new("t"));
        let g = r.relay_guard(SessionMode::Relay);
        let mut ev = r.evictions();
        let d = r.begin_drain(Duration::from_secs(5));
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait_drained(d).await }
        });
        ev.changed().await.unwrap();
        assert!(*ev.borrow());
        drop(g); // the relay reacts to the eviction and ends
        assert_eq!(waiter.await.unwrap(), DrainOutcome::Evicted(1));
    }

    #[tokio::test]
    async fn second_drain_joins_the_first_and_keeps_the_earlier_deadline() {
        let r = Replica::new("r", Role::All, Metrics::new("t"));
        let a = r.begin_drain(Duration::from_secs(10));
        let b = r.begin_drain(Duration::from_secs(600));
        assert_eq!(a, b);
        let c = r.begin_drain(Duration::from_secs(1));
        assert!(c < a);
    }

    #[tokio::test]
    async fn drain_counts_every_caller_the_same_way() {
        let m = Metrics::new("t");
        let r = Replica::new("r", Role::All, m.clone());
        assert_eq!(r.drain(Duration::from_secs(5)).await, DrainOutcome::Drained);
        assert_eq!(m.draining.get(), 1);
        assert_eq!(m.drains.with_label_values(&["drained"]).get(), 1);
        let g = r.relay_guard(SessionMode::Relay);
        let evict = tokio::spawn({
            let r = r.clone();
            async move { r.drain(Duration::from_millis(50)).await }
        });
        let mut ev = r.evictions();
        ev.wait_for(|e| *e).await.unwrap();
        drop(g);
        let outcome = evict.await.unwrap();
        assert_eq!(outcome.to_string(), "evicted=1");
        assert_eq!(m.drains.with_label_values(&["evicted"]).get(), 1);
    }

    #[test]
    fn the_default_drain_flag_says_the_default_drain_timeout() {
        assert_eq!(
            humantime::parse_duration(DEFAULT_DRAIN_TIMEOUT_FLAG).unwrap(),
            DEFAULT_DRAIN_TIMEOUT
        );
    }
}
