//! Identity and local, in-memory facts of this replica: its id and role, the drain state, and
//! the relays it carries. Nothing here is durable: a replica can be lost and recycled freely.
//!
//! Drain: [`Replica::begin_drain`] flips the drain bit (readiness fails, new relays get 503) and
//! sets an eviction window; [`Replica::wait_drained`] returns once every owned relay has ended,
//! or at the window's end tells the remaining relays to close with a recoverable error and
//! waits (bounded) for them to go.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

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
}

impl Replica {
    /// A replica that is not draining and carries nothing.
    pub fn new(id: impl Into<String>, role: Role) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            role,
            draining: AtomicBool::new(false),
            relays: AtomicI64::new(0),
            relay_ended: Notify::new(),
            deadline: Mutex::new(None),
            evict: watch::channel(false).0,
        })
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

    /// Counts a relay for as long as the guard lives.
    pub fn relay_guard(self: &Arc<Self>) -> RelayGuard {
        self.relays.fetch_add(1, Ordering::SeqCst);
        RelayGuard(self.clone())
    }
}

/// Decrements the relay count on drop and wakes drain waiters.
#[derive(Debug)]
pub struct RelayGuard(Arc<Replica>);

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.0.relays.fetch_sub(1, Ordering::SeqCst);
        self.0.relay_ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_without_sessions_returns_at_once() {
        let r = Replica::new("r", Role::All);
        let d = r.begin_drain(Duration::from_secs(60));
        assert!(r.draining());
        assert_eq!(r.wait_drained(d).await, DrainOutcome::Drained);
    }

    #[tokio::test]
    async fn drain_waits_for_sessions_to_end_by_themselves() {
        let r = Replica::new("r", Role::All);
        let g = r.relay_guard();
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
        let r = Replica::new("r", Role::All);
        let g = r.relay_guard();
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
        let r = Replica::new("r", Role::All);
        let a = r.begin_drain(Duration::from_secs(10));
        let b = r.begin_drain(Duration::from_secs(600));
        assert_eq!(a, b);
        let c = r.begin_drain(Duration::from_secs(1));
        assert!(c < a);
    }
}
