//! The durable log: the [`Log`] trait every backend implements, and [`EmbeddedLog`], the
//! single-machine backend (segment files with checksums, group-commit fsync, recovery,
//! retention, consumer offsets). The on-disk format is described in `docs/log-format.md`.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

mod api;
pub mod embedded;
mod error;

pub use api::{partition_for_key, Log, NewRecord, PartitionRange, Position, Record, TopicConfig};
pub use embedded::{Durability, EmbeddedLog, EmbeddedLogConfig, RetentionReport};
pub use error::LogError;
