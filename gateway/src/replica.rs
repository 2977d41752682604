//! Identity and local, in-memory facts of this replica: its id and role, the drain bit, and the
//! relays it carries. Nothing here is durable: a replica can be lost and recycled freely.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

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

/// This replica.
#[derive(Debug)]
pub struct Replica {
    /// Stable id (pod name in Kubernetes).
    pub id: String,
    /// Served role.
    pub role: Role,
    draining: AtomicBool,
    relays: AtomicI64,
}

impl Replica {
    /// A replica that is not draining and carries nothing.
    pub fn new(id: impl Into<String>, role: Role) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            role,
            draining: AtomicBool::new(false),
            relays: AtomicI64::new(0),
        })
    }

    /// True once a drain started.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Sets the drain bit; returns whether it was already set (drains are idempotent).
    pub fn start_drain(&self) -> bool {
        self.draining.swap(true, Ordering::SeqCst)
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

/// Decrements the relay count on drop.
#[derive(Debug)]
pub struct RelayGuard(Arc<Replica>);

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.0.relays.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_guard_counts_and_drain_is_idempotent() {
        let r = Replica::new("r", Role::All);
        let g = r.relay_guard();
        assert_eq!(r.relays(), 1);
        drop(g);
        assert_eq!(r.relays(), 0);
        assert!(!r.start_drain());
        assert!(r.start_drain());
        assert!(r.draining());
    }
}
