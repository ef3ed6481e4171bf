//! The `[log]` section: which backend holds the topics, and its settings. One config file
//! serves every member of a deployment; only this section (and the index's) differs
//! between one machine and a cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidewater_metrics::Metrics;

use crate::{Durability, EmbeddedLog, EmbeddedLogConfig, Log, LogError};

/// Which log backs the topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogBackend {
    /// Segment files under the data directory, one process (the default).
    #[default]
    Embedded,
    /// A Kafka-protocol broker; several processes share its topics as one consumer group.
    /// Needs a build with the `kafka` feature; refused by validation otherwise.
    Kafka,
}

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Which log backs the topics.
    pub backend: LogBackend,
    /// Embedded log: when an append is acknowledged.
    pub durability: Durability,
    /// Embedded log: roll to a new segment file before the active one would grow past
    /// this many bytes.
    pub segment_bytes: u64,
    /// Largest record value accepted, in bytes (both backends).
    pub max_record_bytes: usize,
    /// Embedded log: how long the group-commit writer waits for more appends before one
    /// fsync.
    #[serde(with = "humantime_serde")]
    pub group_commit_window: Duration,
    /// The broker, with `backend = "kafka"` (`[log.kafka]`).
    pub kafka: Option<KafkaConfig>,
}

impl Default for LogConfig {
    fn default() -> Self {
        let embedded = EmbeddedLogConfig::default();
        Self {
            backend: LogBackend::default(),
            durability: embedded.durability,
            segment_bytes: embedded.segment_bytes,
            max_record_bytes: embedded.max_record_bytes,
            group_commit_window: embedded.group_commit_window,
            kafka: None,
        }
    }
}

/// The `[log.kafka]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port,…`.
    pub brokers: String,
    /// The consumer group every member joins.
    #[serde(default = "default_group")]
    pub group: String,
    /// The client id the broker sees (default: the group name).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Further librdkafka properties, passed as they are (SASL, TLS, timeouts).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_group() -> String {
    "tidewater".to_owned()
}

impl LogConfig {
    /// The embedded backend's settings.
    pub fn embedded(&self) -> EmbeddedLogConfig {
        EmbeddedLogConfig {
            durability: self.durability,
            segment_bytes: self.segment_bytes,
            max_record_bytes: self.max_record_bytes,
            group_commit_window: self.group_commit_window,
        }
    }

    /// Checks what can be checked without opening the log.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes == 0 {
            return Err("log.segment_bytes must be at least 1".into());
        }
        if self.max_record_bytes == 0 {
            return Err("log.max_record_bytes must be at least 1".into());
        }
        match (self.backend, &self.kafka) {
            (LogBackend::Kafka, None) => {
                Err("log.backend = \"kafka\" needs a [log.kafka] section with brokers".into())
            }
            (LogBackend::Kafka, Some(kafka)) if kafka.brokers.trim().is_empty() => {
                Err("log.kafka.brokers must name at least one host:port".into())
            }
            (LogBackend::Kafka, Some(kafka)) if kafka.group.is_empty() => {
                Err("log.kafka.group must not be empty".into())
            }
            (LogBackend::Kafka, Some(_)) if !cfg!(feature = "kafka") => Err(
                "log.backend = \"kafka\": this build has no Kafka backend (build with --features kafka)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// Opens the configured log: the embedded one under `data_dir/log`, counting lost records
/// and held-back retention in `metrics`.
pub fn open_log(
    config: &LogConfig,
    data_dir: &Path,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn Log>, LogError> {
    match config.backend {
        LogBackend::Embedded => {
            let log =
                EmbeddedLog::open_with_metrics(data_dir.join("log"), config.embedded(), metrics)?;
            Ok(log as Arc<dyn Log>)
        }
        #[cfg(feature = "kafka")]
        LogBackend::Kafka => {
            let kafka = config.kafka.as_ref().ok_or_else(|| {
                LogError::Unsupported("log.backend = \"kafka\" needs [log.kafka]".into())
            })?;
            let log = crate::kafka::KafkaLog::connect(kafka, config.max_record_bytes)?;
            Ok(log as Arc<dyn Log>)
        }
        #[cfg(not(feature = "kafka"))]
        LogBackend::Kafka => Err(LogError::Unsupported(
            "this build has no Kafka backend (build with --features kafka)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_is_embedded_unless_configured() {
        let config: LogConfig = toml_like(r#"{}"#);
        assert_eq!(config.backend, LogBackend::Embedded);
        assert!(config.validate().is_ok());
        let config: LogConfig = toml_like(r#"{"backend": "kafka"}"#);
        assert!(config
            .validate()
            .expect_err("refused")
            .contains("[log.kafka]"));
        let config: LogConfig =
            toml_like(r#"{"backend": "kafka", "kafka": {"brokers": "127.0.0.1:9092"}}"#);
        assert_eq!(
            config.kafka.as_ref().map(|k| k.group.as_str()),
            Some("tidewater")
        );
        if cfg!(feature = "kafka") {
            assert!(config.validate().is_ok());
        } else {
            assert!(config
                .validate()
                .expect_err("refused")
                .contains("no Kafka backend"));
        }
        assert!(serde_json::from_str::<LogConfig>(r#"{"backend": "redis"}"#).is_err());
    }

    fn toml_like(json: &str) -> LogConfig {
        serde_json::from_str(json).expect("parses")
    }
}
