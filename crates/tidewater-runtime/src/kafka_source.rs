//! `[[sources.kafka]]`: existing topics of the log's broker read into a pipeline's topic.
//!
//! Each source joins the consumer group `source.<name>`, so with several members every
//! partition is read by exactly one of them. One thread serves the group and reads what
//! it owns: a partition is revoked only between batches. A batch is written to the
//! pipeline (Debezium records to the profiles topic, documents to the documents topic)
//! and only then is the group's offset committed, so a crash re-reads rather than loses:
//! delivery into the topic is at least once, in per-partition order, and the pipelines'
//! effects stay exactly once because re-applying a record changes nothing (an unchanged
//! document is skipped by its content hash; a Debezium change re-applied keeps the newest
//! event time).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidewater_core::{DocumentEvent, EventWriter};
use tidewater_log::{AssignmentListener, Consumer, Fetched, Log, LogError, TopicPartition};
use tidewater_metrics::{Heartbeat, Metrics};
use tidewater_profiles::Profiles;
use tidewater_sources::kafka::{
    debezium_event, document_event, Converted, KafkaSourceConfig, RecordOrigin,
};
use tracing::{info, warn};

/// Records read per partition and poll.
const BATCH: usize = 500;
/// Longest pause between retries of a batch the pipeline could not take.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Why a round of reading stopped.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The broker.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The pipeline's topic did not take the batch.
    #[error("{0}")]
    Delivery(String),
}

/// Where a source's events go.
pub(crate) enum Destination {
    /// The profiles topic.
    Profiles(Arc<Profiles>),
    /// The documents topic.
    Knowledge(Arc<dyn EventWriter<DocumentEvent>>),
}

/// One `[[sources.kafka]]`, ready to run.
pub(crate) struct KafkaSource {
    config: KafkaSourceConfig,
    log: Arc<dyn Log>,
    destination: Destination,
    heartbeat: Heartbeat,
}

/// The partitions the group gives this process, as the listener hears of them.
#[derive(Clone, Default)]
struct Owned(Arc<Mutex<(BTreeSet<TopicPartition>, bool)>>);

impl AssignmentListener for Owned {
    fn assigned(&mut self, partitions: &[TopicPartition]) {
        let mut owned = self.0.lock().unwrap_or_else(|e| e.into_inner());
        owned.0.extend(partitions.iter().cloned());
        owned.1 = true;
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        let mut owned = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for tp in partitions {
            owned.0.remove(tp);
        }
        owned.1 = true;
    }
}

impl Owned {
    /// The partitions owned, if they changed since the last call.
    fn changed(&self) -> Option<BTreeSet<TopicPartition>> {
        let mut owned = self.0.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut owned.1).then(|| owned.0.clone())
    }
}

impl KafkaSource {
    pub(crate) fn new(
        config: KafkaSourceConfig,
        log: Arc<dyn Log>,
        destination: Destination,
        metrics: &Metrics,
    ) -> Self {
        let heartbeat = metrics
            .watchdog
            .register(format!("source kafka:{}", config.name()));
        Self {
            config,
            log,
            destination,
            heartbeat,
        }
    }

    fn group(&self) -> String {
        format!("source.{}", self.config.name())
    }

    /// Reads until `stop`, retrying what fails with a growing pause.
    pub(crate) fn run(&self, stop: &AtomicBool) {
        let name = self.config.name().to_owned();
        let mut pause = Duration::from_millis(200);
        while !stop.load(Ordering::SeqCst) {
            match self.serve(stop) {
                Ok(()) => return,
                Err(e) => {
                    warn!(source = %name, error = %e, retry_in = ?pause, "Kafka source failed; retrying");
                    self.heartbeat.fail(format!("retrying after: {e}"));
                    sleep_unless(stop, pause);
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    /// Joins the group and reads what it owns until `stop`; leaves the group on the way out.
    fn serve(&self, stop: &AtomicBool) -> Result<(), Failure> {
        let group = self.group();
        let owned = Owned::default();
        let mut membership = Arc::clone(&self.log).join_group(
            &group,
            &self.config.topics,
            Box::new(owned.clone()),
        )?;
        let mut consumer = Arc::clone(&self.log).consumer()?;
        let result = self.read(stop, &group, &owned, membership.as_mut(), consumer.as_mut());
        membership.leave()?;
        result
    }

    fn read(
        &self,
        stop: &AtomicBool,
        group: &str,
        owned: &Owned,
        membership: &mut dyn tidewater_log::Membership,
        consumer: &mut dyn Consumer,
    ) -> Result<(), Failure> {
        while !stop.load(Ordering::SeqCst) {
            membership.poll(Duration::ZERO)?;
            if let Some(partitions) = owned.changed() {
                let mut positions = Vec::with_capacity(partitions.len());
                for tp in partitions {
                    let next = self
                        .log
                        .committed_offset(group, &tp.topic, tp.partition)?
                        .unwrap_or(0);
                    positions.push((tp, next));
                }
                info!(source = self.config.name(), partitions = ?positions, "reading partitions");
                consumer.assign(positions)?;
            }
            if consumer.assignment().is_empty() {
                self.heartbeat.idle();
                sleep_unless(stop, Duration::from_millis(200));
                continue;
            }
            let fetched = consumer.poll(BATCH, Duration::from_millis(200))?;
            if fetched.iter().all(|f| f.records.is_empty()) {
                self.heartbeat.idle();
                continue;
            }
            self.heartbeat.working();
            for batch in fetched.into_iter().filter(|f| !f.records.is_empty()) {
                let at = batch.records[0].offset;
                if let Err(e) = self.deliver(&batch) {
                    // Nothing committed: read the batch again after a pause.
                    consumer.seek(&batch.partition, at)?;
                    return Err(e);
                }
                let next = batch.records.last().map_or(at, |r| r.offset + 1);
                self.log
                    .commit_offsets(group, &[(batch.partition.clone(), next)])?;
            }
            self.heartbeat.progress();
        }
        Ok(())
    }

    /// Writes one partition's records to the pipeline; returns once they are durable.
    fn deliver(&self, batch: &Fetched) -> Result<(), Failure> {
        let source = format!("kafka:{}", self.config.name());
        let mut skipped = 0;
        match &self.destination {
            Destination::Profiles(profiles) => {
                let mut events = Vec::with_capacity(batch.records.len());
                for record in &batch.records {
                    match debezium_event(record.key.as_deref(), &record.value) {
                        Converted::Event(event) => events.push(event),
                        Converted::Skip(_) => skipped += 1,
                    }
                }
                if !events.is_empty() {
                    profiles
                        .ingest(events)
                        .map_err(|e| Failure::Delivery(format!("profiles: {e}")))?;
                }
            }
            Destination::Knowledge(writer) => {
                let mut events = Vec::with_capacity(batch.records.len());
                for record in &batch.records {
                    let origin = RecordOrigin {
                        topic: &batch.partition.topic,
                        partition: batch.partition.partition,
                        offset: record.offset,
                        timestamp_ms: record.timestamp_ms,
                    };
                    match document_event(&source, origin, &record.value) {
                        Converted::Event(event) => events.push(event),
                        Converted::Skip(_) => skipped += 1,
                    }
                }
                if !events.is_empty() {
                    writer
                        .write(events)
                        .map_err(|e| Failure::Delivery(format!("documents: {e}")))?;
                }
            }
        }
        if skipped > 0 {
            tracing::debug!(source = %source, partition = %batch.partition, skipped,
                "tombstones and transaction markers skipped");
        }
        Ok(())
    }
}

fn sleep_unless(stop: &AtomicBool, wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20).min(wait));
    }
}
