//! Atomic replacement of an index file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::IndexError;

/// Distinguishes temporary files of concurrent saves within one process.
static SAVE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with the file `write` produces, so that a crash at any point leaves
/// either the old file or the complete new one: `write` fills a temporary file in the same
/// directory (a rename is atomic only within one file system), which is flushed to disk,
/// renamed over `path`, and the directory flushed so that the rename itself is durable.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), IndexError>,
) -> Result<(), IndexError> {
    let temporary = temporary_path(path)?;
    let result = write(&temporary).and_then(|()| {
        fs_err::File::open(&temporary)?.sync_all()?;
        fs_err::rename(&temporary, path)?;
        sync_directory(path)
    });
    if result.is_err() {
        // Best effort: the error being returned matters more than a leftover file.
        let _ = fs_err::remove_file(&temporary);
    }
    result
}

fn temporary_path(path: &Path) -> Result<PathBuf, IndexError> {
    let name = path.file_name().ok_or_else(|| {
        IndexError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("index path {} does not name a file", path.display()),
        ))
    })?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SAVE_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(temporary))
}

#[cfg(unix)]
fn sync_directory(path: &Path) -> Result<(), IndexError> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs_err::File::open(directory)?.sync_all()?;
    Ok(())
}

/// Directories cannot be opened as files outside Unix; NTFS makes renames durable with
/// the file's own flush.
#[cfg(not(unix))]
fn sync_directory(_path: &Path) -> Result<(), IndexError> {
    Ok(())
}
