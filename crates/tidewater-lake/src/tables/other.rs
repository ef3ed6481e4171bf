//! Any topic the lake has no schema for: the common columns only, dated by log time.

use arrow_array::ArrayRef;
use arrow_schema::Field;
use tidewater_log::Record;

use crate::schema::Table;

/// A row with no typed columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OtherRow;

impl Table for OtherRow {
    fn fields() -> Vec<Field> {
        Vec::new()
    }

    fn parse(record: &Record) -> Vec<(i64, Self)> {
        vec![(record.timestamp_ms, OtherRow)]
    }

    fn columns(_rows: &[Self]) -> Vec<ArrayRef> {
        Vec::new()
    }
}
