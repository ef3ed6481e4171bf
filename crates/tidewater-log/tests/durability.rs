//! Acknowledged means kept: regression tests for the ways the log could lose or skip
//! acknowledged records — damage that cuts records off the end (H04), retention that ran
//! ahead of a consumer (N3), oldest segments that went missing (L8). Each runs over many
//! seeded random damage points, truncation lengths and consumer positions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidewater_log::{
    Durability, EmbeddedLog, EmbeddedLogConfig, Log, NewRecord, Record, TopicConfig,
};
use tidewater_metrics::Metrics;

const TOPIC: &str = "t";
const GROUP: &str = "pipeline";
/// Bytes of a segment header.
const HEADER: u64 = 24;

/// `Durability::Os` keeps the many cases fast where what is tested (retention, the bounds
/// file) does not depend on when appends are fsynced.
fn config(segment_bytes: u64) -> EmbeddedLogConfig {
    config_with(segment_bytes, Durability::Os)
}

fn config_with(segment_bytes: u64, durability: Durability) -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        segment_bytes,
        durability,
        ..EmbeddedLogConfig::default()
    }
}

fn one_partition(retention_bytes: Option<u64>) -> TopicConfig {
    TopicConfig {
        partitions: 1,
        retention_bytes,
        ..TopicConfig::default()
    }
}

fn record(value: String) -> NewRecord {
    NewRecord {
        key: Some(b"k".to_vec()),
        value: value.into_bytes(),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

/// Appends `count` records one at a time, each with a value of random length.
fn append_many(log: &EmbeddedLog, rng: &mut StdRng, tag: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let value = format!("{tag}-{i}-{}", "x".repeat(rng.random_range(0..60)));
            log.append(TOPIC, vec![record(value.clone())])
                .expect("append");
            value.into_bytes()
        })
        .collect()
}

/// Every record from `from` on, following the offsets the log returns.
fn read_from(log: &EmbeddedLog, from: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let page = log.read(TOPIC, 0, next, 5).expect("read");
        let Some(last) = page.last() else {
            return out;
        };
        next = last.offset + 1;
        out.extend(page);
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs_err::read_dir(dir.join("topics").join(TOPIC).join("0"))
        .expect("partition dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
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

fn lost(metrics: &Metrics) -> u64 {
    metrics.log_lost_records.with(&[TOPIC, "0"]).get()
}

/// Damage that cuts acknowledged records off the end of a partition: a torn tail of any
/// length, or the whole active segment deleted.
#[derive(Debug, Clone, Copy)]
enum TailDamage {
    Truncate(u64),
    DeleteActiveSegment,
}

fn damage_tail(dir: &Path, damage: TailDamage) {
    let files = segment_files(dir);
    let last = files.last().expect("a segment");
    match damage {
        TailDamage::Truncate(bytes) => {
            let len = fs_err::metadata(last).expect("metadata").len();
            fs_err::OpenOptions::new()
                .write(true)
                .open(last)
                .expect("open")
                .set_len(len - bytes)
                .expect("truncate");
        }
        TailDamage::DeleteActiveSegment => fs_err::remove_file(last).expect("delete"),
    }
}

/// H04: records cut off the end of a partition — by a torn tail of any length or a
/// deleted active segment, after a clean shutdown or a crash, under either durability
/// policy — must never make the log hand their offsets out again. A consumer that had
/// committed past the damage then still sees every record appended after the restart,
/// and the loss is counted.
#[test]
fn h04_torn_tail_never_reuses_a_committed_offset() {
    let mut cases = 0;
    for seed in 0..160 {
        let mut rng = StdRng::seed_from_u64(seed);
        let segment_bytes = rng.random_range(150..1500);
        let written = rng.random_range(1..60);
        let committed = rng.random_range(0..=written) as u64;
        let clean = rng.random_bool(0.5);
        let durability = if rng.random_bool(0.3) {
            Durability::Fsync
        } else {
            Durability::Os
        };
        let config = |segment_bytes| config_with(segment_bytes, durability);

        let original = tempfile::tempdir().expect("tempdir");
        let crashed = tempfile::tempdir().expect("tempdir");
        let dir = if clean {
            original.path()
        } else {
            crashed.path()
        };
        {
            let log = EmbeddedLog::open(original.path(), config(segment_bytes)).expect("open");
            log.ensure_topic(TOPIC, &one_partition(None))
                .expect("topic");
            append_many(&log, &mut rng, "before", written);
            log.commit_offset(GROUP, TOPIC, 0, committed)
                .expect("commit");
            if !clean {
                // The files as a crash (kill -9) leaves them: the log was never closed.
                copy_dir(original.path(), crashed.path());
            }
        }
        let files = segment_files(dir);
        let last_len = fs_err::metadata(files.last().expect("segment"))
            .expect("metadata")
            .len();
        let damage = if files.len() > 1 && rng.random_bool(0.3) {
            TailDamage::DeleteActiveSegment
        } else if last_len > HEADER {
            TailDamage::Truncate(rng.random_range(1..=last_len - HEADER))
        } else {
            continue;
        };
        damage_tail(dir, damage);
        cases += 1;

        let metrics = Arc::new(Metrics::default());
        let log = EmbeddedLog::open_with_metrics(dir, config(segment_bytes), Arc::clone(&metrics))
            .expect("a damaged tail is recovered");
        let survivors = log.range(TOPIC, 0).expect("range").end;
        assert!(survivors < written as u64 || matches!(damage, TailDamage::Truncate(_)));
        // The consumer starts: it tells the log where it stands.
        log.commit_offset(GROUP, TOPIC, 0, committed)
            .expect("commit");
        let expected_lost = if clean || durability == Durability::Fsync {
            // A clean close recorded the end, and under fsync the acknowledged end is
            // recorded as appends are acknowledged: every missing record is known.
            written as u64 - survivors
        } else {
            // After a crash under "os" only what a consumer had committed proves records
            // existed.
            committed.saturating_sub(survivors)
        };
        assert_eq!(
            lost(&metrics),
            expected_lost,
            "seed {seed}: {damage:?}, clean {clean}, {durability:?}, {written} written, \
             {survivors} survived"
        );

        let count = rng.random_range(1..20);
        let after = append_many(&log, &mut rng, "after", count);
        let read = read_from(&log, committed);
        let old: Vec<&Record> = read.iter().filter(|r| r.offset < survivors).collect();
        let new: Vec<&Record> = read.iter().filter(|r| r.offset >= survivors).collect();
        assert_eq!(
            old.len() as u64,
            survivors.saturating_sub(committed),
            "seed {seed}: the consumer reads the survivors it had not consumed"
        );
        assert!(
            new.iter().all(|r| r.offset >= written as u64),
            "seed {seed}: an offset handed out before the damage was handed out again"
        );
        let new_values: Vec<&Vec<u8>> = new.iter().map(|r| &r.value).collect();
        let after_values: Vec<&Vec<u8>> = after.iter().collect();
        assert_eq!(
            new_values, after_values,
            "seed {seed}: every record acknowledged after the restart is consumed, in order"
        );

        // A second clean restart changes nothing: no new loss, no reuse.
        drop(log);
        let metrics = Arc::new(Metrics::default());
        let log = EmbeddedLog::open_with_metrics(dir, config(segment_bytes), Arc::clone(&metrics))
            .expect("reopen");
        assert_eq!(lost(&metrics), 0, "seed {seed}: loss reported once");
        let end = log.range(TOPIC, 0).expect("range").end;
        let next = log
            .append(TOPIC, vec![record("last".into())])
            .expect("append")[0];
        assert_eq!(
            next.offset, end,
            "seed {seed}: a clean restart leaves no gap"
        );
    }
    assert!(cases >= 100, "only {cases} damage cases ran");
}

/// Under `fsync` a crash loses nothing acknowledged, so without damage appends continue
/// right after the last record: offsets stay dense and a replay of the same input after a
/// crash gives the same offsets. Under `os` they resume after the reserved offsets.
#[test]
fn a_crash_leaves_a_gap_only_where_acknowledged_records_may_be_lost() {
    for durability in [Durability::Fsync, Durability::Os] {
        let mut rng = StdRng::seed_from_u64(7);
        let original = tempfile::tempdir().expect("tempdir");
        let crashed = tempfile::tempdir().expect("tempdir");
        {
            let log =
                EmbeddedLog::open(original.path(), config_with(400, durability)).expect("open");
            log.ensure_topic(TOPIC, &one_partition(None))
                .expect("topic");
            append_many(&log, &mut rng, "before", 30);
            copy_dir(original.path(), crashed.path());
        }
        let metrics = Arc::new(Metrics::default());
        let log = EmbeddedLog::open_with_metrics(
            crashed.path(),
            config_with(400, durability),
            Arc::clone(&metrics),
        )
        .expect("reopen after a crash");
        assert_eq!(lost(&metrics), 0, "{durability:?}");
        let next = log
            .append(TOPIC, vec![record("after".into())])
            .expect("append")[0]
            .offset;
        match durability {
            Durability::Fsync => assert_eq!(next, 30, "no gap after a crash under fsync"),
            Durability::Os => assert!(next > 30, "resumes after the reserved offsets"),
        }
        let read = read_from(&log, 29);
        assert_eq!(
            read.len(),
            2,
            "{durability:?}: the last old record, then the new one"
        );
        assert_eq!(read[1].offset, next);
    }
}

/// N3: retention never deletes records a consumer group has not committed, whatever the
/// limits; what it keeps beyond them is reported. Once the consumer commits, retention
/// catches up.
#[test]
fn n3_retention_never_deletes_records_a_consumer_has_not_committed() {
    for seed in 0..120 {
        let mut rng = StdRng::seed_from_u64(seed);
        let segment_bytes = rng.random_range(150..800);
        let retention = rng.random_range(200..3000);
        let written = rng.random_range(20..200);
        let committed = rng.random_range(0..=written) as u64;

        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::default());
        let log =
            EmbeddedLog::open_with_metrics(dir.path(), config(segment_bytes), Arc::clone(&metrics))
                .expect("open");
        log.ensure_topic(TOPIC, &one_partition(Some(retention)))
            .expect("topic");
        let values = append_many(&log, &mut rng, "r", written);
        log.commit_offset("fast", TOPIC, 0, written as u64)
            .expect("commit");
        log.commit_offset("slow", TOPIC, 0, committed)
            .expect("commit");

        let report = log.enforce_retention().expect("retention");
        let range = log.range(TOPIC, 0).expect("range");
        assert!(
            range.start <= committed,
            "seed {seed}: retention deleted from {} past the slow consumer at {committed}",
            range.start
        );
        let unconsumed: Vec<Vec<u8>> = read_from(&log, committed)
            .into_iter()
            .map(|r| r.value)
            .collect();
        assert_eq!(
            unconsumed,
            values[committed as usize..],
            "seed {seed}: records not yet committed are all still there"
        );
        let held = metrics.log_retention_held_bytes.with(&[TOPIC, "0"]).get();
        assert_eq!(held as u64, report.bytes_held, "seed {seed}");
        let bytes = log.partition_bytes(TOPIC, 0).expect("bytes");
        if report.bytes_held == 0 {
            assert!(
                bytes <= retention + segment_bytes + HEADER,
                "seed {seed}: {bytes} bytes kept, limit {retention}, nothing held"
            );
        }

        // The slow consumer catches up: retention deletes down to its limit.
        log.commit_offset("slow", TOPIC, 0, written as u64)
            .expect("commit");
        let report = log.enforce_retention().expect("retention");
        assert_eq!(report.bytes_held, 0, "seed {seed}");
        let bytes = log.partition_bytes(TOPIC, 0).expect("bytes");
        assert!(
            bytes <= retention + segment_bytes + HEADER,
            "seed {seed}: {bytes} bytes kept, limit {retention}"
        );
        assert_eq!(
            metrics.log_retention_held_bytes.with(&[TOPIC, "0"]).get(),
            0
        );
        assert_eq!(lost(&metrics), 0, "retention is not a loss");
    }
}

/// L8: a partition whose oldest segments went missing while the log was closed (and no
/// retention deleted them) reports the missing records instead of silently starting
/// higher; new appends continue after the old end.
#[test]
fn l8_missing_oldest_segments_are_reported_as_lost() {
    let mut cases = 0;
    for seed in 0..140 {
        let mut rng = StdRng::seed_from_u64(seed);
        let segment_bytes = rng.random_range(150..600);
        let written = rng.random_range(10..120);
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = EmbeddedLog::open(dir.path(), config(segment_bytes)).expect("open");
            log.ensure_topic(TOPIC, &one_partition(None))
                .expect("topic");
            append_many(&log, &mut rng, "r", written);
        }
        let files = segment_files(dir.path());
        if files.len() < 2 {
            continue;
        }
        let deleted = rng.random_range(1..files.len());
        for file in &files[..deleted] {
            fs_err::remove_file(file).expect("delete");
        }
        cases += 1;

        let metrics = Arc::new(Metrics::default());
        let log =
            EmbeddedLog::open_with_metrics(dir.path(), config(segment_bytes), Arc::clone(&metrics))
                .expect("open");
        let range = log.range(TOPIC, 0).expect("range");
        assert!(range.start > 0);
        assert_eq!(lost(&metrics), range.start, "seed {seed}");
        assert_eq!(range.end, written as u64);
        let next = log
            .append(TOPIC, vec![record("new".into())])
            .expect("append")[0];
        assert_eq!(next.offset, written as u64);
        drop(log);
        let metrics = Arc::new(Metrics::default());
        EmbeddedLog::open_with_metrics(dir.path(), config(segment_bytes), Arc::clone(&metrics))
            .expect("reopen");
        assert_eq!(lost(&metrics), 0, "seed {seed}: reported once");
    }
    assert!(cases >= 100, "only {cases} cases ran");
}
