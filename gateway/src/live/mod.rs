//! Live, ephemeral state shared by every replica: signed session grants keyed by session id, and
//! replica heartbeats. Redis (standalone, Sentinel or Cluster) in production; an in-process map
//! for `wardengate dev`. Every value stored here about a session is signed by the caller
//! ([`crate::signing`]); this layer only moves strings.

mod memory;
mod redis;

use std::collections::HashMap;
use std::time::Duration;

pub use self::memory::MemoryLive;
pub use self::redis::RedisLive;

/// Key of a session's signed grant.
pub fn session_key(id: &str) -> String {
    format!("wg:session:{id}")
}

/// Stream of a live terminated SSH session's cast, published by the replica carrying it and
/// read by watchers on any replica ([`crate::ssh::live_cast`]).
pub fn watch_key(id: &str) -> String {
    format!("wg:watch:{id}")
}

/// The current cast header of a watched session (kept apart from the bounded stream, so a late
/// watcher always gets it).
pub fn watch_header_key(id: &str) -> String {
    format!("wg:watch:{id}:header")
}

/// Stream the fan-out job publishes events to, and every replica's event subscribers read.
pub const EVENTS_STREAM: &str = "wg:events";

/// Hash holding one heartbeat field per replica.
pub const HEARTBEATS_KEY: &str = "wg:replicas";

/// Failures of the live store.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Redis is unreachable or timed out: sessions cannot start; retry later.
    #[error("session state store unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error.
    #[error("session state store error: {0}")]
    Command(String),
}

/// Outcome of [`Live::compare_and_set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The key held the expected value and now holds the new one.
    Swapped,
    /// The key held something else (or nothing): what it holds now, unchanged.
    Current(Option<String>),
}

/// The live store in use.
#[derive(Debug, Clone)]
pub enum Live {
    /// Redis in any topology.
    Redis(RedisLive),
    /// In-process (dev).
    Memory(MemoryLive),
}

impl Live {
    /// Stores `value` at `key` for `ttl`.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), LiveError> {
        match self {
            Live::Redis(r) => r.set(key, value, ttl).await,
            Live::Memory(m) => {
                m.set(key, value, ttl);
                Ok(())
            }
        }
    }

    /// Replaces `key` with `value` (for `ttl`) only if it still holds `expected`, atomically:
    /// a writer that lost a race (a terminate landing between a read and a write) is never
    /// overwritten.
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Swap, LiveError> {
        match self {
            Live::Redis(r) => r.compare_and_set(key, expected, value, ttl).await,
            Live::Memory(m) => Ok(m.compare_and_set(key, expected, value, ttl)),
        }
    }

    /// Reads `key`.
    pub async fn get(&self, key: &str) -> Result<Option<String>, LiveError> {
        match self {
            Live::Redis(r) => r.get(key).await,
            Live::Memory(m) => Ok(m.get(key)),
        }
    }

    /// Extends the lifetime of `key` without changing it; false if it does not exist.
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, LiveError> {
        match self {
            Live::Redis(r) => r.expire(key, ttl).await,
            Live::Memory(m) => Ok(m.expire(key, ttl)),
        }
    }

    /// Takes the lease `key` for `token` if nobody holds it (`SET NX PX`).
    pub async fn lease_acquire(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, LiveError> {
        match self {
            Live::Redis(r) => r.lease_acquire(key, token, ttl).await,
            Live::Memory(m) => Ok(m.set_nx(key, token, ttl)),
        }
    }

    /// Extends the lease if `token` still holds it (checked and extended atomically).
    pub async fn lease_renew(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, LiveError> {
        match self {
            Live::Redis(r) => r.lease_renew(key, token, ttl).await,
            Live::Memory(m) => Ok(m.get(key).as_deref() == Some(token) && m.expire(key, ttl)),
        }
    }

    /// Releases the lease if `token` still holds it.
    pub async fn lease_release(&self, key: &str, token: &str) -> Result<(), LiveError> {
        match self {
            Live::Redis(r) => r.lease_release(key, token).await,
            Live::Memory(m) => {
                if m.get(key).as_deref() == Some(token) {
                    m.del(key);
                }
                Ok(())
            }
        }
    }

    /// Deletes `key`.
    pub async fn del(&self, key: &str) -> Result<(), LiveError> {
        match self {
            Live::Redis(r) => r.del(key).await,
            Live::Memory(m) => {
                m.del(key);
                Ok(())
            }
        }
    }

    /// Appends `value` to the stream `key`, trimmed to about `max_len` entries; returns the
    /// entry id.
    pub async fn stream_add(
        &self,
        key: &str,
        value: &str,
        max_len: usize,
    ) -> Result<String, LiveError> {
        match self {
            Live::Redis(r) => r.stream_add(key, value, max_len).await,
            Live::Memory(m) => Ok(m.stream_add(key, value, max_len)),
        }
    }

    /// Up to `count` entries of stream `key` after entry id `after` (from the start if `None`).
    pub async fn stream_after(
        &self,
        key: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, String)>, LiveError> {
        match self {
            Live::Redis(r) => r.stream_after(key, after, count).await,
            Live::Memory(m) => Ok(m.stream_after(key, after, count)),
        }
    }

    /// Id of the newest entry of stream `key`.
    pub async fn stream_last_id(&self, key: &str) -> Result<Option<String>, LiveError> {
        match self {
            Live::Redis(r) => r.stream_last_id(key).await,
            Live::Memory(m) => Ok(m.stream_last_id(key)),
        }
    }

    /// Publishes this replica's heartbeat (a JSON document).
    pub async fn heartbeat(&self, replica: &str, doc: &str) -> Result<(), LiveError> {
        match self {
            Live::Redis(r) => r.hset(HEARTBEATS_KEY, replica, doc).await,
            Live::Memory(m) => {
                m.hset(HEARTBEATS_KEY, replica, doc);
                Ok(())
            }
        }
    }

    /// Every replica's last heartbeat.
    pub async fn heartbeats(&self) -> Result<HashMap<String, String>, LiveError> {
        match self {
            Live::Redis(r) => r.hgetall(HEARTBEATS_KEY).await,
            Live::Memory(m) => Ok(m.hgetall(HEARTBEATS_KEY)),
        }
    }

    /// Forgets heartbeats of replicas that are long gone.
    pub async fn forget_replica(&self, replica: &str) -> Result<(), LiveError> {
        match self {
            Live::Redis(r) => r.hdel(HEARTBEATS_KEY, replica).await,
            Live::Memory(m) => {
                m.hdel(HEARTBEATS_KEY, replica);
                Ok(())
            }
        }
    }

    /// A round trip (PING), with its duration. Also lets a Sentinel connection notice a
    /// promotion it has not yet hit through an error.
    pub async fn ping(&self) -> Result<Duration, LiveError> {
        match self {
            Live::Redis(r) => r.ping().await,
            Live::Memory(_) => Ok(Duration::ZERO),
        }
    }
}
