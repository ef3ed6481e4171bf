//! On-disk format fixtures: a small log directory committed under
//! `tests/fixtures/log-v3/` must still open and decode, and writing the same records
//! today must produce the same bytes. A failure here means the format changed: bump the
//! format version, keep reading the old one, and update `docs/log-format.md`. The same
//! records as older formats wrote them must still open too: format 2
//! (`tests/fixtures/log-v2/`, before records had headers) and format 1
//! (`tests/fixtures/log-v1/`, before partitions had bounds files).
//!
//! To regenerate the fixture after a deliberate format change, run this test with
//! `TIDEWATER_LOG_BLESS=1`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tidewater_log::{
    EmbeddedLog, EmbeddedLogConfig, Header, Log, NewRecord, Position, TopicConfig,
};

const TOPIC: &str = "fixture";
const GROUP: &str = "readers";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/log-v3")
}

fn v2_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/log-v2")
}

fn v1_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/log-v1")
}

fn topic_config() -> TopicConfig {
    TopicConfig {
        partitions: 2,
        retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
        retention_bytes: Some(1 << 30),
    }
}

/// The fixture's records: keyed and keyless, empty key and value, negative timestamp,
/// non-UTF-8 bytes, and headers (repeated names, an empty and a null value) on two.
fn records() -> Vec<NewRecord> {
    vec![
        NewRecord {
            key: Some(b"doc-1".to_vec()),
            value: b"{\"text\":\"hello\"}".to_vec(),
            timestamp_ms: 1_700_000_000_000,
            headers: Vec::new(),
        },
        NewRecord {
            key: None,
            value: b"keyless".to_vec(),
            timestamp_ms: 1_700_000_000_001,
            headers: vec![
                Header::new("source", "fixture"),
                Header::new("source", ""),
                Header {
                    name: "trace".into(),
                    value: None,
                },
            ],
        },
        NewRecord {
            key: Some(Vec::new()),
            value: Vec::new(),
            timestamp_ms: -1,
            headers: Vec::new(),
        },
        NewRecord {
            key: Some(b"doc-2".to_vec()),
            value: vec![0, 255, 128, 10],
            timestamp_ms: 0,
            headers: Vec::new(),
        },
        NewRecord {
            key: Some(b"doc-1".to_vec()),
            value: b"{\"text\":\"updated\"}".to_vec(),
            timestamp_ms: i64::MAX,
            headers: Vec::new(),
        },
        NewRecord {
            key: None,
            value: b"second keyless".to_vec(),
            timestamp_ms: 42,
            headers: Vec::new(),
        },
    ]
}

/// Where the records are in the fixture: keyed ones by FNV-1a of the key (`doc-1` and
/// the empty key hash to partition 1, `doc-2` to 0), keyless ones round-robin from
/// partition 0.
fn expected_positions() -> Vec<Position> {
    [(1, 0), (0, 0), (1, 1), (0, 1), (1, 2), (1, 3)]
        .into_iter()
        .map(|(partition, offset)| Position { partition, offset })
        .collect()
}

/// Writes the fixture's contents into a fresh log under `dir`.
fn write_fixture(dir: &Path) {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).expect("open");
    log.ensure_topic(TOPIC, &topic_config()).expect("topic");
    let positions = log.append(TOPIC, records()).expect("append");
    assert_eq!(positions, expected_positions());
    log.commit_offset(GROUP, TOPIC, 0, 2).expect("commit");
    log.commit_offset(GROUP, TOPIC, 1, 1).expect("commit");
    log.commit_offset("other group", TOPIC, 1, 4)
        .expect("commit");
}

/// Every file under `dir`, as relative path and bytes, sorted.
/// The data files under `dir` (the `LOCK` file is the running process's, not data).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in fs_err::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.file_name().is_some_and(|n| n == "LOCK") {
                continue;
            } else {
                let relative = path.strip_prefix(root).expect("inside root").to_owned();
                out.push((relative, fs_err::read(&path).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Copies a fixture into a fresh directory.
fn copy_of(fixture: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tempdir");
    for (relative, bytes) in files(fixture) {
        let target = copy.path().join(relative);
        fs_err::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        fs_err::write(target, bytes).expect("copy");
    }
    copy
}

/// Opens the log in `dir` and checks it holds the fixture's records and offsets (with
/// their headers, when the format has them).
fn assert_decodes(dir: &Path, with_headers: bool) {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).expect("fixture opens");
    assert_eq!(log.topics().expect("topics"), [TOPIC]);
    assert_eq!(log.topic_config(TOPIC).expect("config"), topic_config());
    for (record, position) in records().into_iter().zip(expected_positions()) {
        let read = log
            .read(TOPIC, position.partition, position.offset, 1)
            .expect("read");
        assert_eq!(read.len(), 1);
        let got = &read[0];
        assert_eq!(
            (got.partition, got.offset),
            (position.partition, position.offset)
        );
        assert_eq!(
            (&got.key, &got.value, got.timestamp_ms),
            (&record.key, &record.value, record.timestamp_ms)
        );
        if with_headers {
            assert_eq!(got.headers, record.headers);
        } else {
            assert!(got.headers.is_empty());
        }
    }
    assert_eq!(log.range(TOPIC, 0).expect("range").end, 2);
    assert_eq!(log.range(TOPIC, 1).expect("range").end, 4);
    assert_eq!(
        log.committed_offset(GROUP, TOPIC, 0).expect("offset"),
        Some(2)
    );
    assert_eq!(
        log.committed_offset(GROUP, TOPIC, 1).expect("offset"),
        Some(1)
    );
    assert_eq!(
        log.committed_offset("other group", TOPIC, 1)
            .expect("offset"),
        Some(4)
    );
}

#[test]
fn fixture_log_still_decodes() {
    let copy = copy_of(&fixture_dir());
    assert_decodes(copy.path(), true);
    assert_eq!(
        files(copy.path()),
        files(&fixture_dir()),
        "opening a cleanly closed log changes no file"
    );
}

#[test]
fn v2_log_without_headers_still_opens_and_appends_in_the_new_format() {
    let copy = copy_of(&v2_fixture_dir());
    assert_decodes(copy.path(), false);
    // New records go to a segment of the current format, after the old one.
    let log = EmbeddedLog::open(copy.path(), EmbeddedLogConfig::default()).expect("open");
    let record = NewRecord {
        key: Some(b"doc-3".to_vec()),
        value: b"new".to_vec(),
        timestamp_ms: 5,
        headers: vec![Header::new("h", "v")],
    };
    let position = log.append(TOPIC, vec![record.clone()]).expect("append")[0];
    drop(log);
    let log = EmbeddedLog::open(copy.path(), EmbeddedLogConfig::default()).expect("reopen");
    let read = log
        .read(TOPIC, position.partition, position.offset, 1)
        .expect("read");
    assert_eq!(
        (&read[0].value, &read[0].headers),
        (&record.value, &record.headers)
    );
    // The old segment still reads as before.
    let first = log.read(TOPIC, 1, 0, 1).expect("read");
    assert_eq!(first[0].value, records()[0].value);
}

#[test]
fn v1_log_without_bounds_files_still_opens() {
    let copy = copy_of(&v1_fixture_dir());
    assert_decodes(copy.path(), false);
    // Opening gave each partition the bounds file a log written today has.
    assert_eq!(files(copy.path()), files(&v2_fixture_dir()));
}

#[test]
fn writer_reproduces_fixture_bytes() {
    let fresh = tempfile::tempdir().expect("tempdir");
    write_fixture(fresh.path());
    if std::env::var_os("TIDEWATER_LOG_BLESS").is_some() {
        let target = fixture_dir();
        if target.exists() {
            fs_err::remove_dir_all(&target).expect("remove old fixture");
        }
        for (relative, bytes) in files(fresh.path()) {
            let path = target.join(relative);
            fs_err::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs_err::write(path, bytes).expect("write fixture");
        }
    }
    let written = files(fresh.path());
    let fixture = files(&fixture_dir());
    let names = |files: &[(PathBuf, Vec<u8>)]| {
        files
            .iter()
            .map(|(path, _)| path.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&written), names(&fixture), "same files");
    for ((path, got), (_, want)) in written.iter().zip(&fixture) {
        assert!(
            got == want,
            "{} differs from the fixture: the on-disk format changed",
            path.display()
        );
    }
}
