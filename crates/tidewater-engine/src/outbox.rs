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

use std::collections::HashMap;

use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tidewater_log::{Log, NewRecord};
use tidewater_metrics::Metrics;

use crate::EngineError;

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

#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    /// End offset of each partition before the append.
    ends: Vec<u64>,
    /// Last sequence number appended.
    last: u64,
}

/// A named outbox publishing to one topic.
pub struct Outbox {
    name: String,
    topic: String,
    /// Serialises publication so entries go out in sequence order.
    lock: Mutex<()>,
}

impl Outbox {
    /// The outbox `name` (unique within its state database) writing to `topic`.
    pub fn new(name: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            topic: topic.into(),
            lock: Mutex::new(()),
        }
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
    /// `tidewater_log_appended_records_total`. Returns how many were appended now.
    pub fn publish(
        &self,
        db: &Database,
        log: &dyn Log,
        metrics: &Metrics,
    ) -> Result<usize, EngineError> {
        let _guard = self.lock.lock();
        let name = self.name.as_str();
        let (published, pending, intent) = {
            let txn = db.begin_read()?;
            let published = txn
                .open_table(OUTBOX_CURSORS)?
                .get((name, "published"))?
                .map(|v| v.value())
                .unwrap_or(0);
            let intent = match txn.open_table(OUTBOX_INTENTS)?.get(name)? {
                Some(json) => Some(
                    serde_json::from_slice::<Intent>(json.value())
                        .map_err(|e| EngineError::Corrupt(format!("outbox intent: {e}")))?,
                ),
                None => None,
            };
            let table = txn.open_table(OUTBOX)?;
            let mut pending = Vec::new();
            for entry in table.range((name, published)..=(name, u64::MAX))? {
                let (key, value) = entry?;
                let (k, v, ts) = value.value();
                pending.push((
                    key.value().1,
                    NewRecord {
                        key: k.map(<[u8]>::to_vec),
                        value: v.to_vec(),
                        timestamp_ms: ts,
                    },
                ));
            }
            (published, pending, intent)
        };
        let Some(last) = pending.last().map(|(seq, _)| *seq) else {
            return Ok(0);
        };
        let mut to_append: Vec<NewRecord> = pending.into_iter().map(|(_, r)| r).collect();
        match intent {
            // An earlier publication may have reached the log: skip what did.
            Some(intent) => to_append = self.not_yet_appended(log, &intent, to_append)?,
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
            }
        }
        let appended = to_append.len();
        if !to_append.is_empty() {
            log.append(&self.topic, to_append)?;
            metrics
                .log_appended_records
                .with(&[&self.topic])
                .add(appended as u64);
        }
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

    /// The entries of `pending` that the topic does not hold past `intent`'s end offsets.
    fn not_yet_appended(
        &self,
        log: &dyn Log,
        intent: &Intent,
        pending: Vec<NewRecord>,
    ) -> Result<Vec<NewRecord>, EngineError> {
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
                |r| match present.get_mut(&(r.key.clone(), r.value.clone())) {
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
        let txn = db.begin_write().unwrap();
        let intent = serde_json::to_vec(&Intent { ends, last: 3 }).unwrap();
        txn.open_table(OUTBOX_INTENTS)
            .unwrap()
            .insert("o", intent.as_slice())
            .unwrap();
        txn.commit().unwrap();
        let first_two = entries[..2]
            .iter()
            .map(|e| NewRecord {
                key: e.key.clone(),
                value: e.value.clone(),
                timestamp_ms: e.timestamp_ms,
            })
            .collect();
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
}
