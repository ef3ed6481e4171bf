//! The engine with a small counting pipeline over a real embedded log and redb.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tidewater_engine::{
    committed_offsets, open_state_db, DeadLetter, DeadLetterRecord, Engine, EngineConfig,
    EngineHandle, Pipeline, PipelineError, Prepared,
};
use tidewater_log::{EmbeddedLog, Log, NewRecord, Record, TopicConfig};
use tidewater_metrics::Metrics;

const SUMS: TableDefinition<&str, u64> = TableDefinition::new("sums");

/// Adds each record's value (a decimal number) to a per-key sum; "bad" values are
/// dead-lettered; the first `fail_first` prepares fail as if an external system were down.
struct Summer {
    fail_first: usize,
    prepares: AtomicUsize,
}

#[derive(Debug)]
struct Down;
impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the downstream system is down")
    }
}
impl std::error::Error for Down {}

impl Pipeline for Summer {
    type Batch = Vec<(String, u64)>;
    type Effects = ();

    fn name(&self) -> &str {
        "summer"
    }
    fn topic(&self) -> &str {
        "numbers"
    }
    fn prepare(
        &self,
        _db: &Database,
        records: &[Record],
    ) -> Result<Prepared<Self::Batch>, PipelineError> {
        if self.prepares.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(PipelineError::external("summing", Down));
        }
        let mut batch = Vec::new();
        let mut dead_letters = Vec::new();
        for r in records {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            match std::str::from_utf8(&r.value)
                .ok()
                .and_then(|v| v.parse().ok())
            {
                Some(n) => batch.push((key, n)),
                None => dead_letters.push(DeadLetter {
                    offset: r.offset,
                    reason: "not a number".into(),
                }),
            }
        }
        Ok(Prepared {
            batch,
            dead_letters,
        })
    }
    fn apply(&self, txn: &WriteTransaction, batch: Self::Batch) -> Result<(), PipelineError> {
        let mut sums = txn.open_table(SUMS)?;
        for (key, n) in batch {
            let old = sums.get(key.as_str())?.map(|v| v.value()).unwrap_or(0);
            sums.insert(key.as_str(), old + n)?;
        }
        Ok(())
    }
    fn after_commit(&self, _db: &Database, _effects: ()) {}
}

fn sums(db: &Database) -> Vec<(String, u64)> {
    let txn = db.begin_read().unwrap();
    let Ok(table) = txn.open_table(SUMS) else {
        return Vec::new();
    };
    table
        .iter()
        .unwrap()
        .map(|e| e.unwrap())
        .map(|(k, v)| (k.value().to_owned(), v.value()))
        .collect()
}

fn config() -> EngineConfig {
    EngineConfig {
        batch_max_records: 7,
        poll_interval: Duration::from_millis(20),
        retry_backoff_initial: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(50),
    }
}

/// Starts the engine over `numbers` with a fresh pipeline whose first `fail_first`
/// batches fail.
fn start(
    log: &Arc<dyn Log>,
    db: &Arc<Database>,
    fail_first: usize,
    metrics: &Arc<Metrics>,
) -> EngineHandle {
    let pipeline = Arc::new(Summer {
        fail_first,
        prepares: AtomicUsize::new(0),
    });
    Engine::new(
        Arc::clone(log),
        Arc::clone(db),
        pipeline,
        config(),
        Arc::clone(metrics),
    )
    .start(&TopicConfig::default())
    .unwrap()
}

fn append(log: &dyn Log, values: &[(&str, &str)]) -> Vec<(u32, u64)> {
    let records = values
        .iter()
        .map(|(k, v)| NewRecord {
            key: Some(k.as_bytes().to_vec()),
            value: v.as_bytes().to_vec(),
            timestamp_ms: 0,
            headers: Vec::new(),
        })
        .collect();
    log.append("numbers", records)
        .unwrap()
        .iter()
        .map(|p| (p.partition, p.offset))
        .collect()
}

#[test]
fn effects_apply_once_across_failures_restarts_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = EmbeddedLog::open(dir.path().join("log"), Default::default()).unwrap();
    log.ensure_topic(
        "numbers",
        &TopicConfig {
            partitions: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let db = Arc::new(open_state_db(&dir.path().join("state.redb")).unwrap());
    let metrics = Arc::new(Metrics::default());

    let mut values = Vec::new();
    for i in 0..100u64 {
        values.push((
            ["a", "b", "c", "d", "e"][i as usize % 5],
            (i + 1).to_string(),
        ));
    }
    values.push(("a", "bad".to_owned()));
    let refs: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let positions = append(log.as_ref(), &refs);

    let handle = start(&log, &db, 3, &metrics);
    assert!(handle
        .watcher()
        .wait_committed(&positions, Duration::from_secs(30)));
    handle.stop();

    let want: Vec<(String, u64)> = ["a", "b", "c", "d", "e"]
        .iter()
        .enumerate()
        .map(|(k, key)| {
            (
                key.to_string(),
                (0..100u64)
                    .filter(|i| *i as usize % 5 == k)
                    .map(|i| i + 1)
                    .sum(),
            )
        })
        .collect();
    assert_eq!(sums(&db), want);
    assert!(
        metrics.pipeline_retries.with(&["summer"]).get() >= 3,
        "external failures were retried"
    );
    assert_eq!(metrics.dead_letters.with(&["summer", "numbers"]).get(), 1);
    let letters = log
        .read(&DeadLetterRecord::topic_for("summer"), 0, 0, 10)
        .unwrap();
    assert_eq!(letters.len(), 1);
    let letter: DeadLetterRecord = serde_json::from_slice(&letters[0].value).unwrap();
    assert_eq!(
        (letter.reason.as_str(), letter.value().unwrap()),
        ("not a number", b"bad".to_vec())
    );

    // Offsets are stored with the state: a restart consumes nothing twice.
    let ends: Vec<u64> = (0..3)
        .map(|p| log.range("numbers", p).unwrap().end)
        .collect();
    assert_eq!(
        committed_offsets(&db, "summer", "numbers", 3).unwrap(),
        ends
    );
    let more = append(log.as_ref(), &[("a", "1000")]);
    let handle = start(&log, &db, 0, &metrics);
    assert!(handle
        .watcher()
        .wait_committed(&more, Duration::from_secs(30)));
    handle.stop();
    let a = sums(&db).into_iter().find(|(k, _)| k == "a").unwrap().1;
    assert_eq!(a, want[0].1 + 1000);
    assert_eq!(
        log.range(&DeadLetterRecord::topic_for("summer"), 0)
            .unwrap()
            .end,
        1,
        "no dead letter published twice"
    );
}
