//! Background health checking and the liveness decision.
//!
//! A checker task pings Postgres and Redis every interval, records the Postgres round trip,
//! publishes this replica's heartbeat through Redis and reads its peers'. Handlers never call a
//! dependency inline: `/healthz` and `/readyz` read [`HealthState`].
//!
//! Liveness ([`decide`]) fails only when the replica is *isolated*: Postgres unreachable for
//! longer than the isolation grace while peers still reach it, or neither Postgres nor Redis
//! reachable for longer than the grace. A brief hiccup never fails it, and an outage of Postgres
//! that hits every replica fails readiness but not liveness, so the fleet does not restart-loop.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::live::Live;
use crate::metrics::Metrics;
use crate::store::{Store, now_ms};

/// What one check cycle observed, as kept between cycles.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// When Postgres last answered; `None` if it never did.
    pub db_last_ok: Option<Instant>,
    /// When Postgres started failing (cleared by a success).
    pub db_failing_since: Option<Instant>,
    /// Last Postgres error.
    pub db_error: Option<String>,
    /// Last Postgres round trip.
    pub db_roundtrip: Option<Duration>,
    /// When Redis started failing (cleared by a success).
    pub redis_failing_since: Option<Instant>,
    /// Last Redis error.
    pub redis_error: Option<String>,
    /// Peers whose recent heartbeat says they reach Postgres.
    pub peers_reaching_db: usize,
    /// Peers with a recent heartbeat.
    pub peers_alive: usize,
    /// When the checker last completed a cycle.
    pub checked_at: Option<Instant>,
}

/// The liveness verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Serve; keep me.
    Live,
    /// Cut off from the dependencies others reach: restart me / pull me from the LB.
    Isolated(String),
}

/// Pure liveness rule; see the module docs.
pub fn decide(obs: &Observations, now: Instant, grace: Duration) -> Liveness {
    let longer_than_grace =
        |since: Option<Instant>| since.is_some_and(|s| now.duration_since(s) > grace);
    let db_down = longer_than_grace(obs.db_failing_since);
    let redis_down = longer_than_grace(obs.redis_failing_since);
    if db_down && obs.peers_reaching_db > 0 {
        return Liveness::Isolated(format!(
            "postgres unreachable for more than {grace:?} while {} peer(s) reach it",
            obs.peers_reaching_db
        ));
    }
    if db_down && redis_down {
        return Liveness::Isolated(format!(
            "neither postgres nor redis reachable for more than {grace:?}"
        ));
    }
    Liveness::Live
}

/// A replica's heartbeat as published in Redis.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Heartbeat {
    /// Unix ms of publication.
    pub at_ms: i64,
    /// Whether this replica reached Postgres in its last cycle.
    pub db_ok: bool,
    /// Whether it is draining.
    pub draining: bool,
    /// Relays it carries.
    pub sessions: i64,
}

/// Shared, cheaply readable health state.
#[derive(Debug)]
pub struct HealthState {
    obs: RwLock<Observations>,
    grace: Duration,
    isolated_tx: watch::Sender<bool>,
}

impl HealthState {
    /// New state; `grace` is the isolation grace.
    pub fn new(grace: Duration) -> Arc<Self> {
        let (isolated_tx, _) = watch::channel(false);
        Arc::new(Self {
            obs: RwLock::new(Observations::default()),
            grace,
            isolated_tx,
        })
    }

    /// How long a dependency may fail before it counts (isolation, readiness).
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// A copy of the latest observations.
    pub fn observations(&self) -> Observations {
        self.obs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The liveness verdict now.
    pub fn liveness(&self) -> Liveness {
        decide(&self.observations(), Instant::now(), self.grace)
    }

    /// Flips to `true` while the replica is isolated; relays watch it to disconnect.
    pub fn isolated(&self) -> watch::Receiver<bool> {
        self.isolated_tx.subscribe()
    }

    fn update(&self, f: impl FnOnce(&mut Observations)) {
        let mut g = self.obs.write().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
    }
}

/// Everything the checker needs.
#[derive(Debug, Clone)]
pub struct Checker {
    /// Durable store.
    pub store: Store,
    /// Live store.
    pub live: Live,
    /// Metrics to update.
    pub metrics: Metrics,
    /// Where results go.
    pub state: Arc<HealthState>,
    /// Cycle length.
    pub interval: Duration,
    /// Drain bit and relay count for the heartbeat.
    pub replica_state: Arc<crate::replica::Replica>,
}

impl Checker {
    /// Runs one cycle.
    pub async fn cycle(&self) {
        let now = Instant::now();
        let db = self.store.ping().await;
        if let Ok(rt) = &db {
            self.metrics.db_roundtrip.observe(rt.as_secs_f64());
        }
        let redis = self.live.ping().await;
        let (draining, sessions) = (self.replica_state.draining(), self.replica_state.relays());
        let hb = Heartbeat {
            at_ms: now_ms(),
            db_ok: db.is_ok(),
            draining,
            sessions,
        };
        let mut peers = (0, 0);
        if redis.is_ok() {
            let doc = serde_json::to_string(&hb).unwrap_or_default();
            let _ = self.live.heartbeat(&self.replica_state.id, &doc).await;
            if let Ok(all) = self.live.heartbeats().await {
                peers = count_peers(&self.replica_state.id, &all, now_ms(), self.interval * 3);
                self.forget_departed(&all).await;
            }
        }
        self.state.update(|o| {
            match &db {
                Ok(rt) => {
                    o.db_last_ok = Some(now);
                    o.db_failing_since = None;
                    o.db_error = None;
                    o.db_roundtrip = Some(*rt);
                }
                Err(e) => {
                    o.db_failing_since.get_or_insert(now);
                    o.db_error = Some(e.to_string());
                }
            }
            match &redis {
                Ok(_) => {
                    o.redis_failing_since = None;
                    o.redis_error = None;
                }
                Err(e) => {
                    o.redis_failing_since.get_or_insert(now);
                    o.redis_error = Some(e.to_string());
                }
            }
            // Without Redis we cannot see peers: keep the last count (the isolation rule for
            // "both down" covers that case).
            if redis.is_ok() {
                (o.peers_alive, o.peers_reaching_db) = peers;
            }
            o.checked_at = Some(now);
        });
        let live = self.state.liveness();
        let isolated = matches!(live, Liveness::Isolated(_));
        self.metrics.replica_up.set(i64::from(!isolated));
        let changed = self
            .state
            .isolated_tx
            .send_if_modified(|v| std::mem::replace(v, isolated) != isolated);
        if changed {
            match &live {
                Liveness::Isolated(why) => {
                    tracing::error!(event = "replica_isolated", reason = %why, "replica isolated")
                }
                Liveness::Live => {
                    tracing::info!(event = "replica_recovered", "replica no longer isolated")
                }
            }
        }
    }

    /// Drops heartbeats older than an hour (replicas that went away for good).
    async fn forget_departed(&self, all: &std::collections::HashMap<String, String>) {
        let cutoff = now_ms() - 3_600_000;
        for (id, doc) in all {
            if serde_json::from_str::<Heartbeat>(doc).is_ok_and(|h| h.at_ms < cutoff) {
                let _ = self.live.forget_replica(id).await;
            }
        }
    }

    /// Runs cycles forever.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.cycle().await;
        }
    }
}

/// (peers alive, peers reaching Postgres) among heartbeats fresher than `max_age`, excluding `me`.
pub fn count_peers(
    me: &str,
    all: &std::collections::HashMap<String, String>,
    now_ms: i64,
    max_age: Duration,
) -> (usize, usize) {
    let fresh: Vec<Heartbeat> = all
        .iter()
        .filter(|(id, _)| id.as_str() != me)
        .filter_map(|(_, doc)| serde_json::from_str::<Heartbeat>(doc).ok())
        .filter(|h| now_ms - h.at_ms <= max_age.as_millis() as i64)
        .collect();
    (fresh.len(), fresh.iter().filter(|h| h.db_ok).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn obs(
        db_down_for: Option<u64>,
        redis_down_for: Option<u64>,
        peers_db: usize,
        now: Instant,
    ) -> Observations {
        Observations {
            db_failing_since: db_down_for.map(|s| now - Duration::from_secs(s)),
            redis_failing_since: redis_down_for.map(|s| now - Duration::from_secs(s)),
            peers_reaching_db: peers_db,
            ..Default::default()
        }
    }

    #[test]
    fn healthy_and_brief_hiccups_stay_live() {
        let now = Instant::now();
        assert_eq!(decide(&obs(None, None, 2, now), now, GRACE), Liveness::Live);
        assert_eq!(
            decide(&obs(Some(5), None, 2, now), now, GRACE),
            Liveness::Live,
            "hiccup within grace"
        );
        assert_eq!(
            decide(&obs(Some(9), Some(9), 0, now), now, GRACE),
            Liveness::Live
        );
    }

    #[test]
    fn isolated_when_peers_reach_postgres_and_we_do_not() {
        let now = Instant::now();
        assert!(
            matches!(decide(&obs(Some(11), None, 1, now), now, GRACE), Liveness::Isolated(m) if m.contains("1 peer"))
        );
    }

    #[test]
    fn fleet_wide_postgres_outage_does_not_fail_liveness() {
        let now = Instant::now();
        assert_eq!(
            decide(&obs(Some(600), None, 0, now), now, GRACE),
            Liveness::Live
        );
    }

    #[test]
    fn neither_dependency_reachable_is_isolation() {
        let now = Instant::now();
        assert!(
            matches!(decide(&obs(Some(11), Some(11), 0, now), now, GRACE), Liveness::Isolated(m) if m.contains("neither"))
        );
    }

    #[test]
    fn peers_count_only_fresh_heartbeats_of_others() {
        let hb = |at_ms, db_ok| {
            serde_json::to_string(&Heartbeat {
                at_ms,
                db_ok,
                draining: false,
                sessions: 0,
            })
            .unwrap()
        };
        let all = [
            ("me".to_string(), hb(1000, true)),
            ("a".to_string(), hb(1000, true)),
            ("b".to_string(), hb(1000, false)),
            ("stale".to_string(), hb(1, true)),
            ("junk".to_string(), "{".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            count_peers("me", &all, 1500, Duration::from_secs(1)),
            (2, 1)
        );
    }
}
