//! Leased background jobs. Every replica competes for each job's lease in Redis (`SET NX PX`,
//! renewed and released only by the token that holds it); the holder runs the job. Leases are
//! short, so a dead holder is replaced within a TTL. A Sentinel failover can lose a lease key and
//! let two replicas hold it briefly, so every job is idempotent and fences its side effects in
//! Postgres with an epoch taken at acquisition.
//!
//! Jobs: `cleanup` ends sessions whose replica stopped heartbeating, or whose remote gateway
//! has been silent for longer than its offline grace (both `replica_lost`), and
//! authorisations that were never used (`expired`); `fanout` publishes the Postgres event outbox
//! (approval requests and decisions, session starts and ends) to the Redis stream every
//! replica's subscribers read, each event at most once (a fenced cursor); `manifests` signs the
//! manifests of ended sessions' recordings with the Ed25519 recording key, and runs only on
//! replicas given that key (never on relay-only pools).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::health::Heartbeat;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::replica::Replica;
use crate::store::{Store, now_ms};

/// Name (and fencing key) of the cleanup job.
pub const CLEANUP: &str = "cleanup";
/// Name (and fencing key) of the recording-manifest signing job.
pub const MANIFESTS: &str = "manifests";
/// Name (and fencing key) of the notification fan-out job.
pub const FANOUT: &str = "fanout";
/// Default for [`Jobs::max_hold`].
pub const MAX_HOLD: Duration = Duration::from_secs(300);
/// Events kept in the Redis stream for subscribers that fall behind (older ones are replayed
/// from Postgres).
pub const STREAM_LEN: usize = 10_000;

/// Settings of the job runner.
#[derive(Debug, Clone)]
pub struct Jobs {
    /// The session core (cleanup ends sessions through it).
    pub sessions: crate::session::Sessions,
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
    /// Recording storage (the manifest job runs only with it).
    pub recordings: Option<crate::recording::Recordings>,
    /// The internal keys (grants; recordings carry their own Ed25519 manifest key).
    pub keyring: crate::signing::Keyring,
    /// An ended recording without its end marker is signed as incomplete after this long.
    pub seal_after: Duration,
    /// A holder releases a lease after holding it this long (leadership rotates).
    pub max_hold: Duration,
}

impl Jobs {
    /// Competes for `job`'s lease forever, running its pass every `every` while holding it.
    pub async fn run(self, job: &'static str, every: Duration) {
        let key = format!("wg:lease:{job}");
        let token = format!("{}:{}", self.replica.id, uuid::Uuid::new_v4().simple());
        let mut held: Option<i64> = None;
        let mut last_run = Instant::now() - every;
        let mut tick = tokio::time::interval((self.lease_ttl / 3).min(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_renew = Instant::now();
        let mut held_since = Instant::now();
        let mut sit_out_until = Instant::now();
        loop {
            tick.tick().await;
            // Hand the lease over now and then, so leadership ticks across replicas and a
            // holder that is slow but alive does not keep a job forever.
            if let Some(epoch) = held
                && held_since.elapsed() >= self.max_hold
            {
                let _ = self.live.lease_release(&key, &token).await;
                self.metrics.leader_leases.dec();
                self.metrics
                    .lease_changes
                    .with_label_values(&[job, "released"])
                    .inc();
                self.metrics.job_lease_held.with_label_values(&[job]).set(0);
                tracing::info!(event = "lease_released", job, epoch, replica = %self.replica.id, "handing the lease over");
                held = None;
                sit_out_until = Instant::now() + self.lease_ttl;
            }
            if held.is_none() && Instant::now() < sit_out_until {
                continue;
            }
            held = match held {
                Some(epoch) if last_renew.elapsed() < self.lease_ttl / 3 => Some(epoch),
                Some(epoch) => match self.live.lease_renew(&key, &token, self.lease_ttl).await {
                    Ok(true) => {
                        last_renew = Instant::now();
                        Some(epoch)
                    }
                    other => {
                        self.metrics.leader_leases.dec();
                        self.metrics
                            .lease_changes
                            .with_label_values(&[job, "lost"])
                            .inc();
                        self.metrics.job_lease_held.with_label_values(&[job]).set(0);
                        tracing::warn!(event = "lease_lost", job, epoch, error = ?other.err(), "lease lost");
                        None
                    }
                },
                None => match self.live.lease_acquire(&key, &token, self.lease_ttl).await {
                    Ok(true) => match self.store.fence_job(job, &self.replica.id).await {
                        Ok(epoch) => {
                            last_renew = Instant::now();
                            held_since = Instant::now();
                            self.metrics.leader_leases.inc();
                            self.metrics
                                .lease_changes
                                .with_label_values(&[job, "acquired"])
                                .inc();
                            self.metrics.job_lease_held.with_label_values(&[job]).set(1);
                            tracing::info!(event = "lease_acquired", job, epoch, replica = %self.replica.id);
                            Some(epoch)
                        }
                        Err(e) => {
                            tracing::warn!(job, error = %e, "cannot fence the job; releasing its lease");
                            let _ = self.live.lease_release(&key, &token).await;
                            None
                        }
                    },
                    _ => None,
                },
            };
            if let Some(epoch) = held
                && last_run.elapsed() >= every
            {
                last_run = Instant::now();
                let r = match job {
                    CLEANUP => self.cleanup(epoch).await,
                    FANOUT => self.fanout(epoch).await.map(|_| ()),
                    MANIFESTS => self.sign_manifests(epoch).await.map(|_| ()),
                    _ => Ok(()),
                };
                if let Err(e) = r {
                    tracing::warn!(job, error = %e, "job pass failed; retrying next tick");
                }
            }
        }
    }

    /// One manifest pass under fencing epoch `epoch`: every ended session whose recording is
    /// complete in object storage (or whose replica never finished it, after the grace) gets a
    /// signed manifest, claimed in Postgres first so it is signed once. Returns how many.
    pub async fn sign_manifests(
        &self,
        epoch: i64,
    ) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let Some(rec) = &self.recordings else {
            return Ok(0);
        };
        let mut signed = 0;
        for r in self.store.unsigned_recordings().await? {
            let finished = rec.has_end(&r.session_id).await?;
            let overdue = now_ms() - r.ended_at >= self.seal_after.as_millis() as i64;
            if !finished && !overdue {
                continue;
            }
            let manifest = rec.manifest(&r.session_id).await?;
            let Some((doc, sha)) =
                crate::recording::Recordings::signed_document(&manifest, rec.manifest_keys())
            else {
                // Only replicas given the recording key run this job (see `spawn_jobs`).
                return Ok(signed);
            };
            if !self
                .store
                .claim_signature(&r.session_id, &sha, manifest.complete, MANIFESTS, epoch)
                .await?
            {
                continue;
            }
            rec.put_manifest(&r.session_id, doc).await?;
            self.metrics.manifests_signed.inc();
            signed += 1;
            tracing::info!(event = "recording_signed", session = %r.session_id, complete = manifest.complete, objects = manifest.objects.len(), epoch);
        }
        Ok(signed)
    }

    /// One fan-out pass under fencing epoch `epoch`: claims the next outbox events by moving
    /// the job's cursor (only a current epoch can), then publishes them. Returns how many.
    pub async fn fanout(
        &self,
        epoch: i64,
    ) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let from = self.store.cursor(FANOUT).await?;
        let events = self.store.events_after(from, 200).await?;
        let Some(last) = events.last() else {
            return Ok(0);
        };
        if !self
            .store
            .advance_cursor(FANOUT, from, last.id, epoch)
            .await?
        {
            // Fenced out (a newer holder) or raced: not ours to publish.
            return Ok(0);
        }
        for e in &events {
            let doc = crate::event_seal::seal(&self.keyring, e)?;
            self.live
                .stream_add(crate::live::EVENTS_STREAM, &doc, STREAM_LEN)
                .await?;
        }
        self.metrics.events_published.inc_by(events.len() as u64);
        Ok(events.len())
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
        // Remote gateways' sessions end by their events over the agent link (after the link's
        // offline grace at the latest), never by a control-plane replica's heartbeat — unless
        // the gateway has been silent for longer than it said its sessions outlive a lost link
        // (plus `lost_after`): it died or never came back, and its sessions are `replica_lost`.
        // Should it return and report them ended, that changes nothing (recorded once).
        let margin = i64::try_from(self.lost_after.as_millis()).unwrap_or(i64::MAX);
        let gateways: HashMap<String, bool> = self
            .store
            .list_gateways()
            .await?
            .into_iter()
            .map(|g| {
                let gone = crate::session::gateway_gone(&g, now, margin);
                (g.id, gone)
            })
            .collect();
        for s in self.sessions.live_sessions().await? {
            let Some(replica) = s.replica.as_deref() else {
                continue;
            };
            if let Some(&gone) = gateways.get(replica) {
                if gone {
                    self.sessions
                        .mark_lost(&s.id, replica, CLEANUP, epoch)
                        .await?;
                }
                continue;
            }
            let started_long_ago = s.started_at.unwrap_or(s.created_at) < cutoff;
            if !alive.contains(replica) && started_long_ago {
                self.sessions
                    .mark_lost(&s.id, replica, CLEANUP, epoch)
                    .await?;
            }
        }
        self.sessions.expire_unused(CLEANUP, epoch).await?;
        Ok(())
    }
}
