//! Settings of the embedded log.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// fsync before acknowledging; concurrent appends share one fsync (group commit).
    #[default]
    Fsync,
    /// Acknowledge once written to the OS; survives a process crash, not a power loss.
    Os,
}

/// Settings of the embedded log (the `[log]` section of the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedLogConfig {
    /// When an append is acknowledged.
    pub durability: Durability,
    /// Roll to a new segment file before the active one would grow past this many bytes
    /// (a record larger than this gets a segment of its own).
    pub segment_bytes: u64,
    /// Largest record value accepted, in bytes.
    pub max_record_bytes: usize,
    /// How long the group-commit writer waits for more appends before one fsync.
    #[serde(with = "humantime_serde")]
    pub group_commit_window: Duration,
}

impl Default for EmbeddedLogConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            segment_bytes: 64 * 1024 * 1024,
            max_record_bytes: 16 * 1024 * 1024,
            group_commit_window: Duration::from_millis(0),
        }
    }
}
