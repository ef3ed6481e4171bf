//! The vector index is a derived store: it is rebuilt from snapshots plus the journal,
//! and a reconcile check finds and repairs any difference from the state.

mod common;

use std::sync::Arc;

use common::*;

fn snapshot_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("knowledge/index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "usearch"))
        .collect();
    files.sort();
    files
}

#[test]
fn losing_the_newest_snapshot_rebuilds_the_index_instead_of_serving_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    f.write(&[
        upsert("a", "Alpha harbour lantern."),
        upsert("b", "Beta granite quarry."),
    ]);
    f.settle();
    f.knowledge.snapshot().unwrap();
    let older = std::fs::read(&snapshot_files(dir.path())[0]).unwrap();
    f.write(&[upsert("c", "Gamma copper orchard."), delete("a")]);
    f.settle();
    let want = f.knowledge.chunk_ids().unwrap();
    // The final snapshot trims the journal up to its position.
    f.knowledge.stop();
    drop(f);

    // The newest snapshot is lost; only an older one (whose journal is gone) is left.
    for file in snapshot_files(dir.path()) {
        std::fs::remove_file(file).unwrap();
    }
    std::fs::write(
        dir.path()
            .join("knowledge/index/index-00000000000000000002.usearch"),
        older,
    )
    .unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    assert_eq!(f.knowledge.chunk_ids().unwrap(), want);
    assert_eq!(
        f.knowledge.index_len(),
        want.len(),
        "rebuilt from the state"
    );
    assert_eq!(f.knowledge.verify_index().unwrap(), 0);
    let hits = f
        .knowledge
        .search(&tidewater_knowledge::SearchRequest {
            query: "Alpha harbour lantern.".into(),
            k: 5,
            filter: None,
        })
        .unwrap();
    assert!(
        hits.iter().all(|h| h.doc_id != "a"),
        "deleted document served: {hits:?}"
    );
}

#[test]
fn a_stale_snapshot_is_detected_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    f.write(&[upsert("a", "Alpha harbour lantern.")]);
    f.settle();
    f.knowledge.snapshot().unwrap();
    let stale = std::fs::read(&snapshot_files(dir.path())[0]).unwrap();
    f.write(&[
        upsert("b", "Beta granite quarry."),
        upsert("c", "Gamma copper orchard."),
    ]);
    f.settle();
    f.knowledge.stop();
    drop(f);

    // An old index file under the newest snapshot's name: its journal position lies.
    let newest = snapshot_files(dir.path()).pop().unwrap();
    std::fs::write(&newest, stale).unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    assert_eq!(f.knowledge.index_len(), 1, "the stale snapshot was loaded");

    assert_eq!(
        f.knowledge.verify_index().unwrap(),
        2,
        "b and c were missing from the index"
    );
    assert_eq!(f.knowledge.verify_index().unwrap(), 0);
    assert_eq!(f.knowledge.index_len(), 3);
    let hits = f
        .knowledge
        .search(&tidewater_knowledge::SearchRequest {
            query: "Beta granite quarry.".into(),
            k: 1,
            filter: None,
        })
        .unwrap();
    assert_eq!(hits[0].doc_id, "b");
}

/// L7: with `knowledge.redb` deleted (the index snapshots kept), a restart replays the
/// log and the documents are served again, but `tidewater_documents` read 0: the old
/// snapshot, ahead of the new state's journal, was loaded and the replayed journal entries
/// below its position were skipped. Gauges must show the rebuilt state.
#[test]
fn l7_gauges_show_the_state_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    let words = ["harbour", "lantern", "granite", "orchard", "copper"];
    let docs: Vec<_> = (0..20)
        .map(|i| {
            let text = format!("Gauge {i} {} {}.", words[i % 5], words[(i / 5) % 5]);
            upsert(&format!("g/{i}"), &text)
        })
        .collect();
    f.write(&docs);
    f.settle();
    let want = f.knowledge.chunk_ids().unwrap();
    assert_eq!(f.knowledge.metrics().documents.get(), 20);
    // The final snapshot is written at stop.
    f.knowledge.stop();
    drop(f);
    assert!(!snapshot_files(dir.path()).is_empty());

    std::fs::remove_file(dir.path().join("knowledge/knowledge.redb")).unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    f.settle();
    assert_eq!(f.knowledge.chunk_ids().unwrap(), want);
    let metrics = f.knowledge.metrics();
    assert_eq!(
        metrics.documents.get(),
        20,
        "documents gauge after the rebuild"
    );
    assert_eq!(metrics.index_vectors.get(), want.len() as i64);
    assert_eq!(f.knowledge.index_len(), want.len());
    assert_eq!(f.knowledge.verify_index().unwrap(), 0);
    let hits = f
        .knowledge
        .search(&tidewater_knowledge::SearchRequest {
            query: "Gauge 7 granite lantern.".into(),
            k: 1,
            filter: None,
        })
        .unwrap();
    assert_eq!(hits[0].doc_id, "g/7");

    // A second restart (from the snapshot written at stop) shows the same.
    f.knowledge.stop();
    drop(f);
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    f.settle();
    assert_eq!(f.knowledge.metrics().documents.get(), 20);
    assert_eq!(f.knowledge.index_len(), want.len());
}
