//! The analytics consumer thread.
//!
//! Unlike the engine's per-partition workers, analytics needs one operator over every
//! partition of two topics, and a replay after a crash must see the events in the same
//! order so that watermarks, lateness and therefore the KPIs come out the same. The
//! runner buffers each input partition and always takes the record with the smallest
//! (log time, topic, partition, offset) among the partitions that have records; a batch
//! ends as soon as a partition it drew from runs dry, so it never overtakes records that
//! are in the log but not yet buffered. The operator's processing time is the records'
//! log time, which a replay reproduces; only when every partition is caught up does wall
//! time move the watermark on (idle partitions, closing the last windows). An event whose
//! time the [`EventTimePolicy`] refuses (too far after its log time) is dead-lettered
//! before the operator sees it, so it never moves the watermark; judged against the log
//! time, a replay refuses the same events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::{Database, WriteTransaction};
use serde_json::json;
use tidewater_core::{ConversationEvent, EventTimePolicy, FeedbackEvent};
use tidewater_engine::{
    DeadLetterRecord, EngineConfig, Handover, Lease, LogPositions, Outbox, OutboxEntry, OFFSETS,
};
use tidewater_log::{Consumer, Log, Record, TopicPartition};
use tidewater_metrics::{Heartbeat, Metrics, Watchdog};
use tracing::{error, info, warn};

use super::config::AnalyticsConfig;
use super::state::{save_operator, Conversations, RESULTS};
use crate::{AnalyticsEvent, Error, Kpis, Outcome, WindowResult, WindowedKpis};

/// Name under which offsets are stored and dead letters published.
pub(crate) const PIPELINE: &str = "analytics";

/// How long the runner sleeps when every partition is caught up before looking again.
/// (It reads many partitions, so it cannot block on one; ten partition checks are cheap.)
const IDLE_POLL: Duration = Duration::from_millis(10);

/// How often, when caught up, wall time is allowed to close windows.
const IDLE_TICK: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conversation,
    Feedback,
}

/// One input partition and the records buffered from it.
struct Input {
    topic: String,
    kind: Kind,
    partition: u32,
    /// The operator's partition id: topics are told apart by the high bits.
    watermark_id: u32,
    /// Reads this partition; its position is the next offset to fetch.
    consumer: Box<dyn Consumer>,
    /// Next offset not yet processed.
    consumed: u64,
    buffer: VecDeque<Record>,
}

impl Input {
    /// The partition this input reads.
    fn at(&self) -> TopicPartition {
        TopicPartition::new(self.topic.as_str(), self.partition)
    }
}

/// The outboxes of the pipeline.
pub(crate) struct Outputs {
    pub(crate) kpis: Outbox,
    pub(crate) late: Outbox,
    pub(crate) dead_letters: Outbox,
}

impl Outputs {
    /// The outboxes, reporting their publication to `watchdog`. With a `publisher`
    /// lease (a replica on every member), they publish only while holding it. KPIs go
    /// out in window order, so a new holder continues after the last window on the topic
    /// ([`Handover::Timestamp`]); late events and dead letters line up by sequence number
    /// ([`Handover::Sequence`]), as the replicas meet the same input in the same order.
    pub(crate) fn new(
        config: &AnalyticsConfig,
        watchdog: &Watchdog,
        publisher: Option<&Arc<Lease>>,
    ) -> Self {
        let outbox = |name: &str, topic: String, handover| {
            let outbox = Outbox::new(name, topic).watched(watchdog);
            match publisher {
                Some(lease) => outbox.leased(Arc::clone(lease), handover),
                None => outbox,
            }
        };
        let dead_letters = DeadLetterRecord::topic_for(PIPELINE);
        Self {
            kpis: outbox("kpis", config.kpis_topic.clone(), Handover::Timestamp),
            late: outbox("late", config.late_topic.clone(), Handover::Sequence),
            dead_letters: outbox("dead-letters", dead_letters, Handover::Sequence),
        }
    }

    pub(crate) fn publish(
        &self,
        db: &Database,
        log: &dyn Log,
        metrics: &Metrics,
    ) -> Result<(), Error> {
        for outbox in [&self.kpis, &self.late, &self.dead_letters] {
            outbox.publish(db, log, metrics)?;
        }
        Ok(())
    }
}

/// Everything the thread needs.
pub(crate) struct Runner {
    pub(crate) db: Arc<Database>,
    pub(crate) log: Arc<dyn Log>,
    pub(crate) config: AnalyticsConfig,
    pub(crate) event_time: EventTimePolicy,
    pub(crate) engine: EngineConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) operator: Arc<Mutex<WindowedKpis>>,
    /// Where the pipeline reports its progress (`pipeline analytics`).
    pub(crate) heartbeat: Heartbeat,
    pub(crate) outputs: Arc<Outputs>,
    pub(crate) stop: Arc<AtomicBool>,
}

impl Runner {
    /// Consumes until stopped; after a failure, waits and resumes from the committed state.
    pub(crate) fn run(&self) {
        let mut backoff = self.engine.retry_backoff_initial;
        while !self.stop.load(Ordering::SeqCst) {
            match self.consume() {
                Ok(()) => break,
                Err(e) => {
                    self.heartbeat
                        .fail(format!("resuming from the committed state after: {e}"));
                    self.metrics.pipeline_retries.with(&[PIPELINE]).inc();
                    warn!(pipeline = PIPELINE, error = %e, retry_in = ?backoff,
                        "analytics failed; resuming from the committed state");
                    self.pause(backoff);
                    backoff = (backoff * 2).min(self.engine.retry_backoff_max);
                }
            }
        }
        info!(pipeline = PIPELINE, "analytics stopped");
    }

    /// Every input partition, each with a consumer at the committed position; the log is
    /// told where analytics resumes.
    fn inputs(&self, positions: &mut LogPositions) -> Result<Vec<Input>, Error> {
        let mut inputs = Vec::new();
        let topics = [
            (&self.config.conversations_topic, Kind::Conversation, 0u32),
            (&self.config.feedback_topic, Kind::Feedback, 1u32 << 16),
        ];
        for (topic, kind, id_base) in topics {
            let partitions = self.log.partitions(topic)?;
            let committed =
                tidewater_engine::committed_offsets(&self.db, PIPELINE, topic, partitions)?;
            for (partition, next) in committed.into_iter().enumerate() {
                let partition = partition as u32;
                let mut consumer = Arc::clone(&self.log).consumer()?;
                consumer.assign(vec![(TopicPartition::new(topic.as_str(), partition), next)])?;
                inputs.push(Input {
                    topic: topic.clone(),
                    kind,
                    partition,
                    watermark_id: id_base + partition,
                    consumer,
                    consumed: next,
                    buffer: VecDeque::new(),
                });
            }
        }
        let resume: Vec<(TopicPartition, u64)> =
            inputs.iter().map(|i| (i.at(), i.consumed)).collect();
        positions.resume(&resume)?;
        Ok(inputs)
    }

    /// From the committed state: publish what a crash left unpublished, then consume.
    fn consume(&self) -> Result<(), Error> {
        let state = super::state::load_operator(&self.db)?;
        *self.operator.lock() =
            WindowedKpis::restore(&self.config.window, crate::LexiconScorer, state)?;
        self.outputs
            .publish(&self.db, self.log.as_ref(), &self.metrics)?;
        let mut positions = LogPositions::new(Arc::clone(&self.log), PIPELINE);
        let mut inputs = self.inputs(&mut positions)?;
        let mut last_tick = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            for input in inputs.iter_mut().filter(|i| i.buffer.is_empty()) {
                self.refill(input)?;
            }
            if inputs.iter().all(|i| i.buffer.is_empty()) {
                self.heartbeat.idle();
                positions.tick();
                if last_tick.elapsed() >= IDLE_TICK {
                    self.close_idle_windows()?;
                    last_tick = Instant::now();
                }
                std::thread::sleep(self.engine.poll_interval.min(IDLE_POLL));
                continue;
            }
            self.heartbeat.working();
            let batch = self.take_batch(&mut inputs);
            self.process(&mut inputs, batch)?;
            self.heartbeat.progress();
            for input in &inputs {
                positions.committed(input.at(), input.consumed);
            }
        }
        positions.flush();
        Ok(())
    }

    fn refill(&self, input: &mut Input) -> Result<(), Error> {
        let Some(fetched) = input
            .consumer
            .poll(self.engine.batch_max_records.max(1), Duration::ZERO)?
            .pop()
        else {
            return Ok(());
        };
        if let Some((from, to)) = fetched.skipped {
            // Retention never deletes what analytics has not committed: these were lost
            // (the log reported it when it found out).
            error!(topic = %input.topic, partition = input.partition, from, to,
                "records analytics had not consumed are gone from the log; continuing after them");
            input.consumed = input.consumed.max(to);
        }
        let lag = fetched.high_watermark.saturating_sub(input.consumed);
        self.metrics
            .pipeline_lag
            .with(&[PIPELINE, &input.topic, &input.partition.to_string()])
            .set(lag as i64);
        input.buffer.extend(fetched.records);
        Ok(())
    }

    /// Takes records in (log time, topic, partition, offset) order until the batch is full
    /// or a partition it drew from runs dry. Returns (input index, record) pairs.
    fn take_batch(&self, inputs: &mut [Input]) -> Vec<(usize, Record)> {
        let max = self.engine.batch_max_records.max(1) * 4;
        let mut batch = Vec::new();
        while batch.len() < max {
            let next = inputs
                .iter()
                .enumerate()
                .filter_map(|(i, input)| input.buffer.front().map(|r| (i, r)))
                .min_by_key(|(i, r)| (r.timestamp_ms, inputs[*i].kind as u8, r.partition, r.offset))
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let Some(record) = inputs[i].buffer.pop_front() else {
                break;
            };
            batch.push((i, record));
            if inputs[i].buffer.is_empty() {
                break;
            }
        }
        batch
    }

    fn process(&self, inputs: &mut [Input], batch: Vec<(usize, Record)>) -> Result<(), Error> {
        let Some(now) = batch.last().map(|(_, r)| log_time(r)) else {
            return Ok(());
        };
        let txn = self.db.begin_write()?;
        let mut operator = self.operator.lock();
        let (mut late, mut dead) = (Vec::new(), Vec::new());
        // Per input: records, late events, dead letters; counted once the batch commits.
        let mut counts = vec![[0u64; 3]; inputs.len()];
        {
            let mut conversations = Conversations::open(&txn)?;
            for (i, record) in &batch {
                let input = &mut inputs[*i];
                input.consumed = record.offset + 1;
                counts[*i][0] += 1;
                let event = match admit(&self.event_time, input.kind, &input.topic, record) {
                    Ok(event) => event,
                    Err(reason) => {
                        let letter = DeadLetterRecord::new(
                            PIPELINE,
                            &input.topic,
                            record,
                            reason.to_string(),
                        );
                        warn!(pipeline = PIPELINE, topic = %input.topic, partition = record.partition,
                            offset = record.offset, reason = %letter.reason, "event dead-lettered");
                        counts[*i][2] += 1;
                        dead.push(letter.to_entry());
                        continue;
                    }
                };
                let event = join_conversation(&mut conversations, event)?;
                if let Outcome::Late { event, missed } =
                    operator.observe(input.watermark_id, event, log_time(record))
                {
                    late.push(late_entry(
                        &input.topic,
                        record,
                        &event,
                        &missed,
                        operator.watermark(),
                    ));
                    counts[*i][1] += 1;
                }
            }
        }
        let closed = operator.advance(now);
        self.commit_closed(&txn, &closed, operator.watermark())?;
        save_operator(&txn, &mut operator)?;
        {
            let mut offsets = txn.open_table(OFFSETS)?;
            for input in inputs.iter() {
                offsets.insert(
                    (PIPELINE, input.topic.as_str(), input.partition),
                    input.consumed,
                )?;
            }
        }
        self.outputs.late.record(&txn, late)?;
        self.outputs.dead_letters.record(&txn, dead)?;
        txn.commit()?;
        drop(operator);
        for (input, [records, late, dead]) in inputs.iter().zip(counts) {
            let topic = input.topic.as_str();
            if records > 0 {
                self.metrics
                    .pipeline_records
                    .with(&[PIPELINE, topic])
                    .add(records);
            }
            if late > 0 {
                self.metrics.late_events.with(&[topic]).add(late);
            }
            if dead > 0 {
                self.metrics.dead_letters.with(&[PIPELINE, topic]).add(dead);
            }
        }
        self.metrics.pipeline_batches.with(&[PIPELINE]).inc();
        self.after_commit(&closed)
    }

    /// When every partition is caught up: let wall time release idle partitions and close
    /// the windows the watermark has passed.
    fn close_idle_windows(&self) -> Result<(), Error> {
        let mut operator = self.operator.lock();
        let now = u64::try_from(tidewater_core::time::now_ms()).unwrap_or(0);
        // Advancing only moves the watermark and closes windows: nothing else to store.
        let before = operator.watermark();
        let closed = operator.advance(now);
        if closed.is_empty() && operator.watermark() == before {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        self.commit_closed(&txn, &closed, operator.watermark())?;
        save_operator(&txn, &mut operator)?;
        txn.commit()?;
        drop(operator);
        self.after_commit(&closed)
    }

    /// Stores closed windows, records them for the KPI topic and forgets conversations
    /// older than the retention.
    fn commit_closed(
        &self,
        txn: &WriteTransaction,
        closed: &[WindowResult],
        watermark: Option<u64>,
    ) -> Result<(), Error> {
        if closed.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::new();
        {
            let mut results = txn.open_table(RESULTS)?;
            for window in closed {
                let json = serde_json::to_vec(window).map_err(|e| Error::Corrupt(e.to_string()))?;
                results.insert(window.window_start_ms, json.as_slice())?;
                entries.push(OutboxEntry {
                    key: Some(window.window_start_ms.to_string().into_bytes()),
                    value: json,
                    timestamp_ms: i64::try_from(window.window_end_ms).unwrap_or(i64::MAX),
                });
            }
        }
        self.outputs.kpis.record(txn, entries)?;
        let retention =
            u64::try_from(self.config.conversation_retention.as_millis()).unwrap_or(u64::MAX);
        if let Some(horizon) = watermark.and_then(|w| w.checked_sub(retention)) {
            Conversations::open(txn)?.forget_before(horizon)?;
        }
        Ok(())
    }

    fn after_commit(&self, closed: &[WindowResult]) -> Result<(), Error> {
        if let Some(last) = closed.last() {
            self.metrics.kpi_windows.add(closed.len() as u64);
            set_kpi_gauges(&self.metrics, last);
        }
        self.outputs
            .publish(&self.db, self.log.as_ref(), &self.metrics)
    }

    fn pause(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20).min(wait));
        }
    }
}

/// A record's log time as the operator's processing time.
fn log_time(record: &Record) -> u64 {
    u64::try_from(record.timestamp_ms).unwrap_or(0)
}

/// Reads a conversation or feedback record and checks its time against the policy, with
/// the record's log time as "now".
fn admit(
    policy: &EventTimePolicy,
    kind: Kind,
    topic: &str,
    record: &Record,
) -> Result<AnalyticsEvent, Error> {
    let event = decode(kind, topic, record)?;
    policy
        .check(event.event_time_ms(), record.timestamp_ms)
        .map_err(|source| Error::EventTime {
            topic: topic.to_owned(),
            source,
        })?;
    Ok(event)
}

/// Reads a conversation or feedback record; events without their own time take the log's.
fn decode(kind: Kind, topic: &str, record: &Record) -> Result<AnalyticsEvent, Error> {
    let invalid = |e: serde_json::Error| Error::InvalidEvent {
        topic: topic.to_owned(),
        reason: e.to_string(),
    };
    Ok(match kind {
        Kind::Conversation => {
            let c: ConversationEvent = serde_json::from_slice(&record.value).map_err(invalid)?;
            AnalyticsEvent::Conversation {
                conversation_id: c.conversation_id,
                event_time_ms: c.event_time_ms.unwrap_or(log_time(record)),
                model: c.model,
                latency_ms: c.latency.total_ms,
                retrieved_chunks: u32::try_from(c.citations.len()).unwrap_or(u32::MAX),
                question: c.question,
            }
        }
        Kind::Feedback => {
            let f: FeedbackEvent = serde_json::from_slice(&record.value).map_err(invalid)?;
            AnalyticsEvent::Feedback {
                conversation_id: f.conversation_id,
                event_time_ms: f.event_time_ms.unwrap_or(log_time(record)),
                rating: f.rating,
                comment: f.comment,
                model: None,
                question: None,
            }
        }
    })
}

/// Remembers conversations, and gives feedback the model and question of its conversation.
fn join_conversation(
    conversations: &mut Conversations,
    event: AnalyticsEvent,
) -> Result<AnalyticsEvent, Error> {
    Ok(match event {
        AnalyticsEvent::Conversation {
            ref conversation_id,
            event_time_ms,
            ref model,
            ref question,
            ..
        } => {
            conversations.remember(conversation_id, event_time_ms, model, question)?;
            event
        }
        AnalyticsEvent::Feedback {
            conversation_id,
            event_time_ms,
            rating,
            comment,
            ..
        } => {
            let (model, question) = conversations.get(&conversation_id)?.unzip();
            AnalyticsEvent::Feedback {
                conversation_id,
                event_time_ms,
                rating,
                comment,
                model,
                question,
            }
        }
    })
}

/// The late-topic record of an event: where it came from and why it was late.
fn late_entry(
    topic: &str,
    record: &Record,
    event: &AnalyticsEvent,
    missed: &[u64],
    watermark: Option<u64>,
) -> OutboxEntry {
    let original: serde_json::Value = serde_json::from_slice(&record.value).unwrap_or_default();
    let value = json!({
        "topic": topic,
        "partition": record.partition,
        "offset": record.offset,
        "event_time_ms": event.event_time_ms(),
        "missed_window_starts_ms": missed,
        "watermark_ms": watermark,
        "event": original,
    });
    OutboxEntry {
        key: record.key.clone(),
        value: value.to_string().into_bytes(),
        timestamp_ms: record.timestamp_ms,
    }
}

/// Exports a closed window's KPIs as gauges (`model="all"` for the overall ones).
pub(crate) fn set_kpi_gauges(metrics: &Metrics, window: &WindowResult) {
    metrics
        .kpi_window_end_ms
        .set(i64::try_from(window.window_end_ms).unwrap_or(i64::MAX));
    let models = std::iter::once(("all", &window.overall))
        .chain(window.per_model.iter().map(|(m, k)| (m.as_str(), k)));
    for (model, kpis) in models {
        for (name, value) in kpi_values(kpis) {
            metrics
                .kpi
                .with(&[name, model])
                .set(value.unwrap_or(f64::NAN));
        }
    }
}

fn kpi_values(k: &Kpis) -> [(&'static str, Option<f64>); 9] {
    let ms = |v: Option<u64>| v.map(|v| v as f64);
    [
        ("conversations", Some(k.conversations as f64)),
        ("feedback", Some(k.feedback as f64)),
        ("latency_p50_ms", ms(k.latency_p50_ms)),
        ("latency_p95_ms", ms(k.latency_p95_ms)),
        ("latency_p99_ms", ms(k.latency_p99_ms)),
        ("positive_share", k.positive_share),
        ("mean_rating", k.mean_rating),
        ("no_context_share", k.no_context_share),
        ("mean_sentiment", k.mean_sentiment),
    ]
}
