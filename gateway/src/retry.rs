//! The one retry policy: exponential backoff with full jitter (`backon`), so replicas and clients
//! that failed together do not retry in lockstep. Start-up dependency connects, `wgctl`
//! reconnects and late session-end records all use it.

use std::time::Duration;

use backon::ExponentialBuilder;

/// 200 ms doubling up to `max` between tries, jittered, with no limit on the number of tries:
/// the shape every policy below shares.
fn doubling(max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// Backoff for work that retries in the background until `give_up` has passed in total:
/// 200 ms doubling to 5 s between tries, jittered.
pub fn background(give_up: Duration) -> ExponentialBuilder {
    forever().with_total_delay(Some(give_up))
}

/// Backoff without an end, 200 ms doubling to 5 s, jittered: start-up waiting for a dependency
/// (a replica started during an outage waits, answering `/readyz` 503, instead of
/// crash-looping), and `wgctl` reconnecting a stream.
pub fn forever() -> ExponentialBuilder {
    doubling(Duration::from_secs(5))
}

/// Backoff for a client waiting on a server for at most `deadline` in total: 200 ms doubling to
/// 2 s, jittered.
pub fn client(deadline: Duration) -> ExponentialBuilder {
    doubling(Duration::from_secs(2)).with_total_delay(Some(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    #[test]
    fn delays_grow_are_jittered_and_stop_at_the_total() {
        let a: Vec<Duration> = background(Duration::from_secs(20)).build().collect();
        let b: Vec<Duration> = background(Duration::from_secs(20)).build().collect();
        assert!(!a.is_empty());
        assert_ne!(a, b, "two retriers must not wait in lockstep");
        let total: Duration = a.iter().sum();
        assert!(
            total <= Duration::from_secs(20) + Duration::from_secs(10),
            "{total:?}"
        );
        assert!(a.iter().all(|d| *d <= Duration::from_secs(10)), "{a:?}");
        assert!(a[0] >= Duration::from_millis(200), "{a:?}");
    }
}
