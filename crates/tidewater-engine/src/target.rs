//! Where a worker commits a partition's batches: the two shapes the engine runs. A
//! [`Pipeline`] keeps its state and offsets in the process's redb database; a [`Sink`]'s
//! target stores them in its own transaction. The worker loop (polling, back-off, lag,
//! health) is the same for both.

use std::sync::Arc;

use redb::Database;
use tidewater_log::{Log, NewRecord, Record};
use tidewater_metrics::Metrics;
use tracing::warn;

use crate::dead_letter::{DeadLetter, DeadLetterRecord};
use crate::state::OFFSETS;
use crate::{Handover, Lease, Outbox, Pipeline, PipelineError, Sink, SinkPosition};

/// What a worker commits batches into.
pub(crate) trait Target: Send + Sync + 'static {
    /// The pipeline's name: its consumer group and the owner of its offsets.
    fn name(&self) -> &str;

    /// The topic consumed.
    fn topic(&self) -> &str;

    /// The next offset committed with the partition's last batch (`None`: never).
    fn committed(&self, partition: u32) -> Result<Option<u64>, PipelineError>;

    /// Prepares and commits one batch of `partition` (whose stored offset should be
    /// `expected`), with its next offset. Returns the events dead-lettered.
    fn process(
        &self,
        partition: u32,
        expected: Option<u64>,
        records: &[Record],
    ) -> Result<Vec<DeadLetterRecord>, PipelineError>;
}

/// The dead letters of `letters`, for the records of `records` they name.
fn letters_of(
    name: &str,
    topic: &str,
    records: &[Record],
    letters: &[DeadLetter],
) -> Vec<DeadLetterRecord> {
    letters
        .iter()
        .filter_map(|d| {
            let record = records.iter().find(|r| r.offset == d.offset)?;
            Some(DeadLetterRecord::new(name, topic, record, d.reason.clone()))
        })
        .collect()
}

/// A [`Pipeline`] whose state, offsets and dead letters commit in one redb transaction.
pub(crate) struct PipelineTarget<P: Pipeline> {
    log: Arc<dyn Log>,
    db: Arc<Database>,
    pipeline: Arc<P>,
    dead_letters: Outbox,
    metrics: Arc<Metrics>,
}

impl<P: Pipeline> PipelineTarget<P> {
    pub(crate) fn new(
        log: Arc<dyn Log>,
        db: Arc<Database>,
        pipeline: Arc<P>,
        metrics: Arc<Metrics>,
        publisher: Option<Arc<Lease>>,
    ) -> Self {
        let topic = DeadLetterRecord::topic_for(pipeline.name());
        let mut dead_letters = Outbox::new("dead-letters", topic).watched(&metrics.watchdog);
        if let Some(lease) = publisher {
            dead_letters = dead_letters.leased(lease, Handover::Sequence);
        }
        let target = Self {
            log,
            db,
            pipeline,
            dead_letters,
            metrics,
        };
        // Letters committed before a crash but not yet published.
        target.publish_dead_letters();
        target
    }

    /// Publishes committed dead letters not yet on the dead-letter topic.
    pub(crate) fn publish_dead_letters(&self) {
        if let Err(e) = self
            .dead_letters
            .publish(&self.db, self.log.as_ref(), &self.metrics)
        {
            // They stay in the state database and go out with the next letter or restart.
            warn!(topic = %self.dead_letters.topic(), error = %e, "cannot publish dead letters yet");
        }
    }
}

impl<P: Pipeline> Target for PipelineTarget<P> {
    fn name(&self) -> &str {
        self.pipeline.name()
    }

    fn topic(&self) -> &str {
        self.pipeline.topic()
    }

    fn committed(&self, partition: u32) -> Result<Option<u64>, PipelineError> {
        Ok(Some(crate::committed_offset(
            &self.db,
            self.name(),
            self.topic(),
            partition,
        )?))
    }

    /// Prepare, then apply + offsets + dead letters in one transaction. This process is
    /// the database's only writer, so `expected` always holds.
    fn process(
        &self,
        partition: u32,
        _expected: Option<u64>,
        records: &[Record],
    ) -> Result<Vec<DeadLetterRecord>, PipelineError> {
        let (name, topic) = (self.name(), self.topic());
        let prepared = self.pipeline.prepare(&self.db, records)?;
        let next = records.last().map_or(0, |r| r.offset + 1);
        let mut letters = letters_of(name, topic, records, &prepared.dead_letters);
        let txn = self.db.begin_write()?;
        let effects = self.pipeline.apply(&txn, prepared.batch)?;
        letters.extend(letters_of(
            name,
            topic,
            records,
            self.pipeline.rejected_on_apply(&effects),
        ));
        txn.open_table(OFFSETS)?
            .insert((name, topic, partition), next)?;
        self.dead_letters
            .record(&txn, letters.iter().map(DeadLetterRecord::to_entry))?;
        txn.commit()?;
        self.pipeline.after_commit(&self.db, effects);
        if !letters.is_empty() {
            self.publish_dead_letters();
        }
        Ok(letters)
    }
}

/// A [`Sink`]: its target commits the batch with the offset, fenced; dead letters go to
/// the dead-letter topic just before (at least once, keyed by the event's position).
pub(crate) struct SinkTarget<S: Sink> {
    log: Arc<dyn Log>,
    sink: Arc<S>,
    dead_letter_topic: String,
}

impl<S: Sink> SinkTarget<S> {
    pub(crate) fn new(log: Arc<dyn Log>, sink: Arc<S>) -> Self {
        let dead_letter_topic = DeadLetterRecord::topic_for(sink.name());
        Self {
            log,
            sink,
            dead_letter_topic,
        }
    }
}

impl<S: Sink> Target for SinkTarget<S> {
    fn name(&self) -> &str {
        self.sink.name()
    }

    fn topic(&self) -> &str {
        self.sink.topic()
    }

    fn committed(&self, partition: u32) -> Result<Option<u64>, PipelineError> {
        self.sink.committed(partition)
    }

    fn process(
        &self,
        partition: u32,
        expected: Option<u64>,
        records: &[Record],
    ) -> Result<Vec<DeadLetterRecord>, PipelineError> {
        let prepared = self.sink.prepare(partition, records)?;
        let next = records.last().map_or(0, |r| r.offset + 1);
        let letters = letters_of(self.name(), self.topic(), records, &prepared.dead_letters);
        if !letters.is_empty() {
            let out: Vec<NewRecord> = letters.iter().map(|l| l.to_entry().into()).collect();
            self.log
                .append(&self.dead_letter_topic, out)
                .map_err(|e| PipelineError::external("publishing dead letters", e))?;
        }
        let position = SinkPosition {
            partition,
            expected,
            next,
        };
        self.sink.commit(&position, prepared.batch)?;
        Ok(letters)
    }
}
