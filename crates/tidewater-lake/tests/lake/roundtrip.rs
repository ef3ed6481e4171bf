//! Records of every topic go in; once the lake caught up, the files hold exactly the rows
//! the records give (offsets, typed values, dates), laid out as documented.

use std::sync::Arc;
use std::time::Duration;

use tidewater_log::Log;
use tidewater_metrics::Metrics;

use crate::common::*;
use crate::data::{conversation, dataset};

#[test]
fn every_record_becomes_its_rows_in_the_file_of_its_date() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    let data = dataset(40);
    append_all(&log, &data);
    let metrics = Arc::new(Metrics::default());
    // Seven records per batch: every partition writes several batches, several dates each.
    let lake = open_lake(dir.path(), &log, config(7), &metrics);
    lake.start().expect("start");
    wait_caught_up(&lake, &log, &TOPICS);
    lake.stop();

    let lake_dir = lake_dir(dir.path());
    for topic in TOPICS {
        let rows = checked_rows(&lake_dir, topic);
        let expected = expected_rows(topic, &log_records(&log, topic));
        assert_eq!(rows.len(), expected.len(), "{topic}: row count");
        for (row, want) in rows.iter().zip(&expected) {
            assert_eq!(row, want, "{topic}");
        }
        let files = read_topic(&lake_dir, topic);
        assert_eq!(
            metrics.lake_files.with(&[topic]).get(),
            files.len() as u64,
            "{topic}: files metric"
        );
        assert_eq!(
            metrics.lake_rows.with(&[topic]).get(),
            rows.len() as u64,
            "{topic}: rows metric"
        );
    }
    // Several dates per topic, and batches of at most seven records.
    let conversations = read_topic(&lake_dir, "conversations");
    let dates: std::collections::BTreeSet<&str> = conversations
        .iter()
        .map(|f| f.path.split('/').nth(1).expect("date dir"))
        .collect();
    assert_eq!(
        dates.into_iter().collect::<Vec<_>>(),
        [
            "date=2026-01-01",
            "date=2026-01-02",
            "date=2026-01-03",
            "date=2026-01-11"
        ]
    );
    for file in &conversations {
        let (_, first, last) = parse_name(file.path.rsplit('/').next().expect("name"));
        assert!(last - first < 7, "{}", file.path);
    }
    assert!(
        hidden_files(&lake_dir).is_empty(),
        "temporary files left: {:?}",
        hidden_files(&lake_dir)
    );
    let committed = lake.committed().expect("committed");
    assert_eq!(committed.len(), TOPICS.len() * PARTITIONS as usize);
    for (topic, partition, next) in committed {
        assert_eq!(
            next,
            log.range(&topic, partition).expect("range").end,
            "{topic}/{partition}"
        );
    }
}

#[test]
fn a_topic_created_after_start_is_waited_for_and_never_created_by_the_lake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    let metrics = Arc::new(Metrics::default());
    let mut config = config(100);
    config.topics = vec!["conversations".to_owned(), "never".to_owned()];
    let lake = open_lake(dir.path(), &log, config, &metrics);
    lake.start().expect("start");
    std::thread::sleep(Duration::from_millis(250));
    assert!(lake.committed().expect("committed").is_empty());
    append_all(
        &log,
        &[("conversations", (0..5).map(conversation).collect())],
    );
    wait_caught_up(&lake, &log, &["conversations"]);
    lake.stop();
    assert_eq!(
        checked_rows(&lake_dir(dir.path()), "conversations").len(),
        5
    );
    assert_eq!(
        log.topics().expect("topics"),
        vec!["conversations".to_owned()]
    );
}

#[test]
fn records_appended_while_running_are_written_within_the_flush_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    append_all(&log, &[("conversations", Vec::new())]);
    let metrics = Arc::new(Metrics::default());
    let mut config = config(1_000);
    config.topics = vec!["conversations".to_owned()];
    let lake = open_lake(dir.path(), &log, config, &metrics);
    lake.start().expect("start");
    for round in 0..3 {
        log.append(
            "conversations",
            (round * 4..round * 4 + 4).map(conversation).collect(),
        )
        .expect("append");
        // Far fewer than max_rows_per_file: only the flush interval can write them.
        wait_caught_up(&lake, &log, &["conversations"]);
    }
    lake.stop();
    let rows = checked_rows(&lake_dir(dir.path()), "conversations");
    assert_eq!(
        rows,
        expected_rows("conversations", &log_records(&log, "conversations"))
    );
}

#[test]
fn a_restart_goes_on_where_the_lake_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path());
    let metrics = Arc::new(Metrics::default());
    append_all(
        &log,
        &[("conversations", (0..10).map(conversation).collect())],
    );
    let mut config = config(3);
    config.topics = vec!["conversations".to_owned()];
    let lake = open_lake(dir.path(), &log, config.clone(), &metrics);
    lake.start().expect("start");
    wait_caught_up(&lake, &log, &["conversations"]);
    lake.stop();
    drop(lake);

    log.append("conversations", (10..20).map(conversation).collect())
        .expect("append");
    let lake = open_lake(dir.path(), &log, config, &metrics);
    lake.start().expect("start");
    wait_caught_up(&lake, &log, &["conversations"]);
    lake.stop();
    let rows = checked_rows(&lake_dir(dir.path()), "conversations");
    assert_eq!(
        rows,
        expected_rows("conversations", &log_records(&log, "conversations"))
    );
}
