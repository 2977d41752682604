//! Leased background jobs. Every replica competes for each job's lease in Redis (`SET NX PX`,
//! renewed and released only by the token that holds it); the holder runs the job. Leases are
//! short, so a dead holder is replaced within a TTL. A Sentinel failover can lose a lease key and
//! let two replicas hold it briefly, so every job is idempotent and fences its side effects in
//! Postgres with an epoch taken at acquisition.
//!
//! Jobs: `cleanup` ends sessions whose replica stopped heartbeating (`replica_lost`) and
//! authorisations that were never used (`expired`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::grant::AUTHORIZED_TTL_MS;
use crate::health::Heartbeat;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::replica::Replica;
use crate::store::{Store, now_ms};

/// Name (and fencing key) of the cleanup job.
pub const CLEANUP: &str = "cleanup";

/// Settings of the job runner.
#[derive(Debug, Clone)]
pub struct Jobs {
    /// Durable store.
    pub store: Store,
    /// Live store (leases, heartbeats).
    pub live: Live,
    /// This replica.
    pub replica: Arc<Replica>,
    /// Metrics (`wg_leader_leases_gauge`).
    pub metrics: Metrics,
    /// Lease lifetime; renewed every third of it.
    pub lease_ttl: Duration,
    /// How often the holder runs the job.
    pub every: Duration,
    /// A replica whose heartbeat is older than this is gone; its sessions end as `replica_lost`.
    pub lost_after: Duration,
}

impl Jobs {
    /// Competes for the cleanup lease forever, running the job while holding it.
    pub async fn run_cleanup(self) {
        let key = format!("wg:lease:{CLEANUP}");
        let token = format!("{}:{}", self.replica.id, uuid::Uuid::new_v4().simple());
        let mut held: Option<i64> = None;
        let mut last_run = Instant::now() - self.every;
        let mut tick = tokio::time::interval(self.lease_ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            held = match held {
                Some(epoch) => match self.live.lease_renew(&key, &token, self.lease_ttl).await {
                    Ok(true) => Some(epoch),
                    other => {
                        self.metrics.leader_leases.dec();
                        tracing::warn!(event = "lease_lost", job = CLEANUP, epoch, error = ?other.err(), "lease lost");
                        None
                    }
                },
                None => match self.live.lease_acquire(&key, &token, self.lease_ttl).await {
                    Ok(true) => match self.store.fence_job(CLEANUP, &self.replica.id).await {
                        Ok(epoch) => {
                            self.metrics.leader_leases.inc();
                            tracing::info!(event = "lease_acquired", job = CLEANUP, epoch, replica = %self.replica.id);
                            Some(epoch)
                        }
                        Err(e) => {
                            tracing::warn!(job = CLEANUP, error = %e, "cannot fence the job; releasing its lease");
                            let _ = self.live.lease_release(&key, &token).await;
                            None
                        }
                    },
                    _ => None,
                },
            };
            if let Some(epoch) = held
                && last_run.elapsed() >= self.every
            {
                last_run = Instant::now();
                if let Err(e) = self.cleanup(epoch).await {
                    tracing::warn!(job = CLEANUP, error = %e, "cleanup pass failed; retrying next tick");
                }
            }
        }
    }

    /// One cleanup pass under fencing epoch `epoch`.
    pub async fn cleanup(
        &self,
        epoch: i64,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let now = now_ms();
        let cutoff = now - self.lost_after.as_millis() as i64;
        let alive: HashSet<String> = self
            .live
            .heartbeats()
            .await?
            .into_iter()
            .filter(|(_, doc)| {
                serde_json::from_str::<Heartbeat>(doc).is_ok_and(|h| h.at_ms >= cutoff)
            })
            .map(|(id, _)| id)
            .collect();
        for s in self.store.live_sessions().await? {
            let Some(replica) = s.replica.as_deref() else {
                continue;
            };
            let started_long_ago = s.started_at.unwrap_or(s.created_at) < cutoff;
            if !alive.contains(replica)
                && started_long_ago
                && self
                    .store
                    .end_lost_session(&s.id, replica, CLEANUP, epoch)
                    .await?
            {
                self.metrics
                    .relays_ended
                    .with_label_values(&["replica_lost"])
                    .inc();
                tracing::warn!(event = "session_replica_lost", session = %s.id, replica, epoch);
            }
        }
        let expired = self
            .store
            .expire_unused_sessions(now - AUTHORIZED_TTL_MS, CLEANUP, epoch)
            .await?;
        if expired > 0 {
            tracing::info!(event = "sessions_expired", count = expired, epoch);
        }
        Ok(())
    }
}
