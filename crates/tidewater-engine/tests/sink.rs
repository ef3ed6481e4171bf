//! The engine running a [`Sink`] (offsets stored in the target's own transaction, fenced)
//! and the loud stop of a partition whose batch cannot succeed by retrying.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidewater_engine::{
    open_state_db, DeadLetter, DeadLetterRecord, Engine, EngineConfig, Pipeline, PipelineError,
    Prepared, Sink, SinkEngine, SinkPosition,
};
use tidewater_log::{EmbeddedLog, Header, Log, NewRecord, Record, TopicConfig};
use tidewater_metrics::Metrics;

/// A target that keeps, per partition, the applied values and the next offset, and
/// commits both at once only when the stored offset is the one expected — what a
/// database transaction with a conditional offset update does.
#[derive(Default)]
struct Table {
    partitions: Mutex<HashMap<u32, (Vec<String>, u64)>>,
    commits: AtomicUsize,
    fenced: AtomicUsize,
}

/// Appends every record's value to the target; "bad" values are dead-lettered.
struct Collect {
    table: Arc<Table>,
}

impl Sink for Collect {
    type Batch = Vec<String>;

    fn name(&self) -> &str {
        "collect"
    }

    fn topic(&self) -> &str {
        "words"
    }

    fn committed(&self, partition: u32) -> Result<Option<u64>, PipelineError> {
        Ok(self
            .table
            .partitions
            .lock()
            .expect("lock")
            .get(&partition)
            .map(|(_, next)| *next))
    }

    fn prepare(
        &self,
        _partition: u32,
        records: &[Record],
    ) -> Result<Prepared<Self::Batch>, PipelineError> {
        // Slow enough that two engines racing for the same partition overlap.
        std::thread::sleep(Duration::from_millis(2));
        let mut batch = Vec::new();
        let mut dead_letters = Vec::new();
        for record in records {
            let value = String::from_utf8_lossy(&record.value).into_owned();
            if value == "bad" {
                dead_letters.push(DeadLetter {
                    offset: record.offset,
                    reason: "bad word".into(),
                });
            } else {
                batch.push(value);
            }
        }
        Ok(Prepared {
            batch,
            dead_letters,
        })
    }

    fn commit(&self, position: &SinkPosition, batch: Self::Batch) -> Result<(), PipelineError> {
        let mut partitions = self.table.partitions.lock().expect("lock");
        let stored = partitions.get(&position.partition).map(|(_, next)| *next);
        if stored != position.expected {
            self.table.fenced.fetch_add(1, Ordering::SeqCst);
            return Err(PipelineError::Fenced {
                partition: position.partition,
                expected: position.expected,
                stored,
            });
        }
        let entry = partitions.entry(position.partition).or_default();
        entry.0.extend(batch);
        entry.1 = position.next;
        self.table.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        batch_max_records: 5,
        poll_interval: Duration::from_millis(10),
        retry_backoff_initial: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(50),
    }
}

fn log_with(dir: &std::path::Path, topic: &str, partitions: u32) -> Arc<dyn Log> {
    let log: Arc<dyn Log> =
        EmbeddedLog::open(dir.join("log"), Default::default()).expect("open log");
    log.ensure_topic(
        topic,
        &TopicConfig {
            partitions,
            ..TopicConfig::default()
        },
    )
    .expect("topic");
    log
}

fn word(key: String, value: String) -> NewRecord {
    NewRecord {
        key: Some(key.into_bytes()),
        value: value.into_bytes(),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

#[test]
fn two_engines_racing_on_one_target_apply_every_batch_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), "words", 3);
    let mut records = Vec::new();
    for i in 0..300 {
        records.push(word(format!("k{}", i % 17), format!("w{i}")));
    }
    let headers = vec![
        Header::new("trace", "abc"),
        Header {
            name: "empty".into(),
            value: None,
        },
    ];
    records.push(NewRecord {
        headers: headers.clone(),
        ..word("k1".into(), "bad".into())
    });
    let positions = log.append("words", records.clone()).expect("append");
    let mut want: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (record, position) in records.iter().zip(&positions) {
        let value = String::from_utf8_lossy(&record.value).into_owned();
        if value != "bad" {
            want.entry(position.partition).or_default().push(value);
        }
    }

    // Both processes own every partition (the embedded log gives each one everything),
    // so every batch is raced; the fenced offset lets exactly one commit land.
    let table = Arc::new(Table::default());
    let metrics = Arc::new(Metrics::default());
    let engines: Vec<_> = (0..2)
        .map(|_| {
            let sink = Arc::new(Collect {
                table: Arc::clone(&table),
            });
            SinkEngine::new(Arc::clone(&log), sink, config(), Arc::clone(&metrics))
                .start(&TopicConfig::default())
                .expect("start")
        })
        .collect();
    let done: Vec<(u32, u64)> = positions.iter().map(|p| (p.partition, p.offset)).collect();
    for engine in &engines {
        assert!(engine
            .watcher()
            .wait_committed(&done, Duration::from_secs(30)));
    }
    for engine in engines {
        engine.stop();
    }

    let got: BTreeMap<u32, Vec<String>> = table
        .partitions
        .lock()
        .expect("lock")
        .iter()
        .map(|(p, (values, _))| (*p, values.clone()))
        .collect();
    assert_eq!(got, want, "every value once, in partition order");
    assert!(
        table.fenced.load(Ordering::SeqCst) > 0,
        "the race was real: some commits were fenced"
    );
    // The dead letter reached the topic (at least once: a fenced batch may repeat it).
    let letters = log
        .read(&DeadLetterRecord::topic_for("collect"), 0, 0, 10)
        .expect("read");
    assert!(!letters.is_empty());
    let letter: DeadLetterRecord = serde_json::from_slice(&letters[0].value).expect("json");
    assert_eq!(letter.reason, "bad word");
    assert_eq!(
        letter.headers().expect("headers"),
        headers,
        "the letter keeps the headers"
    );
    assert!(letters.iter().all(|l| l.key == letters[0].key));
}

/// Fails for good on the record "poison"; counts what it applied.
struct Strict {
    applied: AtomicUsize,
}

impl Pipeline for Strict {
    type Batch = usize;
    type Effects = ();

    fn name(&self) -> &str {
        "strict"
    }

    fn topic(&self) -> &str {
        "words"
    }

    fn prepare(
        &self,
        _db: &redb::Database,
        records: &[Record],
    ) -> Result<Prepared<Self::Batch>, PipelineError> {
        if records.iter().any(|r| r.value == b"poison") {
            return Err(PipelineError::Internal("an invariant broke".into()));
        }
        Ok(Prepared {
            batch: records.len(),
            dead_letters: Vec::new(),
        })
    }

    fn apply(&self, _txn: &redb::WriteTransaction, batch: usize) -> Result<(), PipelineError> {
        self.applied.fetch_add(batch, Ordering::SeqCst);
        Ok(())
    }

    fn after_commit(&self, _db: &redb::Database, _effects: ()) {}
}

#[test]
fn an_error_retrying_cannot_fix_stops_its_partition_loudly_and_only_that_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), "words", 2);
    let poisoned = log
        .append("words", vec![word("p".into(), "poison".into())])
        .expect("append")[0];
    let healthy_partition = 1 - poisoned.partition;
    // Keys until one lands in the other partition, a few times.
    let mut healthy = Vec::new();
    for i in 0.. {
        let at = log
            .append("words", vec![word(format!("h{i}"), "fine".into())])
            .expect("append")[0];
        if at.partition == healthy_partition {
            healthy.push((at.partition, at.offset));
        }
        if healthy.len() == 3 {
            break;
        }
    }
    let db = Arc::new(open_state_db(&dir.path().join("state.redb")).expect("db"));
    let metrics = Arc::new(Metrics::default());
    let pipeline = Arc::new(Strict {
        applied: AtomicUsize::new(0),
    });
    let engine = Engine::new(
        Arc::clone(&log),
        db,
        Arc::clone(&pipeline),
        config(),
        Arc::clone(&metrics),
    )
    .start(&TopicConfig::default())
    .expect("start");
    assert!(engine
        .watcher()
        .wait_committed(&healthy, Duration::from_secs(30)));
    let partition = poisoned.partition.to_string();
    let stopped = metrics
        .pipeline_stopped
        .with(&["strict", "words", &partition]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stopped.get() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        stopped.get(),
        1,
        "the poisoned partition is reported stopped"
    );
    let unhealthy = metrics.watchdog.unhealthy();
    assert_eq!(unhealthy.len(), 1, "{unhealthy:?}");
    assert!(unhealthy[0]
        .component
        .ends_with(&format!("words/{partition}")));
    assert!(unhealthy[0]
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("an invariant broke")));
    // Not retried for ever: no retries are counted for it, and it stays where it was.
    assert_eq!(metrics.pipeline_retries.with(&["strict"]).get(), 0);
    assert_eq!(engine.watcher().committed()[poisoned.partition as usize], 0);
    engine.stop();
}
