//! One partition: its chain of segments, the writer (offset assignment, rolling, offset
//! reservation), group commit, the published end offset readers are limited to, reads,
//! retention, and the bounds file that lets recovery tell lost records from deleted ones.
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

use super::appended::Appended;
use super::bounds::{AckedEnd, Bounds, BoundsFile, Gap, ACKED_FILE, BOUNDS_FILE};
use super::config::Durability;
use super::frame::{encode_frame, frame_len, FORMAT_VERSION};
use super::fsutil::{sync_dir, TMP_SUFFIX};
use super::segment::{
    parse_segment_file_name, segment_file_name, IndexEntry, Segment, INDEX_INTERVAL_BYTES,
};
use crate::{LogError, NewRecord, PartitionRange, Record};

/// Offsets are reserved in the bounds file this many at a time before they are handed
/// out, so a partition never hands out an offset twice. After a crash, appends resume at
/// the reserved end, leaving a declared gap of at most this many offsets.
const RESERVE_BLOCK: u64 = 16 * 1024;

/// What retention removed from one partition.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Removed {
    pub(crate) segments: usize,
    pub(crate) bytes: u64,
    pub(crate) records: u64,
    /// Bytes retention would have deleted but kept because a consumer group has not
    /// committed past them.
    pub(crate) held_bytes: u64,
}

/// Offsets whose records should be stored but are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost {
    /// First lost offset.
    pub(crate) from: u64,
    /// End of the lost range (exclusive).
    pub(crate) to: u64,
    /// How the loss was noticed.
    pub(crate) cause: &'static str,
}

/// How a partition is opened: the log's settings and what the caller knows about it.
pub(crate) struct OpenOptions {
    /// Roll to a new segment past this size.
    pub(crate) segment_bytes: u64,
    /// Whether the topic has a retention setting (a start above 0 is then expected).
    pub(crate) retention_configured: bool,
    /// This session's durability policy.
    pub(crate) durability: Durability,
    /// The highest offset a consumer group committed for the partition, if any.
    pub(crate) consumed_to: Option<u64>,
    /// The log-wide publication notice.
    pub(crate) appended: Arc<Appended>,
}

/// What the partition looked like when it was opened.
#[derive(Debug, Clone, Copy)]
struct Opened {
    /// End of the records that survived recovery.
    recovered_end: u64,
    /// Offset the first record appended after opening gets: above every offset handed
    /// out before.
    resume_at: u64,
}

/// State only the writer touches.
struct Writer {
    /// Segment being appended to (always the last of the chain).
    active: Arc<Segment>,
    /// Offset the next record gets. Above the active segment's end only right after
    /// opening, when appends resume at the reserved end: the next write starts a new
    /// segment after a declared gap.
    next_offset: u64,
    /// Offsets below this are reserved in the bounds file (may have been handed out).
    reserved: u64,
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
    /// The bounds file; written under the writer lock (reservations, gaps) or alone
    /// (retention, close), never while holding the segments lock.
    bounds: Mutex<BoundsFile>,
    /// The acknowledged end, under `Durability::Fsync` (written under the sync lock).
    acked: Option<AckedEnd>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Records below this offset are complete and durable under the configured policy:
    /// the only ones readers see.
    published_end: AtomicU64,
    end_lock: Mutex<()>,
    end_changed: Condvar,
    /// The log-wide notification every publication raises.
    appended: Arc<Appended>,
    /// Set after a failed fsync or an unrepairable failed write: the state of the file is
    /// unknown, so the partition refuses appends until the log is reopened and recovered.
    poisoned: AtomicBool,
    opened: Opened,
    /// Lost offsets below this have been reported; consumer checks report only beyond it.
    reported_lost_to: AtomicU64,
}

impl Partition {
    /// Opens a partition directory: finishes an interrupted retention pass, recovers the
    /// segments in order, checks that they form one chain (gaps only where the bounds file
    /// declares them), and compares what survived with the bounds file. Returns the
    /// partition and the ranges of records found lost, for the caller to report.
    pub(crate) fn open(
        topic: &str,
        id: u32,
        dir: PathBuf,
        options: OpenOptions,
    ) -> Result<(Self, Vec<Lost>), LogError> {
        let OpenOptions {
            segment_bytes,
            retention_configured,
            durability,
            consumed_to,
            appended,
        } = options;
        let stored = BoundsFile::read(&dir)?;
        let acked_before = AckedEnd::read(&dir)?;
        let mut bases = Vec::new();
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = parse_segment_file_name(&name) {
                bases.push(base);
            } else if name.ends_with(TMP_SUFFIX) {
                fs_err::remove_file(entry.path())?;
            } else if name != BOUNDS_FILE && name != ACKED_FILE {
                tracing::warn!(
                    topic,
                    partition = id,
                    file = %name,
                    "ignoring unknown file in partition directory"
                );
            }
        }
        bases.sort_unstable();
        if let Some(stored) = &stored {
            // Retention records the new start before deleting files: finish a pass a crash
            // interrupted (whole segments below the start).
            let mut removed = false;
            while bases.len() > 1 && bases[1] <= stored.start {
                fs_err::remove_file(dir.join(segment_file_name(bases[0])))?;
                bases.remove(0);
                removed = true;
            }
            if removed {
                sync_dir(&dir)?;
            }
        }

        let declared = stored.as_ref().map_or(&[][..], |b| b.gaps.as_slice());
        let mut gaps = Vec::new();
        let mut segments = Vec::with_capacity(bases.len());
        let mut next_offset = bases.first().copied().unwrap_or_default();
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment_file_name(base));
            if base != next_offset {
                let gap = Gap {
                    from: next_offset,
                    to: base,
                };
                if !declared.contains(&gap) {
                    return Err(LogError::Corrupt {
                        path,
                        position: 0,
                        reason: format!(
                            "segment starts at offset {base}, the previous one ends at {next_offset}"
                        ),
                    });
                }
                gaps.push(gap);
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
        if let (Some(last), Some(gap)) = (segments.last(), gaps.last().copied()) {
            if segments.len() > 1 && last.base == gap.to && last.end() == last.base {
                // A crash right after starting the segment behind a gap, before its first
                // record: drop both, so the partition's end is its last record's end. The
                // next append starts them again.
                fs_err::remove_file(&last.path)?;
                sync_dir(&dir)?;
                segments.pop();
                gaps.pop();
                next_offset = gap.from;
            }
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
        let end = next_offset;
        let first_base = bases.first().copied().unwrap_or_default();

        let mut lost = Vec::new();
        let mut resume_at = end;
        let start = match &stored {
            Some(stored) => {
                if first_base > stored.start {
                    lost.push(Lost {
                        from: stored.start,
                        to: first_base,
                        cause: "the partition's oldest segments are missing",
                    });
                }
                match stored.closed_end {
                    Some(closed_end) => {
                        note_missing(
                            &mut lost,
                            &mut resume_at,
                            end,
                            closed_end,
                            "records acknowledged before the last clean shutdown are missing from the end of the partition",
                        );
                        // A clean close lowered `reserved` to the next offset it would
                        // have handed out.
                        resume_at = resume_at.max(stored.reserved);
                    }
                    None => {
                        if let Some(acked) = acked_before {
                            note_missing(
                                &mut lost,
                                &mut resume_at,
                                end,
                                acked,
                                "acknowledged records are missing from the end of the partition",
                            );
                        }
                        if stored.durability == Durability::Os && stored.reserved > resume_at {
                            // Records acknowledged under `os` may have gone with the page
                            // cache; nothing can prove which, so none of their offsets is
                            // reused.
                            tracing::info!(topic, partition = id, end, resume_at = stored.reserved,
                                "not closed cleanly under durability \"os\": new records start after the offsets reserved before");
                            resume_at = stored.reserved;
                        }
                    }
                }
                first_base.max(stored.start)
            }
            None => {
                if first_base > 0 && !retention_configured {
                    tracing::warn!(topic, partition = id, first_offset = first_base,
                        "the partition starts above offset 0 but its topic has no retention: records 0..{first_base} may have been deleted");
                }
                first_base
            }
        };
        if let Some(consumed_to) = consumed_to {
            note_missing(
                &mut lost,
                &mut resume_at,
                end,
                consumed_to,
                "a consumer group had committed records that are no longer in the log",
            );
        }
        let bounds = BoundsFile::create(
            &dir,
            Bounds {
                start,
                reserved: resume_at,
                closed_end: None,
                durability,
                gaps,
            },
        )?;
        let acked = match durability {
            // Every offset below `resume_at` may have been handed out.
            Durability::Fsync => Some(AckedEnd::create(&dir, resume_at)?),
            Durability::Os => None,
        };

        let partition = Self {
            topic: topic.to_owned(),
            id,
            dir,
            segment_bytes,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                active,
                next_offset: resume_at,
                reserved: resume_at,
                last_indexed,
            }),
            bounds: Mutex::new(bounds),
            acked,
            sync: Mutex::new(SyncState {
                synced_end: end,
                leader_active: false,
            }),
            synced: Condvar::new(),
            published_end: AtomicU64::new(end),
            end_lock: Mutex::new(()),
            end_changed: Condvar::new(),
            appended,
            poisoned: AtomicBool::new(false),
            opened: Opened {
                recovered_end: end,
                resume_at,
            },
            reported_lost_to: AtomicU64::new(lost.iter().map(|l| l.to).max().unwrap_or(end)),
        };
        Ok((partition, lost))
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
        let needed = writer.next_offset + records.len() as u64;
        if needed > writer.reserved {
            let reserved = needed.saturating_add(RESERVE_BLOCK);
            self.bounds.lock().update(|b| b.reserved = reserved)?;
            writer.reserved = reserved;
        }
        if writer.next_offset != writer.active.end() {
            // The first append after a restart that left reserved offsets unused.
            self.roll(&mut writer)?;
        } else if writer.active.version() != FORMAT_VERSION {
            // A segment of an older layout takes no frames of the current one.
            if writer.active.is_empty() {
                writer.active.upgrade_empty()?;
            } else {
                self.roll(&mut writer)?;
            }
        }
        let first = writer.next_offset;
        let mut batch = Batch::default();
        for record in records {
            let size = frame_len(record.key.as_deref(), &record.headers, &record.value) as u64;
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
                &record.headers,
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
        writer.next_offset += batch.records;
        writer
            .active
            .note_appended(&batch.index, batch.max_timestamp, writer.next_offset);
        *batch = Batch::default();
        Ok(())
    }

    /// Seals the active segment and starts a new one at the next offset. If the next
    /// offset is beyond the active segment's end (appends resuming at the reserved end),
    /// the gap is declared in the bounds file first, so recovery accepts it.
    fn roll(&self, writer: &mut Writer) -> Result<(), LogError> {
        // Sealed segments are made durable here, whatever the durability policy, so that
        // only the last segment of a partition can ever have a torn tail.
        if let Err(error) = writer.active.sync_data() {
            self.poison("fsync of a sealed segment failed");
            return Err(error.into());
        }
        let gap = Gap {
            from: writer.active.end(),
            to: writer.next_offset,
        };
        if gap.from < gap.to {
            self.bounds.lock().update(|b| b.gaps.push(gap))?;
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
                if let Some(acked) = &self.acked {
                    if let Err(error) = acked.store(state.synced_end) {
                        // Only a hint for recovery: the records themselves are durable.
                        tracing::warn!(topic = %self.topic, partition = self.id, %error,
                            "cannot record the acknowledged end");
                    }
                }
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
        let before = self.published_end.fetch_max(end, Ordering::AcqRel);
        if end > before {
            self.appended.notify();
        }
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

    /// Reads up to `max` records from offset `from`. Offsets in a declared gap are
    /// skipped: the read returns the records after it.
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
        for segment in &chain {
            if next >= end || out.len() >= max {
                break;
            }
            let from_here = next.max(segment.base);
            let segment_end = segment.end().min(end);
            if from_here < segment_end {
                segment.read_into(self.id, from_here, segment_end, max, &mut out)?;
            }
            next = next.max(segment_end);
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
    /// `max_bytes`. The active segment is never deleted, and neither is a segment holding
    /// records at or above `keep_from` (the lowest offset a consumer group has not
    /// committed yet); what that keeps is reported as `held_bytes`.
    pub(crate) fn enforce_retention(
        &self,
        now_ms: i64,
        max_age_ms: Option<i64>,
        max_bytes: Option<u64>,
        keep_from: Option<u64>,
    ) -> Result<Removed, LogError> {
        let mut report = Removed::default();
        // Retention runs on one thread at a time, and rolls only add segments at the end,
        // so the chain's front stays as read here until it is drained below.
        let (removed, new_start): (Vec<Arc<Segment>>, u64) = {
            let segments = self.segments.read();
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
                if keep_from.is_some_and(|keep| segment.end() > keep) {
                    // A consumer has not committed these records yet. Report what the
                    // limits would have deleted from here on.
                    let mut held = 0;
                    for segment in &segments[count..segments.len() - 1] {
                        let too_old = max_age_ms.is_some_and(|age| {
                            segment.max_timestamp() < now_ms.saturating_sub(age)
                        });
                        if !too_old && max_bytes.is_none_or(|limit| total <= limit) {
                            break;
                        }
                        held += segment.size();
                        total -= segment.size();
                    }
                    report.held_bytes = held;
                    break;
                }
                total -= segment.size();
                count += 1;
            }
            (segments[..count].to_vec(), segments[count].base)
        };
        if removed.is_empty() {
            return Ok(report);
        }
        // The new start is durable before any file goes, so a crash part-way is finished
        // on the next open rather than mistaken for lost segments.
        self.bounds.lock().update(|b| {
            b.start = new_start;
            b.gaps.retain(|gap| gap.to > new_start);
        })?;
        self.segments.write().drain(..removed.len());
        // Oldest first, so a crash part-way leaves a suffix of the chain.
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

    /// Makes everything written durable and records in the bounds file where the
    /// partition ends, so the next open can tell whether records went missing while the
    /// log was closed. Skipped for a poisoned partition (its file state is unknown).
    pub(crate) fn close(&self) -> Result<(), LogError> {
        let mut writer = self.writer.lock();
        if self.poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        writer.active.sync_data()?;
        let end = writer.active.end();
        // Reserved offsets beyond the next one were never handed out: give them back, so
        // a clean restart continues without a gap.
        let next = writer.next_offset;
        self.bounds.lock().update(|b| {
            b.closed_end = Some(end);
            b.reserved = next;
        })?;
        writer.reserved = next;
        Ok(())
    }

    /// Checks a consumer group's committed position against what survived the last open.
    /// Every offset handed out before the open is below the position appends resumed at,
    /// and every record appended since is at or above it; so a position between the
    /// recovered end and that point proves that records the group had consumed are gone.
    /// Returns the newly found lost range, once: each lost offset is reported one time.
    pub(crate) fn check_committed(&self, next_offset: u64) -> Option<Lost> {
        let Opened {
            recovered_end,
            resume_at,
        } = self.opened;
        if next_offset <= recovered_end || next_offset > resume_at {
            return None;
        }
        let reported = self
            .reported_lost_to
            .fetch_max(next_offset, Ordering::AcqRel);
        let from = reported.max(recovered_end);
        (next_offset > from).then_some(Lost {
            from,
            to: next_offset,
            cause: "a consumer group had committed records that are no longer in the log",
        })
    }

    /// The partition's number.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }
}

/// Evidence on open that records up to `to` existed although the partition ends at `end`:
/// adds what is not reported yet to `lost`, and keeps appends from reusing those offsets.
fn note_missing(lost: &mut Vec<Lost>, resume_at: &mut u64, end: u64, to: u64, cause: &'static str) {
    let from = lost
        .iter()
        .map(|l| l.to)
        .filter(|&reported| reported > end)
        .fold(end, u64::max);
    if to > from {
        lost.push(Lost { from, to, cause });
    }
    *resume_at = (*resume_at).max(to);
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
