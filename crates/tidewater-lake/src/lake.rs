//! The running lake: one thread per topic that watches the topic's partitions, decides
//! when a partition's pending records make a batch, and writes it ([`crate::writer`]).
//!
//! Nothing is buffered in memory between polls: a partition's pending records are just
//! the offsets between its committed offset and the log's end, and a batch reads them
//! from the log when it is written. Memory is bounded by one batch's open files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::Database;
use tidewater_engine::{EngineError, LogPositions};
use tidewater_log::{Consumer, Log, LogError, TopicPartition};
use tidewater_metrics::{Heartbeat, Metrics};
use tracing::{debug, error, info, info_span, warn};

use crate::batching::{BatchPolicy, Pending};
use crate::files::ensure_dir;
use crate::state::{self, Batch};
use crate::writer::{publish, stage_files, CrashPoint};
use crate::{LakeConfig, LakeError};

/// How often an idle topic thread looks for new records (and for its topic to appear).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// First pause before retrying a batch that failed (doubles up to [`MAX_BACKOFF`]).
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between retries of a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The Parquet lake: writes the configured topics to date-partitioned files, exactly once.
pub struct Lake {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// What the topic threads share.
struct Shared {
    db: Database,
    dir: PathBuf,
    config: LakeConfig,
    log: Arc<dyn Log>,
    metrics: Arc<Metrics>,
    stopping: Mutex<bool>,
    wake: Condvar,
    /// A test's simulated crash: the topic and the point where its next batch dies.
    crash: Mutex<Option<(String, CrashPoint)>>,
    crashed: AtomicBool,
}

impl Lake {
    /// Opens the lake: its state database at `state` (created if needed) and its
    /// directory `dir` (created if needed). Nothing is written until [`Lake::start`].
    pub fn open(
        state: &Path,
        dir: &Path,
        config: LakeConfig,
        log: Arc<dyn Log>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Lake>, LakeError> {
        if config.max_rows_per_file == 0 {
            return Err(LakeError::Config {
                reason: "max_rows_per_file must be at least 1".to_owned(),
            });
        }
        let db = tidewater_engine::open_state_db(state).map_err(|source| match source {
            EngineError::CorruptState { path, reason } => LakeError::CorruptState {
                path,
                dir: dir.to_owned(),
                reason,
            },
            source => LakeError::OpenState {
                path: state.to_owned(),
                source,
            },
        })?;
        state::create_tables(&db)?;
        ensure_dir(dir)?;
        Ok(Arc::new(Lake {
            shared: Arc::new(Shared {
                db,
                dir: dir.to_owned(),
                config,
                log,
                metrics,
                stopping: Mutex::new(false),
                wake: Condvar::new(),
                crash: Mutex::new(None),
                crashed: AtomicBool::new(false),
            }),
            threads: Mutex::new(Vec::new()),
        }))
    }

    /// Starts writing in background threads, one per configured topic. Topics that do not
    /// exist yet are waited for (checked each poll), never created by the lake. Each
    /// thread first redoes the batches a crash interrupted. Does nothing when the lake is
    /// disabled.
    pub fn start(self: &Arc<Self>) -> Result<(), LakeError> {
        let mut threads = lock(&self.threads);
        if !threads.is_empty() {
            return Err(LakeError::AlreadyStarted);
        }
        if !self.shared.config.enabled {
            info!("the lake is disabled");
            return Ok(());
        }
        *lock(&self.shared.stopping) = false;
        let mut topics = self.shared.config.topics.clone();
        topics.sort();
        topics.dedup();
        for topic in topics {
            let shared = Arc::clone(&self.shared);
            let name = format!("lake-{topic}");
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn({
                    let topic = topic.clone();
                    move || TopicWorker::new(shared, topic).run()
                })
                .map_err(|source| LakeError::Spawn { topic, source })?;
            threads.push(thread);
        }
        Ok(())
    }

    /// Stops the threads (each after the file it is writing) and waits for them. Records
    /// not yet in a batch stay in the log and are written after the next start.
    pub fn stop(&self) {
        *lock(&self.shared.stopping) = true;
        self.shared.wake.notify_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            if thread.join().is_err() {
                error!("a lake thread panicked");
            }
        }
    }

    /// Next offset not yet in the lake, per (topic, partition), for the configured topics
    /// that exist, sorted.
    pub fn committed(&self) -> Result<Vec<(String, u32, u64)>, LakeError> {
        let mut topics = self.shared.config.topics.clone();
        topics.sort();
        topics.dedup();
        let mut out = Vec::new();
        for topic in topics {
            let partitions = match self.shared.log.partitions(&topic) {
                Ok(n) => n,
                Err(LogError::UnknownTopic { .. }) => continue,
                Err(source) => return Err(LakeError::Log { topic, source }),
            };
            let offsets = state::committed(&self.shared.db, &topic, partitions)?;
            out.extend(
                (0..partitions)
                    .zip(offsets)
                    .map(|(p, next)| (topic.clone(), p, next)),
            );
        }
        Ok(out)
    }

    /// Test hook: the next batch of `topic` (a redo included) stops dead at `at`, as if
    /// the process were killed there, and its thread exits without any clean-up.
    #[doc(hidden)]
    pub fn crash_next_batch(&self, topic: &str, at: CrashPoint) {
        *lock(&self.shared.crash) = Some((topic.to_owned(), at));
    }

    /// Test hook: whether a crash set by [`Lake::crash_next_batch`] happened.
    #[doc(hidden)]
    pub fn crashed(&self) -> bool {
        self.shared.crashed.load(Ordering::SeqCst)
    }
}

impl Drop for Lake {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    /// Sleeps up to `timeout`; returns early, with `true`, when the lake is stopping.
    fn sleep(&self, timeout: Duration) -> bool {
        let stopping = lock(&self.stopping);
        if *stopping {
            return true;
        }
        let (stopping, _) = self
            .wake
            .wait_timeout_while(stopping, timeout, |stopping| !*stopping)
            .unwrap_or_else(PoisonError::into_inner);
        *stopping
    }

    fn stopping(&self) -> bool {
        *lock(&self.stopping)
    }

    fn take_crash(&self, topic: &str) -> Option<CrashPoint> {
        let mut crash = lock(&self.crash);
        match &*crash {
            Some((t, _)) if t == topic => crash.take().map(|(_, at)| at),
            _ => None,
        }
    }

    /// Writes `batch` exactly once: intent, files, offset. Returns the rows written.
    /// `redo` (the batch's intent may be recorded already) only changes what is logged:
    /// recording the same intent again is harmless, and a failed batch is retried as a
    /// redo whether or not its intent reached the database.
    fn write_batch(
        &self,
        consumer: &mut dyn Consumer,
        topic: &str,
        partition: u32,
        batch: Batch,
        redo: bool,
    ) -> Result<u64, LakeError> {
        let span = info_span!(
            "lake_batch",
            topic,
            partition,
            first = batch.first,
            last = batch.last,
            redo
        );
        let _entered = span.enter();
        let crash = self.take_crash(topic);
        state::record_intent(&self.db, topic, partition, batch)?;
        if crash == Some(CrashPoint::AfterIntent) {
            return Err(LakeError::InjectedCrash);
        }
        let files = stage_files(consumer, &self.dir, topic, partition, batch)?;
        publish(&files, crash)?;
        if crash == Some(CrashPoint::BeforeOffsetCommit) {
            return Err(LakeError::InjectedCrash);
        }
        state::complete(&self.db, topic, partition, batch)?;
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        self.metrics
            .lake_files
            .with(&[topic])
            .add(files.len() as u64);
        self.metrics.lake_rows.with(&[topic]).add(rows);
        debug!(files = files.len(), rows, "batch written");
        Ok(rows)
    }
}

/// One partition as its topic thread sees it.
struct PartitionState {
    /// Reads the partition: to learn its end and first record, and to stage batches.
    consumer: Box<dyn Consumer>,
    /// Next offset to put in a batch, and since when records are pending.
    pending: Pending,
    /// A batch recorded but not completed: written (again) before anything else.
    intent: Option<Batch>,
    /// After a failure: no retry before this.
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// The loop of one topic's thread.
struct TopicWorker {
    shared: Arc<Shared>,
    topic: String,
    /// Where the topic's writer reports its progress (`pipeline lake <topic>`).
    heartbeat: Heartbeat,
    /// The committed positions, copied into the log's consumer offsets.
    positions: LogPositions,
}

impl TopicWorker {
    fn new(shared: Arc<Shared>, topic: String) -> Self {
        let heartbeat = shared
            .metrics
            .watchdog
            .register(format!("pipeline lake {topic}"));
        let positions = LogPositions::new(Arc::clone(&shared.log), state::PIPELINE);
        Self {
            shared,
            topic,
            heartbeat,
            positions,
        }
    }

    fn run(mut self) {
        let Some(mut partitions) = self.wait_for_topic() else {
            return;
        };
        info!(topic = %self.topic, partitions = partitions.len(), "lake writing topic");
        let policy = BatchPolicy {
            max_rows: self.shared.config.max_rows_per_file as u64,
            flush_interval: self.shared.config.flush_interval,
        };
        while !self.shared.stopping() {
            let now = Instant::now();
            let mut wrote = false;
            let mut wake_at = now + POLL_INTERVAL;
            for (partition, p) in (0u32..).zip(partitions.iter_mut()) {
                if self.shared.stopping() {
                    return;
                }
                if let Some(at) = p.retry_at.filter(|at| *at > now) {
                    wake_at = wake_at.min(at);
                    continue;
                }
                let (batch, redo) = match p.intent {
                    Some(batch) => (batch, true),
                    None => match self.next_batch(partition, p, &policy, now) {
                        Some(batch) => (batch, false),
                        None => {
                            if let Some(due) = policy.due(&p.pending) {
                                wake_at = wake_at.min(due);
                            }
                            continue;
                        }
                    },
                };
                self.heartbeat.working();
                match self.shared.write_batch(
                    p.consumer.as_mut(),
                    &self.topic,
                    partition,
                    batch,
                    redo,
                ) {
                    Ok(_) => {
                        wrote = true;
                        self.heartbeat.progress();
                        p.pending.next = batch.last + 1;
                        p.intent = None;
                        p.retry_at = None;
                        p.backoff = INITIAL_BACKOFF;
                        self.positions.committed(
                            TopicPartition::new(self.topic.as_str(), partition),
                            p.pending.next,
                        );
                    }
                    Err(LakeError::InjectedCrash) => {
                        self.shared.crashed.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => {
                        error!(topic = %self.topic, partition, %batch, error = %e,
                            "writing a lake batch failed; it will be retried");
                        self.heartbeat
                            .fail(format!("partition {partition}, batch {batch}: {e}"));
                        // The intent may be recorded: a retry must write exactly this batch.
                        p.intent = Some(batch);
                        p.retry_at = Some(now + p.backoff);
                        p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            if !wrote && partitions.iter().all(|p| p.intent.is_none()) {
                // Nothing written and nothing failed waiting for a retry.
                self.heartbeat.idle();
                self.positions.tick();
            }
            if !wrote {
                let timeout = wake_at.saturating_duration_since(Instant::now());
                if self.shared.sleep(timeout.max(Duration::from_millis(1))) {
                    break;
                }
            }
        }
        self.positions.flush();
    }

    /// The batch partition `p` should write now, if any.
    fn next_batch(
        &self,
        partition: u32,
        p: &mut PartitionState,
        policy: &BatchPolicy,
        now: Instant,
    ) -> Option<Batch> {
        // One record tells the partition's end, and where the next record is (offsets
        // need not be dense: a batch must not start in a gap). Nothing is kept: the batch
        // reads its records again when it is written.
        let assigned = TopicPartition::new(self.topic.as_str(), partition);
        let peeked = p
            .consumer
            .seek(&assigned, p.pending.next)
            .and_then(|()| p.consumer.poll(1, Duration::ZERO));
        let fetched = match peeked.map(|mut polled| polled.pop()) {
            Ok(Some(fetched)) => fetched,
            Ok(None) => return None,
            Err(e) => {
                warn!(topic = %self.topic, partition, error = %e, "cannot read the partition");
                return None;
            }
        };
        if let Some((from, to)) = fetched.skipped {
            // Retention never deletes what the lake has not committed: these were lost
            // (the log reported it when it found out).
            error!(topic = %self.topic, partition, from, to,
                "records the lake had not written are gone from the log; continuing after them");
        }
        if let Some(record) = fetched.records.first() {
            p.pending.next = p.pending.next.max(record.offset);
        }
        let end = fetched.high_watermark;
        policy.decide(&mut p.pending, end, now)
    }

    /// Waits for the topic to exist, then loads each partition's committed offset and
    /// intent. `None` when the lake stopped first.
    fn wait_for_topic(&mut self) -> Option<Vec<PartitionState>> {
        loop {
            match self.load() {
                Ok(Some(partitions)) => return Some(partitions),
                Ok(None) => {}
                Err(e) => {
                    warn!(topic = %self.topic, error = %e, "cannot open the topic for the lake")
                }
            }
            if self.shared.sleep(POLL_INTERVAL) {
                return None;
            }
        }
    }

    fn load(&mut self) -> Result<Option<Vec<PartitionState>>, LakeError> {
        let count = match self.shared.log.partitions(&self.topic) {
            Ok(n) => n,
            Err(LogError::UnknownTopic { .. }) => return Ok(None),
            Err(source) => {
                return Err(LakeError::Log {
                    topic: self.topic.clone(),
                    source,
                })
            }
        };
        let committed = state::committed(&self.shared.db, &self.topic, count)?;
        let log_error = |source| LakeError::Log {
            topic: self.topic.clone(),
            source,
        };
        let mut partitions = Vec::with_capacity(committed.len());
        let mut resume = Vec::with_capacity(committed.len());
        for (partition, next) in (0u32..).zip(committed) {
            let at = TopicPartition::new(self.topic.as_str(), partition);
            let mut consumer = Arc::clone(&self.shared.log).consumer().map_err(log_error)?;
            consumer
                .assign(vec![(at.clone(), next)])
                .map_err(log_error)?;
            resume.push((at, next));
            partitions.push(PartitionState {
                consumer,
                pending: Pending { next, since: None },
                intent: None,
                retry_at: None,
                backoff: INITIAL_BACKOFF,
            });
        }
        // Where the lake resumes: retention keeps what it has not written, and records it
        // had committed that are gone are reported.
        self.positions.resume(&resume).map_err(log_error)?;
        for (partition, batch) in state::intents(&self.shared.db, &self.topic)? {
            if let Some(p) = partitions.get_mut(partition as usize) {
                if batch.first != p.pending.next {
                    warn!(topic = %self.topic, partition, %batch, next = p.pending.next,
                        "a recorded batch does not start at the committed offset");
                }
                info!(topic = %self.topic, partition, %batch, "redoing a batch a crash interrupted");
                p.intent = Some(batch);
            }
        }
        Ok(Some(partitions))
    }
}

/// Locks a mutex, going on after a panic elsewhere (the data are flags and handles that a
/// panic cannot leave half-updated).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
