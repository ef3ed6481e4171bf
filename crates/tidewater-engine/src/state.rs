//! The engine's own tables in a pipeline's state database.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::EngineError;

/// Next offset to consume, by (pipeline, topic, partition). Written in the same
/// transaction as the pipeline's state.
pub const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("engine_offsets");

/// Dead letters by sequence number (JSON of [`crate::DeadLetterRecord`]).
pub(crate) const DEAD_LETTERS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("engine_dead_letters");

/// Engine counters: `dead_letters_next` (next sequence), `dead_letters_published`
/// (sequence up to which letters are on the dead-letter topic).
pub(crate) const ENGINE_META: TableDefinition<&str, u64> = TableDefinition::new("engine_meta");

/// Opens (creating if needed) a state database and its engine tables.
pub fn open_state_db(path: &Path) -> Result<Database, EngineError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::State(redb::Error::Io(e)))?;
    }
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(OFFSETS)?;
    txn.open_table(DEAD_LETTERS)?;
    txn.open_table(ENGINE_META)?;
    txn.commit()?;
    Ok(db)
}

/// The committed next offsets of a pipeline for each partition of a topic (0 when none).
pub fn committed_offsets(
    db: &Database,
    pipeline: &str,
    topic: &str,
    partitions: u32,
) -> Result<Vec<u64>, EngineError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(OFFSETS)?;
    (0..partitions)
        .map(|p| {
            Ok(table
                .get((pipeline, topic, p))?
                .map(|v| v.value())
                .unwrap_or(0))
        })
        .collect()
}
