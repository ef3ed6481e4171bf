//! Behaviour of the embedded log against real files in temporary directories: round trips,
//! routing and ordering, segment rolling, reopening, retention, consumer offsets,
//! waiting, concurrency, and recovery from torn tails and corruption.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidewater_log::{
    partition_for_key, Durability, EmbeddedLog, EmbeddedLogConfig, Log, LogError, NewRecord,
    Position, TopicConfig,
};

fn config() -> EmbeddedLogConfig {
    EmbeddedLogConfig::default()
}

fn small_segments(segment_bytes: u64) -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        segment_bytes,
        ..EmbeddedLogConfig::default()
    }
}

fn topic_config(partitions: u32) -> TopicConfig {
    TopicConfig {
        partitions,
        ..TopicConfig::default()
    }
}

fn open(dir: &Path, config: EmbeddedLogConfig) -> Arc<EmbeddedLog> {
    EmbeddedLog::open(dir, config).expect("open log")
}

fn record(key: Option<&str>, value: &str, timestamp_ms: i64) -> NewRecord {
    NewRecord {
        key: key.map(|key| key.as_bytes().to_vec()),
        value: value.as_bytes().to_vec(),
        timestamp_ms,
        headers: Vec::new(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// All records of a partition, read in small pages to exercise continuation.
fn read_all(log: &dyn Log, topic: &str, partition: u32) -> Vec<tidewater_log::Record> {
    let range = log.range(topic, partition).expect("range");
    let mut out = Vec::new();
    let mut next = range.start;
    loop {
        let page = log.read(topic, partition, next, 7).expect("read");
        if page.is_empty() {
            break;
        }
        next = page.last().expect("non-empty").offset + 1;
        out.extend(page);
    }
    assert_eq!(next, range.end, "reads stop at the end");
    out
}

fn segment_files(dir: &Path, topic: &str, partition: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        fs_err::read_dir(dir.join("topics").join(topic).join(partition.to_string()))
            .expect("partition dir")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
            .collect();
    files.sort();
    files
}

fn append_file(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = fs_err::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open segment");
    file.write_all(bytes).expect("append");
}

fn flip_byte(path: &Path, position: u64) {
    let mut bytes = fs_err::read(path).expect("read segment");
    bytes[position as usize] ^= 0x55;
    fs_err::write(path, bytes).expect("write segment");
}

#[test]
fn append_read_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config());
    log.ensure_topic("events", &topic_config(1)).expect("topic");
    let records = vec![
        record(Some("a"), "first", 1),
        record(None, "second", -5),
        record(Some(""), "", i64::MAX),
    ];
    let positions = log.append("events", records.clone()).expect("append");
    assert_eq!(
        positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [0, 1, 2]
    );

    let read = log.read("events", 0, 0, 100).expect("read");
    assert_eq!(read.len(), 3);
    for (got, want) in read.iter().zip(&records) {
        assert_eq!(
            (got.partition, &got.key, &got.value, got.timestamp_ms),
            (0, &want.key, &want.value, want.timestamp_ms)
        );
    }
    assert_eq!(
        read[2].key,
        Some(Vec::new()),
        "an empty key is not the same as no key"
    );
    assert_eq!(read[1].key, None);

    assert_eq!(
        log.read("events", 0, 1, 1).expect("read").len(),
        1,
        "max_records is respected"
    );
    assert!(log
        .read("events", 0, 3, 10)
        .expect("read at end")
        .is_empty());
    assert!(matches!(
        log.read("events", 0, 4, 10),
        Err(LogError::OffsetOutOfRange {
            offset: 4,
            end: 3,
            ..
        })
    ));
    assert_eq!(
        log.range("events", 0).expect("range"),
        tidewater_log::PartitionRange { start: 0, end: 3 }
    );
    assert!(log
        .append("events", Vec::new())
        .expect("empty append")
        .is_empty());
}

#[test]
fn keyed_records_route_by_hash_and_keyless_round_robin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config().with_os_durability());
    log.ensure_topic("t", &topic_config(4)).expect("topic");
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
    let positions = log
        .append(
            "t",
            keys.iter().map(|key| record(Some(key), key, 0)).collect(),
        )
        .expect("append");
    for (key, position) in keys.iter().zip(&positions) {
        assert_eq!(position.partition, partition_for_key(key.as_bytes(), 4));
    }
    let keyless = log
        .append(
            "t",
            (0..8).map(|i| record(None, &i.to_string(), 0)).collect(),
        )
        .expect("append");
    let mut per_partition = BTreeMap::new();
    for position in &keyless {
        *per_partition.entry(position.partition).or_insert(0) += 1;
    }
    assert_eq!(
        per_partition,
        BTreeMap::from([(0, 2), (1, 2), (2, 2), (3, 2)])
    );
}

#[test]
fn multi_record_append_returns_positions_in_input_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config());
    log.ensure_topic("t", &topic_config(3)).expect("topic");
    let records: Vec<NewRecord> = (0..30)
        .map(|i| {
            record(
                (i % 4 != 0).then(|| format!("k{}", i % 5)).as_deref(),
                &format!("v{i}"),
                i,
            )
        })
        .collect();
    let positions = log.append("t", records.clone()).expect("append");
    for (want, position) in records.iter().zip(&positions) {
        let got = log
            .read("t", position.partition, position.offset, 1)
            .expect("read");
        assert_eq!(got[0].value, want.value);
        assert_eq!(got[0].offset, position.offset);
    }
}

#[test]
fn per_key_order_holds_across_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config().with_os_durability());
    log.ensure_topic("t", &topic_config(4)).expect("topic");
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for round in 0..20 {
        // Alternate single appends and batches holding the same key several times.
        let batch: Vec<NewRecord> = (0..(round % 3 + 1))
            .map(|i| {
                record(
                    Some(&format!("k{}", (round + i) % 5)),
                    &format!("{round}-{i}"),
                    0,
                )
            })
            .collect();
        for r in &batch {
            let key = String::from_utf8(r.key.clone().expect("key")).expect("utf8");
            expected
                .entry(key)
                .or_default()
                .push(String::from_utf8(r.value.clone()).expect("utf8"));
        }
        log.append("t", batch).expect("append");
    }
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for partition in 0..4 {
        for r in read_all(log.as_ref(), "t", partition) {
            let key = String::from_utf8(r.key.expect("key")).expect("utf8");
            assert_eq!(partition, partition_for_key(key.as_bytes(), 4));
            seen.entry(key)
                .or_default()
                .push(String::from_utf8(r.value).expect("utf8"));
        }
    }
    assert_eq!(seen, expected);
}

#[test]
fn segments_roll_and_reads_cross_segment_boundaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments(1024));
    log.ensure_topic("t", &topic_config(1)).expect("topic");
    let values: Vec<String> = (0..300)
        .map(|i| format!("value-{i:04}-{}", "x".repeat(i % 90)))
        .collect();
    for chunk in values.chunks(7) {
        log.append("t", chunk.iter().map(|v| record(None, v, 0)).collect())
            .expect("append");
    }
    let files = segment_files(dir.path(), "t", 0);
    assert!(
        files.len() > 10,
        "expected many segments, got {}",
        files.len()
    );
    for file in &files[..files.len() - 1] {
        let len = fs_err::metadata(file).expect("metadata").len();
        assert!(len <= 1024, "{} has {len} bytes", file.display());
    }
    let all = read_all(log.as_ref(), "t", 0);
    assert_eq!(
        all.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
        values
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect::<Vec<_>>()
    );
    for from in [0u64, 1, 13, 99, 150, 298, 299] {
        let page = log.read("t", 0, from, 40).expect("read");
        assert_eq!(page.len(), 40.min(300 - from as usize));
        for (i, r) in page.iter().enumerate() {
            assert_eq!(r.offset, from + i as u64);
            assert_eq!(r.value, values[r.offset as usize].as_bytes());
        }
    }
    assert!(log.partition_bytes("t", 0).expect("bytes") > 300 * 28);
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments(512));
    log.ensure_topic("t", &topic_config(1)).expect("topic");
    let big = "b".repeat(5000);
    log.append(
        "t",
        vec![
            record(None, "small", 0),
            record(None, &big, 0),
            record(None, "after", 0),
        ],
    )
    .expect("append");
    assert_eq!(segment_files(dir.path(), "t", 0).len(), 3);
    let read = read_all(log.as_ref(), "t", 0);
    assert_eq!(read[1].value, big.as_bytes());
    assert_eq!(read[2].value, b"after");
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut written = Vec::new();
    {
        let log = open(dir.path(), small_segments(2048));
        log.ensure_topic("a", &topic_config(2)).expect("topic");
        log.ensure_topic("b", &topic_config(1)).expect("topic");
        for i in 0..200 {
            let r = record(Some(&format!("k{}", i % 9)), &format!("value {i}"), i);
            let position = log.append("a", vec![r.clone()]).expect("append")[0];
            written.push((position, r));
        }
    }
    let log = open(dir.path(), small_segments(2048));
    assert_eq!(log.topics().expect("topics"), ["a", "b"]);
    assert_eq!(log.partitions("a").expect("partitions"), 2);
    for (position, r) in &written {
        let got = log
            .read("a", position.partition, position.offset, 1)
            .expect("read");
        assert_eq!(
            (&got[0].key, &got[0].value, got[0].timestamp_ms),
            (&r.key, &r.value, r.timestamp_ms)
        );
    }
    let ends: Vec<u64> = (0..2)
        .map(|p| log.range("a", p).expect("range").end)
        .collect();
    assert_eq!(ends.iter().sum::<u64>(), 200);
    let next = log
        .append("a", vec![record(Some("k0"), "after reopen", 0)])
        .expect("append")[0];
    assert_eq!(
        next.offset, ends[next.partition as usize],
        "offsets continue densely"
    );
}

#[test]
fn ensure_topic_keeps_partition_count_and_updates_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config());
    log.ensure_topic("t", &topic_config(3)).expect("topic");
    let changed = TopicConfig {
        partitions: 8,
        retention_age: Some(Duration::from_secs(60)),
        retention_bytes: Some(1 << 20),
    };
    log.ensure_topic("t", &changed).expect("ensure again");
    assert_eq!(log.partitions("t").expect("partitions"), 3);
    drop(log);
    let log = open(dir.path(), config());
    let stored = log.topic_config("t").expect("config");
    assert_eq!(
        stored,
        TopicConfig {
            partitions: 3,
            ..changed
        }
    );
}

#[test]
fn invalid_input_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        EmbeddedLogConfig {
            max_record_bytes: 100,
            ..config()
        },
    );
    for name in ["", "..", "a/b", "has space", "x~tmp"] {
        assert!(
            matches!(
                log.ensure_topic(name, &topic_config(1)),
                Err(LogError::InvalidTopicName(_))
            ),
            "{name}"
        );
    }
    assert!(matches!(
        log.ensure_topic("zero", &topic_config(0)),
        Err(LogError::InvalidTopicConfig { .. })
    ));
    assert!(matches!(
        log.append("missing", vec![record(None, "v", 0)]),
        Err(LogError::UnknownTopic { .. })
    ));
    log.ensure_topic("t", &topic_config(2)).expect("topic");
    assert!(matches!(
        log.read("t", 2, 0, 1),
        Err(LogError::UnknownPartition { partition: 2, .. })
    ));
    assert!(matches!(
        log.range("t", 9),
        Err(LogError::UnknownPartition { .. })
    ));
    let too_big = NewRecord {
        key: None,
        value: vec![0; 101],
        timestamp_ms: 0,
        headers: Vec::new(),
    };
    assert!(matches!(
        log.append("t", vec![record(None, "ok", 0), too_big]),
        Err(LogError::RecordTooLarge {
            size: 101,
            max: 100
        })
    ));
    assert_eq!(
        log.range("t", 0).expect("range").end + log.range("t", 1).expect("range").end,
        0,
        "nothing of a rejected batch is stored"
    );
    assert!(matches!(
        log.commit_offset("", "t", 0, 1),
        Err(LogError::InvalidGroupName(_))
    ));
    assert!(matches!(
        log.commit_offset("g", "missing", 0, 1),
        Err(LogError::UnknownTopic { .. })
    ));
}

#[test]
fn retention_by_bytes_deletes_oldest_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments(1024));
    let retention = TopicConfig {
        partitions: 1,
        retention_age: None,
        retention_bytes: Some(4096),
    };
    log.ensure_topic("t", &retention).expect("topic");
    for i in 0..200 {
        log.append(
            "t",
            vec![record(
                None,
                &format!("{i:03}-{}", "p".repeat(60)),
                now_ms(),
            )],
        )
        .expect("append");
    }
    let before = log.partition_bytes("t", 0).expect("bytes");
    let report = log.enforce_retention().expect("retention");
    let after = log.partition_bytes("t", 0).expect("bytes");
    assert!(report.segments_deleted > 0);
    assert_eq!(before - after, report.bytes_deleted);
    assert!(after <= 4096, "{after} bytes left");
    let range = log.range("t", 0).expect("range");
    assert_eq!(range.end, 200);
    assert_eq!(range.start, report.records_deleted);
    assert!(matches!(
        log.read("t", 0, range.start - 1, 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let first = log.read("t", 0, range.start, 1).expect("read at start");
    assert!(first[0]
        .value
        .starts_with(format!("{:03}-", range.start).as_bytes()));
    assert_eq!(log.read("t", 0, 199, 1).expect("newest").len(), 1);
    assert_eq!(
        log.enforce_retention().expect("again"),
        Default::default(),
        "nothing more to delete"
    );

    drop(log);
    let log = open(dir.path(), small_segments(1024));
    assert_eq!(
        log.range("t", 0).expect("range"),
        range,
        "start survives a reopen"
    );
    assert_eq!(
        log.append("t", vec![record(None, "new", 0)])
            .expect("append")[0]
            .offset,
        200
    );
}

#[test]
fn retention_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments(1 << 20));
    let retention = TopicConfig {
        partitions: 1,
        retention_age: Some(Duration::from_secs(1)),
        retention_bytes: Some(1),
    };
    log.ensure_topic("t", &retention).expect("topic");
    log.append("t", vec![record(None, "old", 0)])
        .expect("append");
    assert_eq!(
        log.enforce_retention().expect("retention").segments_deleted,
        0
    );
    assert_eq!(log.read("t", 0, 0, 10).expect("read").len(), 1);
}

#[test]
fn retention_by_age_deletes_segments_whose_newest_record_is_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments(1024));
    log.ensure_topic("t", &topic_config(1)).expect("topic");
    let two_hours_ago = now_ms() - 2 * 3600 * 1000;
    for i in 0..60 {
        log.append(
            "t",
            vec![record(
                None,
                &format!("old {i} {}", "o".repeat(50)),
                two_hours_ago + i,
            )],
        )
        .expect("append");
    }
    let old_end = log.range("t", 0).expect("range").end;
    for i in 0..60 {
        log.append(
            "t",
            vec![record(
                None,
                &format!("new {i} {}", "n".repeat(50)),
                now_ms(),
            )],
        )
        .expect("append");
    }
    assert_eq!(
        log.enforce_retention().expect("no retention configured"),
        Default::default()
    );
    let retention = TopicConfig {
        partitions: 1,
        retention_age: Some(Duration::from_secs(3600)),
        retention_bytes: None,
    };
    log.ensure_topic("t", &retention).expect("set retention");
    let report = log.enforce_retention().expect("retention");
    assert!(report.segments_deleted > 0);
    let range = log.range("t", 0).expect("range");
    assert!(
        range.start > 0 && range.start <= old_end,
        "start {} old end {old_end}",
        range.start
    );
    // The segment holding the boundary mixes old and new records and is kept.
    for r in read_all(log.as_ref(), "t", 0) {
        if r.offset >= old_end {
            assert!(r.value.starts_with(b"new"));
        }
    }
}

#[test]
fn consumer_offsets_persist_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(dir.path(), config());
        log.ensure_topic("t", &topic_config(2)).expect("topic");
        log.commit_offset("indexer", "t", 0, 5).expect("commit");
        log.commit_offset("indexer", "t", 1, 7).expect("commit");
        log.commit_offset("indexer", "t", 0, 9)
            .expect("commit again");
        log.commit_offset("odd group/with:chars", "t", 1, 3)
            .expect("commit");
        assert_eq!(
            log.committed_offset("indexer", "t", 0).expect("get"),
            Some(9)
        );
    }
    let log = open(dir.path(), config());
    assert_eq!(
        log.committed_offset("indexer", "t", 0).expect("get"),
        Some(9)
    );
    assert_eq!(
        log.committed_offset("indexer", "t", 1).expect("get"),
        Some(7)
    );
    assert_eq!(
        log.committed_offset("odd group/with:chars", "t", 1)
            .expect("get"),
        Some(3)
    );
    assert_eq!(
        log.committed_offset("odd group/with:chars", "t", 0)
            .expect("get"),
        None
    );
    assert_eq!(log.committed_offset("never", "t", 0).expect("get"), None);
    assert!(matches!(
        log.committed_offset("indexer", "t", 2),
        Err(LogError::UnknownPartition { .. })
    ));
}

#[test]
fn wait_for_wakes_up_when_a_record_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config());
    log.ensure_topic("t", &topic_config(1)).expect("topic");
    let waiter = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let started = Instant::now();
            let ready = log
                .wait_for("t", 0, 0, Duration::from_secs(30))
                .expect("wait");
            (ready, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    log.append("t", vec![record(None, "wake up", 0)])
        .expect("append");
    let (ready, waited) = waiter.join().expect("waiter");
    assert!(ready);
    assert!(
        waited < Duration::from_secs(30),
        "woken by the append, not the timeout"
    );
    assert!(log
        .wait_for("t", 0, 0, Duration::ZERO)
        .expect("already there"));
}

#[test]
fn wait_for_times_out_without_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config());
    log.ensure_topic("t", &topic_config(1)).expect("topic");
    log.append("t", vec![record(None, "one", 0)])
        .expect("append");
    assert!(!log
        .wait_for("t", 0, 1, Duration::from_millis(20))
        .expect("wait"));
}

#[test]
fn concurrent_appenders_get_unique_dense_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EmbeddedLogConfig {
        segment_bytes: 16 * 1024,
        ..config()
    };
    let log = open(dir.path(), config);
    log.ensure_topic("t", &topic_config(3)).expect("topic");
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..60 {
                    let batch: Vec<NewRecord> = (0..(i % 3 + 1))
                        .map(|j| {
                            let value = format!("t{thread}-{i}-{j}");
                            let key = (j % 2 == 0).then(|| format!("key{thread}"));
                            record(key.as_deref(), &value, 0)
                        })
                        .collect();
                    let positions = log.append("t", batch.clone()).expect("append");
                    mine.extend(
                        positions
                            .into_iter()
                            .zip(batch.into_iter().map(|r| r.value)),
                    );
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<(Position, Vec<u8>)> = Vec::new();
    for thread in threads {
        all.extend(thread.join().expect("appender"));
    }
    for partition in 0..3 {
        let mut offsets: Vec<u64> = all
            .iter()
            .filter(|(p, _)| p.partition == partition)
            .map(|(p, _)| p.offset)
            .collect();
        offsets.sort_unstable();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition} offsets are unique and dense"
        );
        assert_eq!(
            log.range("t", partition).expect("range").end,
            offsets.len() as u64
        );
    }
    for (position, value) in &all {
        assert_eq!(
            &log.read("t", position.partition, position.offset, 1)
                .expect("read")[0]
                .value,
            value
        );
    }
}

#[test]
fn group_commit_window_and_os_durability_work() {
    for config in [
        EmbeddedLogConfig {
            group_commit_window: Duration::from_millis(2),
            ..config()
        },
        config().with_os_durability(),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config);
        log.ensure_topic("t", &topic_config(1)).expect("topic");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let position = log
                            .append("t", vec![record(None, &i.to_string(), 0)])
                            .expect("append")[0];
                        assert!(
                            log.range("t", 0).expect("range").end > position.offset,
                            "acknowledged means readable"
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("appender");
        }
        assert_eq!(read_all(log.as_ref(), "t", 0).len(), 80);
    }
}

/// Writes `count` records to a fresh single-partition topic and closes the log.
fn write_and_close(dir: &Path, config: EmbeddedLogConfig, count: usize) -> Vec<NewRecord> {
    let log = open(dir, config);
    log.ensure_topic("t", &topic_config(1)).expect("topic");
    let records: Vec<NewRecord> = (0..count)
        .map(|i| record(Some("k"), &format!("record {i}"), i as i64))
        .collect();
    for r in &records {
        log.append("t", vec![r.clone()]).expect("append");
    }
    records
}

/// Reopens the log and checks that exactly `records` survived and that the next append
/// gets offset `resume_at`: the old end, even when damage cut acknowledged records off,
/// because an offset is never handed out twice.
fn assert_recovered(dir: &Path, config: EmbeddedLogConfig, records: &[NewRecord], resume_at: u64) {
    let log = open(dir, config.clone());
    let read = read_all(log.as_ref(), "t", 0);
    assert_eq!(read.len(), records.len());
    for (got, want) in read.iter().zip(records) {
        assert_eq!(
            (&got.value, got.timestamp_ms),
            (&want.value, want.timestamp_ms)
        );
    }
    let next = log
        .append("t", vec![record(Some("k"), "after recovery", 0)])
        .expect("append")[0];
    assert_eq!(next.offset, resume_at);
    drop(log);
    let log = open(dir, config);
    let after = log.read("t", 0, records.len() as u64, 10).expect("read");
    assert_eq!(after[0].value, b"after recovery");
    assert_eq!(
        after[0].offset, resume_at,
        "a read in the gap skips to the record after it"
    );
}

#[test]
fn torn_tail_of_garbage_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = write_and_close(dir.path(), config(), 10);
    let last = segment_files(dir.path(), "t", 0).pop().expect("segment");
    append_file(
        &last,
        &[
            0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
            19, 20, 21, 22, 23,
        ],
    );
    assert_recovered(dir.path(), config(), &records, records.len() as u64);
}

#[test]
fn torn_tail_of_zeros_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = write_and_close(dir.path(), config(), 10);
    let last = segment_files(dir.path(), "t", 0).pop().expect("segment");
    append_file(&last, &[0; 4096]);
    assert_recovered(dir.path(), config(), &records, records.len() as u64);
}

#[test]
fn half_written_record_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = write_and_close(dir.path(), config(), 11);
    let last = segment_files(dir.path(), "t", 0).pop().expect("segment");
    let len = fs_err::metadata(&last).expect("metadata").len();
    // Frame of "record 10" with key "k": 8 prefix + 20 fixed + 1 key + 9 value bytes.
    let frame = 8 + 20 + 1 + 9;
    for cut in [1, frame / 2, frame - 1] {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(dir.path(), copy.path());
        let copied = segment_files(copy.path(), "t", 0).pop().expect("segment");
        fs_err::OpenOptions::new()
            .write(true)
            .open(&copied)
            .expect("open")
            .set_len(len - frame + cut)
            .expect("cut");
        assert_recovered(copy.path(), config(), &records[..10], 11);
    }
}

#[test]
fn record_with_bad_checksum_at_the_tail_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = write_and_close(dir.path(), config(), 5);
    let last = segment_files(dir.path(), "t", 0).pop().expect("segment");
    let len = fs_err::metadata(&last).expect("metadata").len();
    flip_byte(&last, len - 2);
    assert_recovered(dir.path(), config(), &records[..4], 5);
}

#[test]
fn headerless_last_segment_from_an_interrupted_roll_is_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = write_and_close(dir.path(), config(), 3);
    let partition_dir = dir.path().join("topics/t/0");
    fs_err::write(partition_dir.join(format!("{:020}.seg", 3)), b"TWLOG").expect("partial header");
    assert_recovered(dir.path(), config(), &records, records.len() as u64);
}

#[test]
fn corruption_in_a_sealed_segment_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_and_close(dir.path(), small_segments(512), 100);
    let files = segment_files(dir.path(), "t", 0);
    assert!(files.len() > 3);
    flip_byte(&files[1], 100);
    let error = EmbeddedLog::open(dir.path(), small_segments(512))
        .expect_err("corruption must be reported");
    assert!(
        matches!(&error, LogError::Corrupt { path, .. } if path == &files[1]),
        "{error}"
    );
}

#[test]
fn corruption_followed_by_intact_records_in_the_last_segment_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_and_close(dir.path(), config(), 10);
    let last = segment_files(dir.path(), "t", 0).pop().expect("segment");
    // Inside the value of the third record: header 24 bytes, frames of 36-37 bytes.
    flip_byte(&last, 24 + 2 * 37 + 30);
    let error = EmbeddedLog::open(dir.path(), config()).expect_err("corruption must be reported");
    assert!(matches!(error, LogError::Corrupt { .. }), "{error}");
}

#[test]
fn interrupted_topic_creation_is_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path(), config()));
    fs_err::create_dir_all(dir.path().join("topics/half~tmp/0")).expect("leftover");
    let log = open(dir.path(), config());
    assert!(log.topics().expect("topics").is_empty());
    assert!(!dir.path().join("topics/half~tmp").exists());
    log.ensure_topic("half", &topic_config(1))
        .expect("create for real");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs_err::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            fs_err::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), &target).expect("copy");
        }
    }
}

trait WithOs {
    fn with_os_durability(self) -> Self;
}

impl WithOs for EmbeddedLogConfig {
    fn with_os_durability(self) -> Self {
        Self {
            durability: Durability::Os,
            ..self
        }
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = tidewater_log::EmbeddedLog::open(dir.path(), Default::default()).unwrap();
    let err = tidewater_log::EmbeddedLog::open(dir.path(), Default::default()).unwrap_err();
    assert!(
        matches!(err, tidewater_log::LogError::Locked { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    drop(first);
    tidewater_log::EmbeddedLog::open(dir.path(), Default::default()).unwrap();
}

#[test]
fn headers_survive_a_reopen_and_oversized_names_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config());
    log.ensure_topic("t", &topic_config(1)).expect("topic");
    let headers = vec![
        tidewater_log::Header::new("content-type", "application/json"),
        tidewater_log::Header {
            name: "tombstone".into(),
            value: None,
        },
    ];
    let position = log
        .append(
            "t",
            vec![NewRecord {
                headers: headers.clone(),
                ..record(Some("k"), "v", 1)
            }],
        )
        .expect("append")[0];
    let refused = log.append(
        "t",
        vec![NewRecord {
            headers: vec![tidewater_log::Header::new("n".repeat(70_000), "v")],
            ..record(Some("k"), "w", 2)
        }],
    );
    assert!(
        matches!(refused, Err(LogError::InvalidRecord(_))),
        "{refused:?}"
    );
    drop(log);
    let log = open(dir.path(), config());
    let read = log.read("t", 0, position.offset, 10).expect("read");
    assert_eq!(read.len(), 1, "the refused record was not written");
    assert_eq!(read[0].headers, headers);
}
