//! Crash consistency under SIGKILL: a child process runs the lake while it appends more
//! records to every topic, and the parent kills it at a random moment, again and again on
//! the same directory. After each kill every visible file is a complete Parquet file; at
//! the end a lake run to completion holds each log record's rows exactly once.
//!
//! The child is this test binary re-invoked as `--ignored --exact kill::child_process`
//! with `TIDEWATER_LAKE_KILL_CHILD` naming the directory.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidewater_log::Log;
use tidewater_metrics::Metrics;

use crate::common::*;
use crate::data::{conversation, dataset, feedback, kpi_window, other_event, profile};

/// Set in the child: the directory of its log and lake.
const CHILD_ENV: &str = "TIDEWATER_LAKE_KILL_CHILD";
/// Set in the child: the first record index it appends.
const START_ENV: &str = "TIDEWATER_LAKE_KILL_START";
const ROUNDS: u64 = 8;
const MAX_ROWS: usize = 5;

/// SplitMix64, for the kill delays.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The child: runs the lake over the directory and keeps appending until killed.
#[test]
#[ignore = "run by sigkill_at_random_moments_neither_loses_nor_repeats_rows"]
fn child_process() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let start: u64 = std::env::var(START_ENV)
        .expect("start env")
        .parse()
        .expect("start");
    let log = open_log(dir);
    let lake = open_lake(dir, &log, config(MAX_ROWS), &Arc::new(Metrics::default()));
    lake.start().expect("start");
    println!("ready");
    // A safety net should the parent die without killing the child.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = start;
    while Instant::now() < deadline {
        log.append("conversations", vec![conversation(i), conversation(i + 1)])
            .expect("append");
        log.append("feedback", vec![feedback(i)]).expect("append");
        log.append("kpis", vec![kpi_window(i)]).expect("append");
        log.append("profiles", vec![profile(i)]).expect("append");
        log.append("events", vec![other_event(i)]).expect("append");
        i += 2;
        std::thread::sleep(Duration::from_millis(3));
    }
}

#[test]
fn sigkill_at_random_moments_neither_loses_nor_repeats_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open_log(dir.path());
        append_all(&log, &dataset(60));
    }
    let lake_dir = lake_dir(dir.path());
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    eprintln!("kill delays seeded with {seed}");
    // Kills that left temporary files: they hit a batch between its intent and its end.
    let mut mid_batch = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--ignored",
                "--exact",
                "kill::child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(START_ENV, (1_000 + round * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // The test harness prints `test kill::child_process ... ` on the same line.
        let ready = lines.any(|l| l.is_ok_and(|l| l.trim_end().ends_with("ready")));
        assert!(ready, "round {round}: the child did not start");
        std::thread::sleep(Duration::from_millis(20 + splitmix(&mut seed) % 400));
        child.kill().expect("kill");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "round {round}: the child was killed");
        if !hidden_files(&lake_dir).is_empty() {
            mid_batch += 1;
        }
        // Nothing partial is visible: every file under its final name reads completely.
        for topic in TOPICS {
            for file in read_topic(&lake_dir, topic) {
                assert!(
                    !file.rows.is_empty(),
                    "round {round}: {} is empty",
                    file.path
                );
            }
        }
    }

    let log = open_log(dir.path());
    let metrics = Arc::new(Metrics::default());
    let lake = open_lake(dir.path(), &log, config(MAX_ROWS), &metrics);
    lake.start().expect("start");
    wait_caught_up(&lake, &log, &TOPICS);
    lake.stop();
    let mut total = 0;
    for topic in TOPICS {
        let records = log_records(&log, topic);
        assert!(records.len() > 60, "{topic}: the children appended");
        let rows = checked_rows(&lake_dir, topic);
        assert_eq!(
            rows,
            expected_rows(topic, &records),
            "{topic}: rows differ from the log's records"
        );
        total += rows.len();
    }
    assert!(
        hidden_files(&lake_dir).is_empty(),
        "temporary files left: {:?}",
        hidden_files(&lake_dir)
    );
    assert!(log.topics().expect("topics").len() == TOPICS.len());
    eprintln!(
        "{total} rows checked after {ROUNDS} kills, {mid_batch} of them while files were staged"
    );
}
