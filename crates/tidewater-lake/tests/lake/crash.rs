//! A batch interrupted between its steps — after its intent, after some of its files were
//! renamed into place, after all of them but before the offset commit — is redone on
//! restart: the lake ends with exactly the files, byte for byte, of a run that never
//! crashed, so no row is missing or doubled.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewater_lake::CrashPoint;
use tidewater_metrics::Metrics;

use crate::common::*;
use crate::data::dataset;

const RECORDS: u64 = 30;
const MAX_ROWS: usize = 4;
const TOPIC: &str = "conversations";

/// Runs a lake over the dataset to the end in a fresh directory; returns the lake's files.
fn reference_run() -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    append_all(&log, &dataset(RECORDS));
    let lake = open_lake(
        dir.path(),
        &log,
        config(MAX_ROWS),
        &Arc::new(Metrics::default()),
    );
    lake.start().expect("start");
    wait_caught_up(&lake, &log, &TOPICS);
    lake.stop();
    snapshot(&lake_dir(dir.path()))
}

/// The files of the first batch of the topic's partition 0 in the reference run.
fn first_batch(reference: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let name = format!("part-p0-{:020}-{:020}.parquet", 0, MAX_ROWS - 1);
    reference
        .keys()
        .filter(|p| p.starts_with(&format!("{TOPIC}/")) && p.ends_with(&name))
        .cloned()
        .collect()
}

/// Runs the lake until the injected crash at `at`, checks what is left with
/// `check_crashed`, restarts it and checks the result against a run that never crashed.
fn crash_and_recover(at: CrashPoint, check_crashed: impl FnOnce(&Path, &[(String, u32, u64)])) {
    let reference = reference_run();
    let batch = first_batch(&reference);
    assert!(
        batch.len() >= 3,
        "the first batch must span several dates: {batch:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    append_all(&log, &dataset(RECORDS));
    let metrics = Arc::new(Metrics::default());
    let lake = open_lake(dir.path(), &log, config(MAX_ROWS), &metrics);
    lake.crash_next_batch(TOPIC, at);
    lake.start().expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lake.crashed() {
        assert!(
            Instant::now() < deadline,
            "the injected crash did not happen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    lake.stop();
    let committed = lake.committed().expect("committed");
    drop(lake);

    let lake_dir = lake_dir(dir.path());
    let crashed = snapshot(&lake_dir);
    // Whatever is visible is a complete file of the reference run.
    for (path, bytes) in &crashed {
        if path.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        assert_eq!(
            reference.get(path),
            Some(bytes),
            "{path} is not a complete file"
        );
    }
    check_crashed(&lake_dir, &committed);

    let lake = open_lake(dir.path(), &log, config(MAX_ROWS), &metrics);
    lake.start().expect("restart");
    wait_caught_up(&lake, &log, &TOPICS);
    lake.stop();
    let recovered = snapshot(&lake_dir);
    assert_eq!(
        recovered.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "file set after recovery"
    );
    assert!(
        recovered == reference,
        "the recovered files differ from the reference's bytes"
    );
    for topic in TOPICS {
        assert_eq!(
            checked_rows(&lake_dir, topic),
            expected_rows(topic, &log_records(&log, topic)),
            "{topic}"
        );
    }
}

fn conversations_committed(committed: &[(String, u32, u64)]) -> Vec<u64> {
    committed
        .iter()
        .filter(|(t, _, _)| t == TOPIC)
        .map(|(_, _, next)| *next)
        .collect()
}

fn topic_files(lake_dir: &Path) -> (usize, usize) {
    let files = snapshot(&lake_dir.join(TOPIC));
    let hidden = files
        .keys()
        .filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with('.')))
        .count();
    (files.len() - hidden, hidden)
}

#[test]
fn crash_after_the_intent_before_any_file() {
    crash_and_recover(CrashPoint::AfterIntent, |lake_dir, committed| {
        assert_eq!(topic_files(lake_dir), (0, 0));
        assert_eq!(conversations_committed(committed), vec![0, 0]);
    });
}

#[test]
fn crash_after_some_files_of_a_batch_were_renamed() {
    crash_and_recover(CrashPoint::AfterRenames(1), |lake_dir, committed| {
        let (visible, hidden) = topic_files(lake_dir);
        assert_eq!(visible, 1, "one file renamed");
        assert!(hidden >= 2, "the batch's other files are still temporary");
        assert_eq!(conversations_committed(committed), vec![0, 0]);
    });
}

#[test]
fn crash_after_all_files_were_renamed_before_the_offset_commit() {
    crash_and_recover(CrashPoint::BeforeOffsetCommit, |lake_dir, committed| {
        let (visible, hidden) = topic_files(lake_dir);
        assert!(visible >= 3);
        assert_eq!(hidden, 0);
        assert_eq!(conversations_committed(committed), vec![0, 0]);
    });
}

/// Without the recorded intent, a restart with a larger batch would write offsets 0..=5 over
/// the crashed batch's 0..=3 files, doubling four rows.
#[test]
fn a_redo_writes_the_recorded_range_even_when_the_batch_size_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    append_all(&log, &dataset(RECORDS));
    let metrics = Arc::new(Metrics::default());
    let lake = open_lake(dir.path(), &log, config(MAX_ROWS), &metrics);
    lake.crash_next_batch(TOPIC, CrashPoint::BeforeOffsetCommit);
    lake.start().expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lake.crashed() {
        assert!(
            Instant::now() < deadline,
            "the injected crash did not happen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    lake.stop();
    drop(lake);

    let lake = open_lake(dir.path(), &log, config(MAX_ROWS + 2), &metrics);
    lake.start().expect("restart");
    wait_caught_up(&lake, &log, &TOPICS);
    lake.stop();
    let lake_dir = lake_dir(dir.path());
    for topic in TOPICS {
        assert_eq!(
            checked_rows(&lake_dir, topic),
            expected_rows(topic, &log_records(&log, topic)),
            "{topic}"
        );
    }
    let names: Vec<String> = read_topic(&lake_dir, TOPIC)
        .into_iter()
        .map(|f| f.path)
        .collect();
    let redone = format!("part-p0-{:020}-{:020}.parquet", 0, MAX_ROWS - 1);
    assert!(names.iter().any(|n| n.ends_with(&redone)), "{names:?}");
}
