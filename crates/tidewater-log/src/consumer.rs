//! Reading the log: a [`Consumer`] holds a position in each partition assigned to it and
//! polls them. This is the reading side every backend offers (Kafka's consumer, the
//! embedded log's), so a pipeline reads the same way whatever backs the log: assign
//! partitions at the positions its state store committed, poll, process, commit with the
//! state, and seek back to retry a batch that failed.

use std::time::Duration;

use crate::{LogError, Record};

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

impl TopicPartition {
    /// Partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// What one poll found in one assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The partition.
    pub partition: TopicPartition,
    /// Records from the consumer's position on, in offset order (possibly none).
    pub records: Vec<Record>,
    /// The partition's end when it was read: the offset the next record appended gets.
    /// `high_watermark - position` is how far the consumer is behind.
    pub high_watermark: u64,
    /// Records the consumer was positioned at but that are gone from the log (deleted or
    /// lost), skipped over to the partition's start: `from..to`.
    pub skipped: Option<(u64, u64)>,
}

/// A reader of assigned partitions, each at its own position. Not shared between threads:
/// each worker owns its consumer.
pub trait Consumer: Send {
    /// Reads these partitions from now on, each from the given offset, replacing any
    /// earlier assignment.
    fn assign(&mut self, positions: Vec<(TopicPartition, u64)>) -> Result<(), LogError>;

    /// The partitions assigned, in order.
    fn assignment(&self) -> Vec<TopicPartition>;

    /// Moves an assigned partition's position: the next poll returns records from
    /// `offset` on (to retry a batch, or skip ahead).
    fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<(), LogError>;

    /// The offset the next record of an assigned partition will come from.
    fn position(&self, partition: &TopicPartition) -> Option<u64>;

    /// Returns every assigned partition with up to `max_records` records from its
    /// position, and advances the positions past them. Waits up to `timeout` when no
    /// partition has any. Offsets increase but need not be dense: a position inside a gap
    /// moves on to the record after it.
    fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Vec<Fetched>, LogError>;
}

/// Told which partitions this process owns as a consumer group's membership changes.
/// Called on the thread that polls the [`Membership`].
pub trait AssignmentListener: Send {
    /// These partitions are now this member's: start working on them, from the positions
    /// the state store committed.
    fn assigned(&mut self, partitions: &[TopicPartition]);

    /// These partitions are no longer this member's. Stop working on them before
    /// returning: another member takes them over from what was committed.
    fn revoked(&mut self, partitions: &[TopicPartition]);
}

/// This process's membership in a consumer group: which partitions of the group's topics
/// it owns. The group, not this process, decides (on Kafka: the broker's group
/// coordinator with cooperative-sticky assignment; on the embedded log: the only process
/// owns everything). Reading is separate: the owner reads its partitions with assigned
/// [`Consumer`]s, positioned from its own state.
pub trait Membership: Send {
    /// Serves the group: joins, heartbeats and rebalances, calling the listener. Call it
    /// at least every few seconds, or the group counts this member as gone.
    fn poll(&mut self, timeout: Duration) -> Result<(), LogError>;

    /// The partitions held now.
    fn assignment(&self) -> Vec<TopicPartition>;

    /// Leaves the group: everything held is revoked (through the listener) and handed
    /// to the other members.
    fn leave(&mut self) -> Result<(), LogError>;
}
