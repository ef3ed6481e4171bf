//! Generated test data: records of every topic, deterministic functions of an index, with
//! event times spread over several UTC dates.

use serde_json::{json, Value};
use tidewater_log::NewRecord;

pub const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
pub const BASE: i64 = 1_767_225_600_000;

fn record(key: Option<String>, value: Value, timestamp_ms: i64) -> NewRecord {
    NewRecord {
        key: key.map(String::into_bytes),
        value: value.to_string().into_bytes(),
        timestamp_ms,
        headers: Vec::new(),
    }
}

/// The log time of record `i`: ten days after [`BASE`], so rows dated by log time land on
/// a date of their own.
pub fn log_time(i: u64) -> i64 {
    BASE + 10 * DAY + i as i64 * 1_000
}

/// Conversation `i`: over three dates; every fifth has no event time (dated by its log
/// time), every seventh failed, every fourth is extractive (no prompt, no model).
pub fn conversation(i: u64) -> NewRecord {
    let id = format!("c{i}");
    let mut v = json!({
        "conversation_id": id,
        "question": format!("What about \"{i}\"?"),
        "answer": format!("Answer {i}: é ✓"),
        "citations": [{"chunk_id": format!("k{i}"), "doc_id": "d1", "score": 0.5}],
        "profile_fields": {"tier": "gold", "visits": i},
        "model": if i.is_multiple_of(2) { "m-even" } else { "m-odd" },
        "latency": {"retrieval_ms": i, "model_ms": 2 * i, "total_ms": 3 * i + 1},
        "prompt": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": format!("Context…\nWhat about \"{i}\"?")}
        ],
    });
    if i % 5 != 4 {
        v["event_time_ms"] = json!(BASE + (i % 3) as i64 * DAY + i as i64);
    }
    if i.is_multiple_of(3) {
        v["customer"] = json!(format!("email:u{i}@example.com"));
        v["customer_id"] = json!(format!("cus-{i}"));
    }
    if i % 7 == 6 {
        v["status"] = json!("failed");
        v["answer"] = json!("");
        v["error"] = json!("model timed out");
    }
    if i % 4 == 3 {
        v["prompt"] = json!([]);
        v["model"] = json!("extractive");
    }
    record(Some(id), v, log_time(i))
}

/// Feedback `i` on conversation `i`: up, down, or stars, some with a comment.
pub fn feedback(i: u64) -> NewRecord {
    let id = format!("c{i}");
    let rating = match i % 4 {
        0 => json!("up"),
        1 => json!("down"),
        _ => json!(1 + i % 5),
    };
    let mut v = json!({"conversation_id": id, "rating": rating});
    if i.is_multiple_of(2) {
        v["comment"] = json!(format!("comment {i}"));
    }
    if i % 5 != 4 {
        v["event_time_ms"] = json!(BASE + (i % 2) as i64 * DAY + 500 + i as i64);
    }
    record(Some(id), v, log_time(i))
}

/// Closed window `i`: one minute, on one of two dates, with two or no models.
pub fn kpi_window(i: u64) -> NewRecord {
    let start = BASE + (i % 2) as i64 * DAY + i as i64 * 60_000;
    let kpis = |n: u64| {
        json!({
            "conversations": n, "feedback": n / 2,
            "latency_p50_ms": 10 + n, "latency_p95_ms": 20 + n, "latency_p99_ms": null,
            "positive_share": 0.75, "mean_rating": 4.5, "no_context_share": 0.0,
            "mean_sentiment": null,
            "top_downvoted": [{"question": format!("q{n}"), "downvotes": n}],
        })
    };
    let per_model = if i.is_multiple_of(3) {
        json!({})
    } else {
        json!({"zeta": kpis(i), "alpha": kpis(i + 1)})
    };
    let v = json!({
        "window_start_ms": start,
        "window_end_ms": start + 60_000,
        "overall": kpis(2 * i + 1),
        "per_model": per_model,
    });
    record(None, v, log_time(i))
}

/// Profile `i`, keyed by customer; every fourth a removal.
pub fn profile(i: u64) -> NewRecord {
    let customer = format!("cus-{}", i % 6);
    let v = if i % 4 == 3 {
        json!({"customer_id": customer, "removed": true})
    } else {
        json!({"customer_id": customer, "name": format!("Ana {i}"), "tier": "gold", "orders": [i, i + 1]})
    };
    record(Some(customer), v, log_time(i))
}

/// Event `i` of a topic the lake has no schema for; not always JSON.
pub fn other_event(i: u64) -> NewRecord {
    NewRecord {
        key: (i.is_multiple_of(2)).then(|| format!("e{i}").into_bytes()),
        value: if i.is_multiple_of(3) {
            format!("plain text {i}").into_bytes()
        } else {
            json!({"n": i}).to_string().into_bytes()
        },
        timestamp_ms: log_time(i) + (i % 2) as i64 * DAY,
        headers: Vec::new(),
    }
}

/// `n` records of each of the five test topics (`kpis` and `events` get fewer).
pub fn dataset(n: u64) -> Vec<(&'static str, Vec<NewRecord>)> {
    vec![
        ("conversations", (0..n).map(conversation).collect()),
        ("feedback", (0..n).map(feedback).collect()),
        ("kpis", (0..n / 2).map(kpi_window).collect()),
        ("profiles", (0..n).map(profile).collect()),
        ("events", (0..n / 2).map(other_event).collect()),
    ]
}
