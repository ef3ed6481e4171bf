//! Change events over HTTP become merged customer profiles.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const CONFIG: &str = r#"
[profiles]
topic = "changes"

[[profiles.tables]]
table = "crm.public.customers"
identifiers = [
  { column = "email", namespace = "email", normaliser = "email" },
  { column = "phone", namespace = "phone", normaliser = { phone = { default_region = "US" } } },
]
attributes = ["name", "city"]
priority = 10

[[profiles.tables]]
table = "loyalty.public.members"
identifiers = [{ column = "email", namespace = "email", normaliser = "email" }]
attributes = ["name", "tier"]

[[profiles.tables]]
table = "bookings.public.bookings"
child = { link = { column = "customer_email", namespace = "email", normaliser = "email" }, aggregates = [
  { name = "bookings", kind = "count" },
  { name = "booked_total", kind = { sum = { column = "amount" } } },
] }
"#;

/// A Debezium PostgreSQL change record, as `{"key", "value"}`.
fn change(db: &str, table: &str, op: &str, id: i64, after: Value, ts: i64) -> Value {
    json!({
        "key": {"id": id},
        "value": {
            "op": op,
            "ts_ms": ts,
            "before": null,
            "after": if op == "d" { Value::Null } else { after },
            "source": {"connector": "postgresql", "name": db, "db": db, "schema": "public", "table": table,
                       "lsn": 1000 + ts, "txId": ts, "ts_ms": ts},
        }
    })
}

#[test]
fn events_over_http_become_merged_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let config = dir.path().join("tidewater.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let config = config.to_string_lossy().into_owned();
    let mut tw = Tidewater::start(&docs, &dir.path().join("data"), &["--config", &config]);
    tw.wait_ready(Duration::from_secs(120));

    // A JSON array: a CRM customer, a loyalty member with the same email (different case).
    let batch = json!([
        change(
            "crm",
            "customers",
            "c",
            1,
            json!({"id": 1, "name": "Ana Lima", "email": "ana@example.com", "phone": "(415) 555-0123", "city": "Lisbon"}),
            1
        ),
        change(
            "loyalty",
            "members",
            "c",
            7,
            json!({"id": 7, "name": "Ana L.", "email": " ANA@example.com", "tier": "gold"}),
            2
        ),
    ]);
    let (status, body) = tw.json("POST", "/v1/events/changes", Some(&batch.to_string()));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 2);

    // NDJSON: two bookings and one malformed event.
    let ndjson = [
        change(
            "bookings",
            "bookings",
            "c",
            100,
            json!({"id": 100, "customer_email": "ana@example.com", "amount": 250}),
            3,
        )
        .to_string(),
        change(
            "bookings",
            "bookings",
            "c",
            101,
            json!({"id": 101, "customer_email": "ana@example.com", "amount": 100}),
            4,
        )
        .to_string(),
        json!({"op": "x", "source": {}}).to_string(),
    ]
    .join("\n");
    let (status, body) = tw.json("POST", "/v1/events/changes", Some(&ndjson));
    assert_eq!(status, 202, "{body}");

    let mut profile = Value::Null;
    eventually(
        Duration::from_secs(20),
        "merged profile with both bookings",
        || {
            let (status, value) = tw.json("GET", "/v1/profiles/email:ana@example.com", None);
            profile = value;
            status == 200 && profile["aggregates"]["bookings"] == 2
        },
    );
    assert_eq!(profile["records"].as_array().unwrap().len(), 2, "{profile}");
    assert_eq!(
        profile["attributes"]["name"], "Ana L.",
        "latest event wins: {profile}"
    );
    assert_eq!(profile["attributes"]["city"], "Lisbon", "{profile}");
    assert_eq!(profile["attributes"]["tier"], "gold", "{profile}");
    assert_eq!(profile["aggregates"]["booked_total"], 350, "{profile}");
    assert_eq!(
        profile["provenance"]["tier"]["table"], "loyalty.public.members",
        "{profile}"
    );
    // Any identifier resolves to the same customer, phone normalised to E.164.
    let (status, by_phone) = tw.json("GET", "/v1/profiles/phone:+14155550123", None);
    assert_eq!(status, 200, "{by_phone}");
    assert_eq!(by_phone["customer_id"], profile["customer_id"]);
    eventually(
        Duration::from_secs(20),
        "malformed event dead-lettered",
        || {
            tw.metric("tidewater_dead_letters_total{pipeline=\"profiles\",topic=\"changes\"}")
                == 1.0
        },
    );
    // Publications of the outboxes are counted like any append.
    eventually(Duration::from_secs(20), "outbox appends counted", || {
        tw.metric("tidewater_log_appended_records_total{topic=\"profiles\"}") >= 1.0
            && tw.metric("tidewater_log_appended_records_total{topic=\"profiles.dead-letters\"}")
                == 1.0
    });

    // A deleted booking leaves the aggregates.
    let delete = change("bookings", "bookings", "d", 100, Value::Null, 5);
    assert_eq!(
        tw.json("POST", "/v1/events/changes", Some(&delete.to_string()))
            .0,
        202
    );
    eventually(
        Duration::from_secs(20),
        "booking deletion reflected",
        || {
            let (_, p) = tw.json("GET", "/v1/profiles/email:ana@example.com", None);
            p["aggregates"]["bookings"] == 1 && p["aggregates"]["booked_total"] == 100
        },
    );

    // Events from an NDJSON file: a new booking.
    let file = dir.path().join("changes.ndjson");
    let booking = change(
        "bookings",
        "bookings",
        "c",
        102,
        json!({"id": 102, "customer_email": "ana@example.com", "amount": 40}),
        6,
    );
    std::fs::write(&file, format!("{booking}\n\n")).unwrap();
    let out = std::process::Command::new(bin())
        .args(["events", "send", "--topic", "changes", "--url"])
        .arg(format!("http://{}", tw.addr))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        Duration::from_secs(20),
        "booking from the file reflected",
        || {
            let (_, p) = tw.json("GET", "/v1/profiles/email:ana@example.com", None);
            p["aggregates"]["bookings"] == 2 && p["aggregates"]["booked_total"] == 140
        },
    );
    std::fs::write(&file, "{\"op\": \"c\"}\n{not json\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["events", "send", "--url"])
        .arg(format!("http://{}", tw.addr))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a file that is not NDJSON was accepted"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bad requests.
    for (method, path, body, status, code) in [
        (
            "GET",
            "/v1/profiles/no-namespace",
            "",
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/v1/profiles/email:nobody@example.com",
            "",
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/events/changes",
            "{\"op\": \"c\"}\n{broken",
            400,
            "invalid_json",
        ),
        ("POST", "/v1/events/documents", "{}", 404, "unknown_topic"),
    ] {
        let (got, value) = tw.json(method, path, (!body.is_empty()).then_some(body));
        assert_eq!(
            (got, value["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {value}"
        );
    }
    let (_, profile) = tw.json("GET", "/v1/profiles/email:ana@example.com", None);
    tw.terminate();

    // Every profile change was published; the latest per customer is the stored profile.
    let published = latest_per_key(&dir.path().join("data"), "profiles");
    let customer = profile["customer_id"].as_str().unwrap();
    assert_eq!(published.get(customer), Some(&profile), "{published:?}");
}
