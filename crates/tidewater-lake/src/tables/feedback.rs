//! `feedback`: one row per [`FeedbackEvent`], dated by its event time.

use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field};
use tidewater_core::FeedbackEvent;
use tidewater_log::Record;

use crate::schema::{bools, ms, nullable, timestamp, timestamps, u8s, utf8, Table};

/// The typed part of a feedback row; all `None` when the record does not parse.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FeedbackRow {
    pub conversation_id: Option<String>,
    /// The event time, or the log time when the event has none.
    pub event_time_ms: Option<i64>,
    /// `up`, `down` or `1`..`5`.
    pub rating: Option<String>,
    /// Up = 5, Down = 1, Stars = n.
    pub rating_value: Option<u8>,
    pub positive: Option<bool>,
    pub comment: Option<String>,
}

impl Table for FeedbackRow {
    fn fields() -> Vec<Field> {
        vec![
            nullable("conversation_id", DataType::Utf8),
            nullable("event_time", timestamp()),
            nullable("rating", DataType::Utf8),
            nullable("rating_value", DataType::UInt8),
            nullable("positive", DataType::Boolean),
            nullable("comment", DataType::Utf8),
        ]
    }

    fn parse(record: &Record) -> Vec<(i64, Self)> {
        let row = match serde_json::from_slice::<FeedbackEvent>(&record.value) {
            Ok(event) => Self {
                event_time_ms: Some(event.event_time_ms.map_or(record.timestamp_ms, ms)),
                rating: Some(event.rating.to_string()),
                rating_value: Some(event.rating.value()),
                positive: Some(event.rating.is_positive()),
                conversation_id: Some(event.conversation_id),
                comment: event.comment,
            },
            Err(_) => Self::default(),
        };
        vec![(row.event_time_ms.unwrap_or(record.timestamp_ms), row)]
    }

    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            utf8(rows.iter().map(|r| r.conversation_id.as_deref())),
            timestamps(rows.iter().map(|r| r.event_time_ms)),
            utf8(rows.iter().map(|r| r.rating.as_deref())),
            u8s(rows.iter().map(|r| r.rating_value)),
            bools(rows.iter().map(|r| r.positive)),
            utf8(rows.iter().map(|r| r.comment.as_deref())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> FeedbackRow {
        let record = Record {
            partition: 0,
            offset: 0,
            timestamp_ms: 7,
            key: None,
            value: value.as_bytes().to_vec(),
            headers: Vec::new(),
        };
        let mut rows = FeedbackRow::parse(&record);
        assert_eq!(rows.len(), 1);
        rows.remove(0).1
    }

    #[test]
    fn ratings_keep_their_text_and_get_a_value() {
        for (rating, text, value, positive) in [
            (r#""up""#, "up", 5, true),
            (r#""down""#, "down", 1, false),
            ("4", "4", 4, true),
            ("3", "3", 3, false),
        ] {
            let row = parse(&format!(r#"{{"conversation_id":"c","rating":{rating}}}"#));
            assert_eq!(row.rating.as_deref(), Some(text));
            assert_eq!(row.rating_value, Some(value));
            assert_eq!(row.positive, Some(positive));
            assert_eq!(row.event_time_ms, Some(7));
        }
        assert_eq!(
            parse(r#"{"conversation_id":"c","rating":6}"#),
            FeedbackRow::default()
        );
    }
}
