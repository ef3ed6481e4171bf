//! The event-time policy: which event times an event-time pipeline believes.
//!
//! An event carries its own time (`event_time_ms`), chosen by whoever sent it. One event
//! stamped far in the future would move a watermark there, and every later event would be
//! late for ever. So every pipeline that works in event time (analytics today, alert rules
//! later) applies the same [`EventTimePolicy`] before an event can move anything: an event
//! whose time lies more than [`EventTimePolicy::max_future_skew`] after the time its
//! record entered the log is rejected, and the pipeline dead-letters it with the reason.
//!
//! "Now" is the record's log time, not the wall clock at processing: a replay of the log
//! (after a crash, or after the state was rebuilt) decides exactly as the first run did.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[event_time]` section of the configuration, passed to every event-time pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventTimePolicy {
    /// How far an event's own time may lie after the time its record entered the log.
    /// An event further ahead is dead-lettered with the reason and never moves a
    /// watermark. Covers clock differences between the sender and Tidewater.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
}

impl Default for EventTimePolicy {
    fn default() -> Self {
        Self {
            max_future_skew: Duration::from_secs(5 * 60),
        }
    }
}

/// Why an event's time is not accepted. User input: the event is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventTimeError {
    /// The event time lies beyond the log time plus the allowed skew.
    #[error(
        "event time {event_time_ms} ms is more than {skew} after the time its record entered \
         the log ({log_time_ms} ms); event_time.max_future_skew allows at most {skew}",
        skew = humantime::format_duration(*max_future_skew)
    )]
    TooFarInFuture {
        /// The event's own time, ms since the Unix epoch.
        event_time_ms: u64,
        /// When its record entered the log, ms since the Unix epoch.
        log_time_ms: i64,
        /// The allowed skew.
        max_future_skew: Duration,
    },
}

impl EventTimePolicy {
    /// Checks an event's time against the time its record entered the log. Any value of
    /// either (negative log times, event times above `i64::MAX`) is handled without
    /// overflow.
    pub fn check(&self, event_time_ms: u64, log_time_ms: i64) -> Result<(), EventTimeError> {
        // i128 holds every sum of an i64 and a Duration's milliseconds (< 2^65).
        let skew_ms = i128::try_from(self.max_future_skew.as_millis()).unwrap_or(i128::MAX);
        let latest = i128::from(log_time_ms).saturating_add(skew_ms);
        if i128::from(event_time_ms) > latest {
            return Err(EventTimeError::TooFarInFuture {
                event_time_ms,
                log_time_ms,
                max_future_skew: self.max_future_skew,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_132_800_000;

    fn policy(skew: Duration) -> EventTimePolicy {
        EventTimePolicy {
            max_future_skew: skew,
        }
    }

    #[test]
    fn h02_an_event_beyond_the_skew_is_refused_and_one_within_it_accepted() {
        let p = EventTimePolicy::default();
        let skew = 5 * 60_000;
        let now = NOW as u64;
        assert_eq!(p.check(now, NOW), Ok(()));
        assert_eq!(p.check(now + skew, NOW), Ok(()), "exactly at the limit");
        assert_eq!(p.check(0, NOW), Ok(()), "the past is for lateness to judge");
        let error = p.check(now + skew + 1, NOW).unwrap_err();
        assert!(matches!(error, EventTimeError::TooFarInFuture { .. }));
        let text = error.to_string();
        assert!(
            text.contains("max_future_skew") && text.contains("5m"),
            "{text}"
        );
    }

    #[test]
    fn h02_extreme_times_never_overflow() {
        let p = EventTimePolicy::default();
        for event in [1u64 << 63, u64::MAX, i64::MAX as u64 + 1] {
            assert!(p.check(event, NOW).is_err(), "{event}");
            assert!(p.check(event, i64::MIN).is_err(), "{event}");
        }
        // A log time at the end of i64 plus the skew does not wrap.
        assert_eq!(p.check(i64::MAX as u64, i64::MAX), Ok(()));
        assert_eq!(p.check(i64::MAX as u64 + 300_000, i64::MAX), Ok(()));
        assert!(p.check(i64::MAX as u64 + 300_001, i64::MAX).is_err());
        // A negative log time accepts nothing after its skew.
        assert_eq!(p.check(0, -300_000), Ok(()));
        assert!(p.check(1, -300_000).is_err());
        assert!(p.check(0, i64::MIN).is_err());
        // The largest skew a Duration can hold.
        let huge = policy(Duration::MAX);
        assert_eq!(huge.check(u64::MAX, i64::MIN), Ok(()));
        let none = policy(Duration::ZERO);
        assert!(none.check(NOW as u64 + 1, NOW).is_err());
    }

    #[test]
    fn the_section_reads_humane_durations_and_refuses_unknown_keys() {
        let p: EventTimePolicy = serde_json::from_str(r#"{"max_future_skew": "90s"}"#).unwrap();
        assert_eq!(p.max_future_skew, Duration::from_secs(90));
        let d: EventTimePolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(d, EventTimePolicy::default());
        assert!(serde_json::from_str::<EventTimePolicy>(r#"{"max_skew": "1s"}"#).is_err());
    }
}
