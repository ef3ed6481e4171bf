//! The lake's redb state: the next offset per (topic, partition), in the engine's
//! [`OFFSETS`] table under the pipeline name `lake`, and the intent of the batch being
//! written, if any.
//!
//! An intent is committed before a batch's first file is written and removed in the same
//! transaction that advances the offset past the batch. An intent found at start therefore
//! names a batch whose files may be partly in place: it is redone, exactly, before
//! anything else of its partition.

use std::fmt;

use redb::{Database, ReadableDatabase, TableDefinition};
use tidewater_engine::OFFSETS;

use crate::LakeError;

/// The pipeline name of the lake's offsets in [`OFFSETS`].
pub(crate) const PIPELINE: &str = "lake";

/// The batch being written, by (topic, partition): (first offset, last offset).
const INTENTS: TableDefinition<(&str, u32), (u64, u64)> = TableDefinition::new("lake_intents");

/// An inclusive range of offsets of one partition: the records of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    /// First offset.
    pub first: u64,
    /// Last offset (inclusive).
    pub last: u64,
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.first, self.last)
    }
}

/// Creates the lake's table if the database is new.
pub(crate) fn create_tables(db: &Database) -> Result<(), LakeError> {
    let txn = db.begin_write()?;
    txn.open_table(INTENTS)?;
    txn.commit()?;
    Ok(())
}

/// Durably records that `batch` of `topic`/`partition` is about to be written.
pub(crate) fn record_intent(
    db: &Database,
    topic: &str,
    partition: u32,
    batch: Batch,
) -> Result<(), LakeError> {
    let txn = db.begin_write()?;
    txn.open_table(INTENTS)?
        .insert((topic, partition), (batch.first, batch.last))?;
    txn.commit()?;
    Ok(())
}

/// The recorded intents of a topic, by partition.
pub(crate) fn intents(db: &Database, topic: &str) -> Result<Vec<(u32, Batch)>, LakeError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(INTENTS)?;
    let mut found = Vec::new();
    for entry in table.range((topic, 0)..=(topic, u32::MAX))? {
        let (key, value) = entry?;
        let (first, last) = value.value();
        found.push((key.value().1, Batch { first, last }));
    }
    Ok(found)
}

/// In one transaction: the partition's next offset becomes `batch.last + 1` and the
/// batch's intent is removed.
pub(crate) fn complete(
    db: &Database,
    topic: &str,
    partition: u32,
    batch: Batch,
) -> Result<(), LakeError> {
    let txn = db.begin_write()?;
    txn.open_table(OFFSETS)?
        .insert((PIPELINE, topic, partition), batch.last + 1)?;
    txn.open_table(INTENTS)?.remove((topic, partition))?;
    txn.commit()?;
    Ok(())
}

/// The next offset not yet in the lake for each partition of a topic (0 when none).
pub(crate) fn committed(
    db: &Database,
    topic: &str,
    partitions: u32,
) -> Result<Vec<u64>, LakeError> {
    Ok(tidewater_engine::committed_offsets(
        db, PIPELINE, topic, partitions,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completing_a_batch_advances_the_offset_and_clears_its_intent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = tidewater_engine::open_state_db(&dir.path().join("lake.redb")).expect("db");
        create_tables(&db).expect("tables");
        let batch = Batch { first: 0, last: 9 };
        record_intent(&db, "t", 1, batch).expect("intent");
        record_intent(&db, "u", 0, Batch { first: 3, last: 4 }).expect("intent");
        assert_eq!(intents(&db, "t").expect("intents"), vec![(1, batch)]);
        assert_eq!(committed(&db, "t", 2).expect("committed"), vec![0, 0]);
        complete(&db, "t", 1, batch).expect("complete");
        assert!(intents(&db, "t").expect("intents").is_empty());
        assert_eq!(committed(&db, "t", 2).expect("committed"), vec![0, 10]);
        assert_eq!(intents(&db, "u").expect("intents").len(), 1);
    }
}
