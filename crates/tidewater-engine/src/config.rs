//! Engine settings (the `[engine]` section of the config).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How pipelines consume their topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Most records one batch (one state transaction) takes from a partition.
    pub batch_max_records: usize,
    /// How long an idle worker waits for new records before checking for shutdown.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// First pause before retrying a batch after an external failure (doubles, with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_backoff_initial: Duration,
    /// Longest pause between retries of a failing batch.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            batch_max_records: 64,
            poll_interval: Duration::from_millis(200),
            retry_backoff_initial: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(10),
        }
    }
}
