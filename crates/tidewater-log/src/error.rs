//! Errors of the log.

use std::path::PathBuf;

/// Errors of the log, with the context needed to act on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The topic does not exist.
    #[error("topic '{topic}' does not exist")]
    UnknownTopic {
        /// Topic name.
        topic: String,
    },
    /// The partition does not exist.
    #[error("topic '{topic}' has no partition {partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition asked for.
        partition: u32,
    },
    /// A read below the retained start or beyond the end.
    #[error("offset {offset} is outside {topic}/{partition}'s range {start}..{end}")]
    OffsetOutOfRange {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset asked for.
        offset: u64,
        /// First retained offset.
        start: u64,
        /// Next offset to be written.
        end: u64,
    },
    /// A topic name that cannot be used (empty, path separators, too long).
    #[error("invalid topic name '{0}': use 1-200 characters of [A-Za-z0-9._-]")]
    InvalidTopicName(String),
    /// A consumer group name that cannot be stored (empty or longer than 80 bytes).
    #[error("invalid consumer group name '{0}': use 1-80 bytes")]
    InvalidGroupName(String),
    /// A topic configuration that cannot be used.
    #[error("invalid configuration for topic '{topic}': {reason}")]
    InvalidTopicConfig {
        /// Topic name.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// A record larger than the configured maximum.
    #[error("record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Record size.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A record that cannot be stored as it is (e.g. a header name that is too long).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// Stored data failed its checksum in a place recovery cannot repair (not a torn tail).
    #[error("corrupt log data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Byte position.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error; `fs_err` names the file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Another process has the log directory open.
    #[error("the log directory is in use by another process (lock held on {path}); stop it first")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The configured backend or operation is not available in this build.
    #[error("{0}")]
    Unsupported(String),
    /// The log was closed or its writer died after an earlier I/O failure.
    #[error("the log is closed")]
    Closed,

    /// The broker refused a request or could not be reached in time (Kafka backend).
    #[error("Kafka: {0}")]
    Broker(String),
}
