//! Settings of the knowledge pipeline (the `[knowledge]` section of the config).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidewater_chunk::ChunkerConfig;
use tidewater_index::IndexConfig;
use tidewater_log::TopicConfig;

/// How documents become searchable chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    /// The topic document events are written to and consumed from.
    pub topic: String,
    /// How that topic is created (partitions, retention).
    pub topic_config: TopicConfig,
    /// Chunk sizes.
    pub chunking: ChunkerConfig,
    /// The vector index.
    pub index: IndexConfig,
    /// How often the index is snapshotted (so a restart replays little).
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            topic: "documents".into(),
            topic_config: TopicConfig::default(),
            chunking: ChunkerConfig::default(),
            index: IndexConfig::default(),
            snapshot_interval: Duration::from_secs(60),
        }
    }
}
