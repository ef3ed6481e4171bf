//! Leases held through a consumer group on a real Kafka-protocol broker: one member
//! holds a lease at a time, another takes it over when the holder leaves, and a replica's
//! outbox published under the lease puts each entry on the topic once across the
//! handover.
#![cfg(feature = "kafka")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewater_engine::{open_state_db, Handover, Lease, Outbox, OutboxEntry};
use tidewater_log::kafka::KafkaLog;
use tidewater_log::{KafkaConfig, Log, TopicConfig};
use tidewater_metrics::Metrics;
use tidewater_testkit::KafkaBroker;

fn member(broker: &KafkaBroker) -> Arc<dyn Log> {
    let config = KafkaConfig {
        brokers: broker.bootstrap().to_owned(),
        group: "lease-test".to_owned(),
        client_id: None,
        // The broker's minimum: a member that stops answering is replaced quickly.
        properties: BTreeMap::from([("session.timeout.ms".to_owned(), "6000".to_owned())]),
    };
    KafkaLog::connect(&config, 1 << 20).expect("connect")
}

fn until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn entries(range: std::ops::Range<u32>) -> Vec<OutboxEntry> {
    range
        .map(|n| OutboxEntry {
            key: Some(format!("window-{n}").into_bytes()),
            value: format!("kpi {n}").into_bytes(),
            timestamp_ms: 1_700_000_000_000 + i64::from(n),
        })
        .collect()
}

#[test]
fn one_member_holds_a_lease_and_another_takes_it_over_with_the_outbox() {
    let broker = KafkaBroker::start();
    let (log_a, log_b) = (member(&broker), member(&broker));
    log_a
        .ensure_topic(
            "kpis",
            &TopicConfig {
                partitions: 3,
                ..TopicConfig::default()
            },
        )
        .unwrap();
    let a = Lease::join(Arc::clone(&log_a), "analytics").unwrap();
    let b = Lease::join(Arc::clone(&log_b), "analytics").unwrap();
    // How often each member acquired the lease.
    let counter = |lease: &Lease| {
        let acquired = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&acquired);
        lease.on_acquire(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        acquired
    };
    let (acquired_a, acquired_b) = (counter(&a), counter(&b));
    until("one holder", Duration::from_secs(60), || {
        a.is_held() || b.is_held()
    });
    // Never both: watch for a while.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        assert!(!(a.is_held() && b.is_held()), "both members hold the lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (holder, holder_log, other, other_log, other_acquired) = match a.is_held() {
        true => (a, log_a, b, log_b, acquired_b),
        false => (b, log_b, a, log_a, acquired_a),
    };
    assert!(!other.is_held());

    // Two replicas record the same KPI entries; only the holder's reach the topic.
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::default();
    let holder_db = open_state_db(&dir.path().join("holder.redb")).unwrap();
    let other_db = open_state_db(&dir.path().join("other.redb")).unwrap();
    let holder_outbox = Outbox::new("kpis", "kpis").leased(Arc::clone(&holder), Handover::Sequence);
    let other_outbox = Outbox::new("kpis", "kpis").leased(Arc::clone(&other), Handover::Sequence);
    let record = |db: &redb::Database, outbox: &Outbox, range| {
        let txn = db.begin_write().unwrap();
        outbox.record(&txn, entries(range)).unwrap();
        txn.commit().unwrap();
    };
    record(&holder_db, &holder_outbox, 0..6);
    record(&other_db, &other_outbox, 0..4);
    assert_eq!(
        holder_outbox
            .publish(&holder_db, holder_log.as_ref(), &metrics)
            .unwrap(),
        6
    );
    assert_eq!(
        other_outbox
            .publish(&other_db, other_log.as_ref(), &metrics)
            .unwrap(),
        0
    );
    // The holder records more and leaves before publishing them.
    record(&holder_db, &holder_outbox, 6..9);
    record(&other_db, &other_outbox, 4..9);
    assert_eq!(other_acquired.load(Ordering::SeqCst), 0);
    holder.release();
    until("the takeover", Duration::from_secs(60), || other.is_held());
    until("the acquisition work", Duration::from_secs(5), || {
        other_acquired.load(Ordering::SeqCst) == 1
    });
    assert_eq!(
        other_outbox
            .publish(&other_db, other_log.as_ref(), &metrics)
            .unwrap(),
        3
    );

    let mut values = Vec::new();
    for partition in 0..3 {
        let end = other_log.range("kpis", partition).unwrap().end;
        let mut next = 0;
        while next < end {
            let records = other_log.read("kpis", partition, next, 100).unwrap();
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            values.extend(
                records
                    .into_iter()
                    .map(|r| String::from_utf8(r.value).unwrap()),
            );
        }
    }
    values.sort();
    let mut expected: Vec<String> = (0..9).map(|n| format!("kpi {n}")).collect();
    expected.sort();
    assert_eq!(values, expected, "each KPI once, across the handover");
    other.release();
}
