//! The on-disk format fixture: a small lake written by this code is checked in under
//! `tests/fixtures/lake-v1/`. Writing the same records today must give the same file
//! names, the same Arrow schema (names, types, nullability), the same key-value metadata
//! and the same rows; a difference is a format change (see `docs/lake-format.md`).
//! Bytes are not compared: a new parquet-rs may encode the same rows differently.
//!
//! After a deliberate format change, regenerate with
//! `TIDEWATER_LAKE_BLESS=1 cargo test -p tidewater-lake --test lake format` and bump the
//! format version.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::Fields;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tidewater_metrics::Metrics;

use crate::common::*;
use crate::data::dataset;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lake-v1")
}

/// A file's schema fields and key-value metadata.
fn shape(path: &Path) -> (Fields, Vec<(String, Option<String>)>) {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).expect("open"))
            .expect("parquet");
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter(|kv| kv.key.starts_with("tidewater."))
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    (builder.schema().fields().clone(), metadata)
}

#[test]
fn the_lake_format_matches_the_checked_in_fixture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    append_all(&log, &dataset(4));
    let lake = open_lake(dir.path(), &log, config(100), &Arc::new(Metrics::default()));
    lake.start().expect("start");
    wait_caught_up(&lake, &log, &TOPICS);
    lake.stop();
    let written = snapshot(&lake_dir(dir.path()));

    if std::env::var_os("TIDEWATER_LAKE_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(fixture_dir());
        for (path, bytes) in &written {
            let target = fixture_dir().join(path);
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            std::fs::write(target, bytes).expect("write fixture");
        }
    }
    let fixture = snapshot(&fixture_dir());
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        fixture.keys().collect::<Vec<_>>(),
        "file names"
    );
    for path in written.keys() {
        let now = lake_dir(dir.path()).join(path);
        let then = fixture_dir().join(path);
        assert_eq!(shape(&now), shape(&then), "{path}: schema or metadata");
        assert_eq!(read_file(&now), read_file(&then), "{path}: rows");
    }
    let (_, metadata) = shape(&lake_dir(dir.path()).join(written.keys().next().expect("a file")));
    assert!(metadata.contains(&(
        "tidewater.lake.format_version".to_owned(),
        Some("1".to_owned())
    )));
}
