//! From log records (raw Debezium key and value) to row changes of configured tables.

use serde_json::{Map, Value};
use tidewater_cdc::{parse_debezium, ChangeEvent, Op, Parsed};
use tidewater_log::Record;

use crate::graph::RecordId;
use crate::profile::ProfilesConfig;

/// One change to one row of a configured table, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// The log offset of the event.
    pub offset: u64,
    /// The row (for a truncate, the table with an empty key).
    pub record: RecordId,
    /// What happened to it.
    pub kind: RowChangeKind,
}

/// What happened to a row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChangeKind {
    /// Inserted, updated or read by a snapshot.
    Upsert {
        /// The full new image; `None` for a partial update (`patch`).
        after: Option<Map<String, Value>>,
        /// Fields set by a partial update, applied over the stored row.
        patch: Option<Map<String, Value>>,
        /// Fields removed by a partial update.
        removed_fields: Vec<String>,
        /// When the change happened at the source.
        event_time_ms: i64,
    },
    /// Deleted.
    Delete,
    /// Every row of the table deleted.
    Truncate,
}

/// What one log record is for the pipeline.
pub(crate) enum Decoded {
    /// A change to apply.
    Change(RowChange),
    /// Nothing to do: a tombstone, a transaction marker, a message, an unconfigured table.
    Skip,
    /// A malformed event, with the reason.
    Reject(String),
}

/// Decodes one record. The event time is the source's commit time (`source.ts_ms`), else
/// the capture time (`ts_ms`), else the log record's timestamp.
pub(crate) fn decode_record(config: &ProfilesConfig, record: &Record) -> Decoded {
    let parsed = match parse_debezium(record.key.as_deref(), Some(&record.value)) {
        Ok(parsed) => parsed,
        Err(e) => return Decoded::Reject(e.to_string()),
    };
    let event = match parsed {
        Parsed::Change(event) => event,
        // Tombstones follow deletes already applied; markers carry no row.
        _ => return Decoded::Skip,
    };
    let table = event.table_id();
    if config.table(&table).is_none() {
        return Decoded::Skip;
    }
    match change(record, event, table) {
        Ok(Some(change)) => Decoded::Change(change),
        Ok(None) => Decoded::Skip,
        Err(reason) => Decoded::Reject(reason),
    }
}

fn change(record: &Record, event: ChangeEvent, table: String) -> Result<Option<RowChange>, String> {
    let kind = match event.op {
        Op::Truncate => {
            return Ok(Some(RowChange {
                offset: record.offset,
                record: RecordId::new(table, ""),
                kind: RowChangeKind::Truncate,
            }))
        }
        Op::Message => return Ok(None),
        Op::Delete => RowChangeKind::Delete,
        Op::Create | Op::Update | Op::Read => {
            if event.after.is_none() && event.patch.is_none() {
                return Err(format!(
                    "{} event for table {table} has neither an after image nor a patch",
                    event.op.code()
                ));
            }
            RowChangeKind::Upsert {
                event_time_ms: event
                    .source
                    .ts_ms
                    .or(event.event_time_ms)
                    .unwrap_or(record.timestamp_ms),
                after: event.after.clone(),
                patch: event.patch.clone(),
                removed_fields: event.removed_fields.clone(),
            }
        }
        // A new operation this version does not know.
        _ => return Err(format!("unsupported operation {:?}", event.op.code())),
    };
    if event.key.is_empty() {
        return Err(format!(
            "event for table {table} has no primary key (the record key is missing)"
        ));
    }
    Ok(Some(RowChange {
        offset: record.offset,
        record: RecordId::new(table, event.key_string()),
        kind,
    }))
}
