//! `tidewater bench ingest` on a small dictionary in GCIDE's text form: every store gets
//! every entry, searches find what exact search finds, and the Python peer loads the same
//! Parquet file into pgvector.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::*;
use tidewater_testkit::PgVectorServer;

/// `count` dictionary entries made of SQuAD sentences (distinct, 40–1000 characters),
/// in the dictionary's layout: a header block, then entries separated by blank lines.
fn write_dictionary(path: &Path, count: usize) {
    let squad: Value = serde_json::from_slice(
        &std::fs::read(shared_data().join("squad-v2-dev-subset.json")).unwrap(),
    )
    .unwrap();
    let mut sentences: Vec<String> = Vec::new();
    for article in squad["data"].as_array().unwrap() {
        for paragraph in article["paragraphs"].as_array().unwrap() {
            for sentence in paragraph["context"].as_str().unwrap().split(". ") {
                if sentence.len() >= 40 && !sentences.iter().any(|s| s == sentence) {
                    sentences.push(sentence.to_owned());
                }
            }
        }
    }
    assert!(sentences.len() >= count, "{} sentences", sentences.len());
    let mut text = String::from("00-database-info\n   A test dictionary.\n\n");
    for (i, sentence) in sentences.iter().take(count).enumerate() {
        text.push_str(&format!("Entry{i} \\En\"try\\, n.\n   {sentence}.\n\n"));
    }
    // Too short to be an entry, and a repeat: both skipped.
    text.push_str("[1913 Webster]\n\n");
    text.push_str(&format!("Entry0 \\En\"try\\, n.\n   {}.\n\n", sentences[0]));
    std::fs::write(path, text).unwrap();
}

#[test]
fn every_store_gets_every_entry_and_finds_what_exact_search_finds() {
    const ENTRIES: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let dictionary = dir.path().join("dictionary.txt");
    write_dictionary(&dictionary, ENTRIES);
    let pg = PgVectorServer::shared();
    let out = dir.path().join("ingest.json");
    let output = Command::new(bin())
        .args(["bench", "ingest", "--corpus", "gcide", "--queries", "40"])
        .arg("--gcide")
        .arg(&dictionary)
        .args(["--dsn", pg.dsn()])
        .arg("--peer-python")
        .arg(python())
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--json")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(result["documents"], ENTRIES, "{result}");
    let stores: Vec<&str> = result["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["store"].as_str().unwrap())
        .collect();
    assert_eq!(stores, ["builtin", "pgvector-hnsw", "pgvector-ivfflat"]);
    for store in result["stores"].as_array().unwrap() {
        // Every entry is shorter than a chunk: one chunk each.
        assert_eq!(store["chunks"], ENTRIES, "{store}");
        assert!(store["records_per_s"].as_f64().unwrap() > 0.0, "{store}");
        let (p50, p99) = (
            store["query_p50_ms"].as_f64().unwrap(),
            store["query_p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{store}");
        // 400 vectors: the graphs find the true neighbours, and IVFFlat has one list.
        let recall = store["recall_at_10"].as_f64().unwrap();
        assert!(recall >= 0.95, "{store}");
    }
    let peers = result["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{result}");
    for peer in peers {
        assert_eq!(peer["peer"]["rows"], ENTRIES, "{peer}");
        assert_eq!(peer["peer"]["chunks"], ENTRIES, "{peer}");
        assert!(
            peer["tidewater_over_peer_documents_per_s"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }
    // The tables hold what was reported.
    let mut client = postgres::Client::connect(pg.dsn(), postgres::NoTls).unwrap();
    let mut count = |table: &str| -> i64 {
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    };
    for store in &result["stores"].as_array().unwrap()[1..] {
        let table = format!("{}_chunks", store["table_prefix"].as_str().unwrap());
        assert_eq!(count(&table), ENTRIES as i64, "{table}");
    }
    for peer in peers {
        let table = peer["table"].as_str().unwrap();
        assert_eq!(count(table), ENTRIES as i64, "{table}");
    }
}
