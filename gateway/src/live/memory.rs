//! In-process live state for `wardengate dev`: one process, so nothing to share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Inner {
    values: HashMap<String, (String, Instant)>,
    hashes: HashMap<String, HashMap<String, String>>,
    streams: HashMap<String, Stream>,
}

/// A stream: the last sequence number, the entries kept, and when it expires (if ever).
#[derive(Debug, Default)]
struct Stream {
    seq: u64,
    entries: Vec<(u64, String)>,
    expires: Option<Instant>,
}

impl Stream {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// A map with per-key expiry.
#[derive(Debug, Clone, Default)]
pub struct MemoryLive {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryLive {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set(&self, key: &str, value: &str, ttl: Duration) {
        let mut g = self.lock();
        let now = Instant::now();
        g.values.retain(|_, (_, exp)| *exp > now);
        g.values
            .insert(key.to_string(), (value.to_string(), now + ttl));
    }

    pub(super) fn get(&self, key: &str) -> Option<String> {
        let g = self.lock();
        g.values
            .get(key)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(v, _)| v.clone())
    }

    pub(super) fn compare_and_set(
        &self,
        key: &str,
        expected: &str,
        value: &str,
        ttl: Duration,
    ) -> super::Swap {
        let mut g = self.lock();
        let now = Instant::now();
        match g.values.get(key).filter(|(_, exp)| *exp > now) {
            Some((v, _)) if v == expected => {
                g.values
                    .insert(key.to_string(), (value.to_string(), now + ttl));
                super::Swap::Swapped
            }
            other => super::Swap::Current(other.map(|(v, _)| v.clone())),
        }
    }

    pub(super) fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> bool {
        let mut g = self.lock();
        let now = Instant::now();
        if g.values.get(key).is_some_and(|(_, exp)| *exp > now) {
            return false;
        }
        g.values
            .insert(key.to_string(), (value.to_string(), now + ttl));
        true
    }

    pub(super) fn expire(&self, key: &str, ttl: Duration) -> bool {
        let mut g = self.lock();
        let now = Instant::now();
        g.streams.retain(|_, s| s.live(now));
        if let Some(s) = g.streams.get_mut(key) {
            s.expires = Some(now + ttl);
            return true;
        }
        match g.values.get_mut(key) {
            Some((_, exp)) if *exp > now => {
                *exp = now + ttl;
                true
            }
            _ => false,
        }
    }

    pub(super) fn del(&self, key: &str) {
        let mut g = self.lock();
        g.values.remove(key);
        g.streams.remove(key);
    }

    pub(super) fn hset(&self, key: &str, field: &str, value: &str) {
        self.lock()
            .hashes
            .entry(key.to_string())
            .or_default()
            .insert(field.to_string(), value.to_string());
    }

    pub(super) fn hgetall(&self, key: &str) -> HashMap<String, String> {
        self.lock().hashes.get(key).cloned().unwrap_or_default()
    }

    pub(super) fn hdel(&self, key: &str, field: &str) {
        if let Some(h) = self.lock().hashes.get_mut(key) {
            h.remove(field);
        }
    }

    pub(super) fn stream_add(&self, key: &str, value: &str, max_len: usize) -> String {
        let mut g = self.lock();
        let now = Instant::now();
        let s = g.streams.entry(key.to_string()).or_default();
        if !s.live(now) {
            *s = Stream::default();
        }
        s.seq += 1;
        let seq = s.seq;
        s.entries.push((seq, value.to_string()));
        if s.entries.len() > max_len {
            let drop = s.entries.len() - max_len;
            s.entries.drain(..drop);
        }
        format!("{seq}-0")
    }

    pub(super) fn stream_after(
        &self,
        key: &str,
        after: Option<&str>,
        count: usize,
    ) -> Vec<(String, String)> {
        let after: u64 = after
            .and_then(|a| a.split('-').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        self.lock()
            .streams
            .get(key)
            .filter(|s| s.live(Instant::now()))
            .map(|s| {
                s.entries
                    .iter()
                    .filter(|(n, _)| *n > after)
                    .take(count)
                    .map(|(n, v)| (format!("{n}-0"), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn stream_last_id(&self, key: &str) -> Option<String> {
        self.lock()
            .streams
            .get(key)
            .filter(|s| s.live(Instant::now()))
            .and_then(|s| s.entries.last())
            .map(|(n, _)| format!("{n}-0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expire() {
        let m = MemoryLive::default();
        m.set("a", "1", Duration::from_secs(60));
        m.set("b", "2", Duration::ZERO);
        assert_eq!(m.get("a").as_deref(), Some("1"));
        assert_eq!(m.get("b"), None);
        m.del("a");
        assert_eq!(m.get("a"), None);
    }

    #[test]
    fn streams_expire_and_are_deleted() {
        let m = MemoryLive::default();
        m.stream_add("s", "a", 10);
        m.stream_add("s", "b", 10);
        assert_eq!(m.stream_after("s", Some("1-0"), 10).len(), 1);
        assert!(m.expire("s", Duration::from_secs(60)));
        assert_eq!(m.stream_last_id("s").as_deref(), Some("2-0"));
        assert!(m.expire("s", Duration::ZERO));
        assert_eq!(m.stream_after("s", None, 10), Vec::new());
        assert_eq!(m.stream_last_id("s"), None);
        m.stream_add("t", "a", 10);
        m.del("t");
        assert_eq!(m.stream_last_id("t"), None);
    }

    #[test]
    fn compare_and_set_swaps_only_the_expected_value() {
        let m = MemoryLive::default();
        m.set("k", "authorized", Duration::from_secs(60));
        assert_eq!(
            m.compare_and_set("k", "authorized", "active", Duration::from_secs(60)),
            super::super::Swap::Swapped
        );
        m.set("k", "terminated", Duration::from_secs(60));
        assert_eq!(
            m.compare_and_set("k", "active", "active-2", Duration::from_secs(60)),
            super::super::Swap::Current(Some("terminated".into()))
        );
        assert_eq!(m.get("k").as_deref(), Some("terminated"));
        m.set("gone", "x", Duration::ZERO);
        assert_eq!(
            m.compare_and_set("gone", "x", "y", Duration::from_secs(60)),
            super::super::Swap::Current(None)
        );
    }
}
