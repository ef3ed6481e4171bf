//! One id limit for every source: what the file source indexes, the API can fetch and
//! delete; what it cannot name is dead-lettered with its path and the reason.
#![cfg(unix)]

mod support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use support::*;

#[test]
fn n6_file_ids_reach_the_api_and_unnameable_files_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    let deep_dir = vec!["L".repeat(200); 8].join("/");
    std::fs::create_dir_all(docs.join(&deep_dir)).unwrap();
    std::fs::write(
        docs.join(&deep_dir).join("deep.txt"),
        "A deep long path about narwhals.",
    )
    .unwrap();
    std::fs::write(
        docs.join(OsStr::from_bytes(b"bad\xffname.txt")),
        "A bad name about walruses.",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut tw = Tidewater::start(&docs, &data, &[]);
    tw.wait_ready(Duration::from_secs(120));

    // A 1 616-byte id: found by search, fetched and deleted through the API.
    let deep = format!("{deep_dir}/deep.txt");
    assert!(deep.len() > 1024);
    let hits = tw.search("narwhals", 1, None);
    assert_eq!(hits[0]["doc_id"], deep.as_str(), "{hits:?}");
    let (status, doc) = tw.json("GET", &format!("/v1/documents/{deep}"), None);
    assert_eq!((status, &doc["indexed"]), (200, &true.into()), "{doc}");
    let (status, body) = tw.request("DELETE", &format!("/v1/documents/{deep}"), None);
    assert_eq!(status, 202, "{body}");
    eventually(Duration::from_secs(20), "the deep document deleted", || {
        tw.request("GET", &format!("/v1/documents/{deep}"), None).0 == 404
    });
    // The source names the file in a WARN.
    let log = std::fs::read_to_string(&tw.stderr).unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("tidewater_sources"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("bad\u{fffd}name.txt"), "{log}");
    tw.terminate();

    // The file that cannot be named is in the dead letters, with its path and the reason.
    let letters = dlq_list(&data, Some("knowledge"));
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("bad\u{fffd}name.txt") && reason.contains("not valid UTF-8"),
        "{reason}"
    );
}

/// A file too large to travel as one log record with its event header is skipped and
/// reported, as an oversized file is: it neither wedges the source in endless retries
/// nor keeps the files after it from being indexed.
#[test]
fn a_file_larger_than_a_log_record_is_skipped_not_retried_for_ever() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    // Over 64 KiB minus the header room, under `max_file_bytes`' default.
    std::fs::write(docs.join("big.txt"), "walrus ".repeat(9_000)).unwrap();
    std::fs::write(docs.join("small.txt"), "A small file about narwhals.").unwrap();
    let config = dir.path().join("tidewater.toml");
    std::fs::write(&config, "[log]\nmax_record_bytes = 65536\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let mut tw = Tidewater::start(&docs, &dir.path().join("data"), &["--config", &config]);
    tw.wait_ready(Duration::from_secs(120));
    let (status, _) = tw.request("GET", "/v1/documents/big.txt", None);
    assert_eq!(status, 404);
    let (status, _) = tw.request("GET", "/v1/documents/small.txt", None);
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(&tw.stderr).unwrap();
    assert!(
        log.contains("exceeds max_file_bytes") && log.contains("big.txt"),
        "{}",
        tw.log_tail()
    );
}
