//! Dead letters: events a pipeline could not process, kept with the reason.
//!
//! A dead letter is recorded in the [`crate::Outbox`] of the batch that rejected it, in the
//! same transaction, and published exactly once to the topic `<pipeline>.dead-letters`.
//! Each published record's key is `topic/partition/offset` of the original event.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tidewater_log::{Header, Record};

/// A rejection reported by a pipeline for one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Offset of the rejected record.
    pub offset: u64,
    /// Why it was rejected, for a person to read.
    pub reason: String,
}

/// What is stored and published for a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    /// Pipeline that rejected the event.
    pub pipeline: String,
    /// Topic the event came from.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Why it was rejected.
    pub reason: String,
    /// Its key, base64.
    pub key_base64: Option<String>,
    /// Its value, base64, so it can be replayed unchanged.
    pub value_base64: String,
    /// The event's own timestamp (ms since epoch).
    pub timestamp_ms: i64,
    /// When it was rejected (ms since epoch).
    pub rejected_at_ms: i64,
    /// Its headers, in order: name and value (base64; `None` for a null value). Absent
    /// from letters written before headers were kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, Option<String>)>,
}

impl DeadLetterRecord {
    /// The dead letter of `record`, rejected by `pipeline` for `reason`.
    pub fn new(pipeline: &str, topic: &str, record: &Record, reason: String) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        Self {
            pipeline: pipeline.to_owned(),
            topic: topic.to_owned(),
            partition: record.partition,
            offset: record.offset,
            reason,
            key_base64: record.key.as_ref().map(|k| b64.encode(k)),
            value_base64: b64.encode(&record.value),
            timestamp_ms: record.timestamp_ms,
            rejected_at_ms: tidewater_core::time::now_ms(),
            headers: record
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.as_ref().map(|v| b64.encode(v))))
                .collect(),
        }
    }

    /// A rejected row of a file (an import), not of a topic: `topic` names the file,
    /// `partition` the unit it was read in (a Parquet row group, a batch of lines) and
    /// `offset` the row within it, so that each row is one dead letter.
    pub fn for_row(
        pipeline: &str,
        file: &str,
        unit: u32,
        row: u64,
        value: &[u8],
        reason: String,
    ) -> Self {
        let now = tidewater_core::time::now_ms();
        Self {
            pipeline: pipeline.to_owned(),
            topic: file.to_owned(),
            partition: unit,
            offset: row,
            reason,
            key_base64: None,
            value_base64: base64::engine::general_purpose::STANDARD.encode(value),
            timestamp_ms: now,
            rejected_at_ms: now,
            headers: Vec::new(),
        }
    }

    /// The original headers.
    pub fn headers(&self) -> Result<Vec<Header>, base64::DecodeError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        self.headers
            .iter()
            .map(|(name, value)| {
                Ok(Header {
                    name: name.clone(),
                    value: value.as_ref().map(|v| b64.decode(v)).transpose()?,
                })
            })
            .collect()
    }

    /// The original value.
    pub fn value(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.value_base64)
    }

    /// The original key.
    pub fn key(&self) -> Result<Option<Vec<u8>>, base64::DecodeError> {
        self.key_base64
            .as_ref()
            .map(|k| base64::engine::general_purpose::STANDARD.decode(k))
            .transpose()
    }

    /// The key under which it is published: identifies the original event.
    pub fn dedup_key(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// The outbox entry that publishes this letter.
    pub fn to_entry(&self) -> crate::OutboxEntry {
        crate::OutboxEntry {
            key: Some(self.dedup_key().into_bytes()),
            value: serde_json::to_vec(self).unwrap_or_default(),
            timestamp_ms: self.rejected_at_ms,
        }
    }

    /// The dead-letter topic of a pipeline.
    pub fn topic_for(pipeline: &str) -> String {
        format!("{pipeline}.dead-letters")
    }
}
