//! Changes that would make a profile invalid — larger than `max_profile_bytes`, a sum
//! over a value that is not a number, a sum that overflows — are dead-lettered with the
//! reason; the profile keeps its previous state and every other customer's changes are
//! still published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redb::Database;
use serde_json::{json, Value};
use tidewater_engine::{open_state_db, DeadLetterRecord, Engine, EngineConfig};
use tidewater_log::{EmbeddedLog, Log, NewRecord, TopicConfig};
use tidewater_metrics::Metrics;
use tidewater_profiles::{
    all_profiles, all_rows, compute_profiles, profile_by_identifier, Aggregate, AggregateKind,
    ChildConfig, CustomerId, Identifier, IdentifierColumn, Normaliser, Profile, ProfilesConfig,
    ProfilesPipeline, TableConfig,
};

const CRM: &str = "crm.public.customers";
const LOYALTY: &str = "loyalty.public.members";
const BOOKINGS: &str = "shop.public.bookings";
const OUTPUT: &str = "profiles-out";

fn email() -> IdentifierColumn {
    IdentifierColumn {
        column: "email".into(),
        namespace: "email".into(),
        normaliser: Normaliser::Email,
    }
}

fn config(max_profile_bytes: u64) -> ProfilesConfig {
    ProfilesConfig {
        tables: vec![
            TableConfig {
                table: CRM.into(),
                identifiers: vec![email()],
                attributes: vec!["name".into(), "city".into(), "notes".into()],
                priority: 2,
                child: None,
            },
            TableConfig {
                table: LOYALTY.into(),
                identifiers: vec![email()],
                attributes: vec!["tier".into()],
                priority: 1,
                child: None,
            },
            TableConfig {
                table: BOOKINGS.into(),
                identifiers: vec![],
                attributes: vec![],
                priority: 0,
                child: Some(ChildConfig {
                    link: IdentifierColumn {
                        column: "customer_email".into(),
                        ..email()
                    },
                    aggregates: vec![
                        Aggregate {
                            name: "bookings".into(),
                            kind: AggregateKind::Count,
                        },
                        Aggregate {
                            name: "booked_total".into(),
                            kind: AggregateKind::Sum {
                                column: "amount".into(),
                            },
                        },
                    ],
                }),
            },
        ],
        max_profile_bytes,
        ..ProfilesConfig::default()
    }
}

/// A Debezium record (key, value) for an insert or update of `table`.
fn change(table: &str, id: u64, after: Value) -> (Vec<u8>, Vec<u8>) {
    let mut parts = table.split('.');
    let (db, schema, name) = (parts.next(), parts.next(), parts.next());
    let value = json!({
        "before": null,
        "after": after,
        "source": { "connector": "postgresql", "name": "pg", "db": db, "schema": schema,
                    "table": name, "ts_ms": 1_000 + id, "lsn": 100 + id },
        "op": "u",
        "ts_ms": 1_000 + id,
    });
    (
        serde_json::to_vec(&json!({ "id": id })).unwrap(),
        serde_json::to_vec(&value).unwrap(),
    )
}

/// A log, a state database and the pipeline's metrics; each [`Harness::run`] runs the
/// pipeline (publishing to [`OUTPUT`]) until the given events are committed.
struct Harness {
    _dir: tempfile::TempDir,
    log: Arc<dyn Log>,
    db: Arc<Database>,
    metrics: Arc<Metrics>,
    config: ProfilesConfig,
}

impl Harness {
    fn new(config: ProfilesConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> =
            EmbeddedLog::open(dir.path().join("log"), Default::default()).unwrap();
        for topic in ["cdc", OUTPUT] {
            let config = TopicConfig {
                partitions: 2,
                ..Default::default()
            };
            log.ensure_topic(topic, &config).unwrap();
        }
        let db = Arc::new(open_state_db(&dir.path().join("profiles.redb")).unwrap());
        Self {
            _dir: dir,
            log,
            db,
            metrics: Arc::new(Metrics::default()),
            config,
        }
    }

    fn run(&self, events: Vec<(Vec<u8>, Vec<u8>)>) {
        let records = events
            .into_iter()
            .map(|(key, value)| NewRecord {
                key: Some(key),
                value,
                timestamp_ms: 0,
                headers: Vec::new(),
            })
            .collect();
        let positions: Vec<(u32, u64)> = self
            .log
            .append("cdc", records)
            .unwrap()
            .iter()
            .map(|p| (p.partition, p.offset))
            .collect();
        let pipeline = ProfilesPipeline::new("profiles", "cdc", self.config.clone(), &self.db)
            .unwrap()
            .with_output(
                Arc::clone(&self.log),
                OUTPUT,
                Arc::clone(&self.metrics),
                None,
            );
        let handle = Engine::new(
            Arc::clone(&self.log),
            Arc::clone(&self.db),
            Arc::new(pipeline),
            EngineConfig {
                batch_max_records: 8,
                poll_interval: Duration::from_millis(10),
                retry_backoff_initial: Duration::from_millis(10),
                retry_backoff_max: Duration::from_millis(50),
            },
            Arc::clone(&self.metrics),
        )
        .start(&TopicConfig::default())
        .unwrap();
        assert!(handle
            .watcher()
            .wait_committed(&positions, Duration::from_secs(30)));
        handle.stop();
    }

    fn by(&self, identifier: &str) -> Option<Profile> {
        profile_by_identifier(&self.db, &Identifier::parse(identifier).unwrap()).unwrap()
    }

    fn letters(&self) -> Vec<DeadLetterRecord> {
        self.log
            .read(&DeadLetterRecord::topic_for("profiles"), 0, 0, 100)
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.value).unwrap())
            .collect()
    }

    /// Profile changes on the output topic, by customer id.
    fn published(&self) -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for partition in 0..2 {
            for r in self.log.read(OUTPUT, partition, 0, 1_000).unwrap() {
                let key = String::from_utf8(r.key.unwrap()).unwrap();
                out.entry(key)
                    .or_default()
                    .push(serde_json::from_slice(&r.value).unwrap());
            }
        }
        out
    }

    fn assert_profiles_match_the_rows(&self) {
        assert_profiles_match_the_rows(&self.db, &self.config);
    }
}

/// The stored profiles are those the stored rows make (customer ids aside).
fn assert_profiles_match_the_rows(db: &Database, config: &ProfilesConfig) {
    let without_id = |profiles: Vec<Profile>| -> BTreeMap<Vec<String>, Profile> {
        profiles
            .into_iter()
            .map(|mut p| {
                p.customer_id = CustomerId::new(0);
                let key = p.records.iter().map(|r| format!("{r:?}")).collect();
                (key, p)
            })
            .collect()
    };
    let expected = compute_profiles(config, &all_rows(db).unwrap()).unwrap();
    assert_eq!(without_id(all_profiles(db).unwrap()), without_id(expected));
}

/// N4: three change events of one customer, each under the log's maximum record size,
/// merged into a profile larger than it; publishing that profile failed at the head of
/// the outbox for ever, so no later profile change of any customer was published.
#[test]
fn n4_a_change_that_would_make_a_profile_too_large_is_dead_lettered() {
    let h = Harness::new(config(10_000));
    let big = |c: char| c.to_string().repeat(4_000);
    h.run(vec![change(
        CRM,
        1,
        json!({"id": 1, "email": "big@example.com", "name": big('A')}),
    )]);
    h.run(vec![change(
        CRM,
        1,
        json!({"id": 1, "email": "big@example.com", "name": big('A'), "city": big('B')}),
    )]);
    let before = h.by("email:big@example.com").unwrap();
    assert_eq!(before.attributes["city"], json!(big('B')));

    // In one batch: the change that would take big@ over the limit, a change of another
    // customer, and one that takes big@ further still.
    h.run(vec![
        change(
            LOYALTY,
            7,
            json!({"id": 7, "email": "big@example.com", "tier": big('C')}),
        ),
        change(
            CRM,
            2,
            json!({"id": 2, "email": "later@example.com", "name": "Later"}),
        ),
        change(
            CRM,
            1,
            json!({"id": 1, "email": "big@example.com", "name": big('A'), "city": big('B'),
                   "notes": big('D')}),
        ),
    ]);
    assert_eq!(
        h.by("email:big@example.com").unwrap(),
        before,
        "the profile keeps its previous state"
    );
    let later = h.by("email:later@example.com").unwrap();
    assert_eq!(later.attributes["name"], json!("Later"));
    let published = h.published();
    assert_eq!(
        published[&later.customer_id.to_string()],
        [serde_json::to_value(&later).unwrap()]
    );
    assert_eq!(
        published[&before.customer_id.to_string()].len(),
        2,
        "no change published for the refused ones"
    );

    let letters = h.letters();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert!(
            letter.reason.contains("max_profile_bytes (10000)"),
            "{}",
            letter.reason
        );
        assert!(letter.value().unwrap().len() > 4_000);
    }
    assert_eq!(h.metrics.dead_letters.with(&["profiles", "cdc"]).get(), 2);
    assert!(h
        .metrics
        .watchdog
        .unhealthy()
        .iter()
        .all(|c| !c.component.starts_with("outbox")));
    h.assert_profiles_match_the_rows();

    // A small change of the refused row still applies.
    h.run(vec![change(
        LOYALTY,
        7,
        json!({"id": 7, "email": "big@example.com", "tier": "gold"}),
    )]);
    let after = h.by("email:big@example.com").unwrap();
    assert_eq!(after.attributes["tier"], json!("gold"));
    assert_eq!(after.records.len(), 2);
    h.assert_profiles_match_the_rows();
}

/// L6: a booking with `"amount": "lots"` was counted and added 0 to the sum, and two
/// amounts of 1e308 made the sum infinite, stored as null; neither was dead-lettered.
#[test]
fn l6_a_sum_is_never_silently_zero_or_null() {
    let h = Harness::new(config(1 << 20));
    let booking = |id: u64, amount: Value| {
        change(
            BOOKINGS,
            id,
            json!({"id": id, "customer_email": "b@example.com", "amount": amount}),
        )
    };
    h.run(vec![
        change(
            CRM,
            9,
            json!({"id": 9, "email": "b@example.com", "name": "B"}),
        ),
        booking(1, json!(1e308)),
        booking(2, json!("lots")),
        booking(3, json!("inf")),
        booking(4, json!({"value": 3})),
        booking(5, Value::Null),
        booking(6, json!("12.5")),
    ]);
    h.run(vec![booking(7, json!(1e308))]);
    let b = h.by("email:b@example.com").unwrap();
    assert_eq!(b.aggregates["booked_total"], json!(1e308 + 12.5));
    assert_eq!(b.aggregates["bookings"], json!(3), "{b:?}");

    let mut reasons: Vec<(String, String)> = h
        .letters()
        .iter()
        .map(|l| {
            (
                l.key()
                    .unwrap()
                    .map(|k| String::from_utf8(k).unwrap())
                    .unwrap(),
                l.reason.clone(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for (key, reason) in &reasons[..3] {
        assert!(
            reason.contains("not a finite number") && reason.contains("booked_total"),
            "{key}: {reason}"
        );
    }
    let (key, reason) = &reasons[3];
    assert_eq!(key, "{\"id\":7}");
    assert!(reason.contains("would not be finite"), "{reason}");
    assert_eq!(h.metrics.dead_letters.with(&["profiles", "cdc"]).get(), 4);
    h.assert_profiles_match_the_rows();
}

#[test]
fn a_max_profile_bytes_of_zero_is_refused() {
    let error = config(0).validate().unwrap_err();
    assert!(error.to_string().contains("max_profile_bytes"), "{error}");
}

// ---------------------------------------------------------------------------------------
// Against the oracle: whatever is refused, the stored profiles are those the stored rows
// make, and every one of them is valid.

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        table: usize,
        key: u64,
        email: usize,
        size: usize,
        amount: usize,
    },
    Delete {
        table: usize,
        key: u64,
    },
}

const TABLES: [&str; 3] = [CRM, LOYALTY, BOOKINGS];
const EMAILS: [&str; 3] = ["a@example.com", "b@example.com", "c@example.com"];
const AMOUNTS: [f64; 4] = [1.0, 1e308, -1e308, 2.5];
const MAX_PROFILE_BYTES: u64 = 1_500;

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..3usize, 0..4u64, 0..EMAILS.len(), 0..700usize, 0..AMOUNTS.len())
            .prop_map(|(table, key, email, size, amount)| Op::Upsert {
                table, key, email, size, amount,
            }),
        1 => (0..3usize, 0..4u64).prop_map(|(table, key)| Op::Delete { table, key }),
    ]
}

fn event(op: &Op) -> (Vec<u8>, Vec<u8>) {
    match op {
        Op::Upsert {
            table,
            key,
            email,
            size,
            amount,
        } => {
            let text = "x".repeat(*size);
            let after = match TABLES[*table] {
                CRM => json!({"id": key, "email": EMAILS[*email], "name": text}),
                LOYALTY => json!({"id": key, "email": EMAILS[*email], "tier": text}),
                _ => json!({"id": key, "customer_email": EMAILS[*email],
                            "amount": AMOUNTS[*amount]}),
            };
            change(TABLES[*table], *key, after)
        }
        Op::Delete { table, key } => {
            let (key, mut value) = change(TABLES[*table], *key, Value::Null);
            let mut v: Value = serde_json::from_slice(&value).unwrap();
            v["op"] = json!("d");
            value = serde_json::to_vec(&v).unwrap();
            (key, value)
        }
    }
}

fn run_refusing_batches(batches: &[Vec<Op>]) {
    use tidewater_engine::Pipeline;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("p.redb")).unwrap();
    let config = config(MAX_PROFILE_BYTES);
    let pipeline = ProfilesPipeline::new("profiles", "cdc", config.clone(), &db).unwrap();
    let mut offset = 0;
    for batch in batches {
        let records: Vec<tidewater_log::Record> = batch
            .iter()
            .map(|op| {
                let (key, value) = event(op);
                offset += 1;
                tidewater_log::Record {
                    partition: 0,
                    offset,
                    timestamp_ms: 0,
                    key: Some(key),
                    value,
                    headers: Vec::new(),
                }
            })
            .collect();
        let prepared = pipeline.prepare(&db, &records).unwrap();
        let txn = db.begin_write().unwrap();
        pipeline.apply(&txn, prepared.batch).unwrap();
        txn.commit().unwrap();
        assert_profiles_match_the_rows(&db, &config);
        for profile in all_profiles(&db).unwrap() {
            let bytes = serde_json::to_vec(&profile).unwrap().len() as u64;
            assert!(bytes <= MAX_PROFILE_BYTES, "{bytes} bytes: {profile:?}");
            if let Some(total) = profile.aggregates.get("booked_total") {
                assert!(total.is_number(), "{profile:?}");
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

    #[test]
    fn refused_changes_leave_valid_profiles_that_match_the_rows(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 1..=8), 1..=6)
    ) {
        run_refusing_batches(&batches);
    }
}
