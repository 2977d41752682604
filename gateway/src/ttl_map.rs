//! A bounded map whose entries lapse a fixed time after they were put: the replica's short
//! caches (token lookups, targets of the one-request relay) are this map with their own bound
//! and their own rule for what may be cached.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Key → value for `ttl` after each put, at most `max` entries: when full, lapsed entries go,
/// then everything (a cache refills from its source; it never refuses a put).
#[derive(Debug)]
pub struct TtlMap<V> {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlMap<V> {
    /// An empty map whose entries live `ttl`, holding at most `max`.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value put for `key` within the TTL that `still_valid` accepts; a lapsed or refused
    /// entry is dropped.
    pub fn get_valid(&self, key: &str, still_valid: impl FnOnce(&V) -> bool) -> Option<V> {
        let mut map = self.lock();
        match map.get(key) {
            Some((at, v)) if at.elapsed() < self.ttl && still_valid(v) => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// The value put for `key` within the TTL.
    pub fn get(&self, key: &str) -> Option<V> {
        self.get_valid(key, |_| true)
    }

    /// Remembers `value` for `key` from now.
    pub fn put(&self, key: String, value: V) {
        let mut map = self.lock();
        if map.len() >= self.max {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), value));
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Keeps only the entries whose value `keep` accepts.
    pub fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        self.lock().retain(|_, (_, v)| keep(v));
    }

    /// Entries held (lapsed ones included until touched).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
