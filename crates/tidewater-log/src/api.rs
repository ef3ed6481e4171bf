//! The log's contract, independent of the backend (embedded segments now, Kafka later).
//!
//! The vocabulary is Kafka's on purpose: topics split into partitions, each partition an
//! ordered sequence of records addressed by a `u64` offset; records with the same key
//! always land in the same partition, so per-key order holds; consumer groups store the
//! next offset they will read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::{AssignmentListener, Consumer, LogError, Membership, TopicPartition};

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    /// Routing key; records with equal keys keep their relative order. `None` spreads
    /// records round-robin.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub value: Vec<u8>,
    /// Event time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Headers, in order; names may repeat (Kafka's record headers).
    pub headers: Vec<Header>,
}

/// One record header: a name and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Name (UTF-8, at most 65 535 bytes).
    pub name: String,
    /// Value; `None` is a null value, distinct from an empty one.
    pub value: Option<Vec<u8>>,
}

impl Header {
    /// A header with a value.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            value: Some(value.into()),
        }
    }
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Partition it was read from.
    pub partition: u32,
    /// Its offset within the partition.
    pub offset: u64,
    /// Event time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Routing key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub value: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

/// Where an appended record now lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Position {
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

/// The readable range of a partition: `start..end` (retention moves `start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionRange {
    /// First offset still stored.
    pub start: u64,
    /// Offset the next appended record will get.
    pub end: u64,
}

/// How a topic is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicConfig {
    /// Number of partitions (fixed once the topic exists).
    pub partitions: u32,
    /// Delete whole segments older than this. `None` keeps records forever.
    #[serde(with = "humantime_serde")]
    pub retention_age: Option<Duration>,
    /// Delete the oldest segments while a partition holds more than this many bytes.
    pub retention_bytes: Option<u64>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            partitions: 4,
            retention_age: None,
            retention_bytes: None,
        }
    }
}

impl TopicConfig {
    /// Checks what every backend requires of a new topic.
    pub fn check(&self, topic: &str) -> Result<(), LogError> {
        if self.partitions == 0 {
            return Err(LogError::InvalidTopicConfig {
                topic: topic.to_owned(),
                reason: "a topic needs at least one partition".into(),
            });
        }
        Ok(())
    }
}

/// A durable, partitioned, replayable log.
///
/// All methods are blocking and safe to call from many threads. Implementations must
/// guarantee: `append` returns only once its records are durable under the configured
/// policy; a partition never exposes a record that was not completely written; offsets
/// increase and are never handed out twice — they are not necessarily dense (the
/// embedded log leaves a gap after a crash, Kafka after transaction markers), so a
/// consumer continues after the last record it read, and a read from inside a gap returns
/// the records after it; retention never deletes records a consumer group has not
/// committed; records found lost to damage are reported, never skipped in silence.
pub trait Log: Send + Sync + 'static {
    /// A new consumer of this log, with nothing assigned yet.
    fn consumer(self: Arc<Self>) -> Result<Box<dyn Consumer>, LogError>;

    /// Joins consumer group `group` for `topics`: the group shares their partitions
    /// among its members and tells `listener` which are this process's. Nothing is
    /// assigned until the membership is polled.
    fn join_group(
        self: Arc<Self>,
        group: &str,
        topics: &[String],
        listener: Box<dyn AssignmentListener>,
    ) -> Result<Box<dyn Membership>, LogError>;

    /// Creates the topic if it does not exist. An existing topic keeps its partition count.
    fn ensure_topic(&self, topic: &str, config: &TopicConfig) -> Result<(), LogError>;

    /// Number of partitions of an existing topic.
    fn partitions(&self, topic: &str) -> Result<u32, LogError>;

    /// Appends records, routing each by key. Returns each record's position, in input
    /// order, once all of them are durable.
    fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<Position>, LogError>;

    /// Reads up to `max_records` records of one partition starting at offset `from`.
    /// Returns an empty vector at the end of the partition. `from` below the retained
    /// start is an error ([`LogError::OffsetOutOfRange`]).
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<Record>, LogError>;

    /// Blocks until the partition's end is beyond `offset` or `timeout` passes.
    /// Returns whether a record at `offset` is now readable.
    fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool, LogError>;

    /// The readable range of a partition.
    fn range(&self, topic: &str, partition: u32) -> Result<PartitionRange, LogError>;

    /// Stores a consumer group's next offsets for some partitions (durable when it
    /// returns; one write for all of them).
    ///
    /// This is also how the log knows its consumers: retention keeps every record at or
    /// above the lowest offset any group committed for the partition, and a committed
    /// offset beyond what survived the last recovery is reported as lost records. A
    /// consumer therefore commits when it starts (its resume position) and regularly as
    /// it goes; the log's copy may lag the consumer's own state, never lead it.
    fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), LogError>;

    /// [`Self::commit_offsets`] for one partition.
    fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<(), LogError> {
        self.commit_offsets(
            group,
            &[(TopicPartition::new(topic, partition), next_offset)],
        )
    }

    /// A consumer group's stored next offset, if it ever committed one.
    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError>;

    /// Names of all topics.
    fn topics(&self) -> Result<Vec<String>, LogError>;

    /// Applies the topics' retention settings, where the backend leaves that to its user
    /// (the embedded log); a broker enforces its own. Called regularly.
    fn enforce_retention(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// Makes everything appended durable and records that the log was closed cleanly,
    /// where the backend keeps such a record. Called once at shutdown.
    fn close(&self) -> Result<(), LogError> {
        Ok(())
    }
}

/// The partition a key maps to. Stable across versions and platforms (the on-disk
/// layout depends on it): FNV-1a 32-bit of the key bytes, modulo the partition count.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}
