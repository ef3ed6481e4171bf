//! Exactly-once effects: Tidewater is killed with SIGKILL at random moments while it
//! ingests the SQuAD corpus; after a final restart its chunks and its answers to fixed
//! queries equal those of a run that was never interrupted.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::Rng;
use support::*;

const KILLS: usize = 20;
const QUERIES: &[&str] = &[
    "In what country is Normandy located?",
    "What is computational complexity theory concerned with?",
    "Which city is the largest in Southern California?",
    "Who was the duke in the battle of Hastings?",
    "What is a decision problem?",
];

/// Every chunk id, by listing each document's status.
fn chunk_ids(tw: &Tidewater, docs: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for article in std::fs::read_dir(docs).unwrap() {
        let article = article.unwrap().path();
        for file in std::fs::read_dir(&article).unwrap() {
            let file = file.unwrap().path();
            let doc_id = file
                .strip_prefix(docs)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let (status, doc) = tw.json("GET", &format!("/v1/documents/{doc_id}"), None);
            assert_eq!(status, 200, "{doc_id} missing: {doc}");
            for id in doc["chunk_ids"].as_array().unwrap() {
                assert!(
                    ids.insert(id.as_str().unwrap().to_owned()),
                    "duplicate chunk id {id}"
                );
            }
        }
    }
    ids
}

fn answers(tw: &Tidewater) -> Vec<Vec<String>> {
    QUERIES
        .iter()
        .map(|q| {
            tw.search(q, 5, None)
                .iter()
                .map(|h| h["chunk_id"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn sigkill_during_ingest_neither_loses_nor_repeats_effects() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    let status = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/squad-to-files.py"))
        .arg(shared_data().join("squad-v2-dev-subset.json"))
        .arg(&docs)
        .status()
        .unwrap();
    assert!(status.success());
    // Snapshots every 300 ms, so kills also land while snapshots and journal trims happen.
    let config = dir.path().join("tidewater.toml");
    std::fs::write(
        &config,
        "[knowledge]\nsnapshot_interval = \"300ms\"\n[engine]\nbatch_max_records = 8\n",
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let extra = ["--config", config.as_str()];

    let started = Instant::now();
    let mut reference = Tidewater::start(&docs, &dir.path().join("reference"), &extra);
    eventually(Duration::from_secs(120), "reference serving", || {
        reference.try_request("GET", "/healthz", None).is_ok()
    });
    let startup = started.elapsed();
    reference.wait_ready(Duration::from_secs(600));
    let ingest = started.elapsed() - startup;
    let want_ids = chunk_ids(&reference, &docs);
    let want_answers = answers(&reference);
    reference.terminate();
    assert!(want_ids.len() >= 126, "{} chunks", want_ids.len());

    let data = dir.path().join("crashed");
    let mut rng = rand::rng();
    // Each run lives for a random time around start-up plus a share of the ingest, so
    // the kills spread over the whole ingest (and some land during start-up itself).
    let (startup_ms, share_ms) = (
        startup.as_millis() as u64,
        (2 * ingest.as_millis() as u64 / KILLS as u64).max(100),
    );
    eprintln!(
        "reference: start-up {startup:?}, ingest {ingest:?}, {} chunks",
        want_ids.len()
    );
    for kill in 0..KILLS {
        let tw = Tidewater::start(&docs, &data, &extra);
        std::thread::sleep(Duration::from_millis(
            startup_ms / 2 + rng.random_range(0..startup_ms + share_ms),
        ));
        let alive = tw.try_request("GET", "/healthz", None).is_ok();
        eprintln!("kill {kill}: after start (serving: {alive})");
        tw.kill();
    }
    let mut tw = Tidewater::start(&docs, &data, &extra);
    tw.wait_ready(Duration::from_secs(600));
    assert_eq!(
        chunk_ids(&tw, &docs),
        want_ids,
        "chunk ids differ from the uninterrupted run"
    );
    assert_eq!(
        answers(&tw),
        want_answers,
        "top-5 answers differ from the uninterrupted run"
    );
    assert_eq!(
        tw.metric("tidewater_index_vectors") as usize,
        want_ids.len(),
        "index holds other vectors than the state"
    );
    tw.terminate();
}
