//! The profiles pipeline end to end: Debezium events of three tables (CRM customers,
//! loyalty members, bookings as a child table) through the log and the engine into merged
//! profiles; and the incrementally maintained profiles against a from-scratch
//! recomputation on random interleavings of inserts, updates and deletes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use redb::Database;
use serde_json::{json, Value};
use tidewater_engine::{open_state_db, DeadLetterRecord, Engine, EngineConfig, Pipeline};
use tidewater_log::{EmbeddedLog, Log, NewRecord, Record, TopicConfig};
use tidewater_metrics::Metrics;
use tidewater_profiles::{
    all_profiles, compute_profiles, profile, profile_by_identifier, Aggregate, AggregateKind,
    ChildConfig, CustomerId, GraphConfig, Identifier, IdentifierColumn, MergePolicy, Normaliser,
    Profile, ProfilesConfig, ProfilesPipeline, RecordId, StoredRow, TableConfig,
};

const CRM: &str = "crm.public.customers";
const LOYALTY: &str = "loyalty.public.members";
const BOOKINGS: &str = "shop.public.bookings";
const TABLES: [&str; 3] = [CRM, LOYALTY, BOOKINGS];

fn column(column: &str, namespace: &str, normaliser: Normaliser) -> IdentifierColumn {
    IdentifierColumn {
        column: column.into(),
        namespace: namespace.into(),
        normaliser,
    }
}

fn config() -> ProfilesConfig {
    let email = || column("email", "email", Normaliser::Email);
    ProfilesConfig {
        tables: vec![
            TableConfig {
                table: CRM.into(),
                identifiers: vec![
                    email(),
                    column(
                        "phone",
                        "phone",
                        Normaliser::Phone {
                            default_region: "US".into(),
                        },
                    ),
                ],
                attributes: vec!["name".into(), "city".into()],
                priority: 2,
                child: None,
            },
            TableConfig {
                table: LOYALTY.into(),
                identifiers: vec![email()],
                attributes: vec!["name".into(), "tier".into(), "city".into()],
                priority: 1,
                child: None,
            },
            TableConfig {
                table: BOOKINGS.into(),
                identifiers: vec![],
                attributes: vec![],
                priority: 0,
                child: Some(ChildConfig {
                    link: column("customer_email", "email", Normaliser::Email),
                    aggregates: vec![
                        Aggregate {
                            name: "bookings".into(),
                            kind: AggregateKind::Count,
                        },
                        Aggregate {
                            name: "total".into(),
                            kind: AggregateKind::Sum {
                                column: "amount".into(),
                            },
                        },
                        Aggregate {
                            name: "max_amount".into(),
                            kind: AggregateKind::Max {
                                column: "amount".into(),
                            },
                        },
                    ],
                }),
            },
        ],
        graph: GraphConfig {
            max_cluster_size: usize::MAX,
            ..GraphConfig::default()
        },
        policies: [
            ("city".to_owned(), MergePolicy::SourcePriority),
            ("tier".to_owned(), MergePolicy::CollectList),
        ]
        .into(),
        ..ProfilesConfig::default()
    }
}

/// A Debezium record (key, value) for a change of `table` (`db.public.name`).
fn debezium(table: &str, id: u64, op: &str, after: Option<Value>, ts: i64) -> (Vec<u8>, Vec<u8>) {
    let mut parts = table.split('.');
    let (db, schema, name) = (parts.next(), parts.next(), parts.next());
    let key = json!({ "id": id });
    let value = json!({
        "before": null,
        "after": after,
        "source": { "connector": "postgresql", "name": "pg", "db": db, "schema": schema,
                    "table": name, "ts_ms": ts, "lsn": 100 + ts },
        "op": op,
        "ts_ms": ts,
    });
    (
        serde_json::to_vec(&key).unwrap(),
        serde_json::to_vec(&value).unwrap(),
    )
}

fn record_key(id: u64) -> String {
    format!("{{\"id\":{id}}}")
}

// ---------------------------------------------------------------------------------------
// End to end over the log and the engine.

fn engine_config() -> EngineConfig {
    EngineConfig {
        batch_max_records: 4,
        poll_interval: Duration::from_millis(10),
        retry_backoff_initial: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(50),
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    log: Arc<dyn Log>,
    db: Arc<Database>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> =
            EmbeddedLog::open(dir.path().join("log"), Default::default()).unwrap();
        log.ensure_topic(
            "cdc",
            &TopicConfig {
                partitions: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let db = Arc::new(open_state_db(&dir.path().join("profiles.redb")).unwrap());
        Self { _dir: dir, log, db }
    }

    /// Appends the events and runs the engine until all are committed.
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
        let pipeline = ProfilesPipeline::new("profiles", "cdc", config(), &self.db).unwrap();
        let handle = Engine::new(
            Arc::clone(&self.log),
            Arc::clone(&self.db),
            Arc::new(pipeline),
            engine_config(),
            Arc::new(Metrics::default()),
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
}

#[test]
fn profiles_merge_split_aggregate_and_dead_letter() {
    let h = Harness::new();
    h.run(vec![
        debezium(
            CRM,
            1,
            "c",
            Some(json!({"id": 1, "name": "Ana", "city": "Lisbon",
            "email": " Ana@Example.com", "phone": "(415) 555-0123"})),
            1_000,
        ),
        debezium(
            CRM,
            2,
            "c",
            Some(json!({"id": 2, "name": "Bo", "email": "bo@example.com",
            "phone": "not a phone"})),
            1_001,
        ),
        debezium(
            BOOKINGS,
            10,
            "c",
            Some(json!({"id": 10, "customer_email": "ANA@example.com",
            "amount": 120})),
            1_002,
        ),
        debezium(
            BOOKINGS,
            11,
            "c",
            Some(json!({"id": 11, "customer_email": "ana@example.com",
            "amount": "80"})),
            1_003,
        ),
        (b"{\"id\": 3}".to_vec(), b"{ not json".to_vec()),
        debezium(
            BOOKINGS,
            12,
            "c",
            Some(json!({"id": 12, "customer_email": "bo@example.com",
            "amount": 5})),
            1_004,
        ),
    ]);
    let ana = h.by("email:ana@example.com").unwrap();
    assert_eq!(ana.attributes["name"], json!("Ana"));
    assert_eq!(ana.aggregates["bookings"], json!(2));
    assert_eq!(ana.aggregates["total"], json!(200));
    assert_eq!(ana.aggregates["max_amount"], json!(120));
    assert_eq!(
        h.by("phone:+14155550123").unwrap().customer_id,
        ana.customer_id
    );
    let bo = h.by("email:bo@example.com").unwrap();
    assert_eq!(bo.aggregates["total"], json!(5));
    assert_eq!(
        bo.identifiers,
        vec!["email:bo@example.com"],
        "bad phone ignored"
    );

    // A loyalty member with Ana's email merges into her; the newer name wins, the city
    // follows source priority (CRM), the tier is collected.
    h.run(vec![debezium(
        LOYALTY,
        7,
        "c",
        Some(json!({"id": 7, "name": "Ana Silva",
        "email": "ana@example.com", "tier": "gold", "city": "Porto"})),
        2_000,
    )]);
    let merged = h.by("email:ana@example.com").unwrap();
    assert_eq!(merged.customer_id, ana.customer_id);
    assert_eq!(merged.records.len(), 2);
    assert_eq!(merged.attributes["name"], json!("Ana Silva"));
    assert_eq!(merged.provenance["name"].table, LOYALTY);
    assert_eq!(merged.attributes["city"], json!("Lisbon"));
    assert_eq!(merged.attributes["tier"], json!(["gold"]));
    assert_eq!(merged.aggregates["bookings"], json!(2));

    // The CRM row's email changes: the customer splits; the phone stays with the CRM row,
    // the bookings follow the email to the loyalty member.
    h.run(vec![debezium(
        CRM,
        1,
        "u",
        Some(json!({"id": 1, "name": "Ana", "city": "Lisbon",
        "email": "ana@work.example", "phone": "(415) 555-0123"})),
        3_000,
    )]);
    let crm = h.by("phone:+14155550123").unwrap();
    let loyalty = h.by("email:ana@example.com").unwrap();
    assert_ne!(crm.customer_id, loyalty.customer_id);
    assert_eq!(crm.aggregates["bookings"], json!(0));
    assert_eq!(loyalty.aggregates["bookings"], json!(2));
    assert_eq!(loyalty.attributes["name"], json!("Ana Silva"));

    // A booking update and a delete keep count and total right.
    h.run(vec![
        debezium(
            BOOKINGS,
            10,
            "u",
            Some(json!({"id": 10, "customer_email": "ana@example.com",
            "amount": 150})),
            4_000,
        ),
        debezium(BOOKINGS, 11, "d", None, 4_001),
        (b"{\"id\": 11}".to_vec(), Vec::new()),
        debezium(
            BOOKINGS,
            12,
            "u",
            Some(json!({"id": 12, "customer_email": "ana@example.com",
            "amount": 5})),
            4_002,
        ),
    ]);
    let loyalty = h.by("email:ana@example.com").unwrap();
    assert_eq!(loyalty.aggregates["bookings"], json!(2));
    assert_eq!(loyalty.aggregates["total"], json!(155));
    assert_eq!(
        h.by("email:bo@example.com").unwrap().aggregates["bookings"],
        json!(0)
    );

    // Deleting the loyalty row removes that customer; the old id no longer resolves.
    h.run(vec![debezium(LOYALTY, 7, "d", None, 5_000)]);
    assert!(h.by("email:ana@example.com").is_none());
    assert!(profile(&h.db, loyalty.customer_id).unwrap().is_none());
    assert!(profile(&h.db, crm.customer_id).unwrap().is_some());

    let letters = h
        .log
        .read(&DeadLetterRecord::topic_for("profiles"), 0, 0, 10)
        .unwrap();
    assert_eq!(letters.len(), 1);
    let letter: DeadLetterRecord = serde_json::from_slice(&letters[0].value).unwrap();
    assert!(letter.reason.contains("JSON"), "{}", letter.reason);
}

// ---------------------------------------------------------------------------------------
// Incremental against from scratch.

const KEYS: u64 = 4;
const EMAILS: [&str; 5] = [
    "ana@example.com",
    "BO@example.com ",
    "cy@example.com",
    "not-an-email",
    "",
];
const PHONES: [&str; 3] = ["(415) 555-0123", "+1 415 555 0199", "12"];

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        table: usize,
        key: u64,
        email: usize,
        phone: Option<usize>,
        name: u8,
        amount: i64,
        ts: i64,
    },
    Delete {
        table: usize,
        key: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..KEYS, 0..EMAILS.len(), prop::option::of(0..PHONES.len()),
              0..3u8, -5..100i64, 0..4i64)
            .prop_map(|(table, key, email, phone, name, amount, ts)| Op::Upsert {
                table, key, email, phone, name, amount, ts,
            }),
        1 => (0..3usize, 0..KEYS).prop_map(|(table, key)| Op::Delete { table, key }),
    ]
}

fn row_of(op: &Op) -> Option<Value> {
    let Op::Upsert {
        table,
        key,
        email,
        phone,
        name,
        amount,
        ..
    } = op
    else {
        return None;
    };
    let name = format!("n{name}");
    Some(match TABLES[*table] {
        CRM => json!({"id": key, "name": name, "city": format!("c{amount}"),
            "email": EMAILS[*email], "phone": phone.map(|p| PHONES[p])}),
        LOYALTY => json!({"id": key, "name": name, "tier": format!("t{}", amount % 3),
            "email": EMAILS[*email], "city": null}),
        _ => json!({"id": key, "customer_email": EMAILS[*email], "amount": amount}),
    })
}

/// Profiles keyed by their member records, without the customer id (from-scratch ids
/// differ from incremental ones).
fn by_members(profiles: Vec<Profile>) -> BTreeMap<Vec<(String, String)>, Profile> {
    profiles
        .into_iter()
        .map(|mut p| {
            p.customer_id = CustomerId::new(0);
            let key = p
                .records
                .iter()
                .map(|r| (r.table.clone(), r.key.clone()))
                .collect();
            (key, p)
        })
        .collect()
}

fn run_batches(batches: &[Vec<Op>]) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("p.redb")).unwrap();
    let config = config();
    let pipeline = ProfilesPipeline::new("profiles", "cdc", config.clone(), &db).unwrap();
    let mut rows: BTreeMap<RecordId, StoredRow> = BTreeMap::new();
    let mut offset = 0;
    for batch in batches {
        let mut records = Vec::new();
        for op in batch {
            let (table, key, ts) = match op {
                Op::Upsert { table, key, ts, .. } => (*table, *key, *ts),
                Op::Delete { table, key } => (*table, *key, 0),
            };
            let record = RecordId::new(TABLES[table], record_key(key));
            let (k, v) = match row_of(op) {
                Some(after) => {
                    rows.insert(
                        record,
                        StoredRow {
                            after: after.as_object().unwrap().clone(),
                            event_time_ms: ts,
                        },
                    );
                    debezium(TABLES[table], key, "u", Some(after), ts)
                }
                None => {
                    rows.remove(&record);
                    debezium(TABLES[table], key, "d", None, ts)
                }
            };
            records.push(Record {
                partition: 0,
                offset,
                timestamp_ms: 0,
                key: Some(k),
                value: v,
                headers: Vec::new(),
            });
            offset += 1;
        }
        let prepared = pipeline.prepare(&db, &records).unwrap();
        assert!(prepared.dead_letters.is_empty());
        let txn = db.begin_write().unwrap();
        pipeline.apply(&txn, prepared.batch).unwrap();
        txn.commit().unwrap();

        let stored = all_profiles(&db).unwrap();
        for p in &stored {
            assert_eq!(profile(&db, p.customer_id).unwrap().as_ref(), Some(p));
            for identifier in &p.identifiers {
                let found =
                    profile_by_identifier(&db, &Identifier::parse(identifier).unwrap()).unwrap();
                assert_eq!(found.map(|f| f.customer_id), Some(p.customer_id));
            }
        }
        let expected = compute_profiles(&config, &rows).unwrap();
        assert_eq!(by_members(stored), by_members(expected));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn incremental_profiles_equal_a_recomputation(
        batches in prop::collection::vec(prop::collection::vec(op(), 1..=8), 1..=8)
    ) {
        run_batches(&batches);
    }
}
