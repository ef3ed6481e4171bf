//! Kafka topics as sources (`[[sources.kafka]]`): what one record of an existing topic
//! becomes. Reading the topics is the runtime's (it owns the log); this module holds the
//! settings and the conversions, so they are tested without a broker.
//!
//! - `format = "debezium"`, `into = "profiles"`: Debezium change records (JSON converter,
//!   with or without schemas) go to the profiles topic as they are, as
//!   `{"key": …, "value": …}`; the profiles pipeline parses them and dead-letters what it
//!   cannot. Tombstones (a null value after a delete) and transaction metadata records
//!   are skipped: the delete event before a tombstone carries the change.
//! - `format = "documents"`, `into = "knowledge"`: JSON `{"id", "text", "metadata"?,
//!   "deleted"?}` becomes a document event; a record that is not one becomes a rejection,
//!   which the knowledge pipeline dead-letters with the reason.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidewater_core::document::MAX_ID_BYTES;
use tidewater_core::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};

/// How a topic's records are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaFormat {
    /// Debezium change events (JSON converter).
    Debezium,
    /// JSON documents `{"id", "text", "metadata"?, "deleted"?}`.
    Documents,
}

/// Which pipeline a Kafka source feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaInto {
    /// Unified customer profiles (the `[profiles]` topic).
    Profiles,
    /// Knowledge: chunks, embeddings, search (the documents topic).
    Knowledge,
}

/// One `[[sources.kafka]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// The source's name: its consumer group is `source.<name>`, and the documents it
    /// writes have the source `kafka:<name>` (default: the first topic).
    #[serde(default)]
    pub name: Option<String>,
    /// Topics to read, from the broker of `[log.kafka]`.
    pub topics: Vec<String>,
    /// How their records are read.
    pub format: KafkaFormat,
    /// Which pipeline they feed.
    pub into: KafkaInto,
}

impl KafkaSourceConfig {
    /// The source's name.
    pub fn name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.topics.first().map(String::as_str))
            .unwrap_or("kafka")
    }

    /// Checks what can be checked alone.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err("sources.kafka.topics must name at least one topic".into());
        }
        match (self.format, self.into) {
            (KafkaFormat::Debezium, KafkaInto::Profiles)
            | (KafkaFormat::Documents, KafkaInto::Knowledge) => Ok(()),
            (format, into) => Err(format!(
                "sources.kafka '{}': format {format:?} cannot feed {into:?}; use debezium → profiles or documents → knowledge",
                self.name()
            )
            .to_lowercase()),
        }
    }
}

/// What a record becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Converted<T> {
    /// An event for the pipeline.
    Event(T),
    /// Nothing: the record carries no change (why, for the count).
    Skip(&'static str),
}

/// A Debezium record (key and value bytes; an empty value is Kafka's null) as the
/// profiles pipeline's input: `{"key": …, "value": …}`.
pub fn debezium_event(key: Option<&[u8]>, value: &[u8]) -> Converted<Value> {
    if value.is_empty() {
        return Converted::Skip("tombstone");
    }
    let parse = |bytes: &[u8]| {
        serde_json::from_slice::<Value>(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    };
    let value = parse(value);
    if value.is_null() {
        return Converted::Skip("tombstone");
    }
    let payload = value.get("payload").unwrap_or(&value);
    // Debezium's transaction metadata topic: BEGIN/END markers, no row.
    if payload.get("status").and_then(Value::as_str).is_some()
        && payload.get("event_count").is_some()
        && payload.get("op").is_none()
    {
        return Converted::Skip("transaction metadata");
    }
    let key = key.filter(|k| !k.is_empty()).map_or(Value::Null, parse);
    Converted::Event(serde_json::json!({ "key": key, "value": value }))
}

/// The JSON shape of a document record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentRecord {
    id: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
    #[serde(default)]
    deleted: bool,
}

/// Where a record came from, for the id of a rejection and the freshness clock.
#[derive(Debug, Clone, Copy)]
pub struct RecordOrigin<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Its timestamp (ms since the epoch).
    pub timestamp_ms: i64,
}

/// A documents record as a document event of source `source` (`kafka:<name>`). A record
/// that is not a document becomes a rejection naming its topic, partition and offset.
pub fn document_event(
    source: &str,
    origin: RecordOrigin<'_>,
    value: &[u8],
) -> Converted<DocumentEvent> {
    if value.is_empty() {
        return Converted::Skip("tombstone");
    }
    let at = format!("{}/{}/{}", origin.topic, origin.partition, origin.offset);
    let reject = |reason: String| DocumentEvent {
        op: DocumentOp::Reject,
        doc_id: format!("kafka:{at}"),
        source: source.to_owned(),
        format: DocumentFormat::Text,
        metadata: Default::default(),
        content_hash: None,
        observed_at_ms: origin.timestamp_ms,
        body: format!("{source}: record {at} is not a document: {reason}").into_bytes(),
    };
    let record: DocumentRecord = match serde_json::from_slice(value) {
        Ok(record) => record,
        Err(e) => return Converted::Event(reject(e.to_string())),
    };
    if record.id.is_empty() || record.id.len() > MAX_ID_BYTES {
        return Converted::Event(reject(format!("'id' must be 1 to {MAX_ID_BYTES} bytes")));
    }
    let (op, body) = match (record.deleted, record.text) {
        (true, _) => (DocumentOp::Delete, Vec::new()),
        (false, Some(text)) => (DocumentOp::Upsert, text.into_bytes()),
        (false, None) => {
            return Converted::Event(reject(
                "'text' is missing (and 'deleted' is not true)".into(),
            ))
        }
    };
    Converted::Event(DocumentEvent {
        op,
        content_hash: (op == DocumentOp::Upsert).then(|| content_hash(&body)),
        doc_id: record.id,
        source: source.to_owned(),
        format: DocumentFormat::Text,
        metadata: record.metadata,
        observed_at_ms: origin.timestamp_ms,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn origin() -> RecordOrigin<'static> {
        RecordOrigin {
            topic: "docs",
            partition: 2,
            offset: 17,
            timestamp_ms: 1_000,
        }
    }

    #[test]
    fn debezium_records_keep_key_and_value_and_skip_tombstones_and_markers() {
        let value =
            json!({"schema": {"type": "struct"}, "payload": {"op": "c", "after": {"id": 1}}});
        let got = debezium_event(Some(br#"{"id": 1}"#), value.to_string().as_bytes());
        assert_eq!(
            got,
            Converted::Event(json!({"key": {"id": 1}, "value": value}))
        );
        assert_eq!(
            debezium_event(Some(b"{}"), b""),
            Converted::Skip("tombstone")
        );
        assert_eq!(debezium_event(None, b"null"), Converted::Skip("tombstone"));
        let marker = json!({"status": "END", "id": "571:53195832", "event_count": 2, "data_collections": []});
        assert_eq!(
            debezium_event(None, marker.to_string().as_bytes()),
            Converted::Skip("transaction metadata")
        );
        // Not JSON: passed on as text, for the pipeline to dead-letter with its reason.
        assert_eq!(
            debezium_event(None, b"not json"),
            Converted::Event(json!({"key": null, "value": "not json"}))
        );
    }

    #[test]
    fn document_records_become_upserts_deletes_or_rejections() {
        let upsert = document_event(
            "kafka:docs",
            origin(),
            br#"{"id": "a", "text": "hello", "metadata": {"lang": "en"}}"#,
        );
        let Converted::Event(event) = upsert else {
            panic!("an event")
        };
        assert_eq!(event.op, DocumentOp::Upsert);
        assert_eq!(
            (event.doc_id.as_str(), event.body.as_slice()),
            ("a", &b"hello"[..])
        );
        assert_eq!(event.metadata.get("lang"), Some(&json!("en")));
        assert_eq!(event.content_hash, Some(content_hash(b"hello")));
        assert_eq!(event.observed_at_ms, 1_000);

        let Converted::Event(delete) =
            document_event("kafka:docs", origin(), br#"{"id": "a", "deleted": true}"#)
        else {
            panic!("an event")
        };
        assert_eq!(delete.op, DocumentOp::Delete);

        for bad in [
            &br#"{"text": "no id"}"#[..],
            b"{not json",
            br#"{"id": "a"}"#,
            br#"{"id": "", "text": "x"}"#,
        ] {
            let Converted::Event(reject) = document_event("kafka:docs", origin(), bad) else {
                panic!("a rejection")
            };
            assert_eq!(reject.op, DocumentOp::Reject);
            assert_eq!(reject.doc_id, "kafka:docs/2/17");
            assert!(String::from_utf8_lossy(&reject.body).contains("docs/2/17"));
        }
        assert_eq!(
            document_event("kafka:docs", origin(), b""),
            Converted::Skip("tombstone")
        );
    }

    #[test]
    fn only_matching_formats_and_pipelines_are_accepted() {
        let config = |format, into| KafkaSourceConfig {
            name: None,
            topics: vec!["t".into()],
            format,
            into,
        };
        assert!(config(KafkaFormat::Debezium, KafkaInto::Profiles)
            .validate()
            .is_ok());
        assert!(config(KafkaFormat::Documents, KafkaInto::Knowledge)
            .validate()
            .is_ok());
        assert!(config(KafkaFormat::Debezium, KafkaInto::Knowledge)
            .validate()
            .is_err());
        let mut none = config(KafkaFormat::Documents, KafkaInto::Knowledge);
        none.topics.clear();
        assert!(none.validate().is_err());
        assert_eq!(
            config(KafkaFormat::Debezium, KafkaInto::Profiles).name(),
            "t"
        );
    }
}
