//! [`EmbeddedLog`]: opening (and recovering) a log directory, topic management, and the
//! [`Log`] implementation on top of the partitions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tidewater_metrics::Metrics;

use super::appended::Appended;
use super::config::{Durability, EmbeddedLogConfig};
use super::consumer::EmbeddedConsumer;
use super::frame::{check_headers, frame_len, MAX_FRAME_LEN};
use super::fsutil::sync_dir;
use super::membership::SoleMembership;
use super::offsets::{validate_group_name, OffsetStore};
use super::partition::{Lost, Partition};
use super::topic::{validate_topic_name, Topic, TOPIC_TMP_SUFFIX};
use crate::{
    AssignmentListener, Consumer, Log, LogError, Membership, NewRecord, PartitionRange, Position,
    Record, TopicConfig, TopicPartition,
};

/// Directory holding one subdirectory per topic.
const TOPICS_DIR: &str = "topics";
/// Directory holding one file per consumer group.
const OFFSETS_DIR: &str = "offsets";
/// File whose exclusive lock marks the directory as open by one process.
const LOCK_FILE: &str = "LOCK";

/// The single-machine log, stored under one directory.
///
/// Layout and byte formats are specified in `docs/log-format.md`. Opening the directory
/// recovers it: torn tails left by a crash are cut off, damage elsewhere is reported as
/// [`LogError::Corrupt`]. Only one process may open a directory at a time.
pub struct EmbeddedLog {
    dir: PathBuf,
    config: EmbeddedLogConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    offsets: OffsetStore,
    /// Where lost records and retention held back by consumers are counted.
    metrics: Arc<Metrics>,
    /// Raised whenever a partition publishes records.
    appended: Arc<Appended>,
    /// Holds the directory's lock for as long as the log is open.
    _lock: std::fs::File,
}

/// What one retention pass ([`EmbeddedLog::enforce_retention`]) deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segment files deleted.
    pub segments_deleted: usize,
    /// Bytes those files held.
    pub bytes_deleted: u64,
    /// Records they held (the sum of how far each partition's start moved).
    pub records_deleted: u64,
    /// Bytes the limits would have deleted but that were kept because a consumer group
    /// has not committed them yet.
    pub bytes_held: u64,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EmbeddedLog {
    /// Opens (creating if needed) the log stored under `dir` and recovers every partition.
    pub fn open(dir: impl Into<PathBuf>, config: EmbeddedLogConfig) -> Result<Arc<Self>, LogError> {
        Self::open_with_metrics(dir, config, Arc::new(Metrics::default()))
    }

    /// [`Self::open`], counting lost records (`tidewater_log_lost_records_total`) and
    /// retention held back by consumers (`tidewater_log_retention_held_bytes`) in `metrics`.
    pub fn open_with_metrics(
        dir: impl Into<PathBuf>,
        config: EmbeddedLogConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, LogError> {
        let dir = dir.into();
        let topics_dir = dir.join(TOPICS_DIR);
        fs_err::create_dir_all(&topics_dir)?;
        // Recovery truncates torn tails: a second process must never do that to files a
        // live writer is appending to.
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?
            .into_parts()
            .0;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Locked { path: lock_path })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LogError::Io(e)),
        }
        // Consumer offsets first: where a group had committed proves records existed.
        let offsets = OffsetStore::open(dir.join(OFFSETS_DIR))?;
        let appended = Arc::new(Appended::default());
        let mut topics = BTreeMap::new();
        for entry in fs_err::read_dir(&topics_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TOPIC_TMP_SUFFIX) {
                // A topic whose creation a crash interrupted; it was never acknowledged.
                fs_err::remove_dir_all(entry.path())?;
                continue;
            }
            if !entry.file_type()?.is_dir() || validate_topic_name(&name).is_err() {
                tracing::warn!(
                    path = %entry.path().display(),
                    "ignoring unknown entry in the topics directory"
                );
                continue;
            }
            let (topic, lost) = Topic::open(
                entry.path(),
                &name,
                &config,
                |partition| offsets.highest(&name, partition),
                &appended,
            )?;
            for (partition, lost) in lost {
                report_lost(&metrics, &name, partition, lost);
            }
            topics.insert(name, Arc::new(topic));
        }
        sync_dir(&topics_dir)?;
        tracing::debug!(dir = %dir.display(), topics = topics.len(), "opened embedded log");
        Ok(Arc::new(Self {
            dir,
            config,
            topics: RwLock::new(topics),
            offsets,
            metrics,
            appended,
            _lock: lock,
        }))
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings the log was opened with.
    pub fn config(&self) -> &EmbeddedLogConfig {
        &self.config
    }

    /// A topic's configuration as stored (its partition count never changes).
    pub fn topic_config(&self, topic: &str) -> Result<TopicConfig, LogError> {
        Ok(self.topic(topic)?.config())
    }

    /// Bytes stored on disk for one partition (segment files, headers included).
    pub fn partition_bytes(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        let topic = self.topic(topic)?;
        Ok(Self::partition(&topic, partition)?.size_bytes())
    }

    /// Deletes whole old segments of every topic according to its retention settings:
    /// from the oldest, each sealed segment whose newest record timestamp is older than
    /// `retention_age`, and while the partition holds more than `retention_bytes`. The
    /// active segment is never deleted, so a partition may stay above its byte limit by up
    /// to one segment. Records a consumer group has not committed yet are never deleted
    /// (see [`Log::commit_offset`]); when that keeps a partition above its limits, a
    /// warning and `tidewater_log_retention_held_bytes` say so. Partitions' `start` offsets
    /// move past the deleted records.
    pub fn enforce_retention(&self) -> Result<RetentionReport, LogError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        let mut report = RetentionReport::default();
        for topic in topics {
            let config = topic.config();
            if config.retention_age.is_none() && config.retention_bytes.is_none() {
                continue;
            }
            let max_age_ms = config
                .retention_age
                .map(|age| i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            for partition in topic.partitions() {
                let keep_from = self.offsets.lowest(topic.name(), partition.id());
                let removed = partition.enforce_retention(
                    now_ms,
                    max_age_ms,
                    config.retention_bytes,
                    keep_from,
                )?;
                report.segments_deleted += removed.segments;
                report.bytes_deleted += removed.bytes;
                report.records_deleted += removed.records;
                report.bytes_held += removed.held_bytes;
                let partition_label = partition.id().to_string();
                self.metrics
                    .log_retention_held_bytes
                    .with(&[topic.name(), &partition_label])
                    .set(i64::try_from(removed.held_bytes).unwrap_or(i64::MAX));
                if removed.held_bytes > 0 {
                    tracing::warn!(topic = topic.name(), partition = partition.id(),
                        held_bytes = removed.held_bytes, committed = keep_from,
                        "retention keeps records a consumer group has not committed yet; the partition stays above its retention limit");
                }
            }
        }
        Ok(report)
    }

    /// Makes every partition durable and records where each ends, so the next open can
    /// tell whether records went missing while the log was closed. Also done when the
    /// log is dropped; calling it earlier reports errors.
    pub fn close(&self) -> Result<(), LogError> {
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        for topic in topics {
            for partition in topic.partitions() {
                partition.close()?;
            }
        }
        Ok(())
    }

    /// The notice every publication raises (for consumers waiting on several partitions).
    pub(crate) fn appended(&self) -> &Appended {
        &self.appended
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic {
                topic: name.to_owned(),
            })
    }

    fn partition(topic: &Topic, partition: u32) -> Result<&Partition, LogError> {
        topic
            .partitions()
            .get(partition as usize)
            .ok_or_else(|| LogError::UnknownPartition {
                topic: topic.name().to_owned(),
                partition,
            })
    }

    fn check_record(&self, record: &NewRecord) -> Result<(), LogError> {
        let max = self.config.max_record_bytes;
        if record.value.len() > max {
            return Err(LogError::RecordTooLarge {
                size: record.value.len(),
                max,
            });
        }
        check_headers(&record.headers).map_err(LogError::InvalidRecord)?;
        if frame_len(record.key.as_deref(), &record.headers, &record.value) > MAX_FRAME_LEN {
            let size = record.value.len() + record.key.as_ref().map_or(0, Vec::len);
            return Err(LogError::RecordTooLarge {
                size,
                max: MAX_FRAME_LEN,
            });
        }
        Ok(())
    }
}

impl Log for EmbeddedLog {
    fn consumer(self: Arc<Self>) -> Result<Box<dyn Consumer>, LogError> {
        Ok(Box::new(EmbeddedConsumer::new(self)))
    }

    fn join_group(
        self: Arc<Self>,
        group: &str,
        topics: &[String],
        listener: Box<dyn AssignmentListener>,
    ) -> Result<Box<dyn Membership>, LogError> {
        validate_group_name(group)?;
        Ok(Box::new(SoleMembership::new(&self, topics, listener)?))
    }

    fn ensure_topic(&self, topic: &str, config: &TopicConfig) -> Result<(), LogError> {
        validate_topic_name(topic)?;
        config.check(topic)?;
        if let Ok(existing) = self.topic(topic) {
            return existing.update_retention(config);
        }
        // Holding the write lock while creating keeps two callers from creating the same
        // topic; creation is rare, so briefly stalling lookups is acceptable.
        let mut topics = self.topics.write();
        if let Some(existing) = topics.get(topic) {
            return existing.update_retention(config);
        }
        let topics_dir = self.dir.join(TOPICS_DIR);
        Topic::create(&topics_dir, topic, config)?;
        let (opened, _) = Topic::open(
            topics_dir.join(topic),
            topic,
            &self.config,
            |_| None,
            &self.appended,
        )?;
        topics.insert(topic.to_owned(), Arc::new(opened));
        tracing::info!(topic, partitions = config.partitions, "created topic");
        Ok(())
    }

    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        Ok(self.topic(topic)?.partitions().len() as u32)
    }

    fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<Position>, LogError> {
        let topic = self.topic(topic)?;
        for record in &records {
            self.check_record(record)?;
        }
        let mut routed: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, record) in records.iter().enumerate() {
            routed
                .entry(topic.route(record.key.as_deref()))
                .or_default()
                .push(i);
        }
        let publish_on_write = self.config.durability == Durability::Os;
        let mut positions = vec![
            Position {
                partition: 0,
                offset: 0
            };
            records.len()
        ];
        let mut to_sync = Vec::with_capacity(routed.len());
        // Write every partition first and fsync afterwards, so the fsyncs of a
        // multi-partition append overlap with other appenders' writes.
        for (&id, indices) in &routed {
            let partition = Self::partition(&topic, id)?;
            let batch: Vec<&NewRecord> = indices.iter().map(|&i| &records[i]).collect();
            let (first, end) = partition.write(&batch, publish_on_write)?;
            for (offset, &i) in (first..).zip(indices) {
                positions[i] = Position {
                    partition: id,
                    offset,
                };
            }
            to_sync.push((partition, end));
        }
        if !publish_on_write {
            for (partition, end) in to_sync {
                partition.sync_to(end, self.config.group_commit_window)?;
            }
        }
        Ok(positions)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<Record>, LogError> {
        let topic = self.topic(topic)?;
        Self::partition(&topic, partition)?.read(from, max_records)
    }

    fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool, LogError> {
        let topic = self.topic(topic)?;
        Ok(Self::partition(&topic, partition)?.wait_for(offset, timeout))
    }

    fn range(&self, topic: &str, partition: u32) -> Result<PartitionRange, LogError> {
        let topic = self.topic(topic)?;
        Ok(Self::partition(&topic, partition)?.range())
    }

    fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), LogError> {
        let mut entries = Vec::with_capacity(offsets.len());
        for (at, next_offset) in offsets {
            let topic = self.topic(&at.topic)?;
            let stored = Self::partition(&topic, at.partition)?;
            if let Some(lost) = stored.check_committed(*next_offset) {
                report_lost(&self.metrics, &at.topic, at.partition, lost);
            }
            entries.push((at.topic.as_str(), at.partition, *next_offset));
        }
        self.offsets.commit(group, &entries)
    }

    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        let topic_ref = self.topic(topic)?;
        Self::partition(&topic_ref, partition)?;
        Ok(self.offsets.get(group, topic, partition))
    }

    fn topics(&self) -> Result<Vec<String>, LogError> {
        Ok(self.topics.read().keys().cloned().collect())
    }

    fn enforce_retention(&self) -> Result<(), LogError> {
        EmbeddedLog::enforce_retention(self).map(|_| ())
    }

    fn close(&self) -> Result<(), LogError> {
        EmbeddedLog::close(self)
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::warn!(dir = %self.dir.display(), %error,
                "cannot record the log's end at close; the next open treats it as a crash");
        }
    }
}

/// Says loudly that records are gone: an error line naming the topic, partition and
/// offsets, and the lost-records metric.
fn report_lost(metrics: &Metrics, topic: &str, partition: u32, lost: Lost) {
    tracing::error!(
        topic,
        partition,
        from = lost.from,
        to = lost.to,
        cause = lost.cause,
        "records are lost: offsets {}..{} of {topic}/{partition} should be in the log but are not",
        lost.from,
        lost.to
    );
    metrics
        .log_lost_records
        .with(&[topic, &partition.to_string()])
        .add(lost.to - lost.from);
}
