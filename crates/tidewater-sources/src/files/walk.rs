//! Listing a directory tree: which included files are under it, and which parts could not
//! be read (so that nothing under them is taken for deleted).
//!
//! Symbolic links are never followed: a link can lead out of the root, and one inside the
//! root would give the same content a second document id that no watcher event updates.
//!
//! An entry that would be part of the source but cannot have a document id (its name is
//! not valid UTF-8, or its relative path is longer than [`MAX_ID_BYTES`]) is *rejected*:
//! the caller reports it to the dead-letter topic rather than dropping it unseen.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tidewater_core::document::MAX_ID_BYTES;

use super::error::SourceError;
use super::filter::PathFilter;

/// What a walk saw besides the files it handed to its callback.
#[derive(Debug, Default)]
pub(crate) struct WalkOutcome {
    /// Ids of directories that could not be listed; documents under them are unknown,
    /// not deleted.
    pub unreadable_dirs: Vec<String>,
    /// Entries that look like documents but were not read, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Entries that would be part of the source but cannot have a document id.
    pub rejected: Vec<Rejected>,
    /// The stop signal was raised before the walk finished.
    pub aborted: bool,
}

/// A file, or a directory with everything under it, that cannot become a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejected {
    /// What it is reported under: its relative path, with each byte of its name that is not
    /// valid UTF-8 written as `\xNN`.
    pub id: String,
    /// Where it is.
    pub path: PathBuf,
    /// Why it cannot become a document, for a person to read.
    pub reason: String,
}

/// Walks the tree below `start` (whose id is `start_id`, empty for the root) and calls
/// `on_file` with each regular file the filter includes, in name order. A directory that
/// cannot be listed is recorded in the outcome and skipped, except the root, which is an
/// error (an unmounted volume must not read as "everything deleted").
pub(crate) fn walk(
    start: &Path,
    start_id: &str,
    filter: &PathFilter,
    stop: Option<&AtomicBool>,
    mut on_file: impl FnMut(&Path, &str, &Metadata) -> Result<(), SourceError>,
) -> Result<WalkOutcome, SourceError> {
    let mut outcome = WalkOutcome::default();
    let mut stack = vec![(start.to_owned(), start_id.to_owned())];
    while let Some((dir, dir_id)) = stack.pop() {
        if stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            outcome.aborted = true;
            return Ok(outcome);
        }
        let entries = match list_dir(&dir) {
            Ok(entries) => entries,
            Err(source) if dir_id.is_empty() => {
                return Err(SourceError::Root { path: dir, source })
            }
            // Gone between the parent's listing (or the watcher event) and now: nothing
            // is under it any more.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot list directory; its documents are kept as they were");
                outcome
                    .skipped
                    .push((dir, format!("cannot list directory: {err}")));
                outcome.unreadable_dirs.push(dir_id);
                continue;
            }
        };
        let mut subdirs = Vec::new();
        for entry in entries {
            // Checked per entry too: one directory can hold a great many files.
            if stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
                outcome.aborted = true;
                return Ok(outcome);
            }
            let path = entry.path();
            let name = entry.file_name();
            let (id, utf8) = match name.to_str() {
                Some(name) => (join_id(&dir_id, name), true),
                None => (join_id(&dir_id, &escape_name(&name)), false),
            };
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => {
                    if filter.includes_file(&id) {
                        outcome.skipped.push((path, format!("cannot stat: {err}")));
                    }
                    continue;
                }
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                if filter.excludes_dir(&id) {
                    continue;
                }
                match dir_id_problem(&id, utf8) {
                    Some(reason) => outcome.rejected.push(Rejected { id, path, reason }),
                    None => subdirs.push((path, id)),
                }
            } else if !filter.includes_file(&id) {
                continue;
            } else if kind.is_file() {
                match file_id_problem(&id, utf8) {
                    Some(reason) => outcome.rejected.push(Rejected { id, path, reason }),
                    None => on_file(&path, &id, &meta)?,
                }
            } else if kind.is_symlink() {
                outcome
                    .skipped
                    .push((path, "symbolic link (not followed)".to_owned()));
            } else {
                // FIFOs, sockets, devices: reading one could block forever.
                outcome
                    .skipped
                    .push((path, "not a regular file".to_owned()));
            }
        }
        // Reversed so that popping visits subdirectories in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(outcome)
}

/// One directory's entries, sorted by name so listings are deterministic.
fn list_dir(dir: &Path) -> io::Result<Vec<fs_err::DirEntry>> {
    let mut entries = fs_err::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    Ok(entries)
}

/// Why an included file with this id cannot become a document, if it cannot.
fn file_id_problem(id: &str, utf8: bool) -> Option<String> {
    if !utf8 {
        Some("file name is not valid UTF-8 (document ids are text)".to_owned())
    } else if id.len() > MAX_ID_BYTES {
        Some(format!(
            "relative path is {} bytes, over the limit of {MAX_ID_BYTES} for a document id",
            id.len()
        ))
    } else {
        None
    }
}

/// Why nothing under a directory with this id can become a document, if nothing can.
fn dir_id_problem(id: &str, utf8: bool) -> Option<String> {
    if !utf8 {
        Some(
            "directory name is not valid UTF-8 (document ids are text); nothing under it is indexed"
                .to_owned(),
        )
    } else if id.len() + "/x".len() > MAX_ID_BYTES {
        Some(format!(
            "directory's relative path is {} bytes, so every document id under it would exceed \
             the limit of {MAX_ID_BYTES}; nothing under it is indexed",
            id.len()
        ))
    } else {
        None
    }
}

/// `name` with each byte that is not valid UTF-8 written as `\xNN`: a printable spelling
/// that tells two such names apart.
fn escape_name(name: &OsStr) -> String {
    let mut escaped = String::new();
    for chunk in name.as_encoded_bytes().utf8_chunks() {
        escaped.push_str(chunk.valid());
        for byte in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(escaped, "\\x{byte:02X}");
        }
    }
    escaped
}

/// The id of `name` inside the directory with id `dir_id`.
pub(crate) fn join_id(dir_id: &str, name: &str) -> String {
    if dir_id.is_empty() {
        name.to_owned()
    } else {
        format!("{dir_id}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn escapes_only_the_bytes_that_are_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let name = OsStr::from_bytes(b"bad\xffname\xc3.txt");
        assert_eq!(escape_name(name), "bad\\xFFname\\xC3.txt");
        assert_eq!(escape_name(OsStr::new("caf\u{e9}.md")), "caf\u{e9}.md");
    }

    #[test]
    fn limits_ids_to_the_shared_maximum() {
        let at_limit = "a".repeat(MAX_ID_BYTES);
        assert_eq!(file_id_problem(&at_limit, true), None);
        let over = "a".repeat(MAX_ID_BYTES + 1);
        assert!(file_id_problem(&over, true).unwrap().contains("4097 bytes"));
        assert_eq!(dir_id_problem(&"d".repeat(MAX_ID_BYTES - 2), true), None);
        assert!(dir_id_problem(&"d".repeat(MAX_ID_BYTES - 1), true).is_some());
    }
}
