//! `conversations`: one row per [`ConversationEvent`], dated by its event time.

use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field};
use tidewater_core::{ConversationEvent, ConversationStatus};
use tidewater_log::Record;

use crate::schema::{ms, nullable, timestamp, timestamps, u64s, utf8, Table};

/// The typed part of a conversation row; all `None` when the record does not parse.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ConversationRow {
    pub conversation_id: Option<String>,
    /// The event time, or the log time when the event has none.
    pub event_time_ms: Option<i64>,
    pub question: Option<String>,
    pub answer: Option<String>,
    pub customer: Option<String>,
    pub customer_id: Option<String>,
    pub model: Option<String>,
    /// `ok` or `failed`.
    pub status: Option<&'static str>,
    pub error: Option<String>,
    pub latency_retrieval_ms: Option<u64>,
    pub latency_model_ms: Option<u64>,
    pub latency_total_ms: Option<u64>,
    /// JSON array of `{chunk_id, doc_id, score}`.
    pub citations: Option<String>,
    /// JSON object.
    pub profile_fields: Option<String>,
    /// JSON array of `{role, content}`.
    pub prompt: Option<String>,
}

impl ConversationRow {
    fn from_event(event: ConversationEvent, log_time_ms: i64) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_time_ms: Some(event.event_time_ms.map_or(log_time_ms, ms)),
            citations: Some(serde_json::to_string(&event.citations)?),
            profile_fields: Some(serde_json::to_string(&event.profile_fields)?),
            prompt: Some(serde_json::to_string(&event.prompt)?),
            status: Some(match event.status {
                ConversationStatus::Ok => "ok",
                ConversationStatus::Failed => "failed",
            }),
            latency_retrieval_ms: Some(event.latency.retrieval_ms),
            latency_model_ms: Some(event.latency.model_ms),
            latency_total_ms: Some(event.latency.total_ms),
            conversation_id: Some(event.conversation_id),
            question: Some(event.question),
            answer: Some(event.answer),
            customer: event.customer,
            customer_id: event.customer_id,
            model: Some(event.model),
            error: event.error,
        })
    }
}

impl Table for ConversationRow {
    fn fields() -> Vec<Field> {
        vec![
            nullable("conversation_id", DataType::Utf8),
            nullable("event_time", timestamp()),
            nullable("question", DataType::Utf8),
            nullable("answer", DataType::Utf8),
            nullable("customer", DataType::Utf8),
            nullable("customer_id", DataType::Utf8),
            nullable("model", DataType::Utf8),
            nullable("status", DataType::Utf8),
            nullable("error", DataType::Utf8),
            nullable("latency_retrieval_ms", DataType::UInt64),
            nullable("latency_model_ms", DataType::UInt64),
            nullable("latency_total_ms", DataType::UInt64),
            nullable("citations", DataType::Utf8),
            nullable("profile_fields", DataType::Utf8),
            nullable("prompt", DataType::Utf8),
        ]
    }

    fn parse(record: &Record) -> Vec<(i64, Self)> {
        let row = serde_json::from_slice::<ConversationEvent>(&record.value)
            .and_then(|event| Self::from_event(event, record.timestamp_ms))
            .unwrap_or_default();
        vec![(row.event_time_ms.unwrap_or(record.timestamp_ms), row)]
    }

    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            utf8(rows.iter().map(|r| r.conversation_id.as_deref())),
            timestamps(rows.iter().map(|r| r.event_time_ms)),
            utf8(rows.iter().map(|r| r.question.as_deref())),
            utf8(rows.iter().map(|r| r.answer.as_deref())),
            utf8(rows.iter().map(|r| r.customer.as_deref())),
            utf8(rows.iter().map(|r| r.customer_id.as_deref())),
            utf8(rows.iter().map(|r| r.model.as_deref())),
            utf8(rows.iter().map(|r| r.status)),
            utf8(rows.iter().map(|r| r.error.as_deref())),
            u64s(rows.iter().map(|r| r.latency_retrieval_ms)),
            u64s(rows.iter().map(|r| r.latency_model_ms)),
            u64s(rows.iter().map(|r| r.latency_total_ms)),
            utf8(rows.iter().map(|r| r.citations.as_deref())),
            utf8(rows.iter().map(|r| r.profile_fields.as_deref())),
            utf8(rows.iter().map(|r| r.prompt.as_deref())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str, timestamp_ms: i64) -> Record {
        Record {
            partition: 0,
            offset: 0,
            timestamp_ms,
            key: None,
            value: value.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn an_event_without_event_time_is_dated_by_its_log_time() {
        let rows = ConversationRow::parse(&record(
            r#"{"conversation_id":"c1","question":"q?","answer":"a"}"#,
            86_400_000,
        ));
        assert_eq!(rows.len(), 1);
        let (date_ms, row) = &rows[0];
        assert_eq!(*date_ms, 86_400_000);
        assert_eq!(row.event_time_ms, Some(86_400_000));
        assert_eq!(row.model.as_deref(), Some("unknown"));
        assert_eq!(row.status, Some("ok"));
        assert_eq!(row.prompt.as_deref(), Some("[]"));
        assert_eq!(row.profile_fields.as_deref(), Some("{}"));
    }

    #[test]
    fn a_record_that_is_not_a_conversation_gives_a_null_row_at_its_log_time() {
        for bad in [
            "not json",
            r#"{"question":"no id"}"#,
            r#"{"conversation_id":"c","question":"q","extra":1}"#,
        ] {
            let rows = ConversationRow::parse(&record(bad, 5));
            assert_eq!(rows, vec![(5, ConversationRow::default())], "{bad}");
        }
    }
}
