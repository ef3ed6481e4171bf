//! The knowledge pipeline over a real embedded log and state store.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use tidewater_core::DocumentFormat;
use tidewater_embed::Embedder;
use tidewater_knowledge::{SearchFilter, SearchRequest};
use tidewater_log::NewRecord;

fn search(
    f: &Fixture,
    query: &str,
    k: usize,
    prefix: Option<&str>,
) -> Vec<tidewater_knowledge::SearchHit> {
    let filter = prefix.map(|p| SearchFilter {
        doc_id_prefix: Some(p.into()),
        ..Default::default()
    });
    f.knowledge
        .search(&SearchRequest {
            query: query.into(),
            k,
            filter,
        })
        .unwrap()
}

fn chunk_ids_of(f: &Fixture, doc: &str) -> Vec<String> {
    f.knowledge
        .document(doc)
        .unwrap()
        .map(|d| d.chunk_ids)
        .unwrap_or_default()
}

#[test]
fn mid_document_edit_reembeds_only_the_chunks_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    let mut paragraphs = long_document(260);
    f.write(&[upsert("book", &paragraphs.join("\n\n"))]);
    f.settle();
    let before: BTreeSet<String> = chunk_ids_of(&f, "book").into_iter().collect();
    assert!(
        before.len() >= 100,
        "want a document of at least 100 chunks, got {}",
        before.len()
    );
    let embedded_before = f.knowledge.metrics().embedded_chunks.get();
    assert_eq!(embedded_before as usize, before.len());

    let middle = paragraphs.len() / 2;
    paragraphs[middle].push_str(" An inserted sentence about a zeppelin over the harbour.");
    f.write(&[upsert("book", &paragraphs.join("\n\n"))]);
    f.settle();

    let after: BTreeSet<String> = chunk_ids_of(&f, "book").into_iter().collect();
    let embedded = f.knowledge.metrics().embedded_chunks.get() - embedded_before;
    let new_ids = after.difference(&before).count();
    assert!(
        (1..=4).contains(&embedded),
        "re-embedded {embedded} chunks for a one-paragraph edit"
    );
    assert_eq!(
        embedded as usize, new_ids,
        "every new chunk embedded exactly once"
    );
    assert_eq!(
        f.knowledge.index_len(),
        after.len(),
        "old chunks left the index"
    );
    let embedder = WordHashEmbedder;
    let edited =
        tidewater_chunk::chunk_text(&paragraphs.join("\n\n"), &Default::default(), 512, &|t| {
            embedder.count_tokens(t)
        });
    let zeppelin = edited.iter().find(|c| c.text.contains("zeppelin")).unwrap();
    let hits = search(&f, &zeppelin.text, 1, None);
    assert_eq!(hits[0].text, zeppelin.text, "the edit is searchable");

    // The same content again (a touch, a re-scan) embeds nothing.
    f.write(&[upsert("book", &paragraphs.join("\n\n"))]);
    f.settle();
    assert_eq!(
        f.knowledge.metrics().embedded_chunks.get() - embedded_before,
        embedded
    );
}

#[test]
fn deletes_and_rewrites_leave_no_stale_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    f.write(&[
        upsert("a/one", "The lighthouse keeper logs every ship."),
        upsert("b/two", "Copper kettles whistle at dawn."),
    ]);
    f.settle();
    assert_eq!(search(&f, "lighthouse keeper", 5, Some("a/")).len(), 1);

    f.write(&[
        upsert("a/one", "The orchard blooms in violet."),
        delete("b/two"),
    ]);
    f.settle();
    assert!(f.knowledge.document("b/two").unwrap().is_none());
    assert!(search(&f, "copper kettles", 5, Some("b/")).is_empty());
    let hits = search(&f, "lighthouse keeper", 5, None);
    assert!(
        hits.iter().all(|h| !h.text.contains("lighthouse")),
        "old text still served: {hits:?}"
    );
    assert_eq!(f.knowledge.index_len(), 1);
    assert_eq!(f.knowledge.chunk_ids().unwrap().len(), 1);
}

#[test]
fn metadata_filters_select_documents() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    let mut en = upsert("en", "Ferries leave the harbour every hour.");
    en.metadata.insert("lang".into(), "en".into());
    let mut fr = upsert("fr", "Ferries leave the harbour every hour, in French.");
    fr.metadata.insert("lang".into(), "fr".into());
    f.write(&[en, fr]);
    f.settle();
    let mut filter = SearchFilter::default();
    filter.metadata.insert("lang".into(), "fr".into());
    let hits = f
        .knowledge
        .search(&SearchRequest {
            query: "ferries".into(),
            k: 5,
            filter: Some(filter),
        })
        .unwrap();
    assert_eq!(
        hits.iter().map(|h| h.doc_id.as_str()).collect::<Vec<_>>(),
        vec!["fr"]
    );
    assert_eq!(hits[0].metadata["lang"], "fr");
}

#[test]
fn bad_events_are_dead_lettered_and_the_pipeline_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    f.log
        .append(
            "documents",
            vec![NewRecord {
                key: Some(b"junk".to_vec()),
                value: b"{not an event".to_vec(),
                timestamp_ms: 0,
                headers: Vec::new(),
            }],
        )
        .unwrap();
    f.write(&[
        upsert_bytes("latin1.txt", b"caf\xe9 au lait", DocumentFormat::Text),
        upsert_bytes(
            "image.txt",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            DocumentFormat::Text,
        ),
        upsert("good.txt", "Saffron and granite make a fine mosaic."),
    ]);
    f.settle();
    assert!(f
        .knowledge
        .document("good.txt")
        .unwrap()
        .is_some_and(|d| d.indexed));
    let rejected = f.knowledge.document("latin1.txt").unwrap().unwrap();
    assert!(!rejected.indexed && rejected.chunks == 0);
    assert!(
        rejected
            .rejected
            .as_deref()
            .is_some_and(|r| r.contains("not valid UTF-8")),
        "{rejected:?}"
    );

    // The same bad content again is not dead-lettered twice; fixed content is indexed.
    f.write(&[upsert_bytes(
        "latin1.txt",
        b"caf\xe9 au lait",
        DocumentFormat::Text,
    )]);
    f.settle();
    assert_eq!(
        f.knowledge
            .metrics()
            .dead_letters
            .with(&["knowledge", "documents"])
            .get(),
        3
    );
    f.write(&[upsert("latin1.txt", "café au lait")]);
    f.settle();
    let fixed = f.knowledge.document("latin1.txt").unwrap().unwrap();
    assert!(
        fixed.indexed && fixed.rejected.is_none() && fixed.chunks == 1,
        "{fixed:?}"
    );

    let dlq = tidewater_engine::DeadLetterRecord::topic_for("knowledge");
    let letters: Vec<tidewater_engine::DeadLetterRecord> = f
        .log
        .read(&dlq, 0, 0, 100)
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(letters.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("not a document event")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not valid UTF-8")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("binary")), "{reasons:?}");
    // The original event is kept for replay.
    let junk = letters
        .iter()
        .find(|l| l.reason.contains("not a document event"))
        .unwrap();
    assert_eq!(junk.value().unwrap(), b"{not an event");
}

#[test]
fn html_is_indexed_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    let html = "<html><head><style>p{color:red}</style><script>var x=1;</script></head>\
                <body><h1>Harbour</h1><p>The <b>falcon</b> nests on the quarry wall.</p></body></html>";
    f.write(&[upsert_bytes(
        "page.html",
        html.as_bytes(),
        DocumentFormat::Html,
    )]);
    f.settle();
    let hits = search(&f, "falcon quarry", 1, None);
    assert!(
        hits[0].text.contains("falcon nests on the quarry wall"),
        "{:?}",
        hits[0].text
    );
    assert!(
        !hits[0].text.contains('<') && !hits[0].text.contains("color:red"),
        "{:?}",
        hits[0].text
    );
}

#[test]
fn n6_files_a_source_cannot_name_are_dead_lettered_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), Arc::new(WordHashEmbedder));
    let reason = "files:docs: '/srv/docs/bad\u{fffd}name.txt' is not indexed: file name is not valid UTF-8 (document ids are text)";
    let rejected = tidewater_core::DocumentEvent {
        op: tidewater_core::DocumentOp::Reject,
        content_hash: None,
        body: reason.as_bytes().to_vec(),
        ..upsert("bad\\xFFname.txt", "")
    };
    let too_long = "d/".repeat(2100) + "x.txt";
    f.write(&[
        rejected,
        upsert(&too_long, "an id past the limit"),
        upsert("good.txt", "Saffron and granite make a fine mosaic."),
    ]);
    f.settle();

    // Neither reaches the documents; the pipeline goes on.
    assert!(f.knowledge.document("bad\\xFFname.txt").unwrap().is_none());
    assert!(f.knowledge.document(&too_long).unwrap().is_none());
    assert!(f
        .knowledge
        .document("good.txt")
        .unwrap()
        .is_some_and(|d| d.indexed));
    let dlq = tidewater_engine::DeadLetterRecord::topic_for("knowledge");
    let reasons: Vec<String> = f
        .log
        .read(&dlq, 0, 0, 100)
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_slice::<tidewater_engine::DeadLetterRecord>(&r.value)
                .unwrap()
                .reason
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r == reason), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("over the limit of 4096")),
        "{reasons:?}"
    );
}
