//! Listing a directory tree: which included files are under it, and which parts could not
//! be read (so that nothing under them is taken for deleted).
//!
//! Symbolic links are never followed: a link can lead out of the root, and one inside the
//! root would give the same content a second document id that no watcher event updates.

use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// The stop signal was raised before the walk finished.
    pub aborted: bool,
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
            let Some(name) = name.to_str() else {
                // Ids are strings everywhere downstream; report the entry if it would
                // have been part of the source under a lossy spelling of its name.
                let lossy = join_id(&dir_id, &name.to_string_lossy());
                let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
                let wanted = if is_dir {
                    !filter.excludes_dir(&lossy)
                } else {
                    filter.includes_file(&lossy)
                };
                if wanted {
                    outcome
                        .skipped
                        .push((path, "name is not valid UTF-8".to_owned()));
                }
                continue;
            };
            let id = join_id(&dir_id, name);
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
                if !filter.excludes_dir(&id) {
                    subdirs.push((path, id));
                }
            } else if !filter.includes_file(&id) {
                continue;
            } else if kind.is_file() {
                on_file(&path, &id, &meta)?;
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

/// The id of `name` inside the directory with id `dir_id`.
pub(crate) fn join_id(dir_id: &str, name: &str) -> String {
    if dir_id.is_empty() {
        name.to_owned()
    } else {
        format!("{dir_id}/{name}")
    }
}
