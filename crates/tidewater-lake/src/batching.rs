//! When a partition's pending records become a batch: as soon as `max_rows_per_file` are
//! pending, or once the first pending record has waited `flush_interval`. A pure function
//! of offsets and instants, so that it can be tested without a log or a clock.

use std::time::{Duration, Instant};

use crate::state::Batch;

/// The batching rule of one lake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPolicy {
    /// Most records in one batch (at least 1).
    pub max_rows: u64,
    /// Longest wait of a pending record before its batch is written.
    pub flush_interval: Duration,
}

/// What a partition looks like to the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Next offset to put in a batch.
    pub next: u64,
    /// When records were first seen pending; `None` when none are.
    pub since: Option<Instant>,
}

impl BatchPolicy {
    /// The batch to write now, if any, given the partition's log `end`; updates
    /// `pending.since`. The batch starts at `pending.next` and holds up to `max_rows`
    /// records; records left after it count as pending from `now` (this partition was
    /// just written).
    pub(crate) fn decide(&self, pending: &mut Pending, end: u64, now: Instant) -> Option<Batch> {
        let count = end.saturating_sub(pending.next);
        if count == 0 {
            pending.since = None;
            return None;
        }
        let since = *pending.since.get_or_insert(now);
        if count < self.max_rows && now.saturating_duration_since(since) < self.flush_interval {
            return None;
        }
        let take = count.min(self.max_rows.max(1));
        pending.since = (count > take).then_some(now);
        Some(Batch {
            first: pending.next,
            last: pending.next + take - 1,
        })
    }

    /// When a partition with records pending since `since` is due, for the thread's sleep.
    pub(crate) fn due(&self, pending: &Pending) -> Option<Instant> {
        pending.since.map(|since| since + self.flush_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BatchPolicy = BatchPolicy {
        max_rows: 10,
        flush_interval: Duration::from_secs(5),
    };

    #[test]
    fn a_full_batch_is_written_at_once_and_the_rest_waits_from_then() {
        let t0 = Instant::now();
        let mut pending = Pending {
            next: 100,
            since: None,
        };
        let batch = POLICY.decide(&mut pending, 125, t0);
        assert_eq!(
            batch,
            Some(Batch {
                first: 100,
                last: 109
            })
        );
        assert_eq!(pending.since, Some(t0));
        // The caller advances `next` once the batch is committed.
        pending.next = 110;
        assert_eq!(
            POLICY.decide(&mut pending, 125, t0),
            Some(Batch {
                first: 110,
                last: 119
            })
        );
        pending.next = 120;
        // Five left: they wait for the flush interval, counted from the last write.
        assert_eq!(
            POLICY.decide(&mut pending, 125, t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(POLICY.due(&pending), Some(t0 + Duration::from_secs(5)));
        assert_eq!(
            POLICY.decide(&mut pending, 126, t0 + Duration::from_secs(5)),
            Some(Batch {
                first: 120,
                last: 125
            })
        );
        assert_eq!(pending.since, None);
    }

    #[test]
    fn a_small_batch_waits_for_the_flush_interval_since_its_first_record() {
        let t0 = Instant::now();
        let mut pending = Pending {
            next: 0,
            since: None,
        };
        assert_eq!(POLICY.decide(&mut pending, 0, t0), None);
        assert_eq!(pending.since, None);
        assert_eq!(POLICY.decide(&mut pending, 3, t0), None);
        // More records arriving do not restart the wait.
        assert_eq!(
            POLICY.decide(&mut pending, 7, t0 + Duration::from_secs(4)),
            None
        );
        assert_eq!(
            POLICY.decide(&mut pending, 7, t0 + Duration::from_secs(5)),
            Some(Batch { first: 0, last: 6 })
        );
    }

    #[test]
    fn a_zero_flush_interval_writes_whatever_is_pending() {
        let policy = BatchPolicy {
            max_rows: 10,
            flush_interval: Duration::ZERO,
        };
        let mut pending = Pending {
            next: 4,
            since: None,
        };
        assert_eq!(
            policy.decide(&mut pending, 5, Instant::now()),
            Some(Batch { first: 4, last: 4 })
        );
    }
}
