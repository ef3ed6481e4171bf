//! Rows are never dropped: a record that does not parse for its topic's schema becomes a
//! row with its typed columns null, its value kept in `_raw`, dated by its log time.

use std::sync::Arc;

use serde_json::{json, Value};
use tidewater_log::NewRecord;
use tidewater_metrics::Metrics;

use crate::common::*;
use crate::data::{conversation, log_time};

fn bad(value: &[u8], i: u64) -> NewRecord {
    NewRecord {
        key: Some(b"bad".to_vec()),
        value: value.to_vec(),
        timestamp_ms: log_time(i),
        headers: Vec::new(),
    }
}

#[test]
fn a_malformed_record_becomes_a_row_with_null_typed_columns_and_its_raw_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    let invalid_utf8 = b"{\"conversation_id\": \"\xff\xfe\"}";
    let data = vec![
        (
            "conversations",
            vec![
                conversation(1),
                bad(b"not json at all", 2),
                bad(
                    br#"{"conversation_id": "c", "question": "q", "unknown_field": 1}"#,
                    3,
                ),
                bad(invalid_utf8, 4),
            ],
        ),
        (
            "feedback",
            vec![bad(br#"{"conversation_id": "c", "rating": "meh"}"#, 5)],
        ),
        (
            "kpis",
            vec![bad(
                br#"{"window_start_ms": -1, "window_end_ms": 2, "overall": {}}"#,
                6,
            )],
        ),
        ("profiles", vec![bad(b"[\"an array\"]", 7)]),
    ];
    append_all(&log, &data);
    let mut config = config(100);
    config.topics = data.iter().map(|(t, _)| (*t).to_owned()).collect();
    let lake = open_lake(dir.path(), &log, config, &Arc::new(Metrics::default()));
    lake.start().expect("start");
    let topics: Vec<&str> = data.iter().map(|(t, _)| *t).collect();
    wait_caught_up(&lake, &log, &topics);
    lake.stop();

    let lake_dir = lake_dir(dir.path());
    let conversations = checked_rows(&lake_dir, "conversations");
    assert_eq!(conversations.len(), 4);
    let malformed: Vec<&Value> = conversations
        .iter()
        .filter(|r| r["_key"] == json!("bad"))
        .collect();
    assert_eq!(malformed.len(), 3);
    let raws: Vec<&str> = malformed
        .iter()
        .map(|r| r["_raw"].as_str().expect("raw"))
        .collect();
    assert!(raws.contains(&"not json at all"));
    assert!(
        raws.contains(&"{\"conversation_id\": \"\u{fffd}\u{fffd}\"}"),
        "lossy UTF-8: {raws:?}"
    );
    for row in &malformed {
        for column in [
            "conversation_id",
            "event_time",
            "question",
            "answer",
            "status",
            "prompt",
            "latency_total_ms",
        ] {
            assert_eq!(row[column], Value::Null, "{column} of {row}");
        }
    }
    for topic in ["feedback", "kpis", "profiles"] {
        let rows = checked_rows(&lake_dir, topic);
        assert_eq!(rows.len(), 1, "{topic}");
        let row = rows[0].as_object().expect("object");
        let typed_nulls = row
            .iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .all(|(_, v)| v.is_null());
        assert!(typed_nulls, "{topic}: {row:?}");
        assert!(row["_raw"].as_str().is_some_and(|r| !r.is_empty()));
    }
    for topic in topics {
        assert_eq!(
            checked_rows(&lake_dir, topic),
            expected_rows(topic, &log_records(&log, topic)),
            "{topic}"
        );
    }
}
