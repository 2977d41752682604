//! Targets recently read by the one-request relay, so a session to a target used in the last
//! [`TARGET_CACHE_TTL`] starts with one Postgres statement instead of two.
//!
//! A cached target is never trusted: the statement that starts the session re-checks, in the
//! same transaction, that the target still exists with the same id, host and port, needs no
//! approval and has no region (see `Store::start_direct_session`). A stale entry therefore
//! costs a refused insert and a fresh read, never a session the current target would refuse.
//! Only targets a direct session may use are cached (an unknown name, or one that needs an
//! approver or has a region, is read every time: a refusal is never stale, a new target works at
//! once, and made-up names cannot fill the cache).

use std::time::Duration;

use crate::store::TargetRow;
use crate::ttl_map::TtlMap;

/// How long a target read is reused: the same bound as the token cache.
pub const TARGET_CACHE_TTL: Duration = Duration::from_secs(2);

/// Most targets remembered at once; beyond it, expired entries go, then everything.
pub const TARGET_CACHE_MAX: usize = 4096;

/// Target name → row, for [`TARGET_CACHE_TTL`].
#[derive(Debug)]
pub(super) struct TargetCache(TtlMap<TargetRow>);

impl Default for TargetCache {
    fn default() -> Self {
        Self(TtlMap::new(TARGET_CACHE_TTL, TARGET_CACHE_MAX))
    }
}

impl TargetCache {
    /// The row cached for `name`, unless older than [`TARGET_CACHE_TTL`].
    pub(super) fn get(&self, name: &str) -> Option<TargetRow> {
        self.0.get(name)
    }

    /// Remembers a row just read.
    pub(super) fn put(&self, row: TargetRow) {
        self.0.put(row.name.clone(), row);
    }

    /// Forgets `name` (its cached row was refused by the store).
    pub(super) fn forget(&self, name: &str) {
        self.0.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, port: i64) -> TargetRow {
        TargetRow {
            id: format!("id-{name}"),
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            require_approval: 0,
            created_at: 0,
            region: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_lapse_after_the_ttl_and_can_be_forgotten() {
        let c = TargetCache::default();
        assert!(c.get("db").is_none());
        c.put(row("db", 5432));
        assert_eq!(c.get("db").map(|r| r.port), Some(5432));
        c.put(row("db", 5433));
        assert_eq!(c.get("db").map(|r| r.port), Some(5433), "a new read wins");
        tokio::time::advance(TARGET_CACHE_TTL).await;
        assert!(c.get("db").is_none(), "lapsed");
        c.put(row("db", 5432));
        c.forget("db");
        assert!(c.get("db").is_none(), "forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_lapsed_entries_then_everything() {
        let c = TargetCache::default();
        for i in 0..TARGET_CACHE_MAX {
            c.put(row(&format!("t{i}"), 22));
        }
        tokio::time::advance(TARGET_CACHE_TTL).await;
        c.put(row("fresh", 22));
        assert_eq!(c.0.len(), 1, "lapsed entries went");
        for i in 0..TARGET_CACHE_MAX {
            c.put(row(&format!("u{i}"), 22));
        }
        assert!(c.0.len() <= TARGET_CACHE_MAX);
    }
}
