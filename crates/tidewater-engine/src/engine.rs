//! The engine joins its pipeline's consumer group and runs one worker thread per
//! partition the group gives this process; a handle observes and stops it.
//!
//! On the embedded log the one process owns every partition. On Kafka the members of the
//! group share them: a partition revoked by a rebalance has its worker stopped after its
//! current batch (before the revocation returns, so the next owner starts from what was
//! committed), and an assigned one gets a worker that resumes from the state store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rand::Rng;
use redb::Database;
use tidewater_log::{
    AssignmentListener, Consumer, Log, LogError, Membership, TopicConfig, TopicPartition,
};
use tidewater_metrics::Metrics;
use tracing::{error, info, warn};

use crate::dead_letter::{DeadLetter, DeadLetterRecord};
use crate::state::OFFSETS;
use crate::{EngineConfig, EngineError, LogPositions, Outbox, Pipeline, PipelineError};

/// Runs a pipeline over every partition of its topic.
pub struct Engine<P: Pipeline> {
    log: Arc<dyn Log>,
    db: Arc<Database>,
    pipeline: Arc<P>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
}

/// Committed next offsets per partition, mirrored in memory so callers can wait on them.
struct Progress {
    committed: Mutex<Vec<u64>>,
    changed: Condvar,
    stopped: AtomicBool,
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
        }
    }

    /// Starts one worker thread per partition. The topic is created (with `topic_config`)
    /// if it does not exist yet.
    pub fn start(self, topic_config: &TopicConfig) -> Result<EngineHandle, EngineError> {
        let topic = self.pipeline.topic().to_owned();
        self.log.ensure_topic(&topic, topic_config)?;
        let dlq_topic = DeadLetterRecord::topic_for(self.pipeline.name());
        self.log.ensure_topic(
            &dlq_topic,
            &TopicConfig {
                partitions: 1,
                ..TopicConfig::default()
            },
        )?;
        let partitions = self.log.partitions(&topic)?;
        let committed =
            crate::committed_offsets(&self.db, self.pipeline.name(), &topic, partitions)?;
        let progress = Arc::new(Progress {
            committed: Mutex::new(committed),
            changed: Condvar::new(),
            stopped: AtomicBool::new(false),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let dead_letters = Outbox::new("dead-letters", dlq_topic).watched(&self.metrics.watchdog);
        let group = self.pipeline.name().to_owned();
        let shared = Arc::new(Worker {
            log: Arc::clone(&self.log),
            db: self.db,
            pipeline: self.pipeline,
            config: self.config,
            metrics: self.metrics,
            topic: topic.clone(),
            dead_letters,
            progress: Arc::clone(&progress),
        });
        // Letters committed before a crash but not yet published.
        shared.publish_dead_letters();
        let workers = Workers {
            shared,
            running: HashMap::new(),
        };
        let mut membership = Arc::clone(&self.log).join_group(
            &group,
            std::slice::from_ref(&topic),
            Box::new(workers),
        )?;
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
}

/// Serves the group until the engine stops, then leaves it (stopping every worker).
fn serve_group(mut membership: Box<dyn Membership>, group: &str, stop: &AtomicBool) {
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
struct Workers<P: Pipeline> {
    shared: Arc<Worker<P>>,
    running: HashMap<u32, (Arc<AtomicBool>, JoinHandle<()>)>,
}

impl<P: Pipeline> AssignmentListener for Workers<P> {
    fn assigned(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if tp.topic != self.shared.topic || self.running.contains_key(&tp.partition) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let worker = Arc::clone(&self.shared);
            let worker_stop = Arc::clone(&stop);
            let partition = tp.partition;
            let spawned = std::thread::Builder::new()
                .name(format!("{}-p{partition}", worker.pipeline.name()))
                .spawn(move || worker.run(partition, &worker_stop));
            match spawned {
                Ok(thread) => {
                    self.running.insert(partition, (stop, thread));
                }
                Err(e) => {
                    error!(pipeline = %self.shared.pipeline.name(), partition, error = %e,
                        "cannot start a worker thread");
                }
            }
        }
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        let stopping: Vec<_> = partitions
            .iter()
            .filter(|tp| tp.topic == self.shared.topic)
            .filter_map(|tp| self.running.remove(&tp.partition))
            .collect();
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

struct Worker<P: Pipeline> {
    log: Arc<dyn Log>,
    db: Arc<Database>,
    pipeline: Arc<P>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    topic: String,
    dead_letters: Outbox,
    progress: Arc<Progress>,
}

impl<P: Pipeline> Worker<P> {
    /// Works on `partition` until `stop` is set.
    fn run(&self, partition: u32, stop: &AtomicBool) {
        let name = self.pipeline.name().to_owned();
        let partition_label = partition.to_string();
        let lag = self
            .metrics
            .pipeline_lag
            .with(&[&name, &self.topic, &partition_label]);
        let beat = self
            .metrics
            .watchdog
            .register(format!("pipeline {name} {}/{partition}", self.topic));
        let mut positions = LogPositions::new(Arc::clone(&self.log), name.as_str());
        let assigned = TopicPartition::new(self.topic.as_str(), partition);
        // The state store is where the partition resumes (another member may have
        // moved it on since this process last owned it).
        let mut next = loop {
            match self.resume_position(partition) {
                Ok(next) => break next,
                Err(e) => {
                    error!(pipeline = %name, partition = %assigned, error = %e, "cannot read the committed position");
                    beat.fail(format!("cannot read the committed position: {e}"));
                    pause(stop, self.config.retry_backoff_max);
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
            }
        };
        // Tell the log where this pipeline resumes: retention keeps what it has not
        // committed, and records it had committed that are gone are reported.
        positions.committed(assigned.clone(), next);
        positions.flush();
        let mut backoff = self.config.retry_backoff_initial;
        let mut consumer = loop {
            match self.consumer(&assigned, next) {
                Ok(consumer) => break consumer,
                Err(e) => {
                    error!(pipeline = %name, partition = %assigned, error = %e, "cannot read the log");
                    beat.fail(format!("cannot read the log: {e}"));
                    pause(stop, self.config.retry_backoff_max);
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
            }
        };
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
            match self.process(partition, &records) {
                Ok(new_next) => {
                    next = new_next;
                    beat.progress();
                    backoff = self.config.retry_backoff_initial;
                    positions.committed(assigned.clone(), next);
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
                    warn!(pipeline = %name, topic = %self.topic, partition, offset = next, error = %e,
                        retry_in = ?wait, "batch failed; it will be retried");
                    // The same batch again: back to the committed position.
                    if let Err(e) = consumer.seek(&assigned, next) {
                        error!(pipeline = %name, partition = %assigned, error = %e, "cannot seek back to retry");
                    }
                    pause(stop, jitter(wait));
                    backoff = (backoff * 2).min(self.config.retry_backoff_max);
                }
            }
        }
        positions.flush();
        info!(pipeline = %name, partition, "worker stopped");
    }

    /// A consumer of `partition` positioned at `next`.
    fn consumer(
        &self,
        partition: &TopicPartition,
        next: u64,
    ) -> Result<Box<dyn Consumer>, LogError> {
        let mut consumer = Arc::clone(&self.log).consumer()?;
        consumer.assign(vec![(partition.clone(), next)])?;
        Ok(consumer)
    }

    /// One batch: prepare, then apply + offsets + dead letters in one transaction.
    fn process(
        &self,
        partition: u32,
        records: &[tidewater_log::Record],
    ) -> Result<u64, PipelineError> {
        let name = self.pipeline.name();
        let prepared = self.pipeline.prepare(&self.db, records)?;
        let next = records.last().map(|r| r.offset + 1).unwrap_or(0);
        let letter = |d: &DeadLetter| {
            let record = records.iter().find(|r| r.offset == d.offset)?;
            Some(DeadLetterRecord::new(
                name,
                &self.topic,
                record,
                d.reason.clone(),
            ))
        };
        let mut letters: Vec<DeadLetterRecord> =
            prepared.dead_letters.iter().filter_map(letter).collect();
        let txn = self.db.begin_write()?;
        let effects = self.pipeline.apply(&txn, prepared.batch)?;
        letters.extend(
            self.pipeline
                .rejected_on_apply(&effects)
                .iter()
                .filter_map(letter),
        );
        txn.open_table(OFFSETS)?
            .insert((name, self.topic.as_str(), partition), next)?;
        self.dead_letters
            .record(&txn, letters.iter().map(DeadLetterRecord::to_entry))?;
        txn.commit()?;
        self.pipeline.after_commit(&self.db, effects);
        self.metrics
            .pipeline_records
            .with(&[name, &self.topic])
            .add(records.len() as u64);
        self.metrics.pipeline_batches.with(&[name]).inc();
        if !letters.is_empty() {
            for letter in &letters {
                warn!(pipeline = name, topic = %self.topic, partition, offset = letter.offset,
                    reason = %letter.reason, "event dead-lettered");
            }
            self.metrics
                .dead_letters
                .with(&[name, &self.topic])
                .add(letters.len() as u64);
            self.publish_dead_letters();
        }
        let mut committed = self.progress.committed.lock();
        committed[partition as usize] = next;
        self.progress.changed.notify_all();
        Ok(next)
    }

    /// Publishes committed dead letters not yet on the dead-letter topic.
    fn publish_dead_letters(&self) {
        if let Err(e) = self
            .dead_letters
            .publish(&self.db, self.log.as_ref(), &self.metrics)
        {
            // They stay in the state database and go out with the next letter or restart.
            warn!(topic = %self.dead_letters.topic(), error = %e, "cannot publish dead letters yet");
        }
    }

    /// The committed next offset of `partition`, mirrored into the progress.
    fn resume_position(&self, partition: u32) -> Result<u64, EngineError> {
        let next = crate::committed_offset(&self.db, self.pipeline.name(), &self.topic, partition)?;
        let mut committed = self.progress.committed.lock();
        if let Some(slot) = committed.get_mut(partition as usize) {
            *slot = next;
        }
        self.progress.changed.notify_all();
        Ok(next)
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
