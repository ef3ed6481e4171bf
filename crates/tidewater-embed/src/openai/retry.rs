//! When to try a failed request again: exponential back-off with full jitter, and the
//! server's `Retry-After`.

use std::time::Duration;

use rand::Rng;

/// Back-off schedule: before retry `n` (counting from 0) wait a uniformly random time
/// below `min(max, initial · 2ⁿ)`. Randomising the whole wait ("full jitter") keeps many
/// clients that failed together from retrying together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// The upper bound of the wait before retry `retry`.
    pub(crate) fn bound(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// How long to wait before retry `retry`: what the server asked for if it did (capped
    /// at `max`, so one server cannot stall a caller indefinitely), else a jittered wait.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(asked) => asked.min(self.max),
            None => rand::rng().random_range(Duration::ZERO..=self.bound(retry)),
        }
    }
}

/// Parses a `Retry-After` value given in seconds. The HTTP-date form is not supported
/// (embedding servers send seconds); it yields `None`, so the jittered back-off applies.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(10),
    };

    #[test]
    fn bounds_double_up_to_the_cap() {
        let bounds: Vec<u128> = (0..8).map(|n| B.bound(n).as_millis()).collect();
        assert_eq!(bounds, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        assert_eq!(B.bound(1000), Duration::from_secs(10));
    }

    #[test]
    fn delays_stay_below_the_bound() {
        for n in 0..10 {
            for _ in 0..50 {
                assert!(B.delay(n, None) <= B.bound(n));
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        assert_eq!(B.delay(3, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(
            B.delay(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            B.delay(0, Some(Duration::from_secs(120))),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn retry_after_seconds_parse() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
