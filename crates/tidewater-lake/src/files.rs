//! The lake's directory layout and the file-system steps that make a file appear
//! atomically: write under a hidden temporary name, fsync, rename, fsync the directory.
//!
//! ```text
//! <lake>/<topic>/date=YYYY-MM-DD/part-p<partition>-<first:020>-<last:020>.parquet
//! ```
//!
//! A temporary file is `.<final name>.tmp` in the final file's directory: readers globbing
//! `*.parquet` never match it, and Hive-style readers skip dot files.

use std::io;
use std::path::{Path, PathBuf};

/// The directory of one topic's rows of one UTC date (`YYYY-MM-DD`).
pub(crate) fn date_dir(lake: &Path, topic: &str, date: &str) -> PathBuf {
    lake.join(topic).join(format!("date={date}"))
}

/// The name of a batch's file: the partition and the batch's first and last offsets,
/// zero-padded so that names sort in offset order.
pub(crate) fn file_name(partition: u32, first: u64, last: u64) -> String {
    format!("part-p{partition}-{first:020}-{last:020}.parquet")
}

/// The temporary path a file is written under before it is renamed to `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Creates `dir` and any missing parent, fsyncing the parent of each directory created so
/// the new entries survive a crash.
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        ensure_dir(parent)?;
    }
    match fs_err::create_dir(dir) {
        Ok(()) => {}
        // Another topic's thread created it first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match parent {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Makes a directory's entries (created, renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

/// Every lake file under `dir` (recursively), sorted by path. Temporary files and other
/// hidden entries are skipped.
pub(crate) fn list_parquet(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    if dir.is_dir() {
        collect(dir, &mut found)?;
    }
    found.sort();
    Ok(found)
}

fn collect(dir: &Path, found: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(&path, found)?;
        } else if name.ends_with(".parquet") {
            found.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_offset_order_and_temporary_names_are_hidden() {
        let path = date_dir(Path::new("/lake"), "kpis", "2026-01-02").join(file_name(3, 9, 10));
        assert_eq!(
            path,
            Path::new("/lake/kpis/date=2026-01-02/part-p3-00000000000000000009-00000000000000000010.parquet")
        );
        assert_eq!(
            temp_path(&path),
            Path::new("/lake/kpis/date=2026-01-02/.part-p3-00000000000000000009-00000000000000000010.parquet.tmp")
        );
        assert!(file_name(0, 9, 9) < file_name(0, 10, 10));
    }

    #[test]
    fn listing_skips_temporary_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let day = date_dir(dir.path(), "t", "2026-01-01");
        ensure_dir(&day).expect("dirs");
        let done = day.join(file_name(0, 0, 1));
        fs_err::write(&done, b"x").expect("write");
        fs_err::write(temp_path(&day.join(file_name(0, 2, 3))), b"x").expect("write");
        assert_eq!(list_parquet(dir.path()).expect("list"), vec![done]);
        assert!(list_parquet(&dir.path().join("missing"))
            .expect("list")
            .is_empty());
    }
}
