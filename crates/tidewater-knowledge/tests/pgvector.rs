//! The knowledge pipeline with PostgreSQL/pgvector as its index (`[knowledge.index]
//! backend = "pgvector"`), against a real PostgreSQL started once for this binary by the
//! testkit. Each test works in tables of its own prefix; the log is an embedded one in a
//! temporary folder.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::{Condvar, Mutex};
use tidewater_core::{DocumentEvent, DocumentFormat};
use tidewater_embed::Embedder;
use tidewater_engine::DeadLetterRecord;
use tidewater_knowledge::{
    IndexBackend, Knowledge, KnowledgeConfig, KnowledgeIndexConfig, SearchFilter, SearchRequest,
};
use tidewater_log::{EmbeddedLog, Log};
use tidewater_pgvector::{ChunkDigest, PgVectorConfig, PgVectorStore};
use tidewater_testkit::PgVectorServer;

/// `[knowledge.index.pgvector]` on the shared test server, in tables named `prefix_*`.
fn pgvector_config(prefix: &str) -> PgVectorConfig {
    PgVectorConfig {
        table_prefix: prefix.to_owned(),
        ..PgVectorConfig::new(PgVectorServer::shared().dsn())
    }
}

fn knowledge_config(prefix: &str) -> KnowledgeConfig {
    KnowledgeConfig {
        index: KnowledgeIndexConfig {
            backend: IndexBackend::Pgvector,
            pgvector: Some(pgvector_config(prefix)),
            ..KnowledgeIndexConfig::default()
        },
        ..KnowledgeConfig::default()
    }
}

fn embedded_log(dir: &Path) -> Arc<dyn Log> {
    EmbeddedLog::open(dir.join("log"), Default::default()).unwrap()
}

/// Every chunk in the tables of `prefix`, with a checksum of its vector.
fn digest(prefix: &str) -> Vec<ChunkDigest> {
    PgVectorStore::open(
        &pgvector_config(prefix),
        WordHashEmbedder.model_id(),
        WordHashEmbedder.dimension(),
    )
    .unwrap()
    .chunk_digest()
    .unwrap()
}

fn search(
    knowledge: &Knowledge,
    query: &str,
    filter: Option<SearchFilter>,
) -> Vec<(String, String)> {
    let request = SearchRequest {
        query: query.into(),
        k: 5,
        filter,
    };
    knowledge
        .search(&request)
        .unwrap()
        .into_iter()
        .map(|hit| (hit.doc_id, hit.text))
        .collect()
}

/// How the pipeline chunks `text` (the oracle the index is checked against).
fn chunk_texts(text: &str) -> Vec<String> {
    let pieces = tidewater_chunk::chunk_text(text, &Default::default(), 512, &|t| {
        WordHashEmbedder.count_tokens(t)
    });
    pieces.into_iter().map(|p| p.text).collect()
}

fn texts_of(knowledge: &Knowledge, doc_id: &str) -> Vec<String> {
    let chunks = knowledge.chunks_of(doc_id).unwrap();
    chunks.into_iter().map(|c| c.text).collect()
}

fn dead_letter_reasons(log: &dyn Log) -> Vec<String> {
    let topic = DeadLetterRecord::topic_for("knowledge");
    let records = log.read(&topic, 0, 0, 1000).unwrap();
    records
        .iter()
        .map(|r| serde_json::from_slice::<DeadLetterRecord>(&r.value).unwrap())
        .map(|letter| letter.reason)
        .collect()
}

fn with_metadata(mut event: DocumentEvent, key: &str, value: &str) -> DocumentEvent {
    event.metadata.insert(key.into(), value.into());
    event
}

#[test]
fn edits_deletes_and_rejections_reach_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_with(
        dir.path(),
        embedded_log(dir.path()),
        knowledge_config("k_lifecycle"),
        Arc::new(WordHashEmbedder),
    );
    let book = long_document(40).join("\n\n");
    f.write(&[
        with_metadata(
            upsert("a/keeper", "The lighthouse keeper logs every ship."),
            "lang",
            "en",
        ),
        with_metadata(
            upsert("b/kettle", "Copper kettles whistle at dawn."),
            "lang",
            "fr",
        ),
        upsert("book", &book),
        upsert_bytes(
            "image.png",
            b"\x89PNG\r\n\x1a\n\x00\x00IHDR",
            DocumentFormat::Text,
        ),
    ]);
    f.settle();
    assert!(
        !dir.path().join("knowledge/knowledge.redb").exists(),
        "pgvector mode keeps no local state"
    );

    let hits = search(&f.knowledge, "lighthouse keeper", None);
    assert_eq!(
        hits[0],
        (
            "a/keeper".into(),
            "The lighthouse keeper logs every ship.".into()
        )
    );
    let french = SearchFilter {
        metadata: [("lang".to_owned(), "fr".into())].into_iter().collect(),
        ..SearchFilter::default()
    };
    let filtered = search(&f.knowledge, "lighthouse keeper", Some(french));
    assert_eq!(
        filtered,
        [("b/kettle".into(), "Copper kettles whistle at dawn.".into())]
    );
    let prefixed = SearchFilter {
        doc_id_prefix: Some("a/".into()),
        ..SearchFilter::default()
    };
    assert_eq!(search(&f.knowledge, "copper", Some(prefixed)).len(), 1);

    // chunks_of follows the document's order, and the status lists the same chunks.
    let expected = chunk_texts(&book);
    assert!(expected.len() > 3, "want a document of several chunks");
    assert_eq!(texts_of(&f.knowledge, "book"), expected);
    let status = f.knowledge.document("book").unwrap().unwrap();
    assert!(status.indexed && status.rejected.is_none());
    assert_eq!(status.chunks, expected.len());
    let chunk_ids: Vec<String> = f
        .knowledge
        .chunks_of("book")
        .unwrap()
        .into_iter()
        .map(|c| c.chunk_id)
        .collect();
    assert_eq!(status.chunk_ids, chunk_ids);

    let rejected = f.knowledge.document("image.png").unwrap().unwrap();
    assert!(!rejected.indexed && rejected.chunks == 0, "{rejected:?}");
    assert!(rejected
        .rejected
        .as_deref()
        .is_some_and(|r| r.contains("binary")));
    assert!(texts_of(&f.knowledge, "image.png").is_empty());

    f.write(&[
        upsert("a/keeper", "The orchard blooms in violet."),
        delete("b/kettle"),
    ]);
    f.settle();
    assert!(f.knowledge.document("b/kettle").unwrap().is_none());
    assert!(texts_of(&f.knowledge, "b/kettle").is_empty());
    assert_eq!(
        texts_of(&f.knowledge, "a/keeper"),
        ["The orchard blooms in violet."]
    );
    let edited = f.knowledge.document("a/keeper").unwrap().unwrap();
    assert!(
        edited.metadata.is_empty(),
        "the edit dropped the metadata: {edited:?}"
    );
    let stale = search(&f.knowledge, "lighthouse keeper copper kettles", None);
    assert!(
        stale
            .iter()
            .all(|(_, text)| !text.contains("lighthouse") && !text.contains("Copper")),
        "old text still served: {stale:?}"
    );
    assert_eq!(f.knowledge.index_len(), expected.len() + 1);
    assert_eq!(f.knowledge.verify_index().unwrap(), 0);

    let reasons = dead_letter_reasons(f.log.as_ref());
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("'image.png' is binary"), "{reasons:?}");
    assert!(f.knowledge.exact_index().is_err());
    f.knowledge.stop();
}

/// Documents of one to many chunks, and queries whose best match is known.
fn corpus() -> Vec<DocumentEvent> {
    let paragraphs = long_document(60);
    vec![
        upsert(
            "pier",
            "Ferries leave the pier every hour under a cloudy sky.",
        ),
        upsert(
            "hill",
            "Bees hum in the apple blossom while kites circle the hill.",
        ),
        upsert(
            "igloo",
            "A penguin waddles past the igloo, slow as a snail.",
        ),
        upsert("book/one", &paragraphs[..30].join("\n\n")),
        upsert("book/two", &paragraphs[30..].join("\n\n")),
        upsert("dupes", &vec![repeated_paragraph(); 4].join("\n\n")),
    ]
}

/// A paragraph over half a chunk long, so that each copy of it is a chunk of its own.
fn repeated_paragraph() -> String {
    "The same tide table, printed again. "
        .repeat(20)
        .trim_end()
        .to_owned()
}

#[test]
fn the_builtin_index_and_pgvector_hold_the_same_chunks_and_rank_alike() {
    let (hnsw_dir, pg_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hnsw = start(hnsw_dir.path(), Arc::new(WordHashEmbedder));
    let pg = start_with(
        pg_dir.path(),
        embedded_log(pg_dir.path()),
        knowledge_config("k_same_as_hnsw"),
        Arc::new(WordHashEmbedder),
    );
    for f in [&hnsw, &pg] {
        f.write(&corpus());
        f.settle();
    }
    let chunk_ids = hnsw.knowledge.chunk_ids().unwrap();
    assert!(chunk_ids.len() > 10, "{chunk_ids:?}");
    assert!(
        chunk_ids
            .iter()
            .any(|id| id.starts_with("dupes#") && id.contains('~')),
        "repeated text gets ~n: {chunk_ids:?}"
    );
    assert_eq!(pg.knowledge.chunk_ids().unwrap(), chunk_ids);
    for doc_id in ["book/one", "dupes", "pier"] {
        assert_eq!(
            texts_of(&pg.knowledge, doc_id),
            texts_of(&hnsw.knowledge, doc_id),
            "{doc_id}"
        );
    }
    let queries = [
        ("ferries pier cloudy sky", "pier"),
        ("bees apple blossom kites", "hill"),
        ("penguin igloo snail", "igloo"),
        ("tide table printed again", "dupes"),
    ];
    for (query, best) in queries {
        let top = |f: &Fixture| search(&f.knowledge, query, None)[0].0.clone();
        assert_eq!(top(&hnsw), best, "{query}");
        assert_eq!(top(&pg), best, "{query}");
    }
    // A query drawn from the long documents: both agree on the document.
    let paragraph = long_document(60)[42].clone();
    let top = |f: &Fixture| search(&f.knowledge, &paragraph, None)[0].0.clone();
    assert_eq!(top(&pg), top(&hnsw));
    assert_eq!(top(&pg), "book/two");
    pg.knowledge.stop();
    hnsw.knowledge.stop();
}

#[test]
fn a_restart_resumes_from_the_offsets_in_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let log = embedded_log(dir.path());
    let first_run = tempfile::tempdir().unwrap();
    let embedder = Arc::new(CountingEmbedder::new(WordHashEmbedder));
    let before = start_with(
        first_run.path(),
        Arc::clone(&log),
        knowledge_config("k_restart"),
        embedder.clone(),
    );
    before.write(&corpus());
    before.settle();
    let indexed = digest("k_restart");
    let embedded = embedder.count();
    let distinct: BTreeSet<&str> = indexed.iter().map(|chunk| chunk.text.as_str()).collect();
    assert!(
        distinct.len() < indexed.len(),
        "the repeated paragraphs share a text"
    );
    assert_eq!(
        embedded,
        distinct.len(),
        "each distinct chunk text embedded once"
    );
    before.knowledge.stop();

    // Another data folder: everything the pipeline resumes from is in PostgreSQL.
    let second_run = tempfile::tempdir().unwrap();
    let after = start_with(
        second_run.path(),
        Arc::clone(&log),
        knowledge_config("k_restart"),
        embedder.clone(),
    );
    after.settle();
    let records = |f: &Fixture| {
        let metrics = f.knowledge.metrics();
        metrics
            .pipeline_records
            .with(&["knowledge", "documents"])
            .get()
    };
    assert_eq!(
        records(&after),
        0,
        "records committed before the restart were replayed"
    );
    assert_eq!(after.knowledge.lag(), 0);
    assert_eq!(digest("k_restart"), indexed);
    assert_eq!(embedder.count(), embedded);

    // New events after the restart: only they are read, only new texts embedded.
    let mut paragraphs = long_document(60);
    let old_chunks = chunk_texts(&paragraphs[..30].join("\n\n"));
    paragraphs[5].push_str(" A zeppelin drifts over the harbour.");
    let edited = paragraphs[..30].join("\n\n");
    let new_texts = chunk_texts(&edited)
        .into_iter()
        .filter(|text| !old_chunks.contains(text))
        .count();
    assert!((1..old_chunks.len()).contains(&new_texts), "{new_texts}");
    after.write(&[
        upsert("book/one", &edited),
        upsert("late", "A late arrival about saffron."),
    ]);
    after.settle();
    assert_eq!(records(&after), 2);
    assert_eq!(
        embedder.count() - embedded,
        new_texts + 1,
        "only the edited chunks and the new document are embedded"
    );
    let now = digest("k_restart");
    assert_eq!(now.len(), indexed.len() + 1);
    let changed: BTreeSet<&str> = now
        .iter()
        .filter(|chunk| !indexed.contains(chunk))
        .map(|chunk| chunk.doc_id.as_str())
        .collect();
    assert_eq!(changed, BTreeSet::from(["book/one", "late"]));
    let ids: BTreeSet<&str> = now.iter().map(|chunk| chunk.chunk_id.as_str()).collect();
    assert_eq!(ids.len(), now.len(), "a chunk stored twice");
    after.knowledge.stop();
}

/// Holds every embedding call until each member has one in flight for every partition:
/// then both have prepared the first batch of every partition (from offset 0, expecting
/// no stored offset) before either commits, so every first batch is raced for.
struct Rendezvous {
    /// Calls made so far, per member.
    calls: Mutex<[usize; 2]>,
    all_here: Condvar,
    per_member: usize,
}

impl Rendezvous {
    fn arrive(&self, member: usize) {
        let mut calls = self.calls.lock();
        calls[member] += 1;
        self.all_here.notify_all();
        // A gate that never opens fails the test (no race), not the worker.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while calls.iter().any(|n| *n < self.per_member)
            && !self.all_here.wait_until(&mut calls, deadline).timed_out()
        {}
    }
}

/// Round `round` of the race: one event per document. Every chunk text of every round is
/// distinct, so the first round embeds exactly as many texts as it stores chunks.
fn race_events(round: usize) -> Vec<DocumentEvent> {
    let paragraphs = long_document(24 + 3 * 24);
    (0..24)
        .map(|i| {
            let doc_id = format!("doc{i:02}");
            match (i + round) % 6 {
                0 if round > 0 => delete(&doc_id),
                1 if round > 0 => upsert_bytes(&doc_id, b"bin\x00ary", DocumentFormat::Text),
                2 => upsert(&doc_id, &paragraphs[24 + 3 * i..27 + 3 * i].join("\n\n")),
                _ => upsert(&doc_id, &format!("Round {round}: {}", paragraphs[i])),
            }
        })
        .collect()
}

#[test]
fn two_members_sharing_the_log_and_postgres_commit_every_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = embedded_log(dir.path());
    let config = knowledge_config("k_race");
    let topic = config.topic.clone();
    let partitions = config.topic_config.partitions;
    let metrics = Arc::new(tidewater_metrics::Metrics::default());
    let writer = tidewater_knowledge::DocumentWriter::new(Arc::clone(&log), topic.clone(), metrics);
    // The first round is in the log before either starts: both begin at offset 0.
    log.ensure_topic(&topic, &config.topic_config).unwrap();
    writer.write(&race_events(0)).unwrap();
    for p in 0..partitions {
        assert!(
            log.range(&topic, p).unwrap().end > 0,
            "partition {p} has nothing to race for"
        );
    }

    let gate = Arc::new(Rendezvous {
        calls: Mutex::new([0; 2]),
        all_here: Condvar::new(),
        per_member: partitions as usize,
    });
    let embedders: Vec<Arc<CountingEmbedder<WordHashEmbedder>>> = (0..2)
        .map(|member| {
            let gate = Arc::clone(&gate);
            let hook = move || gate.arrive(member);
            Arc::new(CountingEmbedder::with_hook(WordHashEmbedder, hook))
        })
        .collect();
    let embedded = || embedders.iter().map(|e| e.count()).sum::<usize>();
    let members: Vec<(tempfile::TempDir, Arc<Knowledge>)> = embedders
        .iter()
        .map(|embedder| {
            let data = tempfile::tempdir().unwrap();
            let knowledge = Knowledge::open(
                data.path(),
                config.clone(),
                embedder.clone(),
                Arc::clone(&log),
                Arc::new(tidewater_metrics::Metrics::default()),
            )
            .unwrap();
            let engine = tidewater_engine::EngineConfig {
                batch_max_records: 5,
                ..fast_retries()
            };
            knowledge.start(engine).unwrap();
            (data, knowledge)
        })
        .collect();
    let caught_up = |members: &[(tempfile::TempDir, Arc<Knowledge>)]| {
        for (_, knowledge) in members {
            assert!(knowledge.wait_caught_up(Duration::from_secs(120)).unwrap());
        }
    };
    caught_up(&members);
    // Both prepared every first batch; one of each pair was fenced and thrown away.
    let first_round = digest("k_race").len();
    assert!(
        embedded() > first_round,
        "no batch was raced for: {} texts embedded for {first_round} chunks",
        embedded()
    );

    // More rounds while both run: edits, deletes, rejections, in small appends.
    for round in 1..4 {
        for events in race_events(round).chunks(7) {
            writer.write(events).unwrap();
        }
    }
    caught_up(&members);
    for (_, knowledge) in &members {
        knowledge.stop();
    }

    // Each record was committed by exactly one of them.
    let total: u64 = (0..partitions)
        .map(|p| log.range(&topic, p).unwrap().end)
        .sum();
    let committed: Vec<u64> = members
        .iter()
        .map(|(_, k)| {
            let metrics = k.metrics();
            metrics
                .pipeline_records
                .with(&["knowledge", "documents"])
                .get()
        })
        .collect();
    assert_eq!(
        committed.iter().sum::<u64>(),
        total,
        "committed per member: {committed:?}"
    );

    // Each document holds the chunks of its last event, once.
    let raced = digest("k_race");
    let mut per_doc: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for chunk in &raced {
        per_doc
            .entry(chunk.doc_id.as_str())
            .or_default()
            .push(chunk.text.as_str());
    }
    for event in race_events(3) {
        let mut want = match std::str::from_utf8(&event.body) {
            Ok(text) if !event.body.is_empty() && !event.body.contains(&0) => chunk_texts(text),
            _ => Vec::new(),
        };
        let mut got: Vec<String> = per_doc
            .remove(event.doc_id.as_str())
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{}", event.doc_id);
    }
    assert!(
        per_doc.is_empty(),
        "chunks of unknown documents: {per_doc:?}"
    );

    // One member alone over the same events, in tables of its own, stores the same.
    let alone_dir = tempfile::tempdir().unwrap();
    let alone = start_with(
        alone_dir.path(),
        Arc::clone(&log),
        knowledge_config("k_race_alone"),
        Arc::new(WordHashEmbedder),
    );
    alone.settle();
    alone.knowledge.stop();
    assert!(
        raced.len() >= 16,
        "12 one-chunk documents and 4 longer: {}",
        raced.len()
    );
    assert_eq!(raced, digest("k_race_alone"));
    let reasons = dead_letter_reasons(log.as_ref());
    assert!(
        reasons.iter().any(|r| r.contains("is binary")),
        "{reasons:?}"
    );
}
