//! The tables' shape: the common columns every lake file starts with, the [`Table`] trait
//! each topic's typed columns implement, and the Arrow batch built from rows.
//!
//! Rows are built from log records by pure functions of the record (no clock, no
//! randomness), so the same records always give the same files: that is what lets a
//! crashed batch be redone exactly.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt32Array, UInt64Array, UInt8Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use tidewater_core::{CONVERSATIONS_TOPIC, FEEDBACK_TOPIC};
use tidewater_log::Record;

/// The topic analytics writes closed windows to.
pub const KPIS_TOPIC: &str = "kpis";
/// The topic the profiles pipeline writes merged profiles to.
pub const PROFILES_TOPIC: &str = "profiles";

/// The timezone of every timestamp column.
const UTC: &str = "UTC";

/// Which typed columns a topic's files have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicKind {
    /// [`crate::tables::conversations`].
    Conversations,
    /// [`crate::tables::feedback`].
    Feedback,
    /// [`crate::tables::kpis`].
    Kpis,
    /// [`crate::tables::profiles`].
    Profiles,
    /// Any other topic: the common columns only.
    Other,
}

impl TopicKind {
    /// The kind of a topic, by its name.
    pub(crate) fn of(topic: &str) -> Self {
        match topic {
            CONVERSATIONS_TOPIC => Self::Conversations,
            FEEDBACK_TOPIC => Self::Feedback,
            KPIS_TOPIC => Self::Kpis,
            PROFILES_TOPIC => Self::Profiles,
            _ => Self::Other,
        }
    }
}

/// The columns every row has, taken from its log record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Common {
    /// `_partition`.
    pub partition: u32,
    /// `_offset`.
    pub offset: u64,
    /// `_log_time`, ms since the Unix epoch.
    pub log_time_ms: i64,
    /// `_key`, lossy UTF-8.
    pub key: Option<String>,
    /// `_raw`: the record's value, lossy UTF-8.
    pub raw: String,
}

impl Common {
    /// The common columns of a record.
    pub(crate) fn of(record: &Record) -> Self {
        Self {
            partition: record.partition,
            offset: record.offset,
            log_time_ms: record.timestamp_ms,
            key: record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            raw: String::from_utf8_lossy(&record.value).into_owned(),
        }
    }
}

/// A topic's typed columns. A value of the type is one row's typed part.
pub(crate) trait Table: Sized {
    /// The typed columns, after the common ones. All nullable.
    fn fields() -> Vec<Field>;

    /// The rows of one record, each with the time (ms since the Unix epoch) whose UTC date
    /// is the row's date partition. Never empty: a record that does not parse gives one
    /// row whose typed columns are all null, dated by its log time.
    fn parse(record: &Record) -> Vec<(i64, Self)>;

    /// The typed columns of `rows`, in the order of [`Table::fields`].
    fn columns(rows: &[Self]) -> Vec<ArrayRef>;
}

/// The full schema of a table: the common columns, then the typed ones.
pub(crate) fn schema<T: Table>() -> SchemaRef {
    let mut fields = vec![
        Field::new("_partition", DataType::UInt32, false),
        Field::new("_offset", DataType::UInt64, false),
        Field::new("_log_time", timestamp(), false),
        Field::new("_key", DataType::Utf8, true),
        Field::new("_raw", DataType::Utf8, false),
    ];
    fields.extend(T::fields());
    Arc::new(Schema::new(fields))
}

/// The Arrow batch of rows (`common[i]` and `typed[i]` make row `i`).
pub(crate) fn record_batch<T: Table>(
    schema: &SchemaRef,
    common: &[Common],
    typed: &[T],
) -> Result<RecordBatch, ArrowError> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(
            common.iter().map(|c| c.partition),
        )),
        Arc::new(UInt64Array::from_iter_values(
            common.iter().map(|c| c.offset),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(common.iter().map(|c| c.log_time_ms))
                .with_timezone(UTC),
        ),
        utf8(common.iter().map(|c| c.key.as_deref())),
        Arc::new(StringArray::from_iter_values(
            common.iter().map(|c| c.raw.as_str()),
        )),
    ];
    columns.extend(T::columns(typed));
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// The type of every timestamp column: milliseconds, UTC.
pub(crate) fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into()))
}

/// A nullable field.
pub(crate) fn nullable(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, true)
}

/// A Utf8 column.
pub(crate) fn utf8<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

/// A timestamp column (ms, UTC).
pub(crate) fn timestamps(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        values
            .collect::<TimestampMillisecondArray>()
            .with_timezone(UTC),
    )
}

/// A UInt64 column.
pub(crate) fn u64s(values: impl Iterator<Item = Option<u64>>) -> ArrayRef {
    Arc::new(values.collect::<UInt64Array>())
}

/// A UInt8 column.
pub(crate) fn u8s(values: impl Iterator<Item = Option<u8>>) -> ArrayRef {
    Arc::new(values.collect::<UInt8Array>())
}

/// A Float64 column.
pub(crate) fn f64s(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(values.collect::<Float64Array>())
}

/// A Boolean column.
pub(crate) fn bools(values: impl Iterator<Item = Option<bool>>) -> ArrayRef {
    Arc::new(values.collect::<BooleanArray>())
}

/// An event time in ms as stored (`u64` in events, `i64` in Arrow). Times past the year
/// 292 million saturate.
pub(crate) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
