//! Keyed rate limits (GCRA, from `governor`): per client address before authentication, per
//! token for session creation. A [`Rate`] is what an operator configures (`5/s:50`: five a
//! second sustained, bursts of fifty; `off`); a [`KeyedLimit`] enforces one per key and answers
//! how long to wait, which becomes `Retry-After`.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keys kept before idle ones are dropped (checked every [`SWEEP_EVERY`] calls).
const SWEEP_EVERY: u64 = 4096;

/// A configured rate: `count` per `per`, in bursts of up to `burst`; or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events per period; `None`: unlimited.
    pub limit: Option<(NonZeroU32, Duration, NonZeroU32)>,
}

/// Why a rate text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a rate; use COUNT/UNIT:BURST with UNIT s, m or h (e.g. 5/s:50), or `off`")]
pub struct RateError(String);

impl Rate {
    /// No limit.
    pub const OFF: Rate = Rate { limit: None };

    /// `count` per `per`, bursts of `burst` (zero count or burst: off).
    pub fn new(count: u32, per: Duration, burst: u32) -> Self {
        match (NonZeroU32::new(count), NonZeroU32::new(burst)) {
            (Some(c), Some(b)) if !per.is_zero() => Rate {
                limit: Some((c, per, b)),
            },
            _ => Rate::OFF,
        }
    }

    /// Parses `COUNT/UNIT:BURST` (`5/s:50`, `60/m:20`) or `off`.
    pub fn parse(s: &str) -> Result<Self, RateError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("off") {
            return Ok(Rate::OFF);
        }
        let bad = || RateError(s.to_string());
        let (rate, burst) = t.split_once(':').ok_or_else(bad)?;
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
        if count == 0 || burst == 0 {
            return Err(bad());
        }
        Ok(Rate::new(count, per, burst))
    }

    fn quota(&self) -> Option<Quota> {
        let (count, per, burst) = self.limit?;
        Quota::with_period(per / count.get()).map(|q| q.allow_burst(burst))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.limit {
            None => f.write_str("off"),
            Some((c, per, b)) => {
                let unit = match per.as_secs() {
                    60 => "m",
                    3600 => "h",
                    _ => "s",
                };
                write!(f, "{c}/{unit}:{b}")
            }
        }
    }
}

/// One [`Rate`] enforced per key; idle keys are swept so memory follows active keys only.
#[derive(Debug)]
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    clock: DefaultClock,
    calls: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// Enforces `rate` (nothing when off).
    pub fn new(rate: Rate) -> Self {
        Self {
            limiter: rate.quota().map(RateLimiter::keyed),
            clock: DefaultClock::default(),
            calls: AtomicU64::new(0),
        }
    }

    /// Counts one event for `key`: `Err(wait)` when it exceeds the rate (the event is not
    /// counted then), with how long until one would be allowed.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        if self.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            l.retain_recent();
            l.shrink_to_fit();
        }
        l.check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u32 {
    let s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(s.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(Rate::parse("off").unwrap(), Rate::OFF);
        let r = Rate::parse("5/s:50").unwrap();
        assert_eq!(r.to_string(), "5/s:50");
        assert_eq!(Rate::parse(" 60/m:20 ").unwrap().to_string(), "60/m:20");
        for bad in ["", "5", "5/s", "5/d:1", "0/s:1", "5/s:0", "x/s:1"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_and_other_keys_are_untouched() {
        let l = KeyedLimit::new(Rate::parse("1/m:3").unwrap());
        for _ in 0..3 {
            l.check(&"a").unwrap();
        }
        let wait = l.check(&"a").unwrap_err();
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), wait.as_secs() as u32 + 1);
        l.check(&"b").unwrap();
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn off_never_refuses() {
        let l = KeyedLimit::new(Rate::OFF);
        for _ in 0..10_000 {
            l.check(&1u8).unwrap();
        }
        assert!(l.is_empty());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
