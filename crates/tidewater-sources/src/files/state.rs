//! What the source last delivered per document, persisted so a restart emits only what
//! changed while it was down.
//!
//! On disk: one JSON file (`{"format": "tidewater-files-state", "version": 1, ...,
//! "docs": {doc_id: {hash, size, mtime_ns, verified_at_ms}}, "rejected": {id: reason}}`),
//! replaced atomically (write a sibling temp file, fsync it, rename over, fsync the
//! directory) and only after the sink acknowledged the events it reflects. `rejected`
//! lists the entries already sent to the dead-letter topic; a file without it has none.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::error::SourceError;

const FORMAT: &str = "tidewater-files-state";
const VERSION: u32 = 1;

/// A file whose mtime lies this close to the moment it was hashed may have been written
/// again within the same mtime tick after the read (coarse file systems tick in seconds,
/// FAT in two), so its (size, mtime) cannot vouch for its content.
const RACY_WINDOW_MS: i64 = 2_000;

/// The last delivered version of one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileRecord {
    /// Content hash of the body last emitted.
    pub hash: String,
    /// Size in bytes when it was last hashed.
    pub size: u64,
    /// Modification time (ns since the epoch) when it was last hashed.
    pub mtime_ns: i64,
    /// When it was last hashed (ms since the epoch).
    pub verified_at_ms: i64,
}

impl FileRecord {
    /// Whether a file with this size and mtime can be taken to still hold `hash`
    /// without reading it.
    pub(crate) fn vouches_for(&self, size: u64, mtime_ns: i64) -> bool {
        self.size == size
            && self.mtime_ns == mtime_ns
            && self.verified_at_ms - mtime_ns.div_euclid(1_000_000) > RACY_WINDOW_MS
    }
}

/// The modification time of a file as ns since the epoch (negative before it).
pub(crate) fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    let Ok(modified) = meta.modified() else {
        // Platforms without mtimes: 0 never matches a real file's mtime twice in a
        // meaningful way, and the racy window keeps it from vouching for anything.
        return 0;
    };
    match modified.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |ns| -ns),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format: String,
    version: u32,
    /// For a reader of the file; a changed root or name is not an error (the ids of the
    /// old tree are simply deleted on the next scan).
    source: String,
    root: PathBuf,
    docs: BTreeMap<String, FileRecord>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    rejected: BTreeMap<String, String>,
}

/// The in-memory state: the records, and whether they differ from the file.
#[derive(Debug, Default)]
pub(crate) struct SourceState {
    pub docs: BTreeMap<String, FileRecord>,
    /// Entries that cannot become documents and were reported to the dead-letter topic,
    /// with the reason: reported again only if the reason changes or after they went away.
    pub rejected: BTreeMap<String, String>,
    /// Files over `max_file_bytes` already warned about, with the (size, mtime) they had:
    /// warned about again only when that changes. Not persisted: a restart warns once more.
    pub oversized: BTreeMap<String, (u64, i64)>,
    pub dirty: bool,
}

impl SourceState {
    /// Reads the state file; a missing file is an empty state (first run).
    pub(crate) fn load(path: &Path) -> Result<Self, SourceError> {
        let bytes = match fs_err::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(SourceError::StateRead {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let file: StateFile =
            serde_json::from_slice(&bytes).map_err(|err| SourceError::StateCorrupt {
                path: path.to_owned(),
                reason: err.to_string(),
            })?;
        if file.format != FORMAT || file.version != VERSION {
            return Err(SourceError::StateCorrupt {
                path: path.to_owned(),
                reason: format!(
                    "format '{}' version {} is not '{FORMAT}' version {VERSION}",
                    file.format, file.version
                ),
            });
        }
        Ok(Self {
            docs: file.docs,
            rejected: file.rejected,
            oversized: BTreeMap::new(),
            dirty: false,
        })
    }

    /// Replaces the state file atomically with the current records.
    pub(crate) fn persist(
        &mut self,
        path: &Path,
        source: &str,
        root: &Path,
    ) -> Result<(), SourceError> {
        let file = StateFile {
            format: FORMAT.to_owned(),
            version: VERSION,
            source: source.to_owned(),
            root: root.to_owned(),
            docs: std::mem::take(&mut self.docs),
            rejected: std::mem::take(&mut self.rejected),
        };
        let written = write_atomically(path, &file);
        self.docs = file.docs;
        self.rejected = file.rejected;
        written.map_err(|source| SourceError::StateWrite {
            path: path.to_owned(),
            source,
        })?;
        self.dirty = false;
        Ok(())
    }
}

fn write_atomically(path: &Path, file: &StateFile) -> io::Result<()> {
    let bytes = serde_json::to_vec(file).map_err(io::Error::other)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut out = fs_err::File::create(&tmp)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
    }
    fs_err::rename(&tmp, path)?;
    sync_parent(path)
}

/// Makes the rename itself durable: without it a crash can bring back the old file.
#[cfg(unix)]
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs_err::File::open(parent)?.sync_all()
}

/// Directories cannot be opened for fsync here; the rename is as durable as it gets.
#[cfg(not(unix))]
fn sync_parent(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hash: &str) -> FileRecord {
        FileRecord {
            hash: hash.to_owned(),
            size: 3,
            mtime_ns: 1_000_000_000,
            verified_at_ms: 5_000,
        }
    }

    #[test]
    fn round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files.state");
        assert!(SourceState::load(&path).unwrap().docs.is_empty());

        let mut state = SourceState::default();
        state.docs.insert("a/b.md".into(), record("h1"));
        state
            .rejected
            .insert("bad\\xFF.md".into(), "file name is not valid UTF-8".into());
        state.dirty = true;
        state.persist(&path, "files:docs", dir.path()).unwrap();
        assert!(!state.dirty);
        assert_eq!(state.docs.len(), 1, "persist keeps the records in memory");

        let loaded = SourceState::load(&path).unwrap();
        assert_eq!(loaded.docs, state.docs);
        assert_eq!(loaded.rejected, state.rejected);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("files.state")]);
    }

    #[test]
    fn refuses_a_foreign_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files.state");
        std::fs::write(&path, b"{\"docs\": 1}").unwrap();
        let err = SourceState::load(&path).unwrap_err();
        assert!(matches!(err, SourceError::StateCorrupt { .. }), "{err}");
    }

    #[test]
    fn recently_written_files_are_not_vouched_for() {
        let old = record("h");
        assert!(old.vouches_for(3, 1_000_000_000));
        assert!(!old.vouches_for(4, 1_000_000_000));
        assert!(!old.vouches_for(3, 1_000_000_001));
        let racy = FileRecord {
            verified_at_ms: 1_500,
            ..old
        };
        assert!(!racy.vouches_for(3, 1_000_000_000));
    }
}
