//! How long to wait before trying a failed request again: exponential back-off with full
//! jitter, or the server's `Retry-After`.

use std::time::Duration;

use rand::Rng;

/// The first back-off bound; each further retry doubles it.
const INITIAL: Duration = Duration::from_millis(250);
/// The largest wait, also for a server's `Retry-After`: someone is waiting for the answer.
const MAX: Duration = Duration::from_secs(5);

/// The wait before retry `retry` (counting from 0): what the server asked for, capped at
/// five seconds, else a uniformly random time below `min(5 s, 250 ms · 2ʳᵉᵗʳʸ)`.
/// Randomising the whole wait keeps clients that failed together from retrying together.
pub(crate) fn delay(retry: u32, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(asked) => asked.min(MAX),
        None => rand::rng().random_range(Duration::ZERO..=bound(retry)),
    }
}

/// The upper bound of the jittered wait before retry `retry`.
fn bound(retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
    INITIAL.saturating_mul(factor).min(MAX)
}

/// A `Retry-After` given in seconds. The HTTP-date form yields `None` (the jittered wait
/// applies): model servers send seconds.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_double_up_to_the_cap() {
        let bounds: Vec<u128> = (0..6).map(|n| bound(n).as_millis()).collect();
        assert_eq!(bounds, [250, 500, 1000, 2000, 4000, 5000]);
        assert_eq!(bound(100), MAX);
        for n in 0..8 {
            for _ in 0..50 {
                assert!(delay(n, None) <= bound(n));
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        assert_eq!(delay(3, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(
            delay(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(delay(0, Some(Duration::from_secs(120))), MAX);
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
