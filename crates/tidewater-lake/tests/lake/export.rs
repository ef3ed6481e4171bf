//! The fine-tuning export, end to end: conversations and feedback go through the log and
//! the lake; the JSONL written from the lake's files must equal the checked-in fixture
//! `tests/fixtures/finetune-expected.jsonl` byte for byte.

use std::sync::Arc;

use serde_json::{json, Value};
use tidewater_lake::{export_finetune, ExportReport};
use tidewater_log::NewRecord;
use tidewater_metrics::Metrics;

use crate::common::*;
use crate::data::BASE;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/finetune-expected.jsonl"
);

fn event(id: &str, value: Value) -> NewRecord {
    NewRecord {
        key: Some(id.as_bytes().to_vec()),
        value: value.to_string().into_bytes(),
        timestamp_ms: BASE + 100 * 86_400_000,
        headers: Vec::new(),
    }
}

fn answered(id: &str, at: i64, prompt: Value, question: &str, answer: &str) -> NewRecord {
    event(
        id,
        json!({
            "conversation_id": id, "event_time_ms": BASE + at, "question": question,
            "answer": answer, "model": "m", "prompt": prompt,
        }),
    )
}

fn rated(id: &str, at: i64, rating: Value) -> NewRecord {
    event(
        id,
        json!({"conversation_id": id, "rating": rating, "event_time_ms": BASE + at}),
    )
}

fn system_user(system: &str, user: &str) -> Value {
    json!([{"role": "system", "content": system}, {"role": "user", "content": user}])
}

fn conversations() -> Vec<NewRecord> {
    let failed = |id: &str, prompt: Value| {
        event(
            id,
            json!({"conversation_id": id, "event_time_ms": BASE + 400, "question": "Try again?",
                   "answer": "", "status": "failed", "error": "model timed out", "prompt": prompt}),
        )
    };
    vec![
        answered(
            "c-up",
            3_000,
            system_user(
                "You are a travel assistant.",
                "Context: Lisbon is sunny.\n\nQuestion: Weather in Lisbon?",
            ),
            "Weather in Lisbon?",
            "Sunny, 24 °C.",
        ),
        answered(
            "c-down",
            1_000,
            system_user("S", "Bad?"),
            "Bad?",
            "A bad answer.",
        ),
        answered(
            "c-low",
            2_000,
            system_user("S", "Meh?"),
            "Meh?",
            "A so-so answer.",
        ),
        answered(
            "c-none",
            2_500,
            system_user("S", "Unrated?"),
            "Unrated?",
            "Nobody rated this.",
        ),
        failed("c-failed", system_user("S", "Fails?")),
        answered(
            "c-latest-down",
            3_500,
            system_user("S", "Flip?"),
            "Flip?",
            "Liked, then not.",
        ),
        answered(
            "c-latest-up",
            4_000,
            json!([{"role": "user", "content": "Best pastry?"}]),
            "Best pastry?",
            "Pastel de nata.",
        ),
        // Extractive: no prompt. Same event time as c-up: ordered by id.
        answered(
            "c-extractive",
            3_000,
            json!([]),
            "Where is the museum?",
            "On Rua Augusta.",
        ),
        // A failed attempt, then the answer that counts.
        failed("c-retry", system_user("Be brief.", "Try again?")),
        answered(
            "c-retry",
            500,
            system_user("Be brief.", "Try again?"),
            "Try again?",
            "Second try worked.",
        ),
        answered(
            "c-quote",
            86_400_000,
            system_user("S", "Quote me"),
            "Quote me",
            "Line one\nShe said \"hi\"",
        ),
        event("c-garbage", json!("not a conversation")),
    ]
}

fn feedback() -> Vec<NewRecord> {
    vec![
        rated("c-up", 10_000, json!("up")),
        rated("c-down", 10_000, json!("down")),
        rated("c-low", 10_000, json!(3)),
        rated("c-failed", 10_000, json!("up")),
        // Log order is not what decides: the later event time wins.
        rated("c-latest-down", 30_000, json!("down")),
        rated("c-latest-down", 20_000, json!("up")),
        rated("c-latest-up", 25_000, json!(5)),
        rated("c-latest-up", 20_000, json!(2)),
        rated("c-extractive", 10_000, json!(4)),
        rated("c-retry", 10_000, json!("up")),
        rated("c-quote", 90_000_000, json!(5)),
        rated("c-missing", 10_000, json!("up")),
        event("c-up", json!({"conversation_id": "c-up", "rating": "meh"})),
    ]
}

#[test]
fn export_of_known_conversations_matches_the_fixture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    append_all(
        &log,
        &[("conversations", conversations()), ("feedback", feedback())],
    );
    let mut config = config(3);
    config.topics = vec!["conversations".to_owned(), "feedback".to_owned()];
    let lake = open_lake(dir.path(), &log, config, &Arc::new(Metrics::default()));
    lake.start().expect("start");
    wait_caught_up(&lake, &log, &["conversations", "feedback"]);
    lake.stop();

    let lake_dir = lake_dir(dir.path());
    let mut out = Vec::new();
    let report = export_finetune(&lake_dir, 4, &mut out).expect("export");
    let expected = std::fs::read_to_string(FIXTURE).expect("fixture");
    assert_eq!(String::from_utf8(out).expect("utf-8"), expected);
    assert_eq!(
        report,
        ExportReport {
            conversations: 10,
            exported: 5
        }
    );

    let mut out = Vec::new();
    let report = export_finetune(&lake_dir, 5, &mut out).expect("export");
    assert_eq!(report.exported, 4, "c-extractive (4 stars) is below 5");
    assert!(!String::from_utf8(out)
        .expect("utf-8")
        .contains("Rua Augusta"));
}

#[test]
fn export_of_an_empty_lake_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = Vec::new();
    let report = export_finetune(&dir.path().join("lake"), 1, &mut out).expect("export");
    assert_eq!(report, ExportReport::default());
    assert!(out.is_empty());
}
