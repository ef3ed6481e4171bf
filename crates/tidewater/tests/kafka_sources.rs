//! `[[sources.kafka]]` against a real Kafka-protocol broker: Debezium topics written by a
//! producer (keys, schema envelopes, tombstones, a multi-row transaction, transaction
//! metadata, a record that is not JSON) give the same profiles as the same events posted
//! over HTTP to an embedded Tidewater; a documents topic is indexed; bad records reach the
//! pipelines' dead-letter topics on the broker, and the rest goes on. With pgvector, one
//! member owns the profiles and KPI state in PostgreSQL and the others read it; the next
//! owner takes it over as committed. Without, two members keep whole profile replicas;
//! one of them publishes the profiles and lists a shared folder, and the other takes both
//! over when it leaves.
#![cfg(feature = "kafka")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tidewater_log::kafka::KafkaLog;
use tidewater_log::{KafkaConfig, Log, NewRecord, TopicConfig};
use tidewater_testkit::KafkaBroker;

const PROFILES: &str = r#"
[profiles]
topic = "changes"

[[profiles.tables]]
table = "crm.public.customers"
identifiers = [{ column = "email", namespace = "email", normaliser = "email" }]
attributes = ["name", "city"]

[[profiles.tables]]
table = "loyalty.public.members"
identifiers = [{ column = "email", namespace = "email", normaliser = "email" }]
attributes = ["name", "tier"]
"#;

/// A Debezium change value of `db.public.table` (no schema).
fn change(db: &str, table: &str, op: &str, after: Value, before: Value, ts: i64, tx: i64) -> Value {
    json!({
        "op": op, "ts_ms": ts, "before": before, "after": after,
        "source": {"connector": "postgresql", "name": db, "db": db, "schema": "public",
                   "table": table, "lsn": 1000 + ts, "txId": tx, "ts_ms": ts},
        "transaction": {"id": format!("{tx}:{}", 1000 + ts), "total_order": 1, "data_collection_order": 1},
    })
}

/// The JSON converter with schemas on: the same change inside `{"schema", "payload"}`.
fn with_schema(payload: Value) -> Value {
    json!({"schema": {"type": "struct", "name": "crm.public.customers.Envelope", "optional": false, "fields": []},
           "payload": payload})
}

/// The records of the Debezium topics, as (topic, key, value); `None` is a tombstone.
fn debezium_records() -> Vec<(&'static str, Option<Value>, Option<Value>)> {
    let ana = json!({"id": 1, "name": "Ana Lima", "email": "ana@example.com", "city": "Lisbon"});
    let bob = json!({"id": 2, "name": "Bob", "email": "bob@example.com", "city": "Porto"});
    let cy = json!({"id": 3, "name": "Cy", "email": "cy@example.com", "city": "Faro"});
    let crm = "crm.public.customers";
    vec![
        (
            crm,
            Some(json!({"id": 1})),
            Some(with_schema(change(
                "crm",
                "customers",
                "c",
                ana.clone(),
                Value::Null,
                1,
                10,
            ))),
        ),
        (
            crm,
            Some(json!({"id": 1})),
            Some(change(
                "crm",
                "customers",
                "u",
                json!({"id": 1, "name": "Ana Lima", "email": "ana@example.com", "city": "Braga"}),
                ana,
                5,
                11,
            )),
        ),
        // One transaction, two rows.
        (
            crm,
            Some(json!({"id": 2})),
            Some(change("crm", "customers", "c", bob, Value::Null, 6, 12)),
        ),
        (
            crm,
            Some(json!({"id": 3})),
            Some(change(
                "crm",
                "customers",
                "c",
                cy.clone(),
                Value::Null,
                6,
                12,
            )),
        ),
        (
            "crm.transaction",
            Some(json!({"id": "12:1006"})),
            Some(
                json!({"status": "END", "id": "12:1006", "event_count": 2, "data_collections": [
                {"data_collection": "public.customers", "event_count": 2}]}),
            ),
        ),
        // A delete and its tombstone.
        (
            crm,
            Some(json!({"id": 3})),
            Some(change("crm", "customers", "d", Value::Null, cy, 8, 13)),
        ),
        (crm, Some(json!({"id": 3})), None),
        (
            "loyalty.public.members",
            Some(json!({"id": 7})),
            Some(change(
                "loyalty",
                "members",
                "c",
                json!({"id": 7, "name": "Ana L.", "email": " ANA@example.com", "tier": "gold"}),
                Value::Null,
                2,
                20,
            )),
        ),
    ]
}

fn producer(broker: &KafkaBroker) -> std::sync::Arc<KafkaLog> {
    let config = KafkaConfig {
        brokers: broker.bootstrap().to_owned(),
        group: "kt".into(),
        client_id: None,
        properties: BTreeMap::new(),
    };
    KafkaLog::connect(&config, 1 << 20).expect("producer")
}

fn produce(log: &KafkaLog, topic: &str, key: Option<Vec<u8>>, value: Vec<u8>) {
    log.append(
        topic,
        vec![NewRecord {
            key,
            value,
            timestamp_ms: tidewater_core::time::now_ms(),
            headers: Vec::new(),
        }],
    )
    .expect("produce");
}

/// Every file under `dir`, recursively (none if it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files
}

/// What must agree between the two runs: attributes, provenance and linked records.
fn comparable(profile: &Value) -> Value {
    let mut records: Vec<String> = profile["records"]
        .as_array()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    records.sort();
    json!({"attributes": profile["attributes"], "provenance": profile["provenance"], "records": records})
}

fn dead_letters(log: &KafkaLog, topic: &str) -> Vec<Value> {
    let Ok(range) = log.range(topic, 0) else {
        return Vec::new();
    };
    log.read(topic, 0, range.start, 100)
        .expect("read dead letters")
        .iter()
        .map(|r| serde_json::from_slice(&r.value).expect("json"))
        .collect()
}

#[test]
fn kafka_topics_feed_profiles_and_knowledge_like_http_does() {
    let broker = KafkaBroker::start();
    let producer = producer(&broker);
    for (topic, partitions) in [
        ("crm.public.customers", 3),
        ("crm.transaction", 1),
        ("loyalty.public.members", 1),
        ("docs.incoming", 2),
    ] {
        producer
            .ensure_topic(
                topic,
                &TopicConfig {
                    partitions,
                    ..TopicConfig::default()
                },
            )
            .expect("topic");
    }
    for (topic, key, value) in debezium_records() {
        let value = value
            .map(|v| v.to_string().into_bytes())
            .unwrap_or_default();
        produce(
            &producer,
            topic,
            key.map(|k| k.to_string().into_bytes()),
            value,
        );
    }
    produce(
        &producer,
        "crm.public.customers",
        None,
        b"not json at all".to_vec(),
    );
    for doc in [
        json!({"id": "tides", "text": "The tide rises twice a day in the harbour of Porto.", "metadata": {"lang": "en"}}),
        json!({"id": "gone", "text": "A document that is deleted right away."}),
        json!({"id": "gone", "deleted": true}),
        json!({"text": "a record without an id"}),
    ] {
        // Keyed by id, as a producer keeps one document's versions in order.
        let key = doc["id"].as_str().map(|id| id.as_bytes().to_vec());
        produce(
            &producer,
            "docs.incoming",
            key,
            doc.to_string().into_bytes(),
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let kafka_config = dir.path().join("kafka.toml");
    std::fs::write(
        &kafka_config,
        format!(
            r#"{PROFILES}
[log]
backend = "kafka"
[log.kafka]
brokers = "{}"
group = "kt"

[[sources.kafka]]
name = "crm"
topics = ["crm.public.customers", "crm.transaction", "loyalty.public.members"]
format = "debezium"
into = "profiles"

[[sources.kafka]]
topics = ["docs.incoming"]
format = "documents"
into = "knowledge"
"#,
            broker.bootstrap()
        ),
    )
    .unwrap();
    let embedded_config = dir.path().join("embedded.toml");
    std::fs::write(&embedded_config, PROFILES).unwrap();

    let mut on_kafka = Tidewater::start(
        &docs,
        &dir.path().join("kafka-data"),
        &["--config", kafka_config.to_str().unwrap()],
    );
    let mut over_http = Tidewater::start(
        &docs,
        &dir.path().join("http-data"),
        &["--config", embedded_config.to_str().unwrap()],
    );
    on_kafka.wait_ready(Duration::from_secs(120));
    over_http.wait_ready(Duration::from_secs(120));
    // The same records over HTTP, as `{"key", "value"}` (tombstones and markers are not
    // changes, so a client posting changes has none).
    let posted: Vec<Value> = debezium_records()
        .into_iter()
        .filter(|(topic, _, value)| value.is_some() && !topic.ends_with(".transaction"))
        .map(|(_, key, value)| json!({"key": key, "value": value}))
        .collect();
    let (status, body) = over_http.json(
        "POST",
        "/v1/events/changes",
        Some(&Value::Array(posted).to_string()),
    );
    assert_eq!(status, 202, "{body}");

    let profile = |tw: &Tidewater, identifier: &str| {
        tw.json("GET", &format!("/v1/profiles/{identifier}"), None)
    };
    eventually(
        Duration::from_secs(60),
        "both have Ana in Braga with her loyalty tier",
        || {
            [&on_kafka, &over_http].iter().all(|tw| {
                let (status, ana) = profile(tw, "email:ana@example.com");
                status == 200
                    && ana["attributes"]["city"] == "Braga"
                    && ana["attributes"]["tier"] == "gold"
            })
        },
    );
    eventually(
        Duration::from_secs(30),
        "Bob arrived and Cy is gone on both",
        || {
            [&on_kafka, &over_http].iter().all(|tw| {
                profile(tw, "email:bob@example.com").0 == 200
                    && profile(tw, "email:cy@example.com").0 == 404
            })
        },
    );
    for identifier in ["email:ana@example.com", "email:bob@example.com"] {
        let (_, from_kafka) = profile(&on_kafka, identifier);
        let (_, from_http) = profile(&over_http, identifier);
        assert_eq!(
            comparable(&from_kafka),
            comparable(&from_http),
            "{identifier}"
        );
    }

    // Documents: indexed, deleted, and the bad one dead-lettered with its reason.
    eventually(
        Duration::from_secs(60),
        "the document is searchable",
        || {
            on_kafka
                .search("when does the tide rise", 3, None)
                .iter()
                .any(|hit| hit["doc_id"] == "tides")
        },
    );
    let (status, tides) = on_kafka.json("GET", "/v1/documents/tides", None);
    assert_eq!(status, 200, "{tides}");
    assert_eq!(tides["metadata"]["lang"], "en");
    eventually(
        Duration::from_secs(30),
        "the deleted document is gone",
        || on_kafka.json("GET", "/v1/documents/gone", None).0 == 404,
    );
    eventually(
        Duration::from_secs(30),
        "bad records reach the dead-letter topics",
        || {
            let knowledge = dead_letters(&producer, "knowledge.dead-letters");
            let profiles = dead_letters(&producer, "profiles.dead-letters");
            knowledge.iter().any(|l| {
                l["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("docs.incoming/"))
            }) && !profiles.is_empty()
        },
    );
    // The source's group offsets are on the broker, for standard tools.
    let committed: u64 = (0..3)
        .map(|p| {
            producer
                .committed_offset("source.crm", "crm.public.customers", p)
                .ok()
                .flatten()
                .unwrap_or(0)
        })
        .sum::<u64>();
    assert!(committed > 0, "group offsets were not committed");
    on_kafka.terminate();
    over_http.terminate();
}

#[test]
fn every_member_keeps_whole_profiles_one_member_publishes_and_lists_files() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    // One folder that both members are configured to list.
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..3 {
        std::fs::write(
            docs.join(format!("note-{i}.md")),
            format!("# Note {i}\n\nShared note number {i}.\n"),
        )
        .unwrap();
    }
    let config = members_config(dir.path(), &broker, "pm", PROFILES);
    let start = |name: &str| {
        let mut member = Tidewater::start(&docs, &dir.path().join(name), &["--config", &config]);
        member.wait_ready(Duration::from_secs(120));
        member
    };
    let appended = |member: &Tidewater, topic: &str| {
        member.metric(&format!(
            "tidewater_log_appended_records_total{{topic=\"{topic}\"}}"
        ))
    };
    let (a, b) = (start("a"), start("b"));
    // Many customers, all written through member a.
    let changes = customers(40);
    let (status, body) = a.json(
        "POST",
        "/v1/events/changes",
        Some(&Value::Array(changes).to_string()),
    );
    assert_eq!(status, 202, "{body}");
    let merged = |member: &Tidewater, i: i64| {
        let (status, profile) =
            member.json("GET", &format!("/v1/profiles/email:c{i}@example.com"), None);
        (status == 200 && profile["records"].as_array().is_some_and(|r| r.len() == 2))
            .then(|| comparable(&profile))
    };
    eventually(
        Duration::from_secs(60),
        "both members merged every customer",
        || (0..40).all(|i| merged(&a, i).is_some() && merged(&b, i).is_some()),
    );
    let before: Vec<Value> = (0..40).map(|i| merged(&b, i).unwrap()).collect();

    // Work only one member may do: listing the shared folder, and publishing the
    // profiles both replicas compute.
    eventually(
        Duration::from_secs(60),
        "one member listed the folder",
        || appended(&a, "documents") + appended(&b, "documents") >= 3.0,
    );
    assert_eq!(
        appended(&a, "documents") + appended(&b, "documents"),
        3.0,
        "each file is listed by one member:\n{}\n{}",
        a.log_tail(),
        b.log_tail()
    );
    eventually(
        Duration::from_secs(60),
        "one member published the profiles",
        || appended(&a, "profiles") > 0.0 || appended(&b, "profiles") > 0.0,
    );
    std::thread::sleep(Duration::from_secs(2));
    let (publisher, other, other_dir) = match appended(&a, "profiles") > 0.0 {
        true => (a, b, dir.path().join("b")),
        false => (b, a, dir.path().join("a")),
    };
    assert_eq!(
        appended(&other, "profiles"),
        0.0,
        "only the lease holder publishes"
    );
    // Every member writes a lake of its own from the broker's topics.
    let parquet_files = |topic: &str| {
        walk(&other_dir.join("lake").join(topic))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
    };
    eventually(
        Duration::from_secs(60),
        "the lake has the published profiles",
        || parquet_files("profiles") > 0,
    );

    // Stop the publisher: the other takes the leases over, republishes every profile and
    // publishes the next change. (A SIGKILLed holder's lease moves the same way after the
    // session timeout on Kafka; Tansu's group coordinator sometimes livelocks the
    // survivors' rejoin after a member dies, so the handover is tested with a clean
    // leave; SIGKILL of a replica is tested below.)
    publisher.terminate();
    let edit = customer_0_moves_to_porto();
    let (status, body) = other.json(
        "POST",
        "/v1/events/changes",
        Some(&json!([edit]).to_string()),
    );
    assert_eq!(status, 202, "{body}");
    let reader = producer(&broker);
    // The latest record of each key on the profiles output topic.
    let latest =
        || -> BTreeMap<String, Value> { topic_records(&reader, "profiles").into_iter().collect() };
    let (_, profile) = other.json("GET", "/v1/profiles/email:c0@example.com", None);
    let customer = profile["customer_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !latest()
        .get(&customer)
        .is_some_and(|p| p["attributes"]["city"] == "Porto")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new publisher did not publish the edit within 90 s:\n{}",
            other.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every customer's latest record on the output topic is its profile.
    let published = latest();
    for i in 0..40 {
        let (_, profile) = other.json("GET", &format!("/v1/profiles/email:c{i}@example.com"), None);
        let customer = profile["customer_id"].as_str().unwrap();
        assert_eq!(
            published.get(customer).map(comparable),
            Some(comparable(&profile)),
            "customer {i}"
        );
    }
    // A new member computes the same profiles from the log, and a SIGKILL of the other
    // changes nothing on it: each member holds a whole replica.
    let fresh = start("fresh");
    eventually(
        Duration::from_secs(60),
        "the new member has every profile",
        || (0..40).all(|i| merged(&fresh, i).is_some()),
    );
    let mut expected = before;
    expected[0] = merged(&other, 0).unwrap();
    let profiles = |member: &Tidewater| {
        (0..40)
            .map(|i| merged(member, i).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(profiles(&fresh), expected);
    other.kill();
    assert_eq!(profiles(&fresh), expected);
    fresh.terminate();
}

/// Customers `c0`…`c{n-1}`, each in two tables keyed differently (so in different
/// partitions more often than not) and linked by email (one of them upper-case).
fn customers(n: i64) -> Vec<Value> {
    let mut changes = Vec::new();
    for i in 0..n {
        let email = format!("c{i}@example.com");
        changes.push(json!({"key": {"id": i}, "value": change("crm", "customers", "c",
            json!({"id": i, "name": format!("C{i}"), "email": email, "city": "Lisbon"}), Value::Null, 10 + i, 100 + i)}));
        changes.push(json!({"key": {"id": 1000 + i}, "value": change("loyalty", "members", "c",
            json!({"id": 1000 + i, "name": format!("C{i}"), "email": email.to_uppercase(), "tier": "gold"}), Value::Null, 60 + i, 200 + i)}));
    }
    changes
}

/// Customer `c0`'s CRM row, updated: the city is now Porto.
fn customer_0_moves_to_porto() -> Value {
    json!({"key": {"id": 0}, "value": change("crm", "customers", "u",
        json!({"id": 0, "name": "C0", "email": "c0@example.com", "city": "Porto"}), Value::Null, 500, 900)})
}

/// Writes `dir/members.toml`: `sections`, then the broker as the log (consumer groups
/// prefixed `group`, a short session timeout so a dead member is noticed soon); returns
/// its path.
fn members_config(
    dir: &std::path::Path,
    broker: &KafkaBroker,
    group: &str,
    sections: &str,
) -> String {
    let config = dir.join("members.toml");
    std::fs::write(
        &config,
        format!(
            "{sections}\n[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"{}\"\ngroup = \"{group}\"\n\
             properties = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"1000\" }}\n",
            broker.bootstrap()
        ),
    )
    .unwrap();
    config.to_str().unwrap().to_owned()
}

/// Every record of `topic` on the broker, all partitions, as (key, value).
fn topic_records(log: &KafkaLog, topic: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for partition in 0..log.partitions(topic).unwrap_or(0) {
        let Ok(range) = log.range(topic, partition) else {
            continue;
        };
        let mut next = range.start;
        while next < range.end {
            let records = log.read(topic, partition, next, 1_000).expect("read");
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for r in records {
                let key = String::from_utf8(r.key.unwrap_or_default()).unwrap();
                out.push((key, serde_json::from_slice(&r.value).unwrap()));
            }
        }
    }
    out
}

#[test]
fn every_member_computes_the_kpis_and_each_window_is_published_once_across_a_handover() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let windows =
        "[analytics.window]\nsize = \"1s\"\nallowed_lateness = \"1s\"\nidle_timeout = \"2s\"\n";
    let config = members_config(dir.path(), &broker, "kp", windows);
    let start = |name: &str| {
        let mut member = Tidewater::start(&docs, &dir.path().join(name), &["--config", &config]);
        member.wait_ready(Duration::from_secs(120));
        member
    };
    let (a, b) = (start("a"), start("b"));
    let producer = producer(&broker);
    let produce = |id: String, at: i64| {
        let event = json!({"conversation_id": id, "event_time_ms": at,
            "question": "q", "answer": "a", "model": format!("m{}", at % 2),
            "latency": {"retrieval_ms": 5, "model_ms": 40, "total_ms": 45}});
        producer
            .append(
                "conversations",
                vec![NewRecord {
                    key: Some(id.into_bytes()),
                    value: event.to_string().into_bytes(),
                    timestamp_ms: at,
                    headers: Vec::new(),
                }],
            )
            .expect("produce");
    };
    // Twenty conversations a second for `seconds` from now, as an application writes
    // them, then one 3 s later whose watermark closes their windows. Returns its time.
    let converse = |from: usize, seconds: u64| {
        let t0 = tidewater_core::time::now_ms();
        for i in from..from + 20 * seconds as usize {
            let at = t0 + ((i - from) as i64) * 50;
            while tidewater_core::time::now_ms() < at {
                std::thread::sleep(Duration::from_millis(5));
            }
            produce(format!("c{i}"), at);
        }
        let marker = t0 + seconds as i64 * 1_000 + 3_000;
        produce(format!("marker{from}"), marker);
        marker
    };
    // Closed windows (start, conversations) as a member computed them.
    let closed = |member: &Tidewater| -> Vec<(u64, u64)> {
        let (_, report) = member.json("GET", "/v1/kpis", None);
        report["windows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|w| w["final"] == true)
            .map(|w| {
                (
                    w["window_start_ms"].as_u64().unwrap(),
                    w["overall"]["conversations"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    // The windows on the KPI topic, each asserted to appear once.
    let published = || -> Vec<(u64, u64)> {
        let records = topic_records(&producer, "kpis");
        let mut windows: Vec<(u64, u64)> = records
            .iter()
            .map(|(key, kpis)| {
                (
                    key.parse().unwrap(),
                    kpis["overall"]["conversations"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        windows.sort_unstable();
        let mut starts: Vec<u64> = windows.iter().map(|w| w.0).collect();
        starts.dedup();
        assert_eq!(
            starts.len(),
            windows.len(),
            "a window published twice: {windows:?}"
        );
        windows
    };
    let count = |windows: &[(u64, u64)]| windows.iter().map(|w| w.1).sum::<u64>();

    let late = |member: &Tidewater| {
        let (_, report) = member.json("GET", "/v1/kpis", None);
        report["late_events"].as_u64().unwrap_or(0)
    };
    // Every conversation is counted in a closed window or as late: on each member, which
    // computes the KPIs from every partition.
    let settled = |member: &Tidewater, conversations: u64| {
        count(&closed(member)) + late(member) == conversations
    };
    let marker = converse(0, 3);
    eventually(
        Duration::from_secs(60),
        "both members closed every window",
        || settled(&a, 60) && settled(&b, 60),
    );
    let appended =
        |member: &Tidewater| member.metric("tidewater_log_appended_records_total{topic=\"kpis\"}");
    eventually(Duration::from_secs(30), "one member published", || {
        appended(&a) > 0.0 || appended(&b) > 0.0
    });
    let (publisher, other) = match appended(&a) > 0.0 {
        true => (a, b),
        false => (b, a),
    };
    eventually(
        Duration::from_secs(30),
        "the windows on the KPI topic",
        || published() == closed(&publisher),
    );
    assert_eq!(appended(&other), 0.0, "only the lease holder publishes");
    let before = published();

    // The publisher leaves; the other publishes the next windows, none twice, and
    // repeats none of the previous holder's.
    publisher.terminate();
    // The next conversations come after the marker, in event time.
    while tidewater_core::time::now_ms() < marker + 1_500 {
        std::thread::sleep(Duration::from_millis(50));
    }
    converse(60, 3);
    eventually(
        Duration::from_secs(60),
        "the member closed the new windows",
        || settled(&other, 121),
    );
    let last_before = before.last().unwrap().0;
    let after: Vec<(u64, u64)> = closed(&other)
        .into_iter()
        .filter(|w| w.0 > last_before)
        .collect();
    assert!(after.len() >= 3, "{after:?}");
    eventually(
        Duration::from_secs(60),
        "the new windows on the KPI topic",
        || {
            let published = published();
            published.len() == before.len() + after.len()
                && published[..before.len()] == before[..]
                && published[before.len()..] == after[..]
        },
    );
    assert!(appended(&other) > 0.0);
    other.terminate();
}

#[test]
fn with_pgvector_one_member_owns_the_profiles_and_kpis_state_and_another_takes_it_over() {
    let broker = KafkaBroker::start();
    let pg = tidewater_testkit::PgVectorServer::shared();
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let sections = format!(
        "{PROFILES}\n[analytics.window]\nsize = \"1s\"\nallowed_lateness = \"1s\"\nidle_timeout = \"2s\"\n\
         [knowledge.index]\nbackend = \"pgvector\"\n[knowledge.index.pgvector]\ndsn = \"{}\"\n\
         table_prefix = \"owned\"\n",
        pg.dsn()
    );
    let config = members_config(dir.path(), &broker, "own", &sections);
    let start = |name: &str| {
        let mut member = Tidewater::start(&docs, &dir.path().join(name), &["--config", &config]);
        member.wait_ready(Duration::from_secs(120));
        member
    };
    let consumed = |member: &Tidewater, pipeline: &str, topic: &str| {
        member.metric(&format!(
            "tidewater_pipeline_records_total{{pipeline=\"{pipeline}\",topic=\"{topic}\"}}"
        ))
    };
    // The whole profile as a member serves it, customer id included.
    let profile = |member: &Tidewater, i: usize| {
        let (status, profile) =
            member.json("GET", &format!("/v1/profiles/email:c{i}@example.com"), None);
        (status == 200 && profile["records"].as_array().is_some_and(|r| r.len() == 2))
            .then_some(profile)
    };
    let profiles = |member: &Tidewater| (0..30).map(|i| profile(member, i)).collect::<Vec<_>>();
    let changes = customers(30);
    let edit = customer_0_moves_to_porto();
    let post = |member: &Tidewater, path: &str, events: &Value| {
        let (status, body) = member.json("POST", path, Some(&events.to_string()));
        assert_eq!(status, 202, "{body}");
    };

    // The first member alone takes both leases: it owns the state and runs the pipelines.
    let a = start("a");
    post(&a, "/v1/events/changes", &Value::Array(changes.clone()));
    eventually(
        Duration::from_secs(60),
        "the owner merged every customer",
        || profiles(&a).iter().all(Option::is_some),
    );
    // The second reads the owner's state: the same profiles, customer ids included,
    // without consuming a record.
    let b = start("b");
    eventually(
        Duration::from_secs(30),
        "the reader serves the owner's profiles",
        || profiles(&b) == profiles(&a),
    );
    assert_eq!(consumed(&b, "profiles", "changes"), 0.0);

    // Conversations written through the reader are counted by the owner; the reader
    // answers KPI queries from the owner's windows.
    let now = tidewater_core::time::now_ms();
    let conversations: Vec<Value> = (0..20)
        .map(|i| {
            json!({"conversation_id": format!("k{i}"), "event_time_ms": now + i * 50,
            "question": "q", "answer": "a", "model": "m",
            "latency": {"retrieval_ms": 5, "model_ms": 40, "total_ms": 45}})
        })
        .collect();
    post(&b, "/v1/events/conversations", &Value::Array(conversations));
    // A conversation 4 s later moves the watermark past their windows.
    std::thread::sleep(Duration::from_secs(4));
    let marker = json!({"conversation_id": "marker", "event_time_ms": tidewater_core::time::now_ms(),
        "question": "q", "answer": "a", "model": "m",
        "latency": {"retrieval_ms": 5, "model_ms": 40, "total_ms": 45}});
    post(&b, "/v1/events/conversations", &json!([marker]));
    let closed = |member: &Tidewater| -> Vec<Value> {
        let (_, report) = member.json("GET", "/v1/kpis", None);
        let windows = report["windows"].as_array().cloned().unwrap_or_default();
        windows.into_iter().filter(|w| w["final"] == true).collect()
    };
    let counted = |windows: &[Value]| {
        windows
            .iter()
            .map(|w| w["overall"]["conversations"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    eventually(
        Duration::from_secs(60),
        "the owner closed every window",
        || counted(&closed(&a)) == 20,
    );
    eventually(
        Duration::from_secs(30),
        "the reader sees the owner's windows",
        || closed(&b) == closed(&a),
    );
    assert_eq!(consumed(&b, "analytics", "conversations"), 0.0);
    let windows_before = closed(&a);
    let before = profiles(&a);

    // The owner dies (SIGKILL): its advisory locks go with its sessions, and the other
    // member takes the state over as it was committed (the same customer ids, the same
    // windows) and goes on from there.
    a.kill();
    post(&b, "/v1/events/changes", &json!([edit]));
    eventually(
        Duration::from_secs(90),
        "the new owner applied the edit",
        || profile(&b, 0).is_some_and(|p| p["attributes"]["city"] == "Porto"),
    );
    // (The count follows the commit that made the edit readable.)
    eventually(
        Duration::from_secs(5),
        "the new owner counted the edit",
        || consumed(&b, "profiles", "changes") > 0.0,
    );
    let after = profiles(&b);
    assert_eq!(after[1..], before[1..], "taken over, not recomputed");
    assert_eq!(
        after[0].as_ref().unwrap()["customer_id"],
        before[0].as_ref().unwrap()["customer_id"]
    );
    let windows_after = closed(&b);
    assert!(
        windows_before.iter().all(|w| windows_after.contains(w)),
        "the new owner has the previous windows:\n{windows_before:?}\n{windows_after:?}"
    );

    // The profiles equal a from-scratch computation of the same changes by one embedded
    // process.
    let mut reference = Tidewater::start(
        &docs,
        &dir.path().join("reference"),
        &["--config", &{
            let path = dir.path().join("reference.toml");
            std::fs::write(&path, PROFILES).unwrap();
            path.to_str().unwrap().to_owned()
        }],
    );
    reference.wait_ready(Duration::from_secs(120));
    post(&reference, "/v1/events/changes", &Value::Array(changes));
    post(&reference, "/v1/events/changes", &json!([edit]));
    eventually(
        Duration::from_secs(60),
        "the reference applied every change",
        || {
            profile(&reference, 0).is_some_and(|p| p["attributes"]["city"] == "Porto")
                && profiles(&reference).iter().all(Option::is_some)
        },
    );
    let comparable_all = |profiles: Vec<Option<Value>>| {
        profiles
            .iter()
            .map(|p| comparable(p.as_ref().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        comparable_all(profiles(&reference)),
        comparable_all(after.clone())
    );
    reference.terminate();

    // A new member reads the same state; killing the owner does not change what it serves.
    let c = start("c");
    eventually(
        Duration::from_secs(30),
        "the new member serves the owner's profiles",
        || profiles(&c) == after,
    );
    b.kill();
    assert_eq!(profiles(&c), after);
    c.terminate();
}
