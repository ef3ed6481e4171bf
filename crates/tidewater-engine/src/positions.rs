//! [`LogPositions`]: a consumer's committed positions, copied into the log's consumer
//! offsets. The consumer's own state store stays the truth for where it resumes; the log
//! needs the copy to know its consumers (retention keeps what they have not committed,
//! and a committed offset beyond what survived recovery is reported as lost records).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewater_log::{Log, LogError, TopicPartition};
use tracing::warn;

/// How often committed positions are copied (one durable file write per copy): often
/// enough for retention, rarely enough to cost nothing.
const COPY_INTERVAL: Duration = Duration::from_secs(1);

/// One consumer group's positions on their way to the log.
pub struct LogPositions {
    log: Arc<dyn Log>,
    group: String,
    /// Committed since the last copy.
    pending: BTreeMap<TopicPartition, u64>,
    copied: Instant,
}

impl LogPositions {
    /// Positions of the consumer group `group`.
    pub fn new(log: Arc<dyn Log>, group: impl Into<String>) -> Self {
        Self {
            log,
            group: group.into(),
            pending: BTreeMap::new(),
            copied: Instant::now(),
        }
    }

    /// Where the consumer resumes, stored at once: from here on retention keeps what it
    /// has not consumed, and records it had committed that are gone are reported.
    pub fn resume(&mut self, positions: &[(TopicPartition, u64)]) -> Result<(), LogError> {
        self.log.commit_offsets(&self.group, positions)?;
        self.copied = Instant::now();
        Ok(())
    }

    /// A position the consumer's state store committed; copied, with the others, at
    /// most once per second.
    pub fn committed(&mut self, partition: TopicPartition, next: u64) {
        self.pending.insert(partition, next);
        self.tick();
    }

    /// Copies what is pending once its second is up. A consumer calls this while idle,
    /// so that the last positions before a quiet spell reach the log too.
    pub fn tick(&mut self) {
        if !self.pending.is_empty() && self.copied.elapsed() >= COPY_INTERVAL {
            self.flush();
        }
    }

    /// Copies what is pending now (when the consumer stops). A failure only means that
    /// retention keeps more until a later copy succeeds.
    pub fn flush(&mut self) {
        self.copied = Instant::now();
        if self.pending.is_empty() {
            return;
        }
        let positions: Vec<(TopicPartition, u64)> = self
            .pending
            .iter()
            .map(|(at, &next)| (at.clone(), next))
            .collect();
        match self.log.commit_offsets(&self.group, &positions) {
            Ok(()) => self.pending.clear(),
            Err(e) => warn!(group = %self.group, error = %e,
                "cannot store the consumer offsets in the log; retention keeps more until it can"),
        }
    }
}
