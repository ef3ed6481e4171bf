//! `tidewater import`: Parquet and JSON Lines rows become documents that a started
//! Tidewater indexes; bad rows become dead letters naming file, unit and row; a finished
//! file is not imported twice; a SIGKILLed import resumes without losing or doubling a
//! row (checked on the documents topic itself).

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::{json, Value};
use support::*;
use tidewater_log::{EmbeddedLog, Log};

fn import(data: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("import")
        .arg("--data-dir")
        .arg(data)
        .arg("--quiet")
        .args(args)
        .output()
        .expect("running tidewater import")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Rows (id, text, lang) as a Parquet file with row groups of `group` rows.
fn write_parquet(path: &Path, rows: &[(i64, Option<String>)], group: usize) {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0)));
    let texts: ArrayRef = Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.clone())));
    let langs: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "pt")));
    let batch =
        RecordBatch::try_from_iter([("id", ids), ("text", texts), ("lang", langs)]).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_size(group)
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// How often each key appears on the documents topic of `data`.
fn keys_on_topic(data: &Path) -> HashMap<String, usize> {
    let config = tidewater_config::Config::default();
    let log = EmbeddedLog::open(data.join("log"), config.log.embedded()).expect("the log");
    let mut keys = HashMap::new();
    for partition in 0..log.partitions("documents").unwrap() {
        let mut next = log.range("documents", partition).unwrap().start;
        loop {
            let records = log.read("documents", partition, next, 1_000).unwrap();
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for record in records {
                let key = String::from_utf8(record.key.unwrap()).unwrap();
                *keys.entry(key).or_insert(0) += 1;
            }
        }
    }
    keys
}

#[test]
fn rows_become_indexed_documents_and_bad_rows_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let (data, docs) = (dir.path().join("data"), dir.path().join("docs"));
    std::fs::create_dir_all(&docs).unwrap();
    let jsonl = dir.path().join("notes.jsonl");
    let lines = [
        json!({"id": "j1", "text": "The tide in Porto rises twice a day.", "lang": "en"})
            .to_string(),
        json!({"id": "j2", "text": "Lisbon trams climb steep hills.", "lang": "en"}).to_string(),
        json!({"id": "j3", "text": "Sardines are grilled in June.", "lang": "en"}).to_string(),
        json!({"id": 4, "text": "An integer id is taken as text.", "lang": "en"}).to_string(),
        json!({"id": "j5", "lang": "en"}).to_string(),
        "this line is not JSON".to_owned(),
        json!({"id": {"nested": 1}, "text": "an id that is an object"}).to_string(),
        json!({"id": "j8", "text": "   "}).to_string(),
    ];
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let parquet = dir.path().join("harbours.parquet");
    let rows: Vec<(i64, Option<String>)> = (1..=9)
        .map(|i| {
            (
                100 + i,
                (i != 5).then(|| format!("Harbour number {i} shelters fishing boats.")),
            )
        })
        .collect();
    write_parquet(&parquet, &rows, 4);

    let args = ["--metadata-columns", "lang"];
    let mut all = args.to_vec();
    let (jsonl_arg, parquet_arg) = (jsonl.to_str().unwrap(), parquet.to_str().unwrap());
    all.extend([jsonl_arg, parquet_arg]);
    let out = import(&data, &all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("imported 12 documents (5 rows dead-lettered"),
        "{}",
        stdout(&out)
    );
    // Done files are not imported again; a changed one is, from its start.
    let again = import(&data, &all);
    assert!(
        stdout(&again).contains("imported 0 documents (0 rows"),
        "{}",
        stdout(&again)
    );
    let mut changed = lines.join("\n") + "\n";
    changed.push_str(&(json!({"id": "j9", "text": "A line added later."}).to_string() + "\n"));
    std::fs::write(&jsonl, changed).unwrap();
    let out = import(&data, &all);
    assert!(
        stdout(&out).contains("imported 5 documents (4 rows"),
        "{}",
        stdout(&out)
    );

    // The dead letters name file, unit and row.
    let out = Command::new(bin())
        .args(["dlq", "list", "--pipeline", "import", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let letters: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    let expected = [
        format!("{jsonl_arg}, batch of lines 0, row 4: no text (column \"text\")"),
        format!("{jsonl_arg}, batch of lines 0, row 5: the line is not JSON"),
        format!("{jsonl_arg}, batch of lines 0, row 6: the id (column \"id\") is not a string"),
        format!("{jsonl_arg}, batch of lines 0, row 7: the text is empty"),
        format!("{parquet_arg}, row group 1, row 0: no text (column \"text\")"),
    ];
    for want in &expected {
        assert!(
            reasons.iter().any(|r| r.starts_with(want.as_str())),
            "no dead letter starting {want:?} in {reasons:?}"
        );
    }

    // A Tidewater started on the data directory indexes the imported documents.
    let mut tidewater = Tidewater::start(&docs, &data, &[]);
    tidewater.wait_ready(Duration::from_secs(120));
    for id in ["j1", "4", "j9", "101", "109"] {
        let (status, doc) = tidewater.json("GET", &format!("/v1/documents/{id}"), None);
        assert_eq!(status, 200, "{id}: {doc}");
    }
    let (status, _) = tidewater.json("GET", "/v1/documents/105", None);
    assert_eq!(status, 404, "the row without text is not a document");
    let (_, found) = tidewater.json(
        "POST",
        "/v1/search",
        Some(
            &json!({"query": "boats in a harbour", "k": 3, "filter": {"metadata": {"lang": "pt"}}})
                .to_string(),
        ),
    );
    let results = found["results"].as_array().unwrap();
    assert!(!results.is_empty(), "{found}");
    for hit in results {
        assert_eq!(hit["metadata"]["lang"], "pt", "{hit}");
    }
    tidewater.terminate();
}

#[test]
fn a_killed_import_resumes_without_losing_or_doubling_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jsonl = dir.path().join("big.jsonl");
    let n = 60_000;
    let text: String = (0..n)
        .map(|i| json!({"id": format!("d{i}"), "text": format!("document {i} of the bulk load, {}", "with some words ".repeat(8))}).to_string() + "\n")
        .collect();
    std::fs::write(&jsonl, text).unwrap();
    let progress = data.join("imports");
    let units_done = || -> u64 {
        let Some(Ok(entry)) = std::fs::read_dir(&progress).ok().and_then(|mut d| d.next()) else {
            return 0;
        };
        let saved: Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap_or_default())
            .unwrap_or(Value::Null);
        saved["units_done"].as_u64().unwrap_or(0)
    };

    // Killed twice while it works (once as soon as it has begun, once a little later),
    // then left to finish.
    for wait in [Duration::ZERO, Duration::from_millis(100)] {
        let mut child = Command::new(bin())
            .arg("import")
            .arg("--data-dir")
            .arg(&data)
            .args(["--quiet", "--batch-rows", "300"])
            .arg(&jsonl)
            .spawn()
            .unwrap();
        let before = units_done();
        let deadline = Instant::now() + Duration::from_secs(60);
        while units_done() <= before {
            assert!(Instant::now() < deadline, "no progress within 60 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(wait);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let done = units_done();
    assert!(
        done > 0 && done < (n as u64).div_ceil(300),
        "the kills came mid-import ({done} units done)"
    );
    let out = import(&data, &["--batch-rows", "300", jsonl.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let keys = keys_on_topic(&data);
    assert_eq!(keys.len(), n, "every row is on the topic");
    let doubled: Vec<_> = keys.iter().filter(|(_, &count)| count > 1).collect();
    assert!(doubled.is_empty(), "rows appended twice: {doubled:?}");
}

#[test]
fn an_unreadable_file_is_named_and_the_others_are_imported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = dir.path().join("good.parquet");
    write_parquet(
        &good,
        &[(1, Some("a row".into())), (2, Some("another".into()))],
        10,
    );
    let truncated = dir.path().join("truncated.parquet");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = import(
        &data,
        &[truncated.to_str().unwrap(), good.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("truncated.parquet: not a readable Parquet file"),
        "{stderr}"
    );
    assert!(
        stdout(&out).contains("imported 2 documents"),
        "{}",
        stdout(&out)
    );
    assert_eq!(keys_on_topic(&data).len(), 2);
}
