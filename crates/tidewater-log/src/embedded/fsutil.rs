//! File-system helpers shared by the log's files: atomic replacement of small files,
//! directory fsync, positional reads, and the checksummed text format of metadata files.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::LogError;

/// Suffix of files being written before their atomic rename; stale ones are removed on open.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Replaces `path` with `contents` so that a crash leaves either the old or the new file:
/// write a temporary file, fsync it, rename it over `path`, fsync the directory.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp_name);
    let mut file = fs_err::File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs_err::rename(&tmp, path)?;
    sync_parent(path)?;
    Ok(())
}

/// Fsyncs the directory holding `path`, so a create, rename or delete in it persists.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Fsyncs a directory's entries.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

/// Directories cannot be opened for fsync here; renames are durable through the
/// file system's own journal.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Reads up to `buf.len()` bytes at `position`; fewer only at the end of the file.
pub(crate) fn read_full_at(
    file: &fs_err::File,
    buf: &mut [u8],
    position: u64,
) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_at(file, &mut buf[filled..], position + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Writes all of `buf` at `position`.
pub(crate) fn write_all_at(file: &fs_err::File, buf: &[u8], position: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        use fs_err::os::unix::fs::FileExt;
        file.write_all_at(buf, position)
    }
    #[cfg(windows)]
    {
        use fs_err::os::windows::fs::FileExt;
        let mut written = 0;
        while written < buf.len() {
            match file.seek_write(&buf[written..], position + written as u64) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

fn read_at(file: &fs_err::File, buf: &mut [u8], position: u64) -> io::Result<usize> {
    #[cfg(unix)]
    {
        use fs_err::os::unix::fs::FileExt;
        file.read_at(buf, position)
    }
    #[cfg(windows)]
    {
        use fs_err::os::windows::fs::FileExt;
        file.seek_read(buf, position)
    }
}

/// Wraps the lines of a metadata file (topic config, consumer offsets) with a first line
/// `<kind> <version>` and a last line `crc32 <8 hex digits>` over everything before it.
pub(crate) fn encode_checked_text(kind: &str, version: u32, lines: &[String]) -> String {
    let mut text = format!("{kind} {version}\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("crc32 {crc:08x}\n"));
    text
}

/// Checks a file written by [`encode_checked_text`] and returns its body lines.
pub(crate) fn decode_checked_text<'a>(
    path: &Path,
    text: &'a str,
    kind: &str,
    version: u32,
) -> Result<Vec<&'a str>, LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        path: path.to_owned(),
        position: 0,
        reason,
    };
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map(|at| at + 1)
        .ok_or_else(|| corrupt("file has no checksum line".into()))?;
    let (body, crc_line) = text.split_at(body_end);
    let stored = crc_line
        .trim_end()
        .strip_prefix("crc32 ")
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| corrupt("malformed checksum line".into()))?;
    if stored != crc32fast::hash(body.as_bytes()) {
        return Err(corrupt("checksum mismatch".into()));
    }
    let mut lines = body.lines();
    let expected_header = format!("{kind} {version}");
    match lines.next() {
        Some(header) if header == expected_header => Ok(lines.collect()),
        Some(header) => Err(corrupt(format!(
            "expected '{expected_header}', found '{header}'"
        ))),
        None => Err(corrupt("empty file".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_text_round_trips_and_detects_edits() {
        let text = encode_checked_text("kind", 1, &["a 1".into(), "b 2".into()]);
        let path = Path::new("x");
        assert_eq!(
            decode_checked_text(path, &text, "kind", 1).expect("valid"),
            ["a 1", "b 2"]
        );
        let edited = text.replace("a 1", "a 2");
        assert!(decode_checked_text(path, &edited, "kind", 1).is_err());
        assert!(decode_checked_text(path, &text, "kind", 2).is_err());
        assert!(decode_checked_text(path, "", "kind", 1).is_err());
    }
}
