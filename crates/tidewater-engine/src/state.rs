//! The engine's own tables in a pipeline's state database.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::EngineError;

/// Next offset to consume, by (pipeline, topic, partition). Written in the same
/// transaction as the pipeline's state.
pub const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("engine_offsets");

/// Opens (creating if needed) a state database and its engine tables.
///
/// A new database is built under a temporary name and renamed into place once complete:
/// a crash while redb writes a new file's header would otherwise leave a file that is
/// not a database, and every later start would fail on it.
pub fn open_state_db(path: &Path) -> Result<Database, EngineError> {
    let io = |e: std::io::Error| EngineError::State(redb::Error::Io(e));
    if !path.exists() {
        let mut creating = path.as_os_str().to_owned();
        creating.push(".creating");
        let creating = std::path::PathBuf::from(creating);
        if creating.exists() {
            fs_err::remove_file(&creating).map_err(io)?;
        }
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir).map_err(io)?;
        }
        create_tables(&Database::create(&creating)?)?;
        fs_err::File::open(&creating)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        fs_err::rename(&creating, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            fs_err::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
    }
    let db = Database::create(path)?;
    create_tables(&db)?;
    Ok(db)
}

fn create_tables(db: &Database) -> Result<(), EngineError> {
    let txn = db.begin_write()?;
    txn.open_table(OFFSETS)?;
    crate::outbox::create_tables(&txn)?;
    txn.commit()?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: SIGKILL while a new database's header was being written left a file
    /// that redb rejects ("magic number mismatch"), so Tidewater could never start again.
    #[test]
    fn interrupted_creation_leaves_no_unopenable_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/knowledge.redb");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // What an interrupted creation leaves behind: a partial file under the temporary name.
        std::fs::write(
            dir.path().join("state/knowledge.redb.creating"),
            b"\0\0\0partial",
        )
        .unwrap();
        let db = open_state_db(&path).unwrap();
        assert_eq!(committed_offsets(&db, "p", "t", 2).unwrap(), vec![0, 0]);
        assert!(!dir.path().join("state/knowledge.redb.creating").exists());
        drop(db);
        open_state_db(&path).unwrap();
    }
}
