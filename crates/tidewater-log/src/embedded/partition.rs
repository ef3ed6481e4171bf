//! One partition: its chain of segments, the writer (offset assignment, rolling), group
//! commit, the published end offset readers are limited to, reads and retention.
//!
//! Appending is split in two phases so concurrent appenders share fsyncs:
//! [`Partition::write`] assigns offsets and writes frames under the writer lock;
//! [`Partition::sync_to`] then waits until the data is durable. The first appender to
//! arrive becomes the sync leader and fsyncs everything written so far; the others wait
//! on a condvar and usually find their records covered when the leader is done.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::frame::{encode_frame, frame_len};
use super::fsutil::{sync_dir, TMP_SUFFIX};
use super::segment::{parse_segment_file_name, IndexEntry, Segment, INDEX_INTERVAL_BYTES};
use crate::{LogError, NewRecord, PartitionRange, Record};

/// What retention removed from one partition.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Removed {
    pub(crate) segments: usize,
    pub(crate) bytes: u64,
    pub(crate) records: u64,
}

/// State only the writer touches.
struct Writer {
    /// Segment being appended to (always the last of the chain).
    active: Arc<Segment>,
    /// Offset the next record gets.
    next_offset: u64,
    /// Position of the active segment's newest index entry.
    last_indexed: Option<u64>,
}

/// Group-commit bookkeeping.
struct SyncState {
    /// Every offset below this is on stable storage.
    synced_end: u64,
    /// Whether some appender is fsyncing right now.
    leader_active: bool,
}

/// A partition of a topic.
pub(crate) struct Partition {
    topic: String,
    id: u32,
    dir: PathBuf,
    segment_bytes: u64,
    /// The segment chain, oldest first; the last one is the active segment.
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Records below this offset are complete and durable under the configured policy:
    /// the only ones readers see.
    published_end: AtomicU64,
    end_lock: Mutex<()>,
    end_changed: Condvar,
    /// Set after a failed fsync or an unrepairable failed write: the state of the file is
    /// unknown, so the partition refuses appends until the log is reopened and recovered.
    poisoned: AtomicBool,
}

impl Partition {
    /// Opens a partition directory: recovers its segments in order and checks they form
    /// one dense chain of offsets.
    pub(crate) fn open(
        topic: &str,
        id: u32,
        dir: PathBuf,
        segment_bytes: u64,
    ) -> Result<Self, LogError> {
        let mut bases = Vec::new();
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = parse_segment_file_name(&name) {
                bases.push(base);
            } else if name.ends_with(TMP_SUFFIX) {
                fs_err::remove_file(entry.path())?;
            } else {
                tracing::warn!(
                    topic,
                    partition = id,
                    file = %name,
                    "ignoring unknown file in partition directory"
                );
            }
        }
        bases.sort_unstable();

        let mut segments = Vec::with_capacity(bases.len());
        let mut next_offset = bases.first().copied().unwrap_or_default();
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(super::segment::segment_file_name(base));
            if base != next_offset {
                return Err(LogError::Corrupt {
                    path,
                    position: 0,
                    reason: format!(
                        "segment starts at offset {base}, the previous one ends at {next_offset}"
                    ),
                });
            }
            let recovered = Segment::recover(&path, base, i + 1 == bases.len())?;
            if recovered.truncated_bytes > 0 {
                tracing::warn!(
                    topic,
                    partition = id,
                    path = %path.display(),
                    bytes = recovered.truncated_bytes,
                    end_offset = recovered.next_offset,
                    "truncated a torn tail left by an interrupted write"
                );
            }
            next_offset = recovered.next_offset;
            segments.push(Arc::new(recovered.segment));
        }
        let Some(active) = segments.last().map(Arc::clone) else {
            // Retention never deletes the active segment, so some file must be there.
            return Err(LogError::Corrupt {
                path: dir,
                position: 0,
                reason: "partition directory holds no segment file".into(),
            });
        };
        // Data written before a crash under `Durability::Os` may still be only in the page
        // cache; make it durable before publishing it as such.
        active.sync_data()?;
        let last_indexed = active.last_indexed_position();

        Ok(Self {
            topic: topic.to_owned(),
            id,
            dir,
            segment_bytes,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                active,
                next_offset,
                last_indexed,
            }),
            sync: Mutex::new(SyncState {
                synced_end: next_offset,
                leader_active: false,
            }),
            synced: Condvar::new(),
            published_end: AtomicU64::new(next_offset),
            end_lock: Mutex::new(()),
            end_changed: Condvar::new(),
            poisoned: AtomicBool::new(false),
        })
    }

    /// Creates an empty partition directory with its first segment (offset 0).
    pub(crate) fn create_empty(dir: &Path) -> Result<(), LogError> {
        fs_err::create_dir(dir)?;
        Segment::create(dir, 0)?;
        Ok(())
    }

    /// Writes `records` with consecutive offsets, rolling segments as needed. Returns the
    /// first offset and the end after the last record. With `publish` the records become
    /// readable at once (the OS durability policy); otherwise [`Self::sync_to`] publishes
    /// them after fsync.
    ///
    /// On error a prefix of `records` may have been written; offsets are never reused.
    pub(crate) fn write(
        &self,
        records: &[&NewRecord],
        publish: bool,
    ) -> Result<(u64, u64), LogError> {
        let mut writer = self.writer.lock();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let first = writer.next_offset;
        let mut batch = Batch::default();
        for record in records {
            let size = frame_len(record.key.as_deref(), &record.value) as u64;
            let active_size = writer.active.size() + batch.frames.len() as u64;
            let has_records = !writer.active.is_empty() || !batch.frames.is_empty();
            if has_records && active_size + size > self.segment_bytes {
                self.flush(&mut writer, &mut batch)?;
                self.roll(&mut writer)?;
            }
            let position = writer.active.size() + batch.frames.len() as u64;
            let offset = writer.next_offset + batch.records;
            if writer
                .last_indexed
                .is_none_or(|last| position - last >= INDEX_INTERVAL_BYTES)
            {
                batch.index.push(IndexEntry { offset, position });
                writer.last_indexed = Some(position);
            }
            encode_frame(
                &mut batch.frames,
                offset,
                record.timestamp_ms,
                record.key.as_deref(),
                &record.value,
            );
            batch.records += 1;
            batch.max_timestamp = batch.max_timestamp.max(record.timestamp_ms);
        }
        self.flush(&mut writer, &mut batch)?;
        let end = writer.next_offset;
        if publish {
            // Under the writer lock, so the published end only ever grows.
            self.publish(end);
        }
        Ok((first, end))
    }

    /// Appends the buffered frames to the active segment.
    fn flush(&self, writer: &mut Writer, batch: &mut Batch) -> Result<(), LogError> {
        if batch.records == 0 {
            return Ok(());
        }
        if let Err((error, cut_error)) = writer.active.append_frames(&batch.frames) {
            if let Some(cut_error) = cut_error {
                tracing::error!(topic = %self.topic, partition = self.id, error = %cut_error,
                    "cannot remove a partial write");
                self.poison("a partial write could not be removed");
            }
            writer.last_indexed = writer.active.last_indexed_position();
            *batch = Batch::default();
            return Err(error.into());
        }
        writer
            .active
            .note_appended(&batch.index, batch.max_timestamp);
        writer.next_offset += batch.records;
        *batch = Batch::default();
        Ok(())
    }

    /// Seals the active segment and starts a new one at the next offset.
    fn roll(&self, writer: &mut Writer) -> Result<(), LogError> {
        // Sealed segments are made durable here, whatever the durability policy, so that
        // only the last segment of a partition can ever have a torn tail.
        if let Err(error) = writer.active.sync_data() {
            self.poison("fsync of a sealed segment failed");
            return Err(error.into());
        }
        let segment = Arc::new(Segment::create(&self.dir, writer.next_offset)?);
        self.segments.write().push(Arc::clone(&segment));
        writer.active = segment;
        writer.last_indexed = None;
        Ok(())
    }

    /// Returns once every offset below `end` is on stable storage (group commit). `window`
    /// is how long a new leader waits for more appends before its fsync.
    pub(crate) fn sync_to(&self, end: u64, window: Duration) -> Result<(), LogError> {
        let mut state = self.sync.lock();
        loop {
            if state.synced_end >= end {
                return Ok(());
            }
            if self.poisoned.load(Ordering::Acquire) {
                return Err(LogError::Closed);
            }
            if !state.leader_active {
                state.leader_active = true;
                break;
            }
            self.synced.wait(&mut state);
        }
        drop(state);

        if !window.is_zero() {
            std::thread::sleep(window);
        }
        // Everything below `target` is in the active segment or in sealed segments, which
        // were synced when they were sealed; one fsync of the active file covers it all.
        let (target, active) = {
            let writer = self.writer.lock();
            (writer.next_offset, Arc::clone(&writer.active))
        };
        let result = active.sync_data();

        let mut state = self.sync.lock();
        state.leader_active = false;
        match result {
            Ok(()) => {
                state.synced_end = state.synced_end.max(target);
                self.publish(target);
            }
            Err(_) => self.poison("fsync failed"),
        }
        drop(state);
        self.synced.notify_all();
        result.map_err(LogError::from)
    }

    /// Stops appends after a failure that leaves the file's state unknown: after a failed
    /// fsync the kernel may have dropped the dirty pages, so only recovery (reopening the
    /// log) can tell what is on disk.
    fn poison(&self, reason: &str) {
        tracing::error!(topic = %self.topic, partition = self.id, reason,
            "refusing further appends until the log is reopened");
        self.poisoned.store(true, Ordering::Release);
    }

    fn publish(&self, end: u64) {
        self.published_end.fetch_max(end, Ordering::AcqRel);
        // Taking the lock orders this notification after a waiter's check of the end, so
        // no wake-up is lost.
        let _guard = self.end_lock.lock();
        self.end_changed.notify_all();
    }

    /// The readable range.
    pub(crate) fn range(&self) -> PartitionRange {
        let end = self.published_end.load(Ordering::Acquire);
        let segments = self.segments.read();
        let start = segments
            .first()
            .map_or(end, |segment| segment.base.min(end));
        PartitionRange { start, end }
    }

    /// Bytes stored in all segment files of the partition.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.segments
            .read()
            .iter()
            .map(|segment| segment.size())
            .sum()
    }

    /// Reads up to `max` records from offset `from`.
    pub(crate) fn read(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let end = self.published_end.load(Ordering::Acquire);
        // Clone the chain so file reads happen without holding the lock; a segment
        // deleted by retention meanwhile stays readable through its open handle.
        let (start, chain) = {
            let segments = self.segments.read();
            let start = segments.first().map_or(end, |segment| segment.base);
            let first = segments
                .partition_point(|segment| segment.base <= from)
                .saturating_sub(1);
            (start, segments[first..].to_vec())
        };
        if from < start || from > end {
            return Err(LogError::OffsetOutOfRange {
                topic: self.topic.clone(),
                partition: self.id,
                offset: from,
                start,
                end,
            });
        }
        let mut out = Vec::new();
        let mut next = from;
        for (i, segment) in chain.iter().enumerate() {
            if next >= end || out.len() >= max {
                break;
            }
            let segment_end = chain
                .get(i + 1)
                .map_or(end, |following| following.base.min(end));
            segment.read_into(self.id, next, segment_end, max, &mut out)?;
            next = segment_end;
        }
        Ok(out)
    }

    /// Blocks until a record at `offset` is published or `timeout` passes.
    pub(crate) fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.end_lock.lock();
        loop {
            if self.published_end.load(Ordering::Acquire) > offset {
                return true;
            }
            match deadline {
                Some(deadline) => {
                    if self
                        .end_changed
                        .wait_until(&mut guard, deadline)
                        .timed_out()
                    {
                        return self.published_end.load(Ordering::Acquire) > offset;
                    }
                }
                None => self.end_changed.wait(&mut guard),
            }
        }
    }

    /// Deletes whole sealed segments from the front: while the oldest one's newest record
    /// is older than `max_age_ms` before `now_ms`, or the partition holds more than
    /// `max_bytes`. The active segment is never deleted.
    pub(crate) fn enforce_retention(
        &self,
        now_ms: i64,
        max_age_ms: Option<i64>,
        max_bytes: Option<u64>,
    ) -> Result<Removed, LogError> {
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write();
            let mut total: u64 = segments.iter().map(|segment| segment.size()).sum();
            let published_end = self.published_end.load(Ordering::Acquire);
            let mut count = 0;
            // Only segments whose records are all published: deleting records no reader
            // could see yet would make them vanish unseen.
            while count + 1 < segments.len() && segments[count + 1].base <= published_end {
                let segment = &segments[count];
                let too_old = max_age_ms
                    .is_some_and(|age| segment.max_timestamp() < now_ms.saturating_sub(age));
                let too_big = max_bytes.is_some_and(|limit| total > limit);
                if !too_old && !too_big {
                    break;
                }
                total -= segment.size();
                count += 1;
            }
            // `start` moves as soon as the lock is released: readers get OffsetOutOfRange
            // below it even if a file deletion below fails.
            segments.drain(..count).collect()
        };
        let mut report = Removed::default();
        let Some(last) = removed.last() else {
            return Ok(report);
        };
        let new_start = self
            .segments
            .read()
            .first()
            .map_or(last.base, |segment| segment.base);
        // Oldest first, so a crash part-way leaves a dense suffix of the chain.
        for segment in &removed {
            fs_err::remove_file(&segment.path)?;
            report.segments += 1;
            report.bytes += segment.size();
        }
        report.records = new_start - removed[0].base;
        sync_dir(&self.dir)?;
        tracing::info!(topic = %self.topic, partition = self.id, segments = report.segments,
            bytes = report.bytes, new_start, "retention deleted old segments");
        Ok(report)
    }
}

/// Frames encoded but not yet written to the active segment.
struct Batch {
    frames: Vec<u8>,
    records: u64,
    index: Vec<IndexEntry>,
    max_timestamp: i64,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            frames: Vec::new(),
            records: 0,
            index: Vec::new(),
            max_timestamp: i64::MIN,
        }
    }
}
