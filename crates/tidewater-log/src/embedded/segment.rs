//! One segment file: creation, recovery scan (torn-tail truncation, corruption
//! detection), the sparse offset index, and reading records back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use parking_lot::RwLock;

use super::frame::{
    decode_frame, decode_segment_header, encode_segment_header, frame_body_len, FrameView,
    FORMAT_VERSION, FRAME_FIXED_BODY_LEN, FRAME_PREFIX_LEN, SEGMENT_HEADER_LEN,
};
use super::fsutil::{read_full_at, sync_dir, write_all_at};
use crate::{LogError, Record};

/// Extension of segment files.
pub(crate) const SEGMENT_EXTENSION: &str = "seg";
/// The index gets an entry whenever this many bytes passed since the previous one, so a
/// lookup scans at most about this much (plus one record).
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 4096;
/// How much a reader fetches per read call; frames larger than this are read whole.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Recovery reads sequentially, so larger chunks mean fewer system calls.
const RECOVERY_CHUNK_BYTES: usize = 1024 * 1024;

/// File name of the segment starting at `base`: 20 zero-padded digits, so names sort
/// like offsets.
pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:020}.{SEGMENT_EXTENSION}")
}

/// The base offset a segment file name encodes, if it is one.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_EXTENSION)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A sparse index entry: the record at `offset` starts at byte `position`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexEntry {
    pub(crate) offset: u64,
    pub(crate) position: u64,
}

/// One segment file and what is known about its contents.
///
/// Only the partition's writer (holding its writer lock) appends bytes and index entries;
/// readers use positional reads and never read past the published end offset.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first record the segment holds (or will hold).
    pub(crate) base: u64,
    /// The layout of its frames (its header's format version).
    version: AtomicU32,
    /// The segment file.
    pub(crate) path: PathBuf,
    file: fs_err::File,
    /// Bytes written to the file, header included.
    size: AtomicU64,
    /// Offset after the segment's last record (`base` while empty).
    end: AtomicU64,
    /// Newest record timestamp, `i64::MIN` while empty.
    max_timestamp: AtomicI64,
    index: RwLock<Vec<IndexEntry>>,
}

/// Result of scanning an existing segment on open.
#[derive(Debug)]
pub(crate) struct RecoveredSegment {
    /// The segment, ready for reads (and appends if it is the last one).
    pub(crate) segment: Segment,
    /// Offset after its last intact record.
    pub(crate) next_offset: u64,
    /// Bytes cut from a torn tail (0 if the file ended cleanly).
    pub(crate) truncated_bytes: u64,
}

impl Segment {
    /// Creates the segment file for `base` in `dir` with its header, durably (file and
    /// directory entry fsynced), so a crash never leaves a sealed segment without a successor
    /// that the recovery scan can find.
    pub(crate) fn create(dir: &Path, base: u64) -> Result<Self, LogError> {
        let path = dir.join(segment_file_name(base));
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let written =
            write_all_at(&file, &encode_segment_header(base), 0).and_then(|()| file.sync_all());
        if let Err(error) = written {
            // Leave no headerless file behind: it would become the partition's last segment.
            drop(file);
            let _ignored = fs_err::remove_file(&path);
            return Err(error.into());
        }
        sync_dir(dir)?;
        Ok(Self::new(
            base,
            FORMAT_VERSION,
            path,
            file,
            SEGMENT_HEADER_LEN,
        ))
    }

    fn new(base: u64, version: u32, path: PathBuf, file: fs_err::File, size: u64) -> Self {
        Self {
            base,
            version: AtomicU32::new(version),
            path,
            file,
            size: AtomicU64::new(size),
            end: AtomicU64::new(base),
            max_timestamp: AtomicI64::new(i64::MIN),
            index: RwLock::new(Vec::new()),
        }
    }

    /// Opens an existing segment and scans every frame, checking checksums and offsets.
    ///
    /// In the last segment of a partition a damaged or partial tail is a write the crash
    /// interrupted: it is cut off (the record was never acknowledged). Anywhere else, and
    /// in the last segment when intact records follow the damage, it is reported as
    /// [`LogError::Corrupt`] rather than dropped, because those bytes were acknowledged.
    pub(crate) fn recover(
        path: &Path,
        base: u64,
        is_last: bool,
    ) -> Result<RecoveredSegment, LogError> {
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let file_len = file.metadata()?.len();
        let corrupt = |position: u64, reason: String| LogError::Corrupt {
            path: path.to_owned(),
            position,
            reason,
        };
        if file_len < SEGMENT_HEADER_LEN {
            if !is_last {
                return Err(corrupt(0, "segment header is incomplete".into()));
            }
            // The crash hit between creating the file and syncing its header.
            file.set_len(0)?;
            write_all_at(&file, &encode_segment_header(base), 0)?;
            file.sync_all()?;
            let segment = Self::new(
                base,
                FORMAT_VERSION,
                path.to_owned(),
                file,
                SEGMENT_HEADER_LEN,
            );
            return Ok(RecoveredSegment {
                segment,
                next_offset: base,
                truncated_bytes: file_len,
            });
        }
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        read_full_at(&file, &mut header, 0)?;
        let (header_base, version) =
            decode_segment_header(&header).map_err(|reason| corrupt(0, reason))?;
        if header_base != base {
            return Err(corrupt(
                0,
                format!("header names base offset {header_base}, file name {base}"),
            ));
        }

        let segment = Self::new(base, version, path.to_owned(), file, SEGMENT_HEADER_LEN);
        let mut reader = FrameReader::new(
            &segment.file,
            SEGMENT_HEADER_LEN,
            file_len,
            RECOVERY_CHUNK_BYTES,
        );
        let mut expected = base;
        let mut last_indexed: Option<u64> = None;
        let mut max_timestamp = i64::MIN;
        let mut index = Vec::new();
        let damage = loop {
            let position = reader.position();
            let frame_size = match reader.next_frame()? {
                NextFrame::End => break None,
                NextFrame::Torn(reason) => break Some((position, reason.to_owned())),
                NextFrame::Frame(frame) => match decode_frame(frame, version) {
                    Err(reason) => break Some((position, reason.to_owned())),
                    Ok(view) if view.offset != expected => {
                        // A checksummed frame with the wrong offset is not a torn write.
                        return Err(corrupt(
                            position,
                            format!("record has offset {}, expected {expected}", view.offset),
                        ));
                    }
                    Ok(view) => {
                        max_timestamp = max_timestamp.max(view.timestamp_ms);
                        frame.len() as u64
                    }
                },
            };
            if last_indexed.is_none_or(|last| position - last >= INDEX_INTERVAL_BYTES) {
                index.push(IndexEntry {
                    offset: expected,
                    position,
                });
                last_indexed = Some(position);
            }
            expected += 1;
            reader.advance(frame_size);
        };

        let mut truncated_bytes = 0;
        if let Some((position, reason)) = damage {
            if !is_last {
                return Err(corrupt(position, reason));
            }
            if intact_frame_follows(&segment.file, version, position, file_len, expected)? {
                return Err(corrupt(
                    position,
                    format!("{reason}, and intact records follow it"),
                ));
            }
            truncated_bytes = file_len - position;
            segment.file.set_len(position)?;
            segment.file.sync_all()?;
        }
        segment
            .size
            .store(file_len - truncated_bytes, Ordering::Release);
        segment
            .max_timestamp
            .store(max_timestamp, Ordering::Release);
        segment.end.store(expected, Ordering::Release);
        *segment.index.write() = index;
        Ok(RecoveredSegment {
            segment,
            next_offset: expected,
            truncated_bytes,
        })
    }

    /// The layout of its frames.
    pub(crate) fn version(&self) -> u32 {
        self.version.load(Ordering::Acquire)
    }

    /// Rewrites the header of a segment that holds no records in the current format, so
    /// records of the current layout can be appended to it. Only the writer calls this.
    pub(crate) fn upgrade_empty(&self) -> Result<(), LogError> {
        debug_assert!(self.is_empty());
        write_all_at(&self.file, &encode_segment_header(self.base), 0)?;
        self.file.sync_data()?;
        self.version.store(FORMAT_VERSION, Ordering::Release);
        Ok(())
    }

    /// Bytes written to the file, header included.
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Offset after the segment's last record (`base` while empty). Only the writer
    /// moves it; readers stay below the partition's published end as well.
    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Whether no record was written yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.size() <= SEGMENT_HEADER_LEN
    }

    /// Newest record timestamp, `i64::MIN` while empty.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Position of the newest index entry, if any.
    pub(crate) fn last_indexed_position(&self) -> Option<u64> {
        self.index.read().last().map(|entry| entry.position)
    }

    /// Writes encoded frames at the end of the file. Only the partition writer calls this.
    /// On failure the file is cut back to its previous size so no partial frame stays
    /// between records; an error from that cut is returned as the second element, meaning
    /// the segment can no longer be appended to safely.
    pub(crate) fn append_frames(
        &self,
        frames: &[u8],
    ) -> Result<(), (std::io::Error, Option<std::io::Error>)> {
        let size = self.size();
        match write_all_at(&self.file, frames, size) {
            Ok(()) => {
                self.size
                    .store(size + frames.len() as u64, Ordering::Release);
                Ok(())
            }
            Err(error) => Err((error, self.file.set_len(size).err())),
        }
    }

    /// Records what the writer just appended: new index entries, the newest timestamp
    /// and the new end offset.
    pub(crate) fn note_appended(&self, entries: &[IndexEntry], max_timestamp: i64, end: u64) {
        if !entries.is_empty() {
            self.index.write().extend_from_slice(entries);
        }
        self.max_timestamp
            .fetch_max(max_timestamp, Ordering::AcqRel);
        self.end.store(end, Ordering::Release);
    }

    /// Flushes written data to stable storage (fdatasync).
    pub(crate) fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Appends to `out` the records with offsets in `from..until` (all stored in this
    /// segment), stopping once `out` holds `max` records.
    pub(crate) fn read_into(
        &self,
        partition: u32,
        from: u64,
        until: u64,
        max: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), LogError> {
        let start = {
            let index = self.index.read();
            let at = index.partition_point(|entry| entry.offset <= from);
            match at.checked_sub(1) {
                Some(at) => index[at],
                None => IndexEntry {
                    offset: self.base,
                    position: SEGMENT_HEADER_LEN,
                },
            }
        };
        let corrupt = |position: u64, reason: String| LogError::Corrupt {
            path: self.path.clone(),
            position,
            reason,
        };
        let mut reader =
            FrameReader::new(&self.file, start.position, self.size(), READ_CHUNK_BYTES);
        let mut expected = start.offset;
        while expected < until && out.len() < max {
            let position = reader.position();
            let frame = match reader.next_frame()? {
                NextFrame::Frame(frame) => frame,
                NextFrame::End => {
                    return Err(corrupt(position, format!("record {expected} is missing")))
                }
                NextFrame::Torn(reason) => return Err(corrupt(position, reason.into())),
            };
            let view: FrameView<'_> = decode_frame(frame, self.version())
                .map_err(|reason| corrupt(position, reason.into()))?;
            if view.offset != expected {
                return Err(corrupt(
                    position,
                    format!("record has offset {}, expected {expected}", view.offset),
                ));
            }
            let frame_size = frame.len() as u64;
            if expected >= from {
                out.push(Record {
                    partition,
                    offset: view.offset,
                    timestamp_ms: view.timestamp_ms,
                    key: view.key.map(<[u8]>::to_vec),
                    value: view.value.to_vec(),
                    headers: view.headers(),
                });
            }
            expected += 1;
            reader.advance(frame_size);
        }
        Ok(())
    }
}

/// Whether an intact frame with offset `next_offset` starts right after the damaged frame
/// at `position` (whose length field, if plausible, says where the next one starts).
fn intact_frame_follows(
    file: &fs_err::File,
    version: u32,
    position: u64,
    file_len: u64,
    next_offset: u64,
) -> Result<bool, LogError> {
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    if read_full_at(file, &mut prefix, position)? < FRAME_PREFIX_LEN {
        return Ok(false);
    }
    let next = position + (FRAME_PREFIX_LEN + frame_body_len(&prefix)) as u64;
    if next >= file_len {
        return Ok(false);
    }
    let mut reader = FrameReader::new(file, next, file_len, READ_CHUNK_BYTES);
    Ok(match reader.next_frame()? {
        NextFrame::Frame(frame) => {
            decode_frame(frame, version).is_ok_and(|view| view.offset == next_offset + 1)
        }
        NextFrame::End | NextFrame::Torn(_) => false,
    })
}

/// What [`FrameReader::next_frame`] found.
enum NextFrame<'a> {
    /// A complete frame (prefix included), not yet checksum-verified.
    Frame(&'a [u8]),
    /// The limit was reached exactly at a frame boundary.
    End,
    /// The bytes before the limit cannot be a complete frame.
    Torn(&'static str),
}

/// Walks frames of a segment file with positional reads through a reusable buffer.
struct FrameReader<'a> {
    file: &'a fs_err::File,
    /// File position of the next frame.
    position: u64,
    /// Bytes beyond this position are not considered (file length or written size).
    limit: u64,
    /// Only grows, so refills do not pay for zeroing it again.
    buf: Vec<u8>,
    /// How many bytes of `buf` hold file data.
    filled: usize,
    /// File position of `buf[0]`.
    buf_position: u64,
    chunk: usize,
}

impl<'a> FrameReader<'a> {
    fn new(file: &'a fs_err::File, position: u64, limit: u64, chunk: usize) -> Self {
        Self {
            file,
            position,
            limit,
            buf: Vec::new(),
            filled: 0,
            buf_position: position,
            chunk,
        }
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn advance(&mut self, frame_size: u64) {
        self.position += frame_size;
    }

    fn next_frame(&mut self) -> std::io::Result<NextFrame<'_>> {
        let remaining = self.limit.saturating_sub(self.position);
        if remaining == 0 {
            return Ok(NextFrame::End);
        }
        if remaining < FRAME_PREFIX_LEN as u64 {
            return Ok(NextFrame::Torn("incomplete record header"));
        }
        if !self.fill(FRAME_PREFIX_LEN)? {
            return Ok(NextFrame::Torn("incomplete record header"));
        }
        let at = (self.position - self.buf_position) as usize;
        let body_len = frame_body_len(&self.buf[at..]);
        if body_len < FRAME_FIXED_BODY_LEN {
            return Ok(NextFrame::Torn("record length field too small"));
        }
        // Checked against the limit before allocating, so a garbage length cannot make
        // the reader allocate gigabytes.
        let frame_size = FRAME_PREFIX_LEN + body_len;
        if frame_size as u64 > remaining {
            return Ok(NextFrame::Torn("record extends past the end of the data"));
        }
        if !self.fill(frame_size)? {
            return Ok(NextFrame::Torn("record extends past the end of the file"));
        }
        let at = (self.position - self.buf_position) as usize;
        Ok(NextFrame::Frame(&self.buf[at..at + frame_size]))
    }

    /// Makes sure `len` bytes from `position` are buffered; false if the file is shorter.
    fn fill(&mut self, len: usize) -> std::io::Result<bool> {
        let buffered_end = self.buf_position + self.filled as u64;
        if self.position >= self.buf_position && self.position + len as u64 <= buffered_end {
            return Ok(true);
        }
        let remaining = usize::try_from(self.limit - self.position).unwrap_or(usize::MAX);
        let wanted = len.max(self.chunk).min(remaining).max(len);
        if self.buf.len() < wanted {
            // The old contents are not needed; a fresh zeroed allocation is cheaper than
            // growing and copying.
            self.buf = vec![0; wanted];
        }
        self.filled = read_full_at(self.file, &mut self.buf[..wanted], self.position)?;
        self.buf_position = self.position;
        Ok(self.filled >= len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg.tmp"),
            None
        );
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
    }
}
