//! Outboxes: records a pipeline produces for another topic, published exactly once.
//!
//! A pipeline records its output entries in the same transaction as its state (so each
//! entry exists exactly once); after the commit, [`Outbox::publish`] appends them to the
//! output topic. An outbox must be the only writer of its topic. Publication is exactly
//! once across crashes:
//!
//! 1. In one transaction, the outbox writes an *intent*: the end offset of every partition
//!    of the topic and the last sequence number it is about to append.
//! 2. It appends the pending entries to the log.
//! 3. In one transaction, it moves its `published` cursor past them, deletes them and
//!    clears the intent.
//!
//! A crash between 1 and 3 leaves the intent. The next publication first reads what the
//! topic holds past the intent's end offsets — only this outbox writes there, so those
//! are the entries that reached the log — and appends only the ones that did not.
//!
//! A pipeline that runs as a replica on every member (profiles, analytics on Kafka)
//! records the same output on each; its outbox is then [`Outbox::leased`]: only the
//! holder of a [`Lease`] publishes, and the [`Handover`] says how a new holder avoids
//! repeating what the previous one published.
//!
//! One entry the log refuses for good (larger than its maximum record size) never blocks
//! the entries after it: it is left out of the topic and reported — an ERROR line and
//! `tidewater_outbox_refused_total{topic}` — and the others are published. A publication
//! that fails for a reason that may pass (the log is unavailable) keeps every entry for
//! the next one; a watched outbox ([`Outbox::watched`]) is then reported failed to the
//! watchdog (`/readyz`, `/v1/stats`) until a publication succeeds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tidewater_log::{Header, Log, LogError, NewRecord};
use tidewater_metrics::{Heartbeat, Metrics, Watchdog};
use tracing::error;

use crate::{EngineError, Lease};

/// A stored entry: (key, value, timestamp).
type StoredEntry<'a> = (Option<&'a [u8]>, &'a [u8], i64);
/// Entries by (outbox, sequence).
const OUTBOX: TableDefinition<(&str, u64), StoredEntry> = TableDefinition::new("engine_outbox");
/// Cursors by (outbox, name): `next` (next sequence), `published` (every sequence below
/// it is on the topic).
const OUTBOX_CURSORS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("engine_outbox_cursors");
/// An unfinished publication by outbox: JSON of [`Intent`].
const OUTBOX_INTENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("engine_outbox_intents");

/// Creates the outbox tables (part of every state database).
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(OUTBOX)?;
    txn.open_table(OUTBOX_CURSORS)?;
    txn.open_table(OUTBOX_INTENTS)?;
    Ok(())
}

/// One record for the output topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The record's key (decides its partition).
    pub key: Option<Vec<u8>>,
    /// The record's value.
    pub value: Vec<u8>,
    /// The record's timestamp, chosen by the pipeline so a replay produces the same record.
    pub timestamp_ms: i64,
}

impl From<OutboxEntry> for NewRecord {
    fn from(entry: OutboxEntry) -> Self {
        Self {
            key: entry.key,
            value: entry.value,
            timestamp_ms: entry.timestamp_ms,
            headers: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    /// End offset of each partition before the append.
    ends: Vec<u64>,
    /// Last sequence number appended.
    last: u64,
}

/// Header naming an entry's sequence number in a [`Handover::Sequence`] outbox.
pub const SEQUENCE_HEADER: &str = "tidewater-outbox-seq";

/// How often a replica that does not hold the lease drops the entries the holder has
/// published.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(5);

/// How a new lease holder avoids repeating what the previous holder published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Every replica records the same entries in the same order (a deterministic
    /// pipeline over the same input), so an entry's sequence number names it on every
    /// member. Each record carries it in the [`SEQUENCE_HEADER`]; a new holder skips
    /// every entry up to the highest number on the topic, and the others drop those
    /// entries as the holder publishes them.
    Sequence,
    /// Every replica records entries in increasing timestamp order, but replicas may
    /// record different entries (KPIs of windows closed live: which events were late
    /// depends on when each replica fetched them). A new holder skips every entry at or
    /// before the latest timestamp on the topic, and the others drop those entries as the
    /// holder publishes them: the topic holds one record per timestamp's worth of output,
    /// from whichever member held the lease then.
    Timestamp,
    /// Entries are snapshots keyed by id: the replicas that do not hold the lease drop
    /// theirs, and the pipeline records its whole state again when it acquires the lease
    /// ([`Lease::on_acquire`]), so the latest record of every key is the current one.
    Discard,
}

/// The lease an outbox publishes under.
struct Leased {
    lease: Arc<Lease>,
    handover: Handover,
    /// The lease generation this outbox last published under.
    generation: AtomicU64,
    /// When a non-holder last dropped what the holder published.
    followed: Mutex<Option<Instant>>,
}

/// A named outbox publishing to one topic.
pub struct Outbox {
    name: String,
    topic: String,
    /// Serialises publication so entries go out in sequence order.
    lock: Mutex<()>,
    /// Where publication is reported, when watched.
    heartbeat: Option<Heartbeat>,
    /// Set for a replica's outbox: only the lease holder publishes.
    leased: Option<Leased>,
}

/// Whether the log refuses `error`'s record for good, whatever is retried: the entry
/// can never be published. (A refused append writes none of its records: the log checks
/// every record before writing any.)
fn refuses_for_good(error: &LogError) -> bool {
    matches!(error, LogError::RecordTooLarge { .. })
}

impl Outbox {
    /// The outbox `name` (unique within its state database) writing to `topic`.
    pub fn new(name: impl Into<String>, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        Self {
            name: name.into(),
            lock: Mutex::new(()),
            topic,
            heartbeat: None,
            leased: None,
        }
    }

    /// Publishes only while this member holds `lease`; `handover` says what a new holder
    /// skips. For the outboxes of a pipeline that runs as a replica on every member.
    pub fn leased(mut self, lease: Arc<Lease>, handover: Handover) -> Self {
        self.leased = Some(Leased {
            lease,
            handover,
            generation: AtomicU64::new(0),
            followed: Mutex::new(None),
        });
        self
    }

    /// Reports publication to `watchdog` as the component `outbox <topic>`: failed, with
    /// the reason, while recorded entries cannot be published; idle once they are.
    pub fn watched(mut self, watchdog: &Watchdog) -> Self {
        self.heartbeat = Some(watchdog.register(format!("outbox {}", self.topic)));
        self
    }

    /// The output topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Records `entries` inside `txn`; they are published after it commits.
    pub fn record(
        &self,
        txn: &WriteTransaction,
        entries: impl IntoIterator<Item = OutboxEntry>,
    ) -> Result<usize, EngineError> {
        let mut table = txn.open_table(OUTBOX)?;
        let mut cursors = txn.open_table(OUTBOX_CURSORS)?;
        let name = self.name.as_str();
        let mut next = cursors.get((name, "next"))?.map(|v| v.value()).unwrap_or(0);
        let first = next;
        for entry in entries {
            table.insert(
                (name, next),
                (
                    entry.key.as_deref(),
                    entry.value.as_slice(),
                    entry.timestamp_ms,
                ),
            )?;
            next += 1;
        }
        if next > first {
            cursors.insert((name, "next"), next)?;
        }
        Ok((next - first) as usize)
    }

    /// Appends every recorded entry not yet on the topic, exactly once, and counts them in
    /// `tidewater_log_appended_records_total`. Returns how many were appended now. An
    /// entry the log refuses for good is left out and reported; any other failure leaves
    /// every entry recorded for the next publication.
    pub fn publish(
        &self,
        db: &Database,
        log: &dyn Log,
        metrics: &Metrics,
    ) -> Result<usize, EngineError> {
        let result = self.publish_pending(db, log, metrics);
        if let Some(heartbeat) = &self.heartbeat {
            match &result {
                Ok(_) => heartbeat.idle(),
                Err(e) => heartbeat.fail(format_args!("cannot publish to {}: {e}", self.topic)),
            }
        }
        result
    }

    fn publish_pending(
        &self,
        db: &Database,
        log: &dyn Log,
        metrics: &Metrics,
    ) -> Result<usize, EngineError> {
        let _guard = self.lock.lock();
        // A replica's outbox publishes under its lease, held until the publication ends.
        let _lease = match &self.leased {
            None => None,
            Some(leased) => match leased.lease.guard() {
                None => {
                    self.follow(db, log, leased)?;
                    return Ok(0);
                }
                Some(guard) => {
                    if leased.generation.swap(guard.generation, Ordering::SeqCst)
                        != guard.generation
                    {
                        self.take_over(db, log, leased.handover)?;
                    }
                    Some(guard)
                }
            },
        };
        let name = self.name.as_str();
        let (published, last, pending, intent) = {
            let txn = db.begin_read()?;
            let cursors = txn.open_table(OUTBOX_CURSORS)?;
            let published = cursors
                .get((name, "published"))?
                .map(|v| v.value())
                .unwrap_or(0);
            // With [`Handover::Timestamp`]: entries up to here are covered by the previous
            // holders' output and are not published.
            let covered = cursors.get((name, "published_ms"))?.map(|v| v.value());
            let intent = match txn.open_table(OUTBOX_INTENTS)?.get(name)? {
                Some(json) => Some(
                    serde_json::from_slice::<Intent>(json.value())
                        .map_err(|e| EngineError::Corrupt(format!("outbox intent: {e}")))?,
                ),
                None => None,
            };
            let mut pending = self.read_entries(&txn, published..=u64::MAX)?;
            // Everything up to the last entry read goes, published or covered.
            let last = pending.last().map(|(seq, _)| *seq);
            if let Some(covered) = covered {
                pending.retain(|(_, r)| u64::try_from(r.timestamp_ms).unwrap_or(0) > covered);
            }
            (published, last, pending, intent)
        };
        let Some(last) = last else {
            return Ok(0);
        };
        let to_append = match intent {
            // An earlier publication may have reached the log: skip what did.
            Some(intent) => self.not_yet_appended(log, &intent, pending)?,
            None => {
                let ends = (0..log.partitions(&self.topic)?)
                    .map(|p| log.range(&self.topic, p).map(|r| r.end))
                    .collect::<Result<Vec<_>, _>>()?;
                let intent = serde_json::to_vec(&Intent { ends, last })
                    .map_err(|e| EngineError::Corrupt(e.to_string()))?;
                let txn = db.begin_write()?;
                txn.open_table(OUTBOX_INTENTS)?
                    .insert(name, intent.as_slice())?;
                txn.commit()?;
                pending
            }
        };
        let appended = self.append(db, log, metrics, to_append)?;
        let txn = db.begin_write()?;
        {
            let mut cursors = txn.open_table(OUTBOX_CURSORS)?;
            cursors.insert((name, "published"), last.max(published) + 1)?;
            let mut table = txn.open_table(OUTBOX)?;
            table.retain_in((name, 0)..=(name, last), |_, _| false)?;
            txn.open_table(OUTBOX_INTENTS)?.remove(name)?;
        }
        txn.commit()?;
        Ok(appended)
    }

    /// While another member holds the lease: drops the entries its publication made
    /// redundant, at most every [`FOLLOW_INTERVAL`].
    fn follow(&self, db: &Database, log: &dyn Log, leased: &Leased) -> Result<(), EngineError> {
        let mut followed = leased.followed.lock();
        if followed.is_some_and(|at| at.elapsed() < FOLLOW_INTERVAL) {
            return Ok(());
        }
        *followed = Some(Instant::now());
        match leased.handover {
            // Everything up to what the holder published.
            Handover::Sequence => match self.highest_published(log)? {
                Some(through) => self.drop_through(db, Some(through)),
                None => Ok(()),
            },
            Handover::Timestamp => match self.latest_published_time(log)? {
                Some(time) => self.drop_until(db, time),
                None => Ok(()),
            },
            // Everything: the holder publishes its own copy.
            Handover::Discard => self.drop_through(db, None),
        }
    }

    /// On acquiring the lease: forgets an intent from an earlier holding (others wrote
    /// past its ends since) and drops what the previous holders published (but with
    /// [`Handover::Discard`]).
    fn take_over(
        &self,
        db: &Database,
        log: &dyn Log,
        handover: Handover,
    ) -> Result<(), EngineError> {
        // What the previous holders published, as this handover names it.
        let published = match handover {
            Handover::Sequence => {
                let through = self.highest_published(log)?;
                if through.is_some() {
                    self.drop_through(db, through)?;
                }
                through.map(|sequence| format!("sequence {sequence}"))
            }
            Handover::Timestamp => {
                let until = self.latest_published_time(log)?;
                if let Some(time) = until {
                    self.drop_until(db, time)?;
                }
                until.map(|time| format!("timestamp {time}"))
            }
            Handover::Discard => None,
        };
        let txn = db.begin_write()?;
        txn.open_table(OUTBOX_INTENTS)?.remove(self.name.as_str())?;
        txn.commit()?;
        tracing::info!(topic = %self.topic, outbox = %self.name, published_through = ?published,
            "publishing under the lease from here");
        Ok(())
    }

    /// Removes the entries numbered up to `through` (`None`: every entry recorded so
    /// far) and moves `published` past them. `through` may lie beyond what this replica
    /// has recorded yet: the entries it records up to there are then never published.
    fn drop_through(&self, db: &Database, through: Option<u64>) -> Result<(), EngineError> {
        let name = self.name.as_str();
        let txn = db.begin_write()?;
        {
            let mut cursors = txn.open_table(OUTBOX_CURSORS)?;
            let published = cursors
                .get((name, "published"))?
                .map(|v| v.value())
                .unwrap_or(0);
            let next = cursors.get((name, "next"))?.map(|v| v.value()).unwrap_or(0);
            let end = match through {
                Some(through) => through + 1,
                None => next,
            };
            if end <= published {
                return Ok(());
            }
            cursors.insert((name, "published"), end)?;
            txn.open_table(OUTBOX)?
                .retain_in((name, 0)..(name, end), |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes the entries with timestamps up to `time` and records that entries up to
    /// there are covered, including those this replica records later.
    fn drop_until(&self, db: &Database, time: i64) -> Result<(), EngineError> {
        let name = self.name.as_str();
        let time = u64::try_from(time).unwrap_or(0);
        let txn = db.begin_write()?;
        {
            let mut cursors = txn.open_table(OUTBOX_CURSORS)?;
            let covered = cursors.get((name, "published_ms"))?.map(|v| v.value());
            cursors.insert((name, "published_ms"), covered.unwrap_or(0).max(time))?;
            txn.open_table(OUTBOX)?
                .retain_in((name, 0)..=(name, u64::MAX), |_, (_, _, ts)| {
                    u64::try_from(ts).unwrap_or(0) > time
                })?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The highest [`SEQUENCE_HEADER`] on the topic: the last records of each partition
    /// carry it, since every holder appends in sequence order.
    fn highest_published(&self, log: &dyn Log) -> Result<Option<u64>, EngineError> {
        Ok(self
            .tail(log)?
            .iter()
            .flat_map(|record| &record.headers)
            .filter(|h| h.name == SEQUENCE_HEADER)
            .filter_map(|h| std::str::from_utf8(h.value.as_deref()?).ok()?.parse().ok())
            .max())
    }

    /// The latest record timestamp on the topic: every holder appends in timestamp order.
    fn latest_published_time(&self, log: &dyn Log) -> Result<Option<i64>, EngineError> {
        Ok(self.tail(log)?.iter().map(|r| r.timestamp_ms).max())
    }

    /// The last records of each partition of the topic.
    fn tail(&self, log: &dyn Log) -> Result<Vec<tidewater_log::Record>, EngineError> {
        /// Records read from each partition's end (offsets need not be dense).
        const TAIL: u64 = 64;
        let mut tail = Vec::new();
        for partition in 0..log.partitions(&self.topic)? {
            let range = log.range(&self.topic, partition)?;
            if range.end <= range.start {
                continue;
            }
            let from = range.end.saturating_sub(TAIL).max(range.start);
            tail.extend(log.read(&self.topic, partition, from, TAIL as usize)?);
        }
        Ok(tail)
    }

    /// The recorded entries with sequence numbers in `range`, with those numbers (also in
    /// the [`SEQUENCE_HEADER`] of a [`Handover::Sequence`] outbox's records).
    fn read_entries(
        &self,
        txn: &redb::ReadTransaction,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<(u64, NewRecord)>, EngineError> {
        let name = self.name.as_str();
        let numbered = self
            .leased
            .as_ref()
            .is_some_and(|l| l.handover == Handover::Sequence);
        let table = txn.open_table(OUTBOX)?;
        let mut entries = Vec::new();
        for entry in table.range((name, *range.start())..=(name, *range.end()))? {
            let (key, value) = entry?;
            let (k, v, ts) = value.value();
            let sequence = key.value().1;
            let headers = match numbered {
                true => vec![Header::new(SEQUENCE_HEADER, sequence.to_string())],
                false => Vec::new(),
            };
            entries.push((
                sequence,
                NewRecord {
                    key: k.map(<[u8]>::to_vec),
                    value: v.to_vec(),
                    timestamp_ms: ts,
                    headers,
                },
            ));
        }
        Ok(entries)
    }

    /// Appends `entries` in order and counts them; returns how many reached the log. When
    /// the log refuses one of them for good, the others are appended around it and it is
    /// reported and left out.
    fn append(
        &self,
        db: &Database,
        log: &dyn Log,
        metrics: &Metrics,
        entries: Vec<(u64, NewRecord)>,
    ) -> Result<usize, EngineError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let sequences: Vec<u64> = entries.iter().map(|(seq, _)| *seq).collect();
        let records = entries.into_iter().map(|(_, record)| record).collect();
        match self.append_counted(log, metrics, records) {
            Err(e) if refuses_for_good(&e) => {
                // The records went to the log by value; they stay recorded until this
                // publication completes, so read them again.
                let txn = db.begin_read()?;
                let (first, last) = (sequences[0], sequences[sequences.len() - 1]);
                let mut entries = self.read_entries(&txn, first..=last)?;
                entries.retain(|(seq, _)| sequences.binary_search(seq).is_ok());
                self.append_around_refused(log, metrics, entries)
            }
            other => Ok(other?),
        }
    }

    /// Appends `entries` in order, halving each batch the log refuses until the refused
    /// entry stands alone; that one is reported and left out. Returns how many were
    /// appended.
    fn append_around_refused(
        &self,
        log: &dyn Log,
        metrics: &Metrics,
        mut entries: Vec<(u64, NewRecord)>,
    ) -> Result<usize, EngineError> {
        if entries.len() == 1 {
            let (sequence, record) = entries.remove(0);
            let records = vec![record.clone()];
            return match self.append_counted(log, metrics, records) {
                Err(e) if refuses_for_good(&e) => {
                    self.report_refused(metrics, sequence, &record, &e);
                    Ok(0)
                }
                other => Ok(other?),
            };
        }
        let second = entries.split_off(entries.len() / 2);
        let mut appended = 0;
        for half in [entries, second] {
            let records = half.iter().map(|(_, r)| r.clone()).collect();
            appended += match self.append_counted(log, metrics, records) {
                Err(e) if refuses_for_good(&e) => self.append_around_refused(log, metrics, half)?,
                other => other?,
            };
        }
        Ok(appended)
    }

    /// Appends `records` and counts them in `tidewater_log_appended_records_total`.
    fn append_counted(
        &self,
        log: &dyn Log,
        metrics: &Metrics,
        records: Vec<NewRecord>,
    ) -> Result<usize, LogError> {
        let count = records.len();
        if count > 0 {
            log.append(&self.topic, records)?;
            metrics
                .log_appended_records
                .with(&[&self.topic])
                .add(count as u64);
        }
        Ok(count)
    }

    /// Says loudly that an entry can never be published and is left out.
    fn report_refused(&self, metrics: &Metrics, sequence: u64, record: &NewRecord, e: &LogError) {
        let key = record
            .key
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        error!(topic = %self.topic, outbox = %self.name, sequence, key = %key,
            bytes = record.value.len(), error = %e,
            "the log refuses this entry for good; it is left out so that the entries after it are published");
        metrics.outbox_refused.with(&[&self.topic]).inc();
    }

    /// The entries of `pending` that the topic does not hold past `intent`'s end offsets.
    fn not_yet_appended(
        &self,
        log: &dyn Log,
        intent: &Intent,
        pending: Vec<(u64, NewRecord)>,
    ) -> Result<Vec<(u64, NewRecord)>, EngineError> {
        let mut present: HashMap<(Option<Vec<u8>>, Vec<u8>), usize> = HashMap::new();
        for (partition, &end) in intent.ends.iter().enumerate() {
            let partition = partition as u32;
            let mut next = end;
            loop {
                let records = log.read(&self.topic, partition, next, 1_000)?;
                let Some(last) = records.last() else { break };
                next = last.offset + 1;
                for r in records {
                    *present.entry((r.key, r.value)).or_default() += 1;
                }
            }
        }
        Ok(pending
            .into_iter()
            .filter(
                |(_, r)| match present.get_mut(&(r.key.clone(), r.value.clone())) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        false
                    }
                    _ => true,
                },
            )
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tidewater_log::{EmbeddedLog, EmbeddedLogConfig, TopicConfig};

    use super::*;

    /// What a crash after the intent leaves: outbox "o"'s intent, with these ends.
    fn write_intent(db: &Database, ends: Vec<u64>, last: u64) {
        let txn = db.begin_write().unwrap();
        let intent = serde_json::to_vec(&Intent { ends, last }).unwrap();
        txn.open_table(OUTBOX_INTENTS)
            .unwrap()
            .insert("o", intent.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    fn entry(key: &str, value: &str) -> OutboxEntry {
        OutboxEntry {
            key: Some(key.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
            timestamp_ms: 7,
        }
    }

    fn topic_values(log: &dyn Log, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        for p in 0..log.partitions(topic).unwrap() {
            for r in log.read(topic, p, 0, 10_000).unwrap() {
                out.push(String::from_utf8(r.value).unwrap());
            }
        }
        out.sort();
        out
    }

    fn setup() -> (tempfile::TempDir, Arc<EmbeddedLog>, Database) {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).unwrap();
        log.ensure_topic(
            "out",
            &TopicConfig {
                partitions: 3,
                ..TopicConfig::default()
            },
        )
        .unwrap();
        let db = crate::open_state_db(&dir.path().join("state.redb")).unwrap();
        (dir, log, db)
    }

    #[test]
    fn publishes_recorded_entries_once() {
        let (_dir, log, db) = setup();
        let outbox = Outbox::new("o", "out");
        assert_eq!(
            outbox
                .publish(&db, log.as_ref(), &Metrics::default())
                .unwrap(),
            0
        );
        let txn = db.begin_write().unwrap();
        outbox
            .record(
                &txn,
                (0..5).map(|i| entry(&format!("k{i}"), &format!("v{i}"))),
            )
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(
            outbox
                .publish(&db, log.as_ref(), &Metrics::default())
                .unwrap(),
            5
        );
        assert_eq!(
            outbox
                .publish(&db, log.as_ref(), &Metrics::default())
                .unwrap(),
            0
        );
        assert_eq!(
            topic_values(log.as_ref(), "out"),
            ["v0", "v1", "v2", "v3", "v4"]
        );
    }

    /// A crash after the append but before the cursor moved must not publish twice, and a
    /// crash after only part of the entries reached the log must publish the rest.
    #[test]
    fn an_interrupted_publication_is_completed_without_duplicates() {
        let (_dir, log, db) = setup();
        let outbox = Outbox::new("o", "out");
        let txn = db.begin_write().unwrap();
        // Two identical entries: the multiset matching must keep both.
        let entries = vec![
            entry("a", "1"),
            entry("b", "2"),
            entry("a", "1"),
            entry("c", "3"),
        ];
        outbox.record(&txn, entries.clone()).unwrap();
        txn.commit().unwrap();
        // What a crash leaves: the intent written, part of the entries appended.
        let ends: Vec<u64> = (0..3).map(|p| log.range("out", p).unwrap().end).collect();
        write_intent(&db, ends, 3);
        let first_two = entries[..2].iter().cloned().map(NewRecord::from).collect();
        log.append("out", first_two).unwrap();
        assert_eq!(
            outbox
                .publish(&db, log.as_ref(), &Metrics::default())
                .unwrap(),
            2
        );
        assert_eq!(topic_values(log.as_ref(), "out"), ["1", "1", "2", "3"]);
        assert_eq!(
            outbox
                .publish(&db, log.as_ref(), &Metrics::default())
                .unwrap(),
            0
        );
    }

    fn setup_with(max_record_bytes: usize) -> (tempfile::TempDir, Arc<EmbeddedLog>, Database) {
        let dir = tempfile::tempdir().unwrap();
        let config = EmbeddedLogConfig {
            max_record_bytes,
            ..EmbeddedLogConfig::default()
        };
        let log = EmbeddedLog::open(dir.path().join("log"), config).unwrap();
        log.ensure_topic("out", &TopicConfig::default()).unwrap();
        let db = crate::open_state_db(&dir.path().join("state.redb")).unwrap();
        (dir, log, db)
    }

    /// N4: one profile larger than the log's maximum record stayed at the head of the
    /// profiles outbox, and no later profile change of any customer was ever published.
    #[test]
    fn n4_an_entry_the_log_refuses_does_not_block_the_ones_after_it() {
        let (_dir, log, db) = setup_with(1_000);
        let metrics = Metrics::default();
        let outbox = Outbox::new("o", "out").watched(&metrics.watchdog);
        let big = "x".repeat(5_000);
        let txn = db.begin_write().unwrap();
        let entries = [
            entry("a", "1"),
            entry("big", &big),
            entry("b", "2"),
            entry("c", "3"),
            entry("d", "4"),
            entry("big", &format!("{big}!")),
            entry("e", "5"),
        ];
        outbox.record(&txn, entries).unwrap();
        txn.commit().unwrap();
        assert_eq!(outbox.publish(&db, log.as_ref(), &metrics).unwrap(), 5);
        assert_eq!(topic_values(log.as_ref(), "out"), ["1", "2", "3", "4", "5"]);
        assert_eq!(metrics.outbox_refused.with(&["out"]).get(), 2);
        assert_eq!(metrics.log_appended_records.with(&["out"]).get(), 5);
        assert!(metrics.watchdog.unhealthy().is_empty());
        // Nothing is left to retry, and later entries go out as usual.
        assert_eq!(outbox.publish(&db, log.as_ref(), &metrics).unwrap(), 0);
        let txn = db.begin_write().unwrap();
        outbox.record(&txn, [entry("f", "6")]).unwrap();
        txn.commit().unwrap();
        assert_eq!(outbox.publish(&db, log.as_ref(), &metrics).unwrap(), 1);
        assert_eq!(
            topic_values(log.as_ref(), "out"),
            ["1", "2", "3", "4", "5", "6"]
        );
        assert_eq!(metrics.outbox_refused.with(&["out"]).get(), 2);
    }

    /// A publication interrupted after part of its entries reached the log, with a
    /// refused entry among the rest, completes without duplicates.
    #[test]
    fn n4_an_interrupted_publication_with_a_refused_entry_completes_exactly_once() {
        let (_dir, log, db) = setup_with(1_000);
        let metrics = Metrics::default();
        let outbox = Outbox::new("o", "out");
        let big = "x".repeat(5_000);
        let entries = vec![
            entry("a", "1"),
            entry("b", "2"),
            entry("big", &big),
            entry("c", "3"),
        ];
        let txn = db.begin_write().unwrap();
        outbox.record(&txn, entries.clone()).unwrap();
        txn.commit().unwrap();
        let ends: Vec<u64> = (0..4).map(|p| log.range("out", p).unwrap().end).collect();
        write_intent(&db, ends, 3);
        let first = NewRecord {
            key: entries[0].key.clone(),
            value: entries[0].value.clone(),
            timestamp_ms: 7,
            headers: Vec::new(),
        };
        log.append("out", vec![first]).unwrap();
        assert_eq!(outbox.publish(&db, log.as_ref(), &metrics).unwrap(), 2);
        assert_eq!(topic_values(log.as_ref(), "out"), ["1", "2", "3"]);
        assert_eq!(metrics.outbox_refused.with(&["out"]).get(), 1);
        assert_eq!(outbox.publish(&db, log.as_ref(), &metrics).unwrap(), 0);
    }

    /// An outbox that cannot publish for a reason that may pass keeps its entries and
    /// shows as failed in the watchdog until a publication succeeds.
    #[test]
    fn n4_a_stuck_outbox_shows_in_the_watchdog_until_it_publishes() {
        let (_dir, log, db) = setup();
        let metrics = Metrics::default();
        let outbox = Outbox::new("o", "not-yet").watched(&metrics.watchdog);
        assert_eq!(metrics.watchdog.statuses()[0].component, "outbox not-yet");
        let txn = db.begin_write().unwrap();
        outbox.record(&txn, [entry("a", "1")]).unwrap();
        txn.commit().unwrap();
        assert!(outbox.publish(&db, log.as_ref(), &metrics).is_err());
        let unhealthy = metrics.watchdog.unhealthy();
        assert_eq!(unhealthy.len(), 1);
        assert_eq!(unhealthy[0].component, "outbox not-yet");
        let reason = unhealthy[0].reason.as_deref().unwrap();
        assert!(reason.contains("cannot publish to not-yet"), "{reason}");
        log.ensure_topic("not-yet", &TopicConfig::default())
            .unwrap();
        assert_eq!(outbox.publish(&db, log.as_ref(), &metrics).unwrap(), 1);
        assert!(metrics.watchdog.unhealthy().is_empty());
        assert_eq!(topic_values(log.as_ref(), "not-yet"), ["1"]);
    }

    /// Records `entries` in `db` for `outbox` in one transaction.
    fn record(db: &Database, outbox: &Outbox, entries: impl IntoIterator<Item = OutboxEntry>) {
        let txn = db.begin_write().unwrap();
        outbox.record(&txn, entries).unwrap();
        txn.commit().unwrap();
    }

    fn numbered(range: std::ops::Range<u32>) -> Vec<OutboxEntry> {
        range
            .map(|n| entry(&format!("k{n}"), &format!("v{n}")))
            .collect()
    }

    /// Entries still recorded (not yet published or dropped) in `outbox` "o".
    fn stored(db: &Database) -> usize {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(OUTBOX).unwrap();
        table.range(("o", 0)..=("o", u64::MAX)).unwrap().count()
    }

    /// Two replicas of one outbox "o" on topic "out", each with a state database of its
    /// own: `holder` holds `lease_a`; `replica`'s lease is released.
    struct Replicas {
        _dir: tempfile::TempDir,
        log: Arc<EmbeddedLog>,
        first: Database,
        second: Database,
        metrics: Metrics,
        lease_a: Arc<Lease>,
        holder: Outbox,
        replica: Outbox,
    }

    impl Replicas {
        fn new(handover: Handover) -> Self {
            let (dir, log, first) = setup();
            let second = crate::open_state_db(&dir.path().join("replica.redb")).unwrap();
            let (lease_a, lease_b) = (Lease::sole("o"), Lease::sole("o"));
            lease_b.release();
            Self {
                holder: Outbox::new("o", "out").leased(Arc::clone(&lease_a), handover),
                replica: Outbox::new("o", "out").leased(lease_b, handover),
                _dir: dir,
                log,
                first,
                second,
                metrics: Metrics::default(),
                lease_a,
            }
        }
    }

    #[test]
    fn a_new_holder_publishes_only_what_the_previous_holder_did_not() {
        let Replicas {
            _dir,
            log,
            first,
            second,
            metrics,
            lease_a,
            holder,
            replica,
        } = Replicas::new(Handover::Sequence);
        // Both replicas record the same entries; only the holder appends.
        record(&first, &holder, numbered(0..5));
        record(&second, &replica, numbered(0..3));
        assert_eq!(holder.publish(&first, log.as_ref(), &metrics).unwrap(), 5);
        assert_eq!(replica.publish(&second, log.as_ref(), &metrics).unwrap(), 0);
        assert_eq!(
            stored(&second),
            0,
            "the replica drops what the holder published"
        );
        // The replica, behind, records entries the holder published and some it did not.
        record(&second, &replica, numbered(3..8));
        // The holder goes; the replica takes over with a new holding.
        lease_a.release();
        let successor = Lease::sole("o");
        let replica = Outbox::new("o", "out").leased(successor, Handover::Sequence);
        assert_eq!(replica.publish(&second, log.as_ref(), &metrics).unwrap(), 3);
        record(&second, &replica, numbered(8..10));
        assert_eq!(replica.publish(&second, log.as_ref(), &metrics).unwrap(), 2);
        let expected: Vec<String> = {
            let mut v: Vec<String> = (0..10).map(|n| format!("v{n}")).collect();
            v.sort();
            v
        };
        assert_eq!(topic_values(log.as_ref(), "out"), expected);
        // Every record names its entry.
        let mut sequences: Vec<u64> = (0..3)
            .flat_map(|p| log.read("out", p, 0, 100).unwrap())
            .map(|r| {
                let header = r
                    .headers
                    .iter()
                    .find(|h| h.name == SEQUENCE_HEADER)
                    .unwrap();
                std::str::from_utf8(header.value.as_deref().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        sequences.sort_unstable();
        assert_eq!(sequences, (0..10).collect::<Vec<u64>>());
    }

    #[test]
    fn a_replica_that_does_not_hold_a_discard_lease_drops_its_entries() {
        let (_dir, log, db) = setup();
        let metrics = Metrics::default();
        let lease = Lease::sole("o");
        lease.release();
        let outbox = Outbox::new("o", "out").leased(lease, Handover::Discard);
        record(&db, &outbox, numbered(0..4));
        assert_eq!(outbox.publish(&db, log.as_ref(), &metrics).unwrap(), 0);
        assert_eq!(stored(&db), 0);
        assert!(topic_values(log.as_ref(), "out").is_empty());
        // Held, it publishes what it records from then on.
        let outbox = Outbox::new("o", "out").leased(Lease::sole("o"), Handover::Discard);
        record(&db, &outbox, numbered(4..6));
        assert_eq!(outbox.publish(&db, log.as_ref(), &metrics).unwrap(), 2);
        assert_eq!(topic_values(log.as_ref(), "out"), vec!["v4", "v5"]);
    }

    fn timed(time: i64) -> OutboxEntry {
        OutboxEntry {
            key: Some(format!("w{time}").into_bytes()),
            value: format!("kpis of {time}").into_bytes(),
            timestamp_ms: time,
        }
    }

    #[test]
    fn a_new_holder_skips_what_the_topic_covers_by_timestamp() {
        let Replicas {
            _dir,
            log,
            first,
            second,
            metrics,
            lease_a,
            holder,
            replica,
        } = Replicas::new(Handover::Timestamp);
        record(&first, &holder, [1, 2, 4, 5].map(timed));
        assert_eq!(holder.publish(&first, log.as_ref(), &metrics).unwrap(), 4);
        // The replica saw other windows (3, not 4), and is behind.
        record(&second, &replica, [1, 2, 3].map(timed));
        assert_eq!(replica.publish(&second, log.as_ref(), &metrics).unwrap(), 0);
        assert_eq!(
            stored(&second),
            0,
            "what the holder's output covers is dropped"
        );
        lease_a.release();
        let replica = Outbox::new("o", "out").leased(Lease::sole("o"), Handover::Timestamp);
        // Recorded after the takeover but covered by the old holder's output: skipped.
        record(&second, &replica, [5, 6, 7].map(timed));
        assert_eq!(replica.publish(&second, log.as_ref(), &metrics).unwrap(), 2);
        let mut expected: Vec<String> = [1, 2, 4, 5, 6, 7]
            .iter()
            .map(|t| format!("kpis of {t}"))
            .collect();
        expected.sort();
        assert_eq!(topic_values(log.as_ref(), "out"), expected);
        assert_eq!(stored(&second), 0);
    }
}
