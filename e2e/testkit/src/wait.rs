//! Waiting with deadlines: poll a probe until it succeeds or time runs out. Never a fixed sleep.

use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};

/// How often probes run. Short, so measured times are accurate to ~25 ms.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Polls `probe` until it returns `Some`, or fails with [`TestkitError::Timeout`] after `timeout`.
/// Returns the value and how long it took, so tests can report measured times.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Ok((v, start.elapsed()));
        }
        if start.elapsed() >= timeout {
            return Err(TestkitError::Timeout {
                what: what.to_string(),
                waited: start.elapsed(),
                log_tail: None,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Like [`wait_for`] for a boolean condition; returns the elapsed time.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration> {
    wait_for(what, timeout, || cond().then_some(())).map(|(_, d)| d)
}

/// Adds a log tail to a timeout error so a failing test shows why the server did not come up.
pub(crate) fn with_log<T>(r: Result<T>, tail: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|e| match e {
        TestkitError::Timeout { what, waited, .. } => TestkitError::Timeout {
            what,
            waited,
            log_tail: Some(tail()),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_value_once_probe_succeeds() {
        let mut n = 0;
        let (v, _) = wait_for("third call", Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn times_out_with_description() {
        let err = wait_until("never", Duration::from_millis(60), || false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("waiting for never"), "{msg}");
    }
}
