//! Outside readers: pyarrow opens every file with the documented types, and DuckDB reads a
//! topic with Hive partitioning and sees the `date` column.
//!
//! The Python interpreter is `$TIDEWATER_PYTHON`, else the venv `scripts/python-env.sh`
//! creates (`~/.cache/tidewater-py/bin/python`). A missing interpreter fails the test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use serde_json::{json, Value};
use tidewater_core::time::utc_date;
use tidewater_metrics::Metrics;

use crate::common::*;
use crate::data::dataset;

fn python() -> PathBuf {
    let path = match std::env::var_os("TIDEWATER_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/tidewater-py/bin/python"),
    };
    assert!(
        path.exists(),
        "no Python with pyarrow and duckdb at {}: run scripts/python-env.sh (or set TIDEWATER_PYTHON)",
        path.display()
    );
    path
}

const SCRIPT: &str = r#"
import glob, json, os, sys
import duckdb
import pyarrow.parquet as pq

lake = sys.argv[1]
files = {}
for path in sorted(glob.glob(os.path.join(lake, "**", "*.parquet"), recursive=True)):
    table = pq.read_table(path)
    files[os.path.relpath(path, lake)] = {
        "rows": table.num_rows,
        "types": {f.name: str(f.type) for f in table.schema},
    }
con = duckdb.connect()
source = f"read_parquet('{lake}/conversations/**/*.parquet', hive_partitioning=true)"
count, date_type = con.execute(f"select count(*), any_value(typeof(date)) from {source}").fetchone()
per_date = con.execute(f"select cast(date as varchar), count(*) from {source} group by 1 order by 1").fetchall()
ids = con.execute(f"select count(distinct conversation_id), count(*) filter (where status = 'failed') from {source}").fetchone()
print(json.dumps({
    "files": files,
    "count": count,
    "date_type": date_type,
    "per_date": {d: n for d, n in per_date},
    "distinct_ids": ids[0],
    "failed": ids[1],
}))
"#;

#[test]
fn pyarrow_opens_every_file_and_duckdb_reads_the_hive_partitions() {
    let python = python();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    append_all(&log, &dataset(40));
    let lake = open_lake(dir.path(), &log, config(9), &Arc::new(Metrics::default()));
    lake.start().expect("start");
    wait_caught_up(&lake, &log, &TOPICS);
    lake.stop();

    let lake_dir = lake_dir(dir.path());
    let output = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(&lake_dir)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python failed: {}\n(run scripts/python-env.sh if pyarrow or duckdb is missing)",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("python prints JSON");

    // pyarrow: every file the Rust reader sees, with the same row counts and types.
    let mut rust_files = BTreeMap::new();
    for topic in TOPICS {
        for file in read_topic(&lake_dir, topic) {
            rust_files.insert(file.path, file.rows.len());
        }
    }
    let files = report["files"].as_object().expect("files");
    assert_eq!(
        files.keys().cloned().collect::<Vec<_>>(),
        rust_files.keys().cloned().collect::<Vec<_>>()
    );
    for (path, rows) in &rust_files {
        assert_eq!(files[path]["rows"], json!(rows), "{path}");
        let types = &files[path]["types"];
        assert_eq!(types["_partition"], "uint32");
        assert_eq!(types["_offset"], "uint64");
        assert_eq!(types["_log_time"], "timestamp[ms, tz=UTC]");
        assert_eq!(types["_raw"], "string");
        if path.starts_with("conversations/") {
            assert_eq!(types["event_time"], "timestamp[ms, tz=UTC]");
            assert_eq!(types["latency_total_ms"], "uint64");
        }
        if path.starts_with("feedback/") {
            assert_eq!(types["rating_value"], "uint8");
            assert_eq!(types["positive"], "bool");
        }
        if path.starts_with("kpis/") {
            assert_eq!(types["mean_rating"], "double");
        }
    }

    // DuckDB: all rows, a typed `date` column matching the rows' event dates.
    let rows = checked_rows(&lake_dir, "conversations");
    assert_eq!(report["count"], json!(rows.len()));
    assert_eq!(report["date_type"], "DATE");
    let mut per_date: BTreeMap<String, u64> = BTreeMap::new();
    for row in &rows {
        *per_date
            .entry(utc_date(row["event_time"].as_i64().expect("event time")))
            .or_default() += 1;
    }
    assert_eq!(report["per_date"], json!(per_date));
    assert_eq!(report["distinct_ids"], json!(40));
    assert_eq!(
        report["failed"],
        json!(rows.iter().filter(|r| r["status"] == "failed").count())
    );
}
