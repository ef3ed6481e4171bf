//! The Kafka backend against a real Kafka-protocol broker (Tansu with its SQLite engine,
//! started by `scripts/kafka.sh`): appends acknowledged by the broker, Kafka's own key
//! routing, headers, the consumer's positions and watermarks, group membership with
//! cooperative-sticky rebalancing, committed group offsets, and a broker restart.
#![cfg(feature = "kafka")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidewater_log::kafka::KafkaLog;
use tidewater_log::{
    AssignmentListener, Header, KafkaConfig, Log, LogError, Membership, NewRecord, TopicConfig,
    TopicPartition,
};
use tidewater_testkit::KafkaBroker;

fn connect(broker: &KafkaBroker, group: &str) -> Arc<KafkaLog> {
    let config = KafkaConfig {
        brokers: broker.bootstrap().to_owned(),
        group: group.to_owned(),
        client_id: None,
        properties: BTreeMap::new(),
    };
    KafkaLog::connect(&config, 1 << 20).expect("connect")
}

fn topic(log: &KafkaLog, name: &str, partitions: u32) {
    log.ensure_topic(
        name,
        &TopicConfig {
            partitions,
            ..TopicConfig::default()
        },
    )
    .expect("create topic");
}

fn keyed(key: &str, value: &str) -> NewRecord {
    NewRecord {
        key: Some(key.as_bytes().to_vec()),
        value: value.as_bytes().to_vec(),
        timestamp_ms: 1_700_000_000_000,
        headers: Vec::new(),
    }
}

/// Kafka's default partitioner for keyed records, as the Java client computes it:
/// murmur2 (seed 0x9747b28c), made positive, modulo the partition count.
fn java_partition(key: &[u8], partitions: u32) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    (h & 0x7fff_ffff) % partitions
}

#[test]
fn appends_are_acknowledged_routed_like_kafka_and_read_back_with_headers() {
    let broker = KafkaBroker::start();
    let log = connect(&broker, "t1");
    topic(&log, "docs", 12);
    assert_eq!(log.partitions("docs").expect("partitions"), 12);
    // Creating it again keeps it.
    topic(&log, "docs", 3);
    assert_eq!(log.partitions("docs").expect("partitions"), 12);
    assert!(log.topics().expect("topics").contains(&"docs".to_owned()));

    let records: Vec<NewRecord> = (0..200)
        .map(|i| keyed(&format!("customer-{i}"), &format!("v{i}")))
        .collect();
    let positions = log.append("docs", records.clone()).expect("append");
    assert_eq!(positions.len(), 200);
    for (record, position) in records.iter().zip(&positions) {
        let key = record.key.as_deref().expect("key");
        assert_eq!(position.partition, java_partition(key, 12), "key {key:?}");
    }
    // Per partition, offsets increase in append order.
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for position in &positions {
        if let Some(previous) = last.insert(position.partition, position.offset) {
            assert!(position.offset > previous);
        }
    }

    let with_headers = NewRecord {
        headers: vec![
            Header::new("trace", b"\x00\xffbinary".to_vec()),
            Header::new("trace", "again"),
            Header {
                name: "null".into(),
                value: None,
            },
            Header::new("empty", Vec::new()),
        ],
        ..keyed("h", "with headers")
    };
    let at = log
        .append("docs", vec![with_headers.clone()])
        .expect("append")[0];
    let read = log.read("docs", at.partition, at.offset, 10).expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].value, with_headers.value);
    assert_eq!(read[0].key, with_headers.key);
    assert_eq!(read[0].headers, with_headers.headers);
    assert_eq!(read[0].timestamp_ms, with_headers.timestamp_ms);
    let range = log.range("docs", at.partition).expect("range");
    assert_eq!(range.end, at.offset + 1);

    assert!(matches!(
        log.append("missing", vec![keyed("a", "b")]),
        Err(LogError::UnknownTopic { .. })
    ));
    let too_large = NewRecord {
        value: vec![b'x'; 2 << 20],
        ..keyed("big", "")
    };
    let before = log.range("docs", 0).expect("range");
    // A refused append sends none of its records, not even the small one before it.
    let small = NewRecord {
        key: None,
        ..keyed("", "small")
    };
    assert!(matches!(
        log.append("docs", vec![small, too_large]),
        Err(LogError::RecordTooLarge { .. })
    ));
    let total: u64 = (0..12)
        .map(|p| log.range("docs", p).expect("range").end)
        .sum();
    assert_eq!(total, 201);
    assert_eq!(log.range("docs", 0).expect("range"), before);
}

#[test]
fn a_consumer_polls_from_positions_seeks_back_and_reports_watermarks() {
    let broker = KafkaBroker::start();
    let log = connect(&broker, "t2");
    topic(&log, "events", 2);
    let mut by_partition: [Vec<String>; 2] = Default::default();
    for i in 0..40 {
        let value = format!("v{i}");
        let at = log
            .append("events", vec![keyed(&format!("k{i}"), &value)])
            .expect("append")[0];
        by_partition[at.partition as usize].push(value);
    }
    let mut consumer = Arc::clone(&log).consumer().expect("consumer");
    let (p0, p1) = (
        TopicPartition::new("events", 0),
        TopicPartition::new("events", 1),
    );
    consumer
        .assign(vec![(p0.clone(), 0), (p1.clone(), 2)])
        .expect("assign");
    let mut got: [Vec<String>; 2] = Default::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (got[0].len() < by_partition[0].len() || got[1].len() + 2 < by_partition[1].len())
        && Instant::now() < deadline
    {
        for fetched in consumer.poll(5, Duration::from_millis(500)).expect("poll") {
            assert!(fetched.records.len() <= 5);
            assert!(fetched.skipped.is_none());
            let values = fetched
                .records
                .iter()
                .map(|r| String::from_utf8(r.value.clone()).expect("utf-8"));
            got[fetched.partition.partition as usize].extend(values);
        }
    }
    assert_eq!(got[0], by_partition[0]);
    assert_eq!(got[1], by_partition[1][2..]);
    assert_eq!(consumer.position(&p0), Some(by_partition[0].len() as u64));

    // Caught up: no records, and the watermark says how far the partition goes.
    let polled = consumer.poll(5, Duration::from_millis(200)).expect("poll");
    let p1_fetched = polled
        .iter()
        .find(|f| f.partition == p1)
        .expect("every assigned partition is reported");
    assert!(p1_fetched.records.is_empty());
    assert_eq!(p1_fetched.high_watermark, by_partition[1].len() as u64);

    // A failed batch is read again after seeking back to its start.
    consumer.seek(&p1, 1).expect("seek");
    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while again.is_empty() && Instant::now() < deadline {
        for fetched in consumer.poll(3, Duration::from_millis(500)).expect("poll") {
            if fetched.partition == p1 {
                again.extend(fetched.records);
            }
        }
    }
    let offsets: Vec<u64> = again.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![1, 2, 3]);
    assert!(consumer.seek(&TopicPartition::new("events", 9), 0).is_err());
}

/// Records what a member was told it owns.
#[derive(Clone, Default)]
struct Owned(Arc<Mutex<BTreeSet<TopicPartition>>>);

impl AssignmentListener for Owned {
    fn assigned(&mut self, partitions: &[TopicPartition]) {
        let mut owned = self.0.lock().expect("lock");
        for tp in partitions {
            assert!(owned.insert(tp.clone()), "{tp} assigned twice");
        }
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        let mut owned = self.0.lock().expect("lock");
        for tp in partitions {
            assert!(owned.remove(tp), "{tp} revoked but not owned");
        }
    }
}

impl Owned {
    fn get(&self) -> BTreeSet<TopicPartition> {
        self.0.lock().expect("lock").clone()
    }
}

/// Polls every member until `done` holds of what each owns.
fn settle(
    members: &mut [(Box<dyn Membership>, Owned)],
    done: impl Fn(&[BTreeSet<TopicPartition>]) -> bool,
) -> Vec<BTreeSet<TopicPartition>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (member, _) in members.iter_mut() {
            member.poll(Duration::from_millis(50)).expect("poll");
        }
        let owned: Vec<_> = members.iter().map(|(_, o)| o.get()).collect();
        if done(&owned) {
            for ((member, _), owned) in members.iter().zip(&owned) {
                let held: BTreeSet<_> = member.assignment().into_iter().collect();
                assert_eq!(&held, owned);
            }
            return owned;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle: {owned:?}"
        );
    }
}

#[test]
fn members_of_a_group_split_the_partitions_and_take_over_when_one_leaves() {
    let broker = KafkaBroker::start();
    let log = connect(&broker, "t3");
    topic(&log, "split", 4);
    let topics = vec!["split".to_owned()];
    let join = |log: &Arc<KafkaLog>| {
        let owned = Owned::default();
        let member = Arc::clone(log)
            .join_group("knowledge", &topics, Box::new(owned.clone()))
            .expect("join");
        (member, owned)
    };
    let all: BTreeSet<TopicPartition> = (0..4).map(|p| TopicPartition::new("split", p)).collect();
    let disjoint_cover = |owned: &[BTreeSet<TopicPartition>]| {
        let total: usize = owned.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<_> = owned.iter().flatten().cloned().collect();
        total == all.len() && union == all && owned.iter().all(|o| !o.is_empty())
    };

    let mut members = vec![join(&log)];
    settle(&mut members, |owned| owned[0] == all);
    // A second process (its own client) joins: the partitions are split, none owned twice.
    let other = connect(&broker, "t3");
    members.push(join(&other));
    let split = settle(&mut members, disjoint_cover);
    assert_eq!(split[0].len() + split[1].len(), 4);

    // The first leaves: the second owns everything.
    let (mut leaving, leaving_owned) = members.remove(0);
    leaving.leave().expect("leave");
    assert!(leaving_owned.get().is_empty());
    settle(&mut members, |owned| owned[0] == all);
}

#[test]
fn group_offsets_are_committed_and_survive_a_broker_restart_with_every_acked_record() {
    let broker = KafkaBroker::start();
    let log = connect(&broker, "t4");
    topic(&log, "kept", 3);
    let records: Vec<NewRecord> = (0..300)
        .map(|i| keyed(&format!("k{i}"), &format!("v{i}")))
        .collect();
    let positions = log.append("kept", records).expect("append");
    let ends: Vec<u64> = (0..3)
        .map(|p| log.range("kept", p).expect("range").end)
        .collect();
    assert_eq!(ends.iter().sum::<u64>(), 300);
    log.commit_offsets(
        "profiles",
        &[
            (TopicPartition::new("kept", 0), 5),
            (TopicPartition::new("kept", 2), 7),
        ],
    )
    .expect("commit");
    assert_eq!(
        log.committed_offset("profiles", "kept", 0)
            .expect("committed"),
        Some(5)
    );
    assert_eq!(
        log.committed_offset("profiles", "kept", 1)
            .expect("committed"),
        None
    );
    drop(log);

    broker.restart();
    let log = connect(&broker, "t4");
    for p in 0..3 {
        assert_eq!(log.range("kept", p).expect("range").end, ends[p as usize]);
    }
    assert_eq!(
        log.committed_offset("profiles", "kept", 2)
            .expect("committed"),
        Some(7)
    );
    // Every acknowledged record reads back where the append said it went.
    for (i, position) in positions.iter().enumerate().step_by(37) {
        let read = log
            .read("kept", position.partition, position.offset, 1)
            .expect("read");
        assert_eq!(read[0].value, format!("v{i}").into_bytes());
    }
    let more = log
        .append("kept", vec![keyed("k0", "after")])
        .expect("append");
    assert_eq!(more[0].partition, positions[0].partition);
    assert_eq!(more[0].offset, ends[positions[0].partition as usize]);
}
