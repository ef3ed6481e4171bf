//! The embedded backend: one directory of segment files per partition, checksummed
//! record frames, group-commit fsync, recovery on open, retention and consumer offsets.
//! `docs/log-format.md` specifies every byte this module writes.

mod appended;
mod bounds;
mod config;
mod consumer;
mod frame;
mod fsutil;
mod log;
mod membership;
mod offsets;
mod partition;
mod segment;
mod topic;

pub use config::{Durability, EmbeddedLogConfig};
pub use consumer::EmbeddedConsumer;
pub use log::{EmbeddedLog, RetentionReport};
pub use membership::SoleMembership;
#[cfg(feature = "kafka")]
pub(crate) use offsets::validate_group_name;
#[cfg(feature = "kafka")]
pub(crate) use topic::validate_topic_name;
