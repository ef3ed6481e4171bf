//! The engine's own tables in a pipeline's state database, and opening one: created
//! atomically, checked whole before use, a damaged file reported by name.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Once};

use parking_lot::RwLock;
use redb::{Builder, Database, ReadableDatabase, StorageBackend, TableDefinition};

use crate::EngineError;

/// Next offset to consume, by (pipeline, topic, partition). Written in the same
/// transaction as the pipeline's state.
pub const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("engine_offsets");

/// Opens (creating if needed) a state database and its engine tables.
///
/// A new database is built under a temporary name and renamed into place once complete:
/// a crash while redb writes a new file's header would otherwise leave a file that is
/// not a database, and every later start would fail on it.
///
/// The database is then checked whole (redb's integrity check verifies every page's
/// checksum and repairs what an interrupted commit left). A damaged file is
/// [`EngineError::CorruptState`], naming it, instead of a panic deep inside redb on the
/// first damaged page some later read meets; redb's own panics on damage it does not
/// expect while opening or checking are caught and reported the same way.
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
    let corrupt = |reason: String| EngineError::CorruptState {
        path: path.to_owned(),
        reason,
    };
    match without_panicking(|| open_checked(path)) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(EngineError::State(e))) if is_damage(&e) => Err(corrupt(e.to_string())),
        Ok(Err(e)) => Err(e),
        Err(panic) => Err(corrupt(format!("redb failed reading it: {panic}"))),
    }
}

/// Opens an existing database, checks its integrity and creates the engine's tables.
fn open_checked(path: &Path) -> Result<Database, EngineError> {
    let mut db = Database::create(path)?;
    if !db.check_integrity()? {
        tracing::warn!(
            path = %path.display(),
            "state store was damaged and has been repaired to its last intact commit"
        );
    }
    create_tables(&db)?;
    Ok(db)
}

/// Whether a redb error says the file's content is damaged (rather than, say, that it is
/// locked or the disk failed).
fn is_damage(error: &redb::Error) -> bool {
    match error {
        redb::Error::Corrupted(_) => true,
        redb::Error::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

thread_local! {
    /// Set while this thread runs code whose panics are caught and reported as errors.
    static PANICS_CAUGHT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err(message)`. The process's panic hook stays silent for
/// such a panic, so that it becomes one error line instead of a message and a backtrace;
/// panics elsewhere are reported as before.
fn without_panicking<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !PANICS_CAUGHT.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = PANICS_CAUGHT.with(|caught| caught.replace(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    PANICS_CAUGHT.with(|caught| caught.set(was));
    outcome.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned())
    })
}

/// Opens a state database on `backend`, a storage other than a local file (the
/// `tidewater-pgvector` state in PostgreSQL, or an image in memory), checks it whole as
/// [`open_state_db`] does and creates the engine's tables. `label` names the storage in
/// errors. A storage that starts empty should first be given [`empty_state_image`]
/// in one write, so that it never holds half a new database.
pub fn open_state_db_on(
    backend: impl StorageBackend,
    label: &str,
) -> Result<Database, EngineError> {
    let corrupt = |reason: String| EngineError::CorruptState {
        path: label.into(),
        reason,
    };
    let open = || -> Result<Database, EngineError> {
        let mut db = Builder::new().create_with_backend(backend)?;
        if !db.check_integrity()? {
            tracing::warn!(
                state = label,
                "state store was damaged and has been repaired to its last intact commit"
            );
        }
        create_tables(&db)?;
        Ok(db)
    };
    match without_panicking(open) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(EngineError::State(e))) if is_damage(&e) => Err(corrupt(e.to_string())),
        Ok(Err(e)) => Err(e),
        Err(panic) => Err(corrupt(format!("redb failed reading it: {panic}"))),
    }
}

/// The bytes of a new state database holding the engine's (empty) tables.
pub fn empty_state_image() -> Result<Vec<u8>, EngineError> {
    let image = Image::default();
    let db = Builder::new().create_with_backend(image.clone())?;
    create_tables(&db)?;
    drop(db);
    let bytes = image.0.read().clone();
    Ok(bytes)
}

/// A state database over a private copy of `image` (a snapshot of state that another
/// process writes): it reads as the image was; what it writes (redb's repair of an image
/// taken while its writer had it open) stays in this process's memory.
pub fn state_db_from_image(image: Vec<u8>, label: &str) -> Result<Database, EngineError> {
    open_state_db_on(Image(Arc::new(RwLock::new(image))), label)
}

/// A database image in memory, shared with whoever holds a clone.
#[derive(Debug, Clone, Default)]
struct Image(Arc<RwLock<Vec<u8>>>);

impl StorageBackend for Image {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.read().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let image = self.0.read();
        let start = offset as usize;
        let bytes = start
            .checked_add(out.len())
            .and_then(|end| image.get(start..end))
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end")
            })?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.write().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut image = self.0.write();
        let start = offset as usize;
        let target = start
            .checked_add(data.len())
            .and_then(|end| image.get_mut(start..end))
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "write past the end")
            })?;
        target.copy_from_slice(data);
        Ok(())
    }
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
        .map(|p| stored_offset(&table, pipeline, topic, p))
        .collect()
}

/// The committed next offset of one partition (0 when none is).
pub fn committed_offset(
    db: &Database,
    pipeline: &str,
    topic: &str,
    partition: u32,
) -> Result<u64, EngineError> {
    let txn = db.begin_read()?;
    stored_offset(&txn.open_table(OFFSETS)?, pipeline, topic, partition)
}

fn stored_offset(
    table: &redb::ReadOnlyTable<(&str, &str, u32), u64>,
    pipeline: &str,
    topic: &str,
    partition: u32,
) -> Result<u64, EngineError> {
    Ok(table
        .get((pipeline, topic, partition))?
        .map(|v| v.value())
        .unwrap_or(0))
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

    /// Overwrites 64 bytes in every 4 KiB page past the header, as disk damage might.
    fn damage(path: &Path) {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let size = file.metadata().unwrap().len();
        for page in (8192..size).step_by(4096) {
            file.seek(SeekFrom::Start(page + 100)).unwrap();
            file.write_all(&[0xff; 64]).unwrap();
        }
    }

    #[test]
    fn h07_a_damaged_state_store_is_an_error_naming_it_not_a_panic() {
        const DATA: TableDefinition<u64, &str> = TableDefinition::new("data");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let db = open_state_db(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(DATA).unwrap();
            for i in 0..2000u64 {
                table.insert(i, "some state worth keeping").unwrap();
            }
        }
        txn.commit().unwrap();
        drop(db);
        damage(&path);

        let err = open_state_db(&path).expect_err("a damaged store is refused");
        assert!(matches!(err, EngineError::CorruptState { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("state store {} is corrupt (", path.display()))
                && message.ends_with("; delete it to rebuild it from the log")
                && !message.contains('\n'),
            "{message}"
        );

        // Not a database at all: the same error.
        std::fs::write(&path, b"definitely not a redb file").unwrap();
        let err = open_state_db(&path).expect_err("refused");
        assert!(matches!(err, EngineError::CorruptState { .. }), "{err:?}");
    }

    #[test]
    fn panics_are_caught_quietly_only_where_asked() {
        assert_eq!(without_panicking(|| 7), Ok(7));
        let caught = without_panicking(|| -> u8 { panic!("boom {}", 1) });
        assert_eq!(caught, Err("boom 1".to_owned()));
        assert!(!PANICS_CAUGHT.with(Cell::get));
    }
}
