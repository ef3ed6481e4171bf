//! Exactly-once analytics and lake under SIGKILL: the same conversations and feedback
//! (out of order, some too late, a few malformed) are put into the log of two data
//! directories. One Tidewater processes its copy undisturbed; the other is killed at 12
//! random moments while it computes KPIs and writes Parquet. Afterwards the KPIs (final
//! and open windows, watermark, late count) and the set of lake rows — read back with
//! pyarrow, which must open every file — are identical, with no duplicate row.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::*;
use tidewater_log::{EmbeddedLog, Log, NewRecord, TopicConfig};

/// 2026-11-20T00:00:00Z.
const T0: u64 = 1_795_132_800_000;
const CONVERSATIONS: usize = 40_000;

// Small batches: many commits to crash between, and work that outlasts the kills.
const CONFIG: &str = r#"
[engine]
batch_max_records = 16

[analytics.window]
size = "1s"
allowed_lateness = "2s"
idle_timeout = "10s"

[lake]
flush_interval = "150ms"
max_rows_per_file = 700
"#;

/// (topic, key, value) in log order.
fn events() -> Vec<(&'static str, String, Value)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let comments = [
        Some("great answer, thanks"),
        Some("wrong and useless"),
        None,
        Some("not helpful"),
        Some("perfect"),
    ];
    let ratings = [
        json!("up"),
        json!("down"),
        json!(1),
        json!(3),
        json!(4),
        json!(5),
    ];
    let mut timed = Vec::new();
    for i in 0..CONVERSATIONS {
        let t = T0 + i as u64 * 2 + rng.random_range(0..800);
        let id = format!("c{i}");
        let citations: Vec<Value> = (0..i % 4)
            .map(
                |n| json!({"chunk_id": format!("d{n}#x"), "doc_id": format!("d{n}"), "score": 0.5}),
            )
            .collect();
        let conversation = json!({
            "conversation_id": id, "event_time_ms": t, "question": format!("question {}", i % 50),
            "answer": format!("answer {i}"), "model": format!("m{}", i % 3),
            "latency": {"retrieval_ms": 5, "model_ms": 40 + (i * 37) % 900, "total_ms": 45 + (i * 37) % 900},
            "citations": citations,
            "prompt": [{"role": "user", "content": format!("question {}", i % 50)}],
        });
        timed.push((t, "conversations", id.clone(), conversation));
        if i % 5 < 3 {
            let ft = t + rng.random_range(200..4_000);
            let mut feedback = json!({"conversation_id": id, "event_time_ms": ft,
                                      "rating": ratings[i % ratings.len()]});
            if let Some(c) = comments[i % comments.len()] {
                feedback["comment"] = json!(c);
            }
            timed.push((ft, "feedback", id, feedback));
        }
    }
    // Log order: by event time, with disorder well inside the allowed lateness.
    let mut timed: Vec<_> = timed
        .into_iter()
        .map(|(t, topic, id, v)| (t + rng.random_range(0..600), topic, id, v))
        .collect();
    timed.sort_by(|a, b| (a.0, &a.2, a.1).cmp(&(b.0, &b.2, b.1)));
    let mut out: Vec<(&'static str, String, Value)> = timed
        .into_iter()
        .map(|(_, topic, id, v)| (topic, id, v))
        .collect();
    // Far too late: an hour before everything else, well into the stream.
    for n in 0..15 {
        let at = 5_000 + n * 2_000;
        let id = format!("late{n}");
        out.insert(
            at,
            (
                "conversations",
                id.clone(),
                json!({"conversation_id": id, "event_time_ms": T0 - 3_600_000 + n as u64,
                  "question": "old", "answer": "old", "model": "m0"}),
            ),
        );
    }
    // Malformed: dead-lettered by analytics, kept raw by the lake.
    for n in 0..3 {
        out.insert(
            1_000 + n * 9_000,
            (
                "feedback",
                format!("bad{n}"),
                json!({"conversation_id": format!("bad{n}"), "rating": 9}),
            ),
        );
    }
    out
}

/// A data directory whose log holds the events, with deterministic log times.
fn prepare(data: &Path, events: &[(&'static str, String, Value)]) {
    let log = EmbeddedLog::open(data.join("log"), Default::default()).unwrap();
    for topic in ["conversations", "feedback"] {
        log.ensure_topic(topic, &TopicConfig::default()).unwrap();
    }
    // Log time = position in the stream; each topic keeps the stream's order.
    for topic in ["conversations", "feedback"] {
        let records: Vec<NewRecord> = events
            .iter()
            .enumerate()
            .filter(|(_, (t, _, _))| *t == topic)
            .map(|(i, (_, key, value))| NewRecord {
                key: Some(key.clone().into_bytes()),
                value: value.to_string().into_bytes(),
                timestamp_ms: (T0 + i as u64) as i64,
                headers: Vec::new(),
            })
            .collect();
        for chunk in records.chunks(2_000) {
            log.append(topic, chunk.to_vec()).unwrap();
        }
    }
}

/// Every lake row, canonical and sorted (pyarrow opens each file). `settled`: also fail
/// on temporary files (a crash leaves them until the restart redoes its batch).
fn read_lake(lake: &Path, settled: bool) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lake_rows.py");
    let mut command = Command::new(python());
    command.arg(script).arg(lake);
    if settled {
        command.arg("--no-leftovers");
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "reading the lake with pyarrow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn lake_rows(lake: &Path) -> Vec<String> {
    read_lake(lake, true)
}

fn rows_of<'a>(rows: &'a [String], table: &str) -> Vec<&'a String> {
    let tag = format!("\"_table\": \"{table}\"");
    rows.iter().filter(|r| r.contains(&tag)).collect()
}

/// Records analytics has committed, read from a stopped Tidewater's state.
fn analytics_consumed(data: &Path) -> u64 {
    use redb::{ReadableDatabase, ReadableTable};
    let path = data.join("analytics/analytics.redb");
    if !path.exists() {
        return 0;
    }
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(tidewater_engine::OFFSETS).unwrap();
    table
        .iter()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|(k, _)| k.value().0 == "analytics")
        .map(|(_, v)| v.value())
        .sum()
}

fn analytics_lag(tw: &Tidewater) -> f64 {
    let (_, text) = tw.request("GET", "/metrics", None);
    text.lines()
        .filter(|l| l.starts_with("tidewater_pipeline_lag_records{pipeline=\"analytics\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until analytics has consumed everything, the KPIs are stable and the lake holds
/// every input row and one row per model of every closed window; returns the KPI report.
fn settle(tw: &Tidewater, lake: &Path, inputs: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = Value::Null;
    loop {
        assert!(
            Instant::now() < deadline,
            "did not settle:\n{}",
            tw.log_tail()
        );
        std::thread::sleep(Duration::from_millis(700));
        let (status, report) = tw.json("GET", "/v1/kpis", None);
        assert_eq!(status, 200);
        if analytics_lag(tw) > 0.0 || report != last {
            last = report;
            continue;
        }
        let kpi_rows: usize = report["windows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["final"] == true)
            .map(|w| 1 + w["per_model"].as_object().unwrap().len())
            .sum();
        let rows = lake_rows(lake);
        let have = rows_of(&rows, "conversations").len() + rows_of(&rows, "feedback").len();
        if have == inputs && rows_of(&rows, "kpis").len() == kpi_rows {
            return report;
        }
    }
}

#[test]
fn kpis_and_lake_rows_survive_sigkill_unchanged() {
    let events = events();
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let config = dir.path().join("tidewater.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let config = config.to_string_lossy().into_owned();
    let args = ["--config", config.as_str()];

    // The undisturbed run.
    let reference = dir.path().join("reference");
    prepare(&reference, &events);
    let started = Instant::now();
    let mut tw = Tidewater::start(&docs, &reference, &args);
    tw.wait_ready(Duration::from_secs(120));
    let ready = started.elapsed();
    let expected_kpis = settle(&tw, &reference.join("lake"), events.len());
    eprintln!(
        "reference run: ready after {ready:?}, settled after {:?}",
        started.elapsed()
    );
    tw.kill();
    let expected_rows = lake_rows(&reference.join("lake"));

    // Sanity of the reference: late events counted, every window's KPIs present.
    assert_eq!(
        expected_kpis["late_events"], 15,
        "{}",
        expected_kpis["late_events"]
    );
    let finals = expected_kpis["windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["final"] == true)
        .count();
    assert!(finals >= 75, "{finals} closed windows");
    let counted: u64 = expected_kpis["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["overall"]["conversations"].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted, CONVERSATIONS as u64,
        "every on-time conversation counted once"
    );

    // The crashed run: SIGKILL at random moments while it works.
    let crashed = dir.path().join("crashed");
    prepare(&crashed, &events);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // A kill hit the work when analytics or the lake made progress during that life
    // without finishing.
    let mut kills_while_working = 0;
    let (mut lake_before, mut analytics_before) = (0, 0);
    for _ in 0..12 {
        let mut tw = Tidewater::start(&docs, &crashed, &args);
        // From readiness on: start-up time (model load) would only shorten the work.
        tw.wait_ready(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(rng.random_range(10..400)));
        tw.kill();
        let lake = rows_of(&read_lake(&crashed.join("lake"), false), "conversations").len();
        let analytics = analytics_consumed(&crashed);
        let lake_working = lake > lake_before && lake < CONVERSATIONS + 15;
        let analytics_working = analytics > analytics_before && analytics < events.len() as u64;
        kills_while_working += usize::from(lake_working || analytics_working);
        (lake_before, analytics_before) = (lake, analytics);
    }
    eprintln!("{kills_while_working} of 12 kills hit analytics or the lake at work");
    assert!(
        kills_while_working >= 8,
        "only {kills_while_working} of 12 kills hit analytics or the lake at work; the test needs a bigger stream"
    );
    let tw = Tidewater::start(&docs, &crashed, &args);
    let kpis = settle(&tw, &crashed.join("lake"), events.len());
    tw.kill();
    let rows = lake_rows(&crashed.join("lake"));

    assert_eq!(kpis, expected_kpis, "KPIs differ from the uncrashed run");
    let positions: HashSet<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r).unwrap();
            let model = v.get("model").map(|m| m.to_string()).unwrap_or_default();
            (
                v["_table"].to_string(),
                format!("{}/{}", v["_partition"], v["_offset"]),
                model,
            )
        })
        .collect();
    assert_eq!(positions.len(), rows.len(), "a lake row is duplicated");
    assert_eq!(rows.len(), expected_rows.len(), "lake row counts differ");
    assert!(
        rows == expected_rows,
        "lake rows differ from the uncrashed run"
    );
}
