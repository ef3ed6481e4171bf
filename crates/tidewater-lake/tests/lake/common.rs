//! Shared helpers: opening a log and a lake in a directory, waiting for the lake to catch
//! up, reading every file back as JSON rows, and the oracle of what rows a record gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{
    Array, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt32Array, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Map, Value};
use tidewater_core::time::utc_date;
use tidewater_core::{ConversationEvent, FeedbackEvent};
use tidewater_lake::{Lake, LakeConfig};
use tidewater_log::{EmbeddedLog, Log, NewRecord, Record, TopicConfig};
use tidewater_metrics::Metrics;

/// Partitions of every test topic.
pub const PARTITIONS: u32 = 2;
/// Every topic the tests write: the four typed ones and one the lake has no schema for.
pub const TOPICS: [&str; 5] = ["conversations", "feedback", "kpis", "profiles", "events"];
/// Columns holding JSON text: compared as parsed JSON.
const JSON_COLUMNS: [&str; 5] = [
    "citations",
    "profile_fields",
    "prompt",
    "top_downvoted",
    "profile",
];

pub fn open_log(root: &Path) -> Arc<EmbeddedLog> {
    EmbeddedLog::open(root.join("log"), Default::default()).expect("open log")
}

pub fn lake_dir(root: &Path) -> PathBuf {
    root.join("lake")
}

pub fn state_path(root: &Path) -> PathBuf {
    root.join("state").join("lake.redb")
}

/// The test configuration: all of [`TOPICS`], small files, a short flush interval.
pub fn config(max_rows_per_file: usize) -> LakeConfig {
    LakeConfig {
        topics: TOPICS.iter().map(|t| (*t).to_owned()).collect(),
        flush_interval: Duration::from_millis(30),
        max_rows_per_file,
        ..LakeConfig::default()
    }
}

pub fn open_lake(
    root: &Path,
    log: &Arc<EmbeddedLog>,
    config: LakeConfig,
    metrics: &Arc<Metrics>,
) -> Arc<Lake> {
    let log: Arc<dyn Log> = Arc::clone(log) as Arc<dyn Log>;
    Lake::open(
        &state_path(root),
        &lake_dir(root),
        config,
        log,
        Arc::clone(metrics),
    )
    .expect("open lake")
}

/// Creates the topics (with [`PARTITIONS`] partitions) and appends the records.
pub fn append_all(log: &EmbeddedLog, data: &[(&str, Vec<NewRecord>)]) {
    for (topic, _) in data {
        log.ensure_topic(
            topic,
            &TopicConfig {
                partitions: PARTITIONS,
                ..TopicConfig::default()
            },
        )
        .expect("topic");
    }
    for (topic, records) in data {
        log.append(topic, records.clone()).expect("append");
    }
}

/// Every record of a topic, in (partition, offset) order.
pub fn log_records(log: &EmbeddedLog, topic: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for partition in 0..log.partitions(topic).expect("partitions") {
        let mut next = 0;
        loop {
            let records = log.read(topic, partition, next, 1000).expect("read");
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            out.extend(records);
        }
    }
    out
}

/// Waits until the lake's committed offsets reach the log's end on every partition of
/// `topics`.
pub fn wait_caught_up(lake: &Lake, log: &EmbeddedLog, topics: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = lake.committed().expect("committed");
        let behind: Vec<_> = topics
            .iter()
            .flat_map(|topic| {
                (0..log.partitions(topic).expect("partitions")).map(move |p| (*topic, p))
            })
            .filter(|(topic, p)| {
                let end = log.range(topic, *p).expect("range").end;
                !committed
                    .iter()
                    .any(|(t, q, next)| t == topic && q == p && *next == end)
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the lake did not catch up on {behind:?}: {committed:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One lake file and its rows.
#[derive(Debug)]
pub struct FileRows {
    /// Relative to the lake directory.
    pub path: String,
    pub rows: Vec<Value>,
}

/// Reads every `*.parquet` file of a topic with the Rust reader.
pub fn read_topic(lake: &Path, topic: &str) -> Vec<FileRows> {
    let mut paths = Vec::new();
    walk(&lake.join(topic), &mut paths);
    paths.retain(|p| p.extension().is_some_and(|e| e == "parquet") && !is_hidden(p));
    paths.sort();
    paths
        .into_iter()
        .map(|path| FileRows {
            rows: read_file(&path),
            path: path
                .strip_prefix(lake)
                .expect("under the lake")
                .to_string_lossy()
                .into_owned(),
        })
        .collect()
}

pub fn read_file(path: &Path) -> Vec<Value> {
    let file = std::fs::File::open(path).expect("open parquet file");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{} is not a readable Parquet file: {e}", path.display()))
        .build()
        .expect("reader");
    let mut rows = Vec::new();
    for batch in reader {
        rows.extend(batch_rows(&batch.expect("batch")));
    }
    rows
}

fn batch_rows(batch: &RecordBatch) -> Vec<Value> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|i| {
            let mut row = Map::new();
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                row.insert(field.name().clone(), cell(field.name(), column.as_ref(), i));
            }
            Value::Object(row)
        })
        .collect()
}

fn cell(name: &str, column: &dyn Array, i: usize) -> Value {
    if column.is_null(i) {
        return Value::Null;
    }
    let any = column.as_any();
    match column.data_type() {
        DataType::Utf8 => {
            let text = any.downcast_ref::<StringArray>().expect("utf8").value(i);
            if JSON_COLUMNS.contains(&name) {
                serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("column {name} is not JSON: {e}: {text}"))
            } else {
                json!(text)
            }
        }
        DataType::UInt8 => json!(any.downcast_ref::<UInt8Array>().expect("u8").value(i)),
        DataType::UInt32 => json!(any.downcast_ref::<UInt32Array>().expect("u32").value(i)),
        DataType::UInt64 => json!(any.downcast_ref::<UInt64Array>().expect("u64").value(i)),
        DataType::Float64 => json!(any.downcast_ref::<Float64Array>().expect("f64").value(i)),
        DataType::Boolean => json!(any.downcast_ref::<BooleanArray>().expect("bool").value(i)),
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => {
            json!(any
                .downcast_ref::<TimestampMillisecondArray>()
                .expect("ts")
                .value(i))
        }
        other => panic!("column {name} has an unexpected type {other}"),
    }
}

/// Checks the layout of a topic's files — each file is named after its partition and
/// offset range, holds only rows of that partition and range, and sits in the directory of
/// its rows' date — and returns all rows, sorted.
pub fn checked_rows(lake: &Path, topic: &str) -> Vec<Value> {
    let mut all = Vec::new();
    for file in read_topic(lake, topic) {
        let (dir, name) = file.path.rsplit_once('/').expect("a date directory");
        let date = dir
            .strip_prefix(&format!("{topic}/date="))
            .unwrap_or_else(|| panic!("{} is not under {topic}/date=…", file.path));
        let (partition, first, last) = parse_name(name);
        assert!(!file.rows.is_empty(), "{} is empty", file.path);
        for row in &file.rows {
            let offset = row["_offset"].as_u64().expect("offset");
            assert_eq!(
                row["_partition"].as_u64(),
                Some(u64::from(partition)),
                "{}",
                file.path
            );
            assert!(
                (first..=last).contains(&offset),
                "{}: offset {offset}",
                file.path
            );
            assert_eq!(utc_date(row_time(topic, row)), date, "{}: {row}", file.path);
        }
        all.extend(file.rows);
    }
    sort_rows(&mut all);
    all
}

/// `part-p<partition>-<first:020>-<last:020>.parquet` → (partition, first, last).
pub fn parse_name(name: &str) -> (u32, u64, u64) {
    let stem = name
        .strip_prefix("part-p")
        .and_then(|s| s.strip_suffix(".parquet"))
        .unwrap_or_else(|| panic!("unexpected file name {name}"));
    let parts: Vec<&str> = stem.split('-').collect();
    assert_eq!(parts.len(), 3, "{name}");
    assert_eq!(
        (parts[1].len(), parts[2].len()),
        (20, 20),
        "{name}: offsets are zero-padded to 20 digits"
    );
    let first: u64 = parts[1].parse().expect("first");
    let last: u64 = parts[2].parse().expect("last");
    assert!(first <= last, "{name}");
    (parts[0].parse().expect("partition"), first, last)
}

/// The time whose date a row is filed under.
fn row_time(topic: &str, row: &Value) -> i64 {
    let column = match topic {
        "conversations" | "feedback" => "event_time",
        "kpis" => "window_start",
        _ => "_log_time",
    };
    row.get(column)
        .and_then(Value::as_i64)
        .or_else(|| row["_log_time"].as_i64())
        .expect("a time")
}

pub fn sort_rows(rows: &mut [Value]) {
    rows.sort_by_cached_key(|r| {
        (
            r["_partition"].as_u64(),
            r["_offset"].as_u64(),
            r.to_string(),
        )
    });
}

/// Every file (hidden ones too) under `dir`, relative, with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (
                p.strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned(),
                bytes,
            )
        })
        .collect()
}

/// Hidden (temporary) files under `dir`.
pub fn hidden_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    paths.retain(|p| is_hidden(p));
    paths
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The oracle: the rows the lake must hold for the records of a topic, sorted.
pub fn expected_rows(topic: &str, records: &[Record]) -> Vec<Value> {
    let mut rows: Vec<Value> = records
        .iter()
        .flat_map(|r| expected_record_rows(topic, r))
        .collect();
    sort_rows(&mut rows);
    rows
}

fn expected_record_rows(topic: &str, record: &Record) -> Vec<Value> {
    let common = json!({
        "_partition": record.partition,
        "_offset": record.offset,
        "_log_time": record.timestamp_ms,
        "_key": record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "_raw": String::from_utf8_lossy(&record.value),
    });
    let value: Option<Value> = serde_json::from_slice(&record.value).ok();
    let typed: Vec<Value> = match topic {
        "conversations" => vec![conversation_columns(record, value.as_ref())],
        "feedback" => vec![feedback_columns(record, value.as_ref())],
        "kpis" => kpi_columns(value.as_ref()),
        "profiles" => vec![profile_columns(record, value.as_ref())],
        _ => vec![json!({})],
    };
    typed
        .into_iter()
        .map(|typed| {
            let mut row = common.as_object().expect("object").clone();
            row.extend(typed.as_object().expect("object").clone());
            Value::Object(row)
        })
        .collect()
}

fn conversation_columns(record: &Record, value: Option<&Value>) -> Value {
    let valid = serde_json::from_slice::<ConversationEvent>(&record.value).is_ok();
    match value.filter(|_| valid) {
        Some(v) => {
            let latency = |field: &str| v["latency"].get(field).cloned().unwrap_or(json!(0));
            let citations: Vec<Value> = v
                .get("citations")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .map(|c| json!({"chunk_id": c["chunk_id"], "doc_id": c["doc_id"], "score": c.get("score").cloned().unwrap_or(json!(0.0))}))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "conversation_id": v["conversation_id"],
                "event_time": v.get("event_time_ms").cloned().unwrap_or(json!(record.timestamp_ms)),
                "question": v["question"],
                "answer": v.get("answer").cloned().unwrap_or(json!("")),
                "customer": v.get("customer").cloned().unwrap_or(Value::Null),
                "customer_id": v.get("customer_id").cloned().unwrap_or(Value::Null),
                "model": v.get("model").cloned().unwrap_or(json!("unknown")),
                "status": v.get("status").cloned().unwrap_or(json!("ok")),
                "error": v.get("error").cloned().unwrap_or(Value::Null),
                "latency_retrieval_ms": latency("retrieval_ms"),
                "latency_model_ms": latency("model_ms"),
                "latency_total_ms": latency("total_ms"),
                "citations": citations,
                "profile_fields": v.get("profile_fields").cloned().unwrap_or(json!({})),
                "prompt": v.get("prompt").cloned().unwrap_or(json!([])),
            })
        }
        None => json!({
            "conversation_id": null, "event_time": null, "question": null, "answer": null,
            "customer": null, "customer_id": null, "model": null, "status": null, "error": null,
            "latency_retrieval_ms": null, "latency_model_ms": null, "latency_total_ms": null,
            "citations": null, "profile_fields": null, "prompt": null,
        }),
    }
}

fn feedback_columns(record: &Record, value: Option<&Value>) -> Value {
    let valid = serde_json::from_slice::<FeedbackEvent>(&record.value).is_ok();
    match value.filter(|_| valid) {
        Some(v) => {
            let (text, stars, positive) = match &v["rating"] {
                Value::String(s) if s == "up" => ("up".to_owned(), 5, true),
                Value::String(s) if s == "down" => ("down".to_owned(), 1, false),
                n => {
                    let n = n.as_u64().expect("stars");
                    (n.to_string(), n, n >= 4)
                }
            };
            json!({
                "conversation_id": v["conversation_id"],
                "event_time": v.get("event_time_ms").cloned().unwrap_or(json!(record.timestamp_ms)),
                "rating": text,
                "rating_value": stars,
                "positive": positive,
                "comment": v.get("comment").cloned().unwrap_or(Value::Null),
            })
        }
        None => json!({
            "conversation_id": null, "event_time": null, "rating": null,
            "rating_value": null, "positive": null, "comment": null,
        }),
    }
}

const KPI_FIELDS: [&str; 10] = [
    "conversations",
    "feedback",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "positive_share",
    "mean_rating",
    "no_context_share",
    "mean_sentiment",
    "top_downvoted",
];

fn kpi_columns(value: Option<&Value>) -> Vec<Value> {
    let window = value.filter(|v| {
        v["window_start_ms"].is_u64()
            && v["window_end_ms"].is_u64()
            && v["overall"]["conversations"].is_u64()
    });
    let Some(v) = window else {
        let mut row = json!({"window_start": null, "window_end": null, "model": null});
        for field in KPI_FIELDS {
            row[field] = Value::Null;
        }
        return vec![row];
    };
    let mut models: Vec<(String, &Value)> = vec![("all".to_owned(), &v["overall"])];
    if let Some(per_model) = v.get("per_model").and_then(Value::as_object) {
        let mut names: Vec<&String> = per_model.keys().collect();
        names.sort();
        models.extend(names.into_iter().map(|m| (m.clone(), &per_model[m])));
    }
    models
        .into_iter()
        .map(|(model, kpis)| {
            let mut row = json!({
                "window_start": v["window_start_ms"],
                "window_end": v["window_end_ms"],
                "model": model,
            });
            for field in KPI_FIELDS {
                row[field] = kpis.get(field).cloned().unwrap_or(Value::Null);
            }
            row
        })
        .collect()
}

fn profile_columns(record: &Record, value: Option<&Value>) -> Value {
    match value.filter(|v| v.is_object()) {
        Some(v) => {
            let removed = v.get("removed") == Some(&json!(true));
            json!({
                "customer_id": record.key.as_ref().map(|k| json!(String::from_utf8_lossy(k))).unwrap_or_else(|| v.get("customer_id").cloned().unwrap_or(Value::Null)),
                "removed": removed,
                "profile": if removed { Value::Null } else { v.clone() },
            })
        }
        None => json!({"customer_id": null, "removed": null, "profile": null}),
    }
}
