//! `profiles`: one row per published profile or removal, dated by log time. The record's
//! key is the customer id; its value the merged profile JSON, or
//! `{"customer_id": "...", "removed": true}` when the customer no longer exists.

use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field};
use serde_json::Value;
use tidewater_log::Record;

use crate::schema::{bools, nullable, utf8, Table};

/// The typed part of a profile row; all `None` when the value is not a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProfileRow {
    /// From the key, else the value's `customer_id`.
    pub customer_id: Option<String>,
    pub removed: Option<bool>,
    /// The profile JSON as published; `None` when removed.
    pub profile: Option<String>,
}

impl Table for ProfileRow {
    fn fields() -> Vec<Field> {
        vec![
            nullable("customer_id", DataType::Utf8),
            nullable("removed", DataType::Boolean),
            nullable("profile", DataType::Utf8),
        ]
    }

    fn parse(record: &Record) -> Vec<(i64, Self)> {
        let row = match serde_json::from_slice::<Value>(&record.value) {
            Ok(Value::Object(value)) => {
                let removed = value.get("removed").and_then(Value::as_bool) == Some(true);
                let customer_id = match &record.key {
                    Some(key) => Some(String::from_utf8_lossy(key).into_owned()),
                    None => value
                        .get("customer_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                };
                Self {
                    customer_id,
                    removed: Some(removed),
                    // Valid JSON already (it parsed): kept byte for byte, not re-serialised.
                    profile: (!removed)
                        .then(|| String::from_utf8_lossy(&record.value).into_owned()),
                }
            }
            _ => Self::default(),
        };
        vec![(record.timestamp_ms, row)]
    }

    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            utf8(rows.iter().map(|r| r.customer_id.as_deref())),
            bools(rows.iter().map(|r| r.removed)),
            utf8(rows.iter().map(|r| r.profile.as_deref())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(key: Option<&str>, value: &str) -> ProfileRow {
        let record = Record {
            partition: 0,
            offset: 0,
            timestamp_ms: 1,
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
            headers: Vec::new(),
        };
        let mut rows = ProfileRow::parse(&record);
        assert_eq!(rows.len(), 1);
        rows.remove(0).1
    }

    #[test]
    fn the_key_names_the_customer_and_a_removal_has_no_profile() {
        let row = parse(Some("cus-1"), r#"{"customer_id":"other","name":"Ana"}"#);
        assert_eq!(row.customer_id.as_deref(), Some("cus-1"));
        assert_eq!(row.removed, Some(false));
        assert_eq!(
            row.profile.as_deref(),
            Some(r#"{"customer_id":"other","name":"Ana"}"#)
        );

        let row = parse(None, r#"{"customer_id":"cus-2","removed":true}"#);
        assert_eq!(row.customer_id.as_deref(), Some("cus-2"));
        assert_eq!(row.removed, Some(true));
        assert_eq!(row.profile, None);

        assert_eq!(parse(Some("cus-3"), "[1,2]"), ProfileRow::default());
    }
}
