//! Per-partition watermarks with idle-partition handling.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one partition has delivered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionProgress {
    /// Largest event time seen in the partition.
    max_event_time_ms: u64,
    /// Processing time of the partition's last event.
    last_seen_ms: u64,
}

/// Tracks the watermark over partitions.
///
/// The candidate watermark is the minimum, over the partitions that are not idle, of the
/// largest event time each has seen; a partition is idle when it has delivered nothing
/// for `idle_timeout_ms` of processing time. When every partition is idle the candidate
/// is the largest event time seen anywhere. The watermark never moves backwards.
/// Partitions that have delivered nothing yet do not hold it back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    partitions: BTreeMap<u32, PartitionProgress>,
    watermark_ms: Option<u64>,
}

impl Watermarks {
    /// The current watermark, if any event has been seen.
    pub fn current(&self) -> Option<u64> {
        self.watermark_ms
    }

    /// Records an event of `partition` with event time `event_time_ms` seen at `now_ms`.
    pub fn record(&mut self, partition: u32, event_time_ms: u64, now_ms: u64) {
        let p = self
            .partitions
            .entry(partition)
            .or_insert(PartitionProgress {
                max_event_time_ms: event_time_ms,
                last_seen_ms: now_ms,
            });
        p.max_event_time_ms = p.max_event_time_ms.max(event_time_ms);
        p.last_seen_ms = p.last_seen_ms.max(now_ms);
    }

    /// Recomputes the watermark at processing time `now_ms` and returns it.
    pub fn refresh(&mut self, now_ms: u64, idle_timeout_ms: u64) -> Option<u64> {
        let active = self
            .partitions
            .values()
            .filter(|p| now_ms.saturating_sub(p.last_seen_ms) < idle_timeout_ms)
            .map(|p| p.max_event_time_ms)
            .min();
        let candidate =
            active.or_else(|| self.partitions.values().map(|p| p.max_event_time_ms).max());
        self.watermark_ms = match (self.watermark_ms, candidate) {
            (Some(w), Some(c)) => Some(w.max(c)),
            (w, c) => w.or(c),
        };
        self.watermark_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowest_active_partition_holds_the_watermark() {
        let mut w = Watermarks::default();
        assert_eq!(w.refresh(0, 100), None);
        w.record(0, 1_000, 0);
        w.record(1, 500, 10);
        assert_eq!(w.refresh(20, 100), Some(500));
    }

    #[test]
    fn idle_partition_stops_holding_it_back_and_it_never_regresses() {
        let mut w = Watermarks::default();
        w.record(0, 1_000, 0);
        w.record(1, 500, 0);
        assert_eq!(w.refresh(50, 100), Some(500));
        w.record(0, 2_000, 120);
        // partition 1 silent for 150 >= 100: idle.
        assert_eq!(w.refresh(150, 100), Some(2_000));
        // partition 1 wakes up with an old event: the watermark stays.
        w.record(1, 600, 160);
        assert_eq!(w.refresh(160, 100), Some(2_000));
    }

    #[test]
    fn all_idle_uses_the_largest_event_time() {
        let mut w = Watermarks::default();
        w.record(0, 1_000, 0);
        w.record(1, 3_000, 0);
        assert_eq!(w.refresh(10, 100), Some(1_000));
        assert_eq!(w.refresh(1_000, 100), Some(3_000));
    }
}
