//! The consumer API over the embedded log: assign, poll, seek, high watermarks, waiting
//! on several partitions at once, and positions that retention or a gap moved past.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewater_log::{EmbeddedLog, EmbeddedLogConfig, Log, NewRecord, TopicConfig, TopicPartition};

fn record(key: &str, value: &str) -> NewRecord {
    NewRecord {
        key: Some(key.as_bytes().to_vec()),
        value: value.as_bytes().to_vec(),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

fn log_with_topic(dir: &std::path::Path, partitions: u32) -> Arc<EmbeddedLog> {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).expect("open");
    log.ensure_topic(
        "t",
        &TopicConfig {
            partitions,
            ..TopicConfig::default()
        },
    )
    .expect("topic");
    log
}

fn values(fetched: &tidewater_log::Fetched) -> Vec<String> {
    fetched
        .records
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).expect("utf8"))
        .collect()
}

#[test]
fn polls_assigned_partitions_from_their_positions_and_seeks_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with_topic(dir.path(), 2);
    let mut by_partition = [Vec::new(), Vec::new()];
    for i in 0..10 {
        let value = format!("v{i}");
        let position = log
            .append("t", vec![record(&format!("k{i}"), &value)])
            .expect("append")[0];
        by_partition[position.partition as usize].push(value);
    }
    let mut consumer = Arc::clone(&log).consumer().expect("consumer");
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    consumer
        .assign(vec![(p0.clone(), 0), (p1.clone(), 1)])
        .expect("assign");
    assert_eq!(consumer.assignment(), vec![p0.clone(), p1.clone()]);

    let polled = consumer.poll(100, Duration::ZERO).expect("poll");
    assert_eq!(polled.len(), 2);
    assert_eq!(values(&polled[0]), by_partition[0]);
    assert_eq!(values(&polled[1]), by_partition[1][1..]);
    assert_eq!(polled[0].high_watermark, by_partition[0].len() as u64);
    assert_eq!(consumer.position(&p0), Some(by_partition[0].len() as u64));

    // Caught up: nothing more, but the high watermarks still come.
    let polled = consumer.poll(100, Duration::from_millis(20)).expect("poll");
    assert!(polled.iter().all(|f| f.records.is_empty()));
    assert_eq!(polled[1].high_watermark, by_partition[1].len() as u64);

    // A failed batch is retried by seeking back to its start.
    consumer.seek(&p1, 0).expect("seek");
    let polled = consumer.poll(2, Duration::ZERO).expect("poll");
    assert_eq!(values(&polled[1]), by_partition[1][..2]);
    assert!(consumer.seek(&TopicPartition::new("t", 7), 0).is_err());
}

#[test]
fn a_poll_waits_for_the_first_record_on_any_assigned_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with_topic(dir.path(), 4);
    let mut consumer = Arc::clone(&log).consumer().expect("consumer");
    consumer
        .assign((0..4).map(|p| (TopicPartition::new("t", p), 0)).collect())
        .expect("assign");
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            log.append("t", vec![record("late", "arrived")])
                .expect("append")
        })
    };
    let started = Instant::now();
    let polled = consumer.poll(10, Duration::from_secs(60)).expect("poll");
    let written = writer.join().expect("writer")[0];
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken by the append"
    );
    let fetched = &polled[written.partition as usize];
    assert_eq!(values(fetched), ["arrived"]);
}

#[test]
fn positions_below_the_start_skip_ahead_and_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EmbeddedLogConfig {
        segment_bytes: 200,
        ..EmbeddedLogConfig::default()
    };
    let log = EmbeddedLog::open(dir.path(), config).expect("open");
    log.ensure_topic(
        "t",
        &TopicConfig {
            partitions: 1,
            retention_bytes: Some(300),
            ..TopicConfig::default()
        },
    )
    .expect("topic");
    for i in 0..30 {
        log.append("t", vec![record("k", &format!("value {i:02}"))])
            .expect("append");
    }
    // No consumer group holds retention back here.
    log.enforce_retention().expect("retention");
    let start = log.range("t", 0).expect("range").start;
    assert!(start > 0);
    let mut consumer = Arc::clone(&log).consumer().expect("consumer");
    consumer
        .assign(vec![(TopicPartition::new("t", 0), 0)])
        .expect("assign");
    let polled = consumer.poll(100, Duration::ZERO).expect("poll");
    assert_eq!(polled[0].skipped, Some((0, start)));
    assert_eq!(polled[0].records[0].offset, start);
    assert_eq!(polled[0].records.last().expect("records").offset, 29);
}

#[test]
fn a_position_past_the_end_waits_for_records_beyond_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with_topic(dir.path(), 1);
    log.append("t", vec![record("k", "one")]).expect("append");
    let mut consumer = Arc::clone(&log).consumer().expect("consumer");
    let p0 = TopicPartition::new("t", 0);
    consumer.assign(vec![(p0.clone(), 5)]).expect("assign");
    let polled = consumer.poll(10, Duration::from_millis(20)).expect("poll");
    assert!(polled[0].records.is_empty());
    assert_eq!(polled[0].high_watermark, 1);
    assert_eq!(
        consumer.position(&p0),
        Some(5),
        "a poll never moves a position back"
    );
}

/// Records what a member was told it owns.
struct Owned(Arc<std::sync::Mutex<Vec<TopicPartition>>>);

impl tidewater_log::AssignmentListener for Owned {
    fn assigned(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().expect("lock").extend_from_slice(partitions);
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .expect("lock")
            .retain(|tp| !partitions.contains(tp));
    }
}

#[test]
fn the_only_process_on_an_embedded_log_owns_every_partition_until_it_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with_topic(dir.path(), 3);
    let owned = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut member = Arc::clone(&log)
        .join_group("g", &["t".to_owned()], Box::new(Owned(Arc::clone(&owned))))
        .expect("join");
    assert!(
        owned.lock().expect("lock").is_empty(),
        "nothing before the first poll"
    );
    member.poll(Duration::ZERO).expect("poll");
    let all: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
    assert_eq!(*owned.lock().expect("lock"), all);
    assert_eq!(member.assignment(), all);
    member.poll(Duration::from_millis(1)).expect("poll");
    assert_eq!(owned.lock().expect("lock").len(), 3, "assigned once");
    member.leave().expect("leave");
    assert!(owned.lock().expect("lock").is_empty());
    assert!(member.assignment().is_empty());
    assert!(Arc::clone(&log)
        .join_group("g", &["missing".to_owned()], Box::new(Owned(owned)))
        .is_err());
}
