//! The durable log: the [`Log`] trait every backend implements, the [`Consumer`] that
//! reads assigned partitions from its own positions, and [`EmbeddedLog`], the
//! single-machine backend (segment files with checksums, group-commit fsync, recovery,
//! retention, consumer offsets). The on-disk format is described in `docs/log-format.md`.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

mod api;
mod config;
mod consumer;
pub mod embedded;
mod error;
#[cfg(feature = "kafka")]
pub mod kafka;

pub use api::{
    partition_for_key, Header, Log, NewRecord, PartitionRange, Position, Record, TopicConfig,
};
pub use config::{open_log, KafkaConfig, LogBackend, LogConfig};
pub use consumer::{AssignmentListener, Consumer, Fetched, Membership, TopicPartition};
pub use embedded::{Durability, EmbeddedConsumer, EmbeddedLog, EmbeddedLogConfig, RetentionReport};
pub use error::LogError;
