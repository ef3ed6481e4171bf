//! The engine joins its pipeline's consumer group and runs one worker thread per
//! partition the group gives this process; a handle observes and stops it.
//!
//! On the embedded log the one process owns every partition. On Kafka the members of the
//! group share them: a partition revoked by a rebalance has its worker stopped after its
//! current batch (before the revocation returns, so the next owner starts from what was
//! committed), and an assigned one gets a worker that resumes from the state store.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rand::Rng;
use redb::Database;
use tidewater_core::RetryHint;
use tidewater_log::{
    AssignmentListener, Log, LogError, Membership, Record, TopicConfig, TopicPartition,
};
use tidewater_metrics::{Heartbeat, Metrics};
use tracing::{error, info, warn};

use crate::dead_letter::DeadLetterRecord;
use crate::target::{PipelineTarget, SinkTarget, Target};
use crate::{EngineConfig, EngineError, Lease, LogPositions, Pipeline, PipelineError, Sink};

/// How a pipeline whose state must see its whole topic (the identity graph links records
/// of any partition) runs on each of several members: every member reads every partition
/// under a consumer group of its own, and what the replicas all produce is published by
/// one of them, the holder of a lease ([`crate::Handover::Sequence`] for dead letters).
#[derive(Clone)]
pub struct Replica {
    /// This member's own consumer group for the topic.
    pub group: String,
    /// The lease whose holder publishes.
    pub publisher: Arc<Lease>,
}

/// Runs a pipeline over the partitions of its topic that its consumer group gives this
/// process, with the pipeline's state and offsets in `db`.
pub struct Engine<P: Pipeline> {
    log: Arc<dyn Log>,
    db: Arc<Database>,
    pipeline: Arc<P>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    group: Option<String>,
    /// For a replica: the lease under which its dead letters are published.
    publisher: Option<Arc<Lease>>,
}

/// Runs a [`Sink`] over the partitions of its topic that its consumer group gives this
/// process, with the offsets in the sink's target.
pub struct SinkEngine<S: Sink> {
    log: Arc<dyn Log>,
    sink: Arc<S>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
}

/// Committed next offsets per partition, mirrored in memory so callers can wait on them.
struct Progress {
    committed: Mutex<Vec<u64>>,
    /// The partitions this process owns now (the group's assignment).
    owned: Mutex<BTreeSet<u32>>,
    changed: Condvar,
    stopped: AtomicBool,
}

impl Progress {
    fn set(&self, partition: u32, next: u64) {
        let mut committed = self.committed.lock();
        if let Some(slot) = committed.get_mut(partition as usize) {
            *slot = next;
        }
        self.changed.notify_all();
    }
}

/// A running engine: observe its progress, stop it.
pub struct EngineHandle {
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    member: JoinHandle<()>,
}

/// Watches an engine's committed offsets; cheap to clone, usable while the engine stops.
#[derive(Clone)]
pub struct ProgressWatcher(Arc<Progress>);

impl<P: Pipeline> Engine<P> {
    /// An engine for `pipeline`, storing offsets in `db` (the pipeline's own state database).
    pub fn new(
        log: Arc<dyn Log>,
        db: Arc<Database>,
        pipeline: Arc<P>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            log,
            db,
            pipeline,
            config,
            metrics,
            group: None,
            publisher: None,
        }
    }

    /// Runs as a [`Replica`]: every partition, under the replica's own group; its dead
    /// letters are published by the holder of the replica's lease.
    pub fn replica(mut self, replica: Replica) -> Self {
        self.group = Some(replica.group);
        self.publisher = Some(replica.publisher);
        self
    }

    /// Joins the pipeline's consumer group and runs a worker for each partition it gets.
    /// The topic is created (with `topic_config`) if it does not exist yet.
    pub fn start(self, topic_config: &TopicConfig) -> Result<EngineHandle, EngineError> {
        ensure_topics(
            self.log.as_ref(),
            self.pipeline.as_ref().name(),
            self.pipeline.topic(),
            topic_config,
        )?;
        let group = self
            .group
            .unwrap_or_else(|| self.pipeline.name().to_owned());
        let target = Arc::new(PipelineTarget::new(
            Arc::clone(&self.log),
            self.db,
            self.pipeline,
            Arc::clone(&self.metrics),
            self.publisher.clone(),
        ));
        if let Some(publisher) = &self.publisher {
            // What the previous holder left unpublished goes out now, not with the next
            // dead letter.
            let target = Arc::downgrade(&target);
            publisher.on_acquire(move || {
                if let Some(target) = target.upgrade() {
                    target.publish_dead_letters();
                }
            });
        }
        launch(self.log, target, &group, self.config, self.metrics)
    }
}

impl<S: Sink> SinkEngine<S> {
    /// An engine for `sink`.
    pub fn new(
        log: Arc<dyn Log>,
        sink: Arc<S>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            log,
            sink,
            config,
            metrics,
        }
    }

    /// Joins the sink's consumer group and runs a worker for each partition it gets. The
    /// topic is created (with `topic_config`) if it does not exist yet.
    pub fn start(self, topic_config: &TopicConfig) -> Result<EngineHandle, EngineError> {
        ensure_topics(
            self.log.as_ref(),
            self.sink.name(),
            self.sink.topic(),
            topic_config,
        )?;
        let group = self.sink.name().to_owned();
        let target = SinkTarget::new(Arc::clone(&self.log), self.sink);
        launch(
            self.log,
            Arc::new(target),
            &group,
            self.config,
            self.metrics,
        )
    }
}

/// Creates the consumed topic and the pipeline's dead-letter topic if missing.
fn ensure_topics(
    log: &dyn Log,
    name: &str,
    topic: &str,
    topic_config: &TopicConfig,
) -> Result<(), EngineError> {
    log.ensure_topic(topic, topic_config)?;
    let dead_letters = TopicConfig {
        partitions: 1,
        ..TopicConfig::default()
    };
    log.ensure_topic(&DeadLetterRecord::topic_for(name), &dead_letters)?;
    Ok(())
}

/// Joins `group` for the target's topic and serves it on a member thread.
fn launch<T: Target>(
    log: Arc<dyn Log>,
    target: Arc<T>,
    group: &str,
    config: EngineConfig,
    metrics: Arc<Metrics>,
) -> Result<EngineHandle, EngineError> {
    let topic = target.topic().to_owned();
    let group = group.to_owned();
    let partitions = log.partitions(&topic)?;
    let mut committed = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let next = target
            .committed(partition)
            .map_err(|e| EngineError::Corrupt(format!("cannot read committed offsets: {e}")))?;
        committed.push(next.unwrap_or(0));
    }
    let progress = Arc::new(Progress {
        committed: Mutex::new(committed),
        owned: Mutex::new(BTreeSet::new()),
        changed: Condvar::new(),
        stopped: AtomicBool::new(false),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Worker {
        log: Arc::clone(&log),
        group: group.clone(),
        target,
        config,
        metrics,
        progress: Arc::clone(&progress),
    });
    let workers = Workers {
        shared,
        running: HashMap::new(),
    };
    let mut membership = log.join_group(&group, std::slice::from_ref(&topic), Box::new(workers))?;
    // The embedded log assigns everything on the first poll: the workers run when
    // `start` returns.
    membership.poll(Duration::ZERO)?;
    let member_stop = Arc::clone(&stop);
    let member = std::thread::Builder::new()
        .name(format!("{group}-member"))
        .spawn(move || serve_group(membership, &group, &member_stop))
        .map_err(EngineError::Spawn)?;
    Ok(EngineHandle {
        stop,
        progress,
        member,
    })
}

/// Serves the group until the engine stops, then leaves it (stopping every worker).
pub(crate) fn serve_group(mut membership: Box<dyn Membership>, group: &str, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = membership.poll(Duration::from_millis(100)) {
            warn!(group, error = %e, "consumer group poll failed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if let Err(e) = membership.leave() {
        warn!(group, error = %e, "cannot leave the consumer group cleanly");
    }
}

/// The worker threads of the partitions this process owns, started and stopped as the
/// group assigns and revokes them.
struct Workers<T: Target> {
    shared: Arc<Worker<T>>,
    running: HashMap<u32, (Arc<AtomicBool>, JoinHandle<()>)>,
}

impl<T: Target> AssignmentListener for Workers<T> {
    fn assigned(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if tp.topic != self.shared.target.topic() || self.running.contains_key(&tp.partition) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let worker = Arc::clone(&self.shared);
            let worker_stop = Arc::clone(&stop);
            let partition = tp.partition;
            let spawned = std::thread::Builder::new()
                .name(format!("{}-p{partition}", worker.target.name()))
                .spawn(move || worker.run(partition, &worker_stop));
            match spawned {
                Ok(thread) => {
                    self.running.insert(partition, (stop, thread));
                    self.shared.progress.owned.lock().insert(partition);
                }
                Err(e) => {
                    error!(pipeline = %self.shared.target.name(), partition, error = %e,
                        "cannot start a worker thread");
                }
            }
        }
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        let stopping: Vec<_> = partitions
            .iter()
            .filter(|tp| tp.topic == self.shared.target.topic())
            .filter_map(|tp| self.running.remove(&tp.partition))
            .collect();
        let mut owned = self.shared.progress.owned.lock();
        for tp in partitions {
            owned.remove(&tp.partition);
        }
        drop(owned);
        for (stop, _) in &stopping {
            stop.store(true, Ordering::SeqCst);
        }
        for (_, thread) in stopping {
            let _ = thread.join();
        }
    }
}

impl EngineHandle {
    /// A watcher of this engine's progress.
    pub fn watcher(&self) -> ProgressWatcher {
        ProgressWatcher(Arc::clone(&self.progress))
    }

    /// Asks the workers to stop after their current batch, and waits for them (leaving
    /// the consumer group). Wakes everyone waiting on the engine's progress.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.member.join();
        self.progress.stopped.store(true, Ordering::SeqCst);
        let _guard = self.progress.committed.lock();
        self.progress.changed.notify_all();
    }
}

impl ProgressWatcher {
    /// Next offset to be consumed, per partition (everything below is committed).
    pub fn committed(&self) -> Vec<u64> {
        self.0.committed.lock().clone()
    }

    /// The partitions the consumer group gives this process now: on the embedded log
    /// every partition, on Kafka this member's share.
    pub fn owned(&self) -> Vec<u32> {
        self.0.owned.lock().iter().copied().collect()
    }

    /// Waits until every `(partition, offset)` given is committed (consumed past), the
    /// engine stops, or the timeout passes. Returns whether all are committed.
    pub fn wait_committed(&self, positions: &[(u32, u64)], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut committed = self.0.committed.lock();
        loop {
            let done = positions
                .iter()
                .all(|(p, o)| committed.get(*p as usize).is_some_and(|c| *c > *o));
            if done {
                return true;
            }
            if self.0.stopped.load(Ordering::SeqCst)
                || self
                    .0
                    .changed
                    .wait_until(&mut committed, deadline)
                    .timed_out()
            {
                return false;
            }
        }
    }
}

struct Worker<T: Target> {
    log: Arc<dyn Log>,
    /// The consumer group, under which positions are copied to the log.
    group: String,
    target: Arc<T>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
}

impl<T: Target> Worker<T> {
    /// Works on `partition` until `stop` is set, or until an error that retrying cannot
    /// fix stops it (loudly: an ERROR line, `tidewater_pipeline_stopped`, `/readyz`).
    fn run(&self, partition: u32, stop: &AtomicBool) {
        let name = self.target.name().to_owned();
        let topic = self.target.topic().to_owned();
        let partition_label = partition.to_string();
        let labels = [name.as_str(), topic.as_str(), partition_label.as_str()];
        let lag = self.metrics.pipeline_lag.with(&labels);
        let beat = self
            .metrics
            .watchdog
            .register(format!("pipeline {name} {topic}/{partition}"));
        let mut positions = LogPositions::new(Arc::clone(&self.log), self.group.as_str());
        let assigned = TopicPartition::new(topic.as_str(), partition);
        // The target is where the partition resumes (another member may have moved it
        // on since this process last owned it).
        let Some(mut stored) = self.retrying(stop, &beat, "read the committed position", || {
            self.target.committed(partition).map_err(|e| e.to_string())
        }) else {
            return;
        };
        let mut next = stored.unwrap_or(0);
        self.progress.set(partition, next);
        // Tell the log where this pipeline resumes: retention keeps what it has not
        // committed, and records it had committed that are gone are reported.
        positions.committed(assigned.clone(), next);
        positions.flush();
        let Some(mut consumer) = self.retrying(stop, &beat, "read the log", || {
            let mut consumer = Arc::clone(&self.log).consumer()?;
            consumer.assign(vec![(assigned.clone(), next)])?;
            Ok::<_, LogError>(consumer)
        }) else {
            return;
        };
        let mut backoff = self.config.retry_backoff_initial;
        while !stop.load(Ordering::SeqCst) {
            let fetched = match consumer
                .poll(self.config.batch_max_records, self.config.poll_interval)
                .map(|mut polled| polled.pop())
            {
                Ok(Some(fetched)) => fetched,
                Ok(None) => {
                    pause(stop, self.config.poll_interval);
                    continue;
                }
                Err(e) => {
                    error!(pipeline = %name, partition = %assigned, error = %e, "cannot read the log");
                    beat.fail(format!("cannot read the log: {e}"));
                    pause(stop, self.config.retry_backoff_max);
                    continue;
                }
            };
            if let Some((from, to)) = fetched.skipped {
                // Retention never deletes what this pipeline has not committed, so these
                // records were lost (the log reported it when it found out).
                error!(pipeline = %name, partition = %assigned, from, to,
                    "records this pipeline had not consumed are gone from the log; continuing after them");
            }
            lag.set(fetched.high_watermark.saturating_sub(next) as i64);
            let records = fetched.records;
            if records.is_empty() {
                beat.idle();
                positions.tick();
                continue;
            }
            beat.working();
            let outcome = self.target.process(partition, stored, &records);
            let retry_at = match outcome {
                Ok(letters) => {
                    next = records.last().map_or(next, |r| r.offset + 1);
                    stored = Some(next);
                    self.committed(partition, &records, &letters);
                    beat.progress();
                    backoff = self.config.retry_backoff_initial;
                    positions.committed(assigned.clone(), next);
                    continue;
                }
                Err(PipelineError::Fenced { stored: moved, .. }) => {
                    // Another process committed this partition meanwhile: go on from
                    // what it stored, without waiting (nothing failed).
                    info!(pipeline = %name, partition = %assigned, expected = ?stored, stored = ?moved,
                        "the partition moved on elsewhere; continuing from its committed offset");
                    stored = moved;
                    next = moved.unwrap_or(0);
                    self.progress.set(partition, next);
                    Duration::ZERO
                }
                Err(e) if e.retry_hint() == RetryHint::Fatal => {
                    // Retrying cannot fix it: stop this partition loudly instead of
                    // retrying a poison pill for ever.
                    error!(pipeline = %name, topic = %topic, partition, offset = next, error = %e,
                        "batch failed and cannot succeed by retrying; this partition stops until restart");
                    beat.fail(format!("stopped at offset {next}: {e}"));
                    self.metrics.pipeline_stopped.with(&labels).set(1);
                    while !stop.load(Ordering::SeqCst) {
                        pause(stop, Duration::from_secs(1));
                    }
                    break;
                }
                Err(e) => {
                    self.metrics.pipeline_retries.with(&[&name]).inc();
                    let wait = match e.domain() {
                        tidewater_core::ErrorDomain::External => backoff,
                        _ => {
                            beat.fail(format!("batch at offset {next} failed: {e}"));
                            self.config.retry_backoff_max
                        }
                    };
                    warn!(pipeline = %name, topic = %topic, partition, offset = next, error = %e,
                        retry_in = ?wait, "batch failed; it will be retried");
                    backoff = (backoff * 2).min(self.config.retry_backoff_max);
                    jitter(wait)
                }
            };
            // The same batch again (or what follows another member's): back to the
            // committed position.
            if let Err(e) = consumer.seek(&assigned, next) {
                error!(pipeline = %name, partition = %assigned, error = %e, "cannot seek back to retry");
            }
            pause(stop, retry_at);
        }
        positions.flush();
        info!(pipeline = %name, partition, "worker stopped");
    }

    /// Calls `attempt` until it succeeds (`Some`) or the worker stops (`None`), reporting
    /// each failure.
    fn retrying<R, E: std::fmt::Display>(
        &self,
        stop: &AtomicBool,
        beat: &Heartbeat,
        what: &str,
        mut attempt: impl FnMut() -> Result<R, E>,
    ) -> Option<R> {
        loop {
            match attempt() {
                Ok(value) => return Some(value),
                Err(e) => {
                    error!(pipeline = %self.target.name(), error = %e, "cannot {what}");
                    beat.fail(format!("cannot {what}: {e}"));
                    pause(stop, self.config.retry_backoff_max);
                    if stop.load(Ordering::SeqCst) {
                        return None;
                    }
                }
            }
        }
    }

    /// Counts a committed batch and publishes its progress.
    fn committed(&self, partition: u32, records: &[Record], letters: &[DeadLetterRecord]) {
        let (name, topic) = (self.target.name(), self.target.topic());
        self.metrics
            .pipeline_records
            .with(&[name, topic])
            .add(records.len() as u64);
        self.metrics.pipeline_batches.with(&[name]).inc();
        for letter in letters {
            warn!(pipeline = name, topic, partition, offset = letter.offset,
                reason = %letter.reason, "event dead-lettered");
        }
        if !letters.is_empty() {
            self.metrics
                .dead_letters
                .with(&[name, topic])
                .add(letters.len() as u64);
        }
        if let Some(last) = records.last() {
            self.progress.set(partition, last.offset + 1);
        }
    }
}

/// Sleeps for `wait`, or less when `stop` is set meanwhile.
fn pause(stop: &AtomicBool, wait: Duration) {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20).min(wait));
    }
}

/// Full jitter: a uniformly random pause up to `wait`, at least a tenth of it.
fn jitter(wait: Duration) -> Duration {
    let ms = wait.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 10..=ms))
}
