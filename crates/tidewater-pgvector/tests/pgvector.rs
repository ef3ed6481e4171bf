//! The pgvector index against a real PostgreSQL 18 with pgvector 0.8, started once for
//! this test binary by `scripts/pgvector.sh` in a temporary folder on a free port. Each
//! test works in tables of its own prefix, so the tests run in parallel. A machine where
//! the cluster cannot be started fails these tests with the script's output.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Barrier};

use postgres::{Client, NoTls};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tidewater_pgvector::{
    BatchPosition, ChunkRow, DocumentRow, Filter, IndexChanges, IndexMethod, PgVectorConfig,
    PgVectorError, PgVectorStore, APPLICATION_NAME,
};
use tidewater_testkit::PgVectorServer;

/// The cluster shared by the tests (stopped by the testkit's watchdog once this process
/// exits).
fn server() -> &'static PgVectorServer {
    PgVectorServer::shared()
}

/// The embedding model the test vectors stand for.
const MODEL: &str = "test-model";

fn config(prefix: &str) -> PgVectorConfig {
    PgVectorConfig {
        table_prefix: prefix.to_owned(),
        ..PgVectorConfig::new(server().dsn())
    }
}

fn open(prefix: &str, dimension: usize) -> PgVectorStore {
    PgVectorStore::open(&config(prefix), MODEL, dimension).expect("opening the index")
}

/// A direct connection, to look at the tables behind the store's back.
fn psql() -> Client {
    Client::connect(server().dsn(), NoTls).expect("connecting to the test cluster")
}

fn doc(doc_id: &str, metadata: Value) -> DocumentRow {
    let Value::Object(metadata) = metadata else {
        panic!("metadata must be an object")
    };
    DocumentRow {
        doc_id: doc_id.to_owned(),
        source: "files".to_owned(),
        content_hash: format!("content-of-{doc_id}"),
        metadata,
        updated_at_ms: 1_700_000_000_000,
        rejected: None,
    }
}

fn chunk(doc_id: &str, ordinal: u32, text: &str, vector: &[f32]) -> ChunkRow {
    ChunkRow {
        chunk_id: format!("{doc_id}#{ordinal}"),
        doc_id: doc_id.to_owned(),
        ordinal,
        text: text.to_owned(),
        text_hash: format!("hash-of-{text}"),
        vector: vector.to_vec(),
    }
}

fn position(expected: Option<u64>, next_offset: u64) -> BatchPosition {
    BatchPosition {
        pipeline: "knowledge".to_owned(),
        topic: "documents".to_owned(),
        partition: 0,
        expected,
        next_offset,
    }
}

fn committed(store: &PgVectorStore) -> Option<u64> {
    store
        .committed_offset("knowledge", "documents", 0)
        .expect("reading the offset")
}

fn ids(hits: &[tidewater_pgvector::PgHit]) -> Vec<&str> {
    hits.iter().map(|h| h.chunk_id.as_str()).collect()
}

fn metadata(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

/// Two documents, three chunks, in a 3-dimensional space.
fn first_batch() -> IndexChanges {
    IndexChanges {
        upsert_documents: vec![
            doc("a", json!({"lang": "en", "tags": ["x", "y"]})),
            doc("b", json!({"lang": "de"})),
        ],
        upsert_chunks: vec![
            chunk("a", 0, "alpha zero", &[1.0, 0.0, 0.0]),
            chunk("a", 1, "alpha one", &[0.0, 1.0, 0.0]),
            chunk("b", 0, "beta zero", &[0.0, 0.0, 1.0]),
        ],
        ..IndexChanges::default()
    }
}

fn random_unit(rng: &mut StdRng, dimension: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dimension)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// `n` documents of one chunk each with random vectors; every `tag_every`-th document has
/// `{"tag": "rare"}`, the others `{"tag": "common"}`.
fn random_corpus(n: usize, dimension: usize, tag_every: usize, seed: u64) -> IndexChanges {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut changes = IndexChanges::default();
    for i in 0..n {
        let id = format!("doc{i:05}");
        let tag = if i % tag_every == 0 { "rare" } else { "common" };
        changes
            .upsert_documents
            .push(doc(&id, json!({ "tag": tag })));
        changes.upsert_chunks.push(chunk(
            &id,
            0,
            &format!("text {i}"),
            &random_unit(&mut rng, dimension),
        ));
    }
    changes
}

/// The exact top-k chunk ids among `changes`' chunks that `keep` lets through.
fn brute_force(
    changes: &IndexChanges,
    query: &[f32],
    k: usize,
    keep: impl Fn(&ChunkRow) -> bool,
) -> Vec<String> {
    let mut scored: Vec<(f32, &str)> = changes
        .upsert_chunks
        .iter()
        .filter(|c| keep(c))
        .map(|c| (cosine(&c.vector, query), c.chunk_id.as_str()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(k)
        .map(|(_, id)| id.to_owned())
        .collect()
}

fn recall(found: &[tidewater_pgvector::PgHit], truth: &[String]) -> f64 {
    let truth: BTreeSet<&str> = truth.iter().map(String::as_str).collect();
    let hit = found
        .iter()
        .filter(|h| truth.contains(h.chunk_id.as_str()))
        .count();
    hit as f64 / truth.len() as f64
}

#[test]
fn open_creates_the_tables_and_reopening_is_idempotent() {
    let store = open("t_open", 3);
    store
        .apply(&position(None, 3), &first_batch())
        .expect("applying");

    let mut db = psql();
    let tables: Vec<String> = db
        .query(
            "SELECT tablename::text FROM pg_tables WHERE tablename LIKE 't\\_open\\_%' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "t_open_chunks",
            "t_open_documents",
            "t_open_meta",
            "t_open_offsets"
        ]
    );
    let meta = db
        .query_one(
            "SELECT schema_version, dimension, metric, model FROM t_open_meta",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            meta.get::<_, i32>(0),
            meta.get::<_, i32>(1),
            meta.get::<_, String>(2),
            meta.get::<_, String>(3)
        ),
        (2, 3, "cosine".to_owned(), MODEL.to_owned())
    );
    let index: String = db
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 't_open_chunks_embedding'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        index.contains("USING hnsw (embedding vector_cosine_ops)")
            && index.contains("m='16'")
            && index.contains("ef_construction='256'"),
        "{index}"
    );

    let before = store.chunk_digest().unwrap();
    drop(store);
    let reopened = open("t_open", 3);
    assert_eq!(reopened.chunk_digest().unwrap(), before);
    assert_eq!(reopened.len().unwrap(), 3);
    assert_eq!(committed(&reopened), Some(3));
    let index_oid = |db: &mut Client| -> u32 {
        db.query_one("SELECT 't_open_chunks_embedding'::regclass::oid", &[])
            .unwrap()
            .get(0)
    };
    let oid = index_oid(&mut db);
    drop(open("t_open", 3));
    assert_eq!(index_oid(&mut db), oid, "reopening rebuilt the index");
}

#[test]
fn opening_with_another_model_of_the_same_dimension_names_both() {
    drop(open("t_model", 3));
    let err = PgVectorStore::open(&config("t_model"), "another-model", 3).unwrap_err();
    assert!(
        matches!(
            &err,
            PgVectorError::ModelMismatch { stored, requested, .. }
                if stored == MODEL && requested == "another-model"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("table_prefix"), "{err}");
    // The recorded model opens again.
    drop(open("t_model", 3));
}

#[test]
fn tables_of_schema_version_1_get_the_model_of_the_first_process_that_opens_them() {
    drop(open("t_v1", 3));
    let mut db = Client::connect(PgVectorServer::shared().dsn(), NoTls).unwrap();
    // What version 1 wrote: no model.
    db.batch_execute(
        "ALTER TABLE t_v1_meta DROP COLUMN model; UPDATE t_v1_meta SET schema_version = 1",
    )
    .unwrap();
    drop(open("t_v1", 3));
    let meta = db
        .query_one("SELECT schema_version, model FROM t_v1_meta", &[])
        .unwrap();
    assert_eq!(
        (meta.get::<_, i32>(0), meta.get::<_, String>(1)),
        (2, MODEL.to_owned())
    );
    assert!(matches!(
        PgVectorStore::open(&config("t_v1"), "another-model", 3),
        Err(PgVectorError::ModelMismatch { .. })
    ));
}

#[test]
fn opening_with_another_dimension_names_both() {
    drop(open("t_dim", 3));
    let err = PgVectorStore::open(&config("t_dim"), MODEL, 4).unwrap_err();
    assert!(
        matches!(
            err,
            PgVectorError::DimensionMismatch {
                stored: 3,
                requested: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains('3') && message.contains('4'), "{message}");
    assert!(!err.is_transient());
    // The tables were left as they were.
    drop(open("t_dim", 3));
}

#[test]
fn invalid_settings_are_refused_before_connecting() {
    let bad_prefix = PgVectorConfig {
        table_prefix: "Robert'); DROP TABLE x;--".into(),
        ..config("unused")
    };
    assert!(matches!(
        PgVectorStore::open(&bad_prefix, MODEL, 3),
        Err(PgVectorError::Config(m)) if m.starts_with("table_prefix:")
    ));
    assert!(matches!(
        PgVectorStore::open(&config("t_bad_dim"), MODEL, 0),
        Err(PgVectorError::Config(_))
    ));
    assert!(matches!(
        PgVectorStore::open(&config("t_bad_dim"), MODEL, 2001),
        Err(PgVectorError::Config(_))
    ));
    assert!(matches!(
        PgVectorStore::open(&PgVectorConfig::new("host='unterminated"), MODEL, 3),
        Err(PgVectorError::Config(m)) if m.starts_with("dsn:")
    ));
}

#[test]
fn connection_errors_are_transient_and_hide_the_password() {
    let dsn = format!(
        "host=127.0.0.1 port={} user=tw password=hunter2 connect_timeout=5",
        tidewater_testkit::free_port()
    );
    let err = PgVectorStore::open(&PgVectorConfig::new(dsn), MODEL, 3).unwrap_err();
    assert!(matches!(err, PgVectorError::Connect { .. }), "{err:?}");
    assert!(err.is_transient(), "{err}");
    let message = err.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("password=***"), "{message}");
}

#[test]
fn a_batch_writes_rows_and_offset_together() {
    let store = open("t_apply", 3);
    assert_eq!(committed(&store), None);
    store.apply(&position(None, 10), &first_batch()).unwrap();
    assert_eq!(committed(&store), Some(10));
    assert_eq!(store.len().unwrap(), 3);
    let a = store.document("a").unwrap().expect("document a");
    assert_eq!(a, doc("a", json!({"lang": "en", "tags": ["x", "y"]})));
    assert_eq!(
        store.document_hashes("files").unwrap(),
        HashMap::from([
            ("a".to_owned(), "content-of-a".to_owned()),
            ("b".to_owned(), "content-of-b".to_owned()),
        ])
    );
    assert!(store.document_hashes("http").unwrap().is_empty());

    // The next batch: b goes (with its chunk), a's second chunk goes, a's metadata and a
    // chunk's text change; a later entry for the same id wins.
    let mut a2 = doc("a", json!({"lang": "fr"}));
    a2.content_hash = "content-of-a-v2".into();
    let changes = IndexChanges {
        delete_documents: vec!["b".into()],
        upsert_documents: vec![doc("a", json!({"lang": "xx"})), a2.clone()],
        delete_chunks: vec!["a#1".into()],
        upsert_chunks: vec![
            chunk("a", 0, "stale", &[1.0, 0.0, 0.0]),
            chunk("a", 0, "alpha zero v2", &[1.0, 1.0, 0.0]),
        ],
    };
    store.apply(&position(Some(10), 25), &changes).unwrap();
    assert_eq!(committed(&store), Some(25));
    assert_eq!(store.document("b").unwrap(), None);
    assert_eq!(store.document("a").unwrap(), Some(a2));
    let digest = store.chunk_digest().unwrap();
    assert_eq!(
        digest
            .iter()
            .map(|d| (d.chunk_id.as_str(), d.text.as_str()))
            .collect::<Vec<_>>(),
        [("a#0", "alpha zero v2")]
    );
    // The chunk carries the document's new metadata, for filters.
    let hits = store
        .search(
            &[1.0, 1.0, 0.0],
            5,
            &Filter {
                metadata: metadata(json!({"lang": "fr"})),
                ..Filter::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&hits), ["a#0"]);
    assert_eq!(hits[0].metadata, metadata(json!({"lang": "fr"})));

    // A batch that only advances the offset (every record was skipped) is fine.
    store
        .apply(&position(Some(25), 30), &IndexChanges::default())
        .unwrap();
    assert_eq!(committed(&store), Some(30));
    // Offsets are per partition.
    let other = BatchPosition {
        partition: 1,
        ..position(None, 4)
    };
    store.apply(&other, &IndexChanges::default()).unwrap();
    assert_eq!(
        store.committed_offset("knowledge", "documents", 1).unwrap(),
        Some(4)
    );
    assert_eq!(committed(&store), Some(30));
}

#[test]
fn documents_chunks_and_offsets_read_back_in_their_order() {
    let store = open("t_read_back", 3);
    assert!(store.documents(&[]).unwrap().is_empty());
    assert!(store
        .committed_offsets("knowledge", "documents")
        .unwrap()
        .is_empty());
    let mut changes = first_batch();
    // Stored out of order: reading follows the ordinal, not the insertion or the id.
    changes.upsert_chunks.reverse();
    changes.upsert_chunks.push(ChunkRow {
        chunk_id: "a#z-first".into(),
        ordinal: 0,
        ..chunk("a", 0, "alpha before zero", &[1.0, 0.5, 0.0])
    });
    for chunk in &mut changes.upsert_chunks {
        if chunk.chunk_id == "a#0" {
            chunk.ordinal = 2;
        }
    }
    store.apply(&position(None, 3), &changes).unwrap();
    store
        .apply(
            &BatchPosition {
                partition: 2,
                ..position(None, 9)
            },
            &IndexChanges::default(),
        )
        .unwrap();

    let found = store
        .documents(&["b".into(), "missing".into(), "a".into()])
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found["b"], doc("b", json!({"lang": "de"})));
    let chunks = store.chunks_of("a").unwrap();
    let order: Vec<(&str, u32, &str)> = chunks
        .iter()
        .map(|c| (c.chunk_id.as_str(), c.ordinal, c.text.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("a#z-first", 0, "alpha before zero"),
            ("a#1", 1, "alpha one"),
            ("a#0", 2, "alpha zero"),
        ]
    );
    assert!(chunks
        .iter()
        .all(|c| c.doc_id == "a"
            && c.metadata == metadata(json!({"lang": "en", "tags": ["x", "y"]}))));
    assert!(store.chunks_of("missing").unwrap().is_empty());
    assert_eq!(
        store.chunk_ids().unwrap(),
        ["a#0", "a#1", "a#z-first", "b#0"]
    );
    assert_eq!(
        store.committed_offsets("knowledge", "documents").unwrap(),
        [(0, 3), (2, 9)].into_iter().collect()
    );
    assert!(store
        .committed_offsets("knowledge", "other")
        .unwrap()
        .is_empty());
}

#[test]
fn a_metadata_change_reaches_chunks_stored_by_earlier_batches() {
    let store = open("t_meta_copy", 3);
    store.apply(&position(None, 1), &first_batch()).unwrap();
    let changes = IndexChanges {
        upsert_documents: vec![doc("b", json!({"lang": "en"}))],
        ..IndexChanges::default()
    };
    store.apply(&position(Some(1), 2), &changes).unwrap();
    let english = Filter {
        metadata: metadata(json!({"lang": "en"})),
        ..Filter::default()
    };
    let hits = store.search(&[0.1, 0.2, 1.0], 5, &english).unwrap();
    assert_eq!(ids(&hits), ["b#0", "a#1", "a#0"]);
}

/// How often each of the store's tables was read whole (`seq_scan`), by table name, once the
/// server's statistics show `inserted` rows in the chunks table (backends report their
/// counters some seconds after a transaction).
fn scans_once_chunks_reach(prefix: &str, inserted: i64) -> HashMap<String, i64> {
    let mut client = psql();
    for _ in 0..300 {
        let rows = client
            .query(
                "SELECT relname::text, seq_scan, n_tup_ins FROM pg_stat_user_tables
                 WHERE relname LIKE $1",
                &[&format!("{prefix}\\_%")],
            )
            .unwrap();
        let chunks_inserted = rows
            .iter()
            .find(|r| r.get::<_, String>(0) == format!("{prefix}_chunks"))
            .map_or(0, |r| r.get::<_, i64>(2));
        if chunks_inserted >= inserted {
            return rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the statistics never showed {inserted} chunk rows of {prefix}");
}

#[test]
fn batches_on_tables_never_analysed_read_no_table_whole() {
    // A bulk load grows the tables faster than autovacuum analyses them; here it never
    // does. Each batch must still read and write by key: a whole-table scan per batch made
    // a 250,000-document load quadratic.
    let prefix = "t_key_plans";
    let store = open(prefix, 4);
    let mut client = psql();
    for table in ["chunks", "documents"] {
        client
            .batch_execute(&format!(
                "ALTER TABLE {prefix}_{table} SET (autovacuum_enabled = off)"
            ))
            .unwrap();
    }
    let (batches, per_batch) = (10, 2_000);
    let corpus = random_corpus(batches * per_batch, 4, 7, 11);
    for b in 0..batches {
        let range = b * per_batch..(b + 1) * per_batch;
        let changes = IndexChanges {
            upsert_documents: corpus.upsert_documents[range.clone()].to_vec(),
            upsert_chunks: corpus.upsert_chunks[range].to_vec(),
            ..IndexChanges::default()
        };
        let expected = (b > 0).then_some(b as u64);
        store
            .apply(&position(expected, b as u64 + 1), &changes)
            .unwrap();
    }
    let total = (batches * per_batch) as i64;
    let before = scans_once_chunks_reach(prefix, total);

    // The reads of a batch (stored documents, reusable embeddings), then a batch that
    // changes documents' metadata (copied onto their chunks), replaces chunks and adds new
    // ones.
    let ids: Vec<String> = (0..200).map(|i| format!("doc{:05}", i * 97)).collect();
    assert_eq!(store.documents(&ids).unwrap().len(), ids.len());
    let hashes: Vec<String> = (0..200)
        .map(|i| format!("hash-of-text {}", i * 89))
        .collect();
    assert_eq!(store.embeddings_for(&hashes).unwrap().len(), hashes.len());
    let mut changes = IndexChanges::default();
    for i in 0..200 {
        let id = format!("doc{:05}", i * 97);
        changes
            .upsert_documents
            .push(doc(&id, json!({"tag": "changed"})));
        changes
            .upsert_chunks
            .push(chunk(&id, 1, "new text", &[0.5, 0.5, 0.5, 0.5]));
    }
    store
        .apply(
            &position(Some(batches as u64), batches as u64 + 1),
            &changes,
        )
        .unwrap();
    let after = scans_once_chunks_reach(prefix, total + 200);
    assert_eq!(after, before, "tables read whole (seq_scan) by a batch");
}

#[test]
fn a_stale_batch_is_fenced_and_writes_nothing() {
    let store = open("t_fence", 3);
    store.apply(&position(None, 10), &first_batch()).unwrap();
    let before = store.chunk_digest().unwrap();
    let document_before = store.document("a").unwrap();

    let intruder = IndexChanges {
        delete_documents: vec!["a".into()],
        upsert_documents: vec![doc("c", json!({}))],
        upsert_chunks: vec![chunk("c", 0, "gamma", &[1.0, 1.0, 1.0])],
        delete_chunks: vec!["b#0".into()],
    };
    for (expected, stored) in [(Some(5), Some(10)), (None, Some(10)), (Some(11), Some(10))] {
        let err = store
            .apply(&position(expected, 40), &intruder)
            .expect_err("a stale batch must be refused");
        match &err {
            PgVectorError::Fenced {
                stored: s,
                expected: e,
                partition: 0,
                ..
            } => assert_eq!((*s, *e), (stored, expected)),
            other => panic!("expected Fenced, got {other:?}"),
        }
        assert!(!err.is_transient());
    }
    // A partition with no row refuses a batch that expects one.
    let fresh = BatchPosition {
        partition: 7,
        ..position(Some(3), 40)
    };
    assert!(matches!(
        store.apply(&fresh, &intruder),
        Err(PgVectorError::Fenced {
            stored: None,
            expected: Some(3),
            ..
        })
    ));
    assert_eq!(
        store.committed_offset("knowledge", "documents", 7).unwrap(),
        None
    );

    assert_eq!(store.chunk_digest().unwrap(), before);
    assert_eq!(store.document("a").unwrap(), document_before);
    assert_eq!(store.document("c").unwrap(), None);
    assert_eq!(committed(&store), Some(10));
}

#[test]
fn of_two_members_racing_with_the_same_batch_exactly_one_wins() {
    let store = Arc::new(open("t_race", 3));
    store.apply(&position(None, 10), &first_batch()).unwrap();
    for round in 0..5u64 {
        let expected = 10 + round * 10;
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<Result<(), PgVectorError>> = (0..2)
            .map(|member| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let changes = IndexChanges {
                        upsert_chunks: vec![chunk(
                            "a",
                            9,
                            &format!("round {round} member {member}"),
                            &[1.0, 0.0, 1.0],
                        )],
                        ..IndexChanges::default()
                    };
                    barrier.wait();
                    store.apply(&position(Some(expected), expected + 10), &changes)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let won: Vec<usize> = (0..2).filter(|&m| results[m].is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        let lost = 1 - won[0];
        assert!(
            matches!(
                results[lost],
                Err(PgVectorError::Fenced { stored: Some(s), .. }) if s == expected + 10
            ),
            "{:?}",
            results[lost]
        );
        let text = store
            .chunk_digest()
            .unwrap()
            .into_iter()
            .find(|d| d.chunk_id == "a#9")
            .unwrap()
            .text;
        assert_eq!(text, format!("round {round} member {}", won[0]));
    }
    assert_eq!(committed(&store), Some(60));
}

#[test]
fn a_failing_batch_writes_neither_rows_nor_offset() {
    let store = open("t_fail", 3);
    store.apply(&position(None, 10), &first_batch()).unwrap();
    let before = store.chunk_digest().unwrap();

    // Caught before anything is sent.
    let wrong_dimension = IndexChanges {
        upsert_documents: vec![doc("c", json!({}))],
        upsert_chunks: vec![
            chunk("c", 0, "fine", &[1.0, 1.0, 1.0]),
            chunk("c", 1, "short", &[1.0, 1.0]),
        ],
        ..IndexChanges::default()
    };
    let err = store
        .apply(&position(Some(10), 20), &wrong_dimension)
        .unwrap_err();
    assert!(
        matches!(&err, PgVectorError::VectorDimension { subject, expected: 3, actual: 2 } if subject.contains("c#1")),
        "{err:?}"
    );

    // Refused by the server after the offset moved and other rows were written: a NUL in
    // a text, which PostgreSQL's text type cannot hold.
    let server_refuses = IndexChanges {
        delete_documents: vec!["b".into()],
        upsert_documents: vec![doc("c", json!({}))],
        delete_chunks: vec!["a#1".into()],
        upsert_chunks: vec![
            chunk("c", 0, "fine", &[1.0, 1.0, 1.0]),
            chunk("c", 1, "nul \0 byte", &[1.0, 0.0, 1.0]),
        ],
    };
    let err = store
        .apply(&position(Some(10), 20), &server_refuses)
        .unwrap_err();
    assert!(matches!(err, PgVectorError::Query { .. }), "{err:?}");
    assert!(!err.is_transient(), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("upserting chunks") && message.contains("0x00"),
        "{message}"
    );

    assert_eq!(store.chunk_digest().unwrap(), before);
    assert_eq!(store.document("c").unwrap(), None);
    assert!(store.document("b").unwrap().is_some());
    assert_eq!(committed(&store), Some(10));
    // The batch goes through once fixed, from the same expected offset.
    store
        .apply(&position(Some(10), 20), &first_batch())
        .unwrap();
    assert_eq!(committed(&store), Some(20));
}

#[test]
fn search_ranks_by_cosine_similarity() {
    let store = open("t_rank", 3);
    let changes = IndexChanges {
        upsert_documents: vec![doc("d", json!({}))],
        upsert_chunks: vec![
            chunk("d", 0, "exact", &[1.0, 0.0, 0.0]),
            chunk("d", 1, "near", &[0.9, 0.1, 0.0]),
            chunk("d", 2, "diagonal", &[1.0, 1.0, 0.0]),
            chunk("d", 3, "orthogonal", &[0.0, 0.0, 1.0]),
            chunk("d", 4, "opposite", &[-1.0, 0.0, 0.0]),
            // Length does not matter to cosine: ranks with "exact".
            chunk("d", 5, "long exact", &[7.0, 0.0, 0.0]),
        ],
        ..IndexChanges::default()
    };
    store.apply(&position(None, 1), &changes).unwrap();
    let hits = store
        .search(&[2.0, 0.0, 0.0], 10, &Filter::default())
        .unwrap();
    assert_eq!(ids(&hits), ["d#0", "d#5", "d#1", "d#2", "d#3", "d#4"]);
    let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
    let want = [1.0, 1.0, 0.9 / 0.82f32.sqrt(), 0.5f32.sqrt(), 0.0, -1.0];
    for (got, want) in scores.iter().zip(want) {
        assert!((got - want).abs() < 1e-5, "{scores:?}");
    }
    assert_eq!(hits[0].text, "exact");
    assert_eq!(hits[0].doc_id, "d");

    let top2 = store
        .search(&[2.0, 0.0, 0.0], 2, &Filter::default())
        .unwrap();
    assert_eq!(ids(&top2), ["d#0", "d#5"]);
    assert!(store
        .search(&[1.0, 0.0, 0.0], 0, &Filter::default())
        .unwrap()
        .is_empty());
    assert!(matches!(
        store.search(&[1.0, 0.0], 2, &Filter::default()),
        Err(PgVectorError::VectorDimension {
            expected: 3,
            actual: 2,
            ..
        })
    ));
}

#[test]
fn a_doc_id_prefix_matches_wildcards_literally() {
    let store = open("t_prefix", 2);
    let ids_docs = ["a%b/1", "a%bc", "axb/2", "a_b/3", "azb/4", "a\\b/5", "ab/6"];
    let changes = IndexChanges {
        upsert_documents: ids_docs.iter().map(|id| doc(id, json!({}))).collect(),
        upsert_chunks: ids_docs
            .iter()
            .map(|id| chunk(id, 0, id, &[1.0, 0.5]))
            .collect(),
        ..IndexChanges::default()
    };
    store.apply(&position(None, 1), &changes).unwrap();
    let docs_for = |prefix: &str| -> BTreeSet<String> {
        store
            .search(
                &[1.0, 0.5],
                20,
                &Filter {
                    doc_id_prefix: Some(prefix.to_owned()),
                    ..Filter::default()
                },
            )
            .unwrap()
            .into_iter()
            .map(|h| h.doc_id)
            .collect()
    };
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(docs_for("a%b"), set(&["a%b/1", "a%bc"]));
    assert_eq!(docs_for("a_b"), set(&["a_b/3"]));
    assert_eq!(docs_for("a\\b"), set(&["a\\b/5"]));
    assert_eq!(docs_for("a%b/"), set(&["a%b/1"]));
    assert_eq!(docs_for("nothing"), set(&[]));
    assert_eq!(docs_for("").len(), ids_docs.len());
}

#[test]
fn a_metadata_filter_is_json_containment() {
    let store = open("t_metadata", 3);
    store.apply(&position(None, 1), &first_batch()).unwrap();
    let with = |value: Value| Filter {
        metadata: metadata(value),
        ..Filter::default()
    };
    let query = [0.1, 0.2, 1.0];
    let found = |filter: Filter| -> Vec<String> {
        let hits = store.search(&query, 10, &filter).unwrap();
        hits.into_iter().map(|h| h.chunk_id).collect()
    };
    assert_eq!(found(with(json!({"lang": "en"}))), ["a#1", "a#0"]);
    assert_eq!(found(with(json!({"lang": "de"}))), ["b#0"]);
    assert_eq!(found(with(json!({"tags": ["y"]}))), ["a#1", "a#0"]);
    assert!(found(with(json!({"tags": ["z"]}))).is_empty());
    assert!(found(with(json!({"lang": "en", "tags": ["z"]}))).is_empty());
    assert!(found(with(json!({"missing": 1}))).is_empty());
    let both = Filter {
        doc_id_prefix: Some("a".into()),
        metadata: metadata(json!({"tags": ["x"]})),
    };
    assert_eq!(found(both), ["a#1", "a#0"]);
}

#[test]
fn hnsw_serves_filtered_searches_with_k_results() {
    let (n, dimension, k) = (3000, 16, 10);
    // On 3,000 rows the planner prefers a sequential scan for a selective filter (exact
    // anyway); from about 20,000 it takes the HNSW index. Forbidding sequential scans on
    // the store's connections puts this small table on the path large ones take.
    let settings = PgVectorConfig {
        dsn: format!("{} options='-c enable_seqscan=off'", server().dsn()),
        ..config("t_hnsw")
    };
    let store = PgVectorStore::open(&settings, MODEL, dimension).unwrap();
    let corpus = random_corpus(n, dimension, 20, 7);
    store.apply(&position(None, n as u64), &corpus).unwrap();
    let mut rng = StdRng::seed_from_u64(99);
    let rare = Filter {
        metadata: metadata(json!({"tag": "rare"})),
        ..Filter::default()
    };
    let query = random_unit(&mut rng, dimension);
    let plan = store.explain_search(&query, k, &rare).unwrap();
    assert!(
        plan.contains("Index Scan using t_hnsw_chunks_embedding")
            && plan.contains("Filter: (metadata @>"),
        "{plan}"
    );

    // Without an iterative scan the index yields ef_search = 40 candidates, of which 1 in
    // 20 is rare: far fewer than k.
    let mut db = Client::connect(&settings.dsn, NoTls).unwrap();
    let plain: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT chunk_id FROM t_hnsw_chunks
             WHERE metadata @> '{\"tag\": \"rare\"}'
             ORDER BY embedding <=> $1 LIMIT 10) t",
            &[&pgvector::Vector::from(query.clone())],
        )
        .unwrap()
        .get(0);
    assert!(plain < k as i64, "a plain scan found {plain}");

    let mut total_recall = 0.0;
    let queries = 20;
    for _ in 0..queries {
        let query = random_unit(&mut rng, dimension);
        let hits = store.search(&query, k, &rare).unwrap();
        assert_eq!(hits.len(), k);
        assert!(hits.iter().all(|h| h.metadata["tag"] == "rare"));
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        let truth = brute_force(&corpus, &query, k, |c| {
            c.doc_id[3..].parse::<usize>().unwrap() % 20 == 0
        });
        total_recall += recall(&hits, &truth);

        let unfiltered = store.search(&query, k, &Filter::default()).unwrap();
        assert_eq!(unfiltered.len(), k);
    }
    let mean = total_recall / queries as f64;
    assert!(mean >= 0.9, "filtered recall@{k} is {mean}");
}

#[test]
fn ivfflat_is_built_from_the_rows_and_rebuilt_on_request() {
    let (n, dimension, k) = (3000, 16, 10);
    let settings = PgVectorConfig {
        method: IndexMethod::Ivfflat,
        ..config("t_ivf")
    };
    let store = PgVectorStore::open(&settings, MODEL, dimension).unwrap();
    let lists = |db: &mut Client| -> Vec<String> {
        db.query_one(
            "SELECT c.reloptions FROM pg_class c JOIN pg_am am ON am.oid = c.relam
             WHERE c.relname = 't_ivf_chunks_embedding' AND am.amname = 'ivfflat'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let mut db = psql();
    assert_eq!(lists(&mut db), ["lists=1"], "an empty table gets one list");

    let corpus = random_corpus(n, dimension, 20, 11);
    store.apply(&position(None, n as u64), &corpus).unwrap();
    store.rebuild_index().unwrap();
    assert_eq!(lists(&mut db), ["lists=3"], "3000 rows / 1000");

    let mut rng = StdRng::seed_from_u64(5);
    let query = random_unit(&mut rng, dimension);
    let plan = store.explain_search(&query, k, &Filter::default()).unwrap();
    assert!(
        plan.contains("Index Scan using t_ivf_chunks_embedding"),
        "{plan}"
    );
    // A stored vector finds itself first.
    let own = &corpus.upsert_chunks[123];
    let hits = store.search(&own.vector, k, &Filter::default()).unwrap();
    assert_eq!(hits.len(), k);
    assert_eq!(hits[0].chunk_id, own.chunk_id);
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    // Filtered searches still fill k.
    let rare = Filter {
        metadata: metadata(json!({"tag": "rare"})),
        ..Filter::default()
    };
    for _ in 0..10 {
        let query = random_unit(&mut rng, dimension);
        let hits = store.search(&query, k, &rare).unwrap();
        assert_eq!(hits.len(), k);
        assert!(hits.iter().all(|h| h.metadata["tag"] == "rare"));
    }

    // Configured lists are kept; reopening with other settings rebuilds.
    let fixed = PgVectorConfig {
        lists: Some(7),
        ..settings.clone()
    };
    let store = PgVectorStore::open(&fixed, MODEL, dimension).unwrap();
    assert_eq!(lists(&mut db), ["lists=7"]);
    store.rebuild_index().unwrap();
    assert_eq!(lists(&mut db), ["lists=7"]);
    let back_to_hnsw = PgVectorStore::open(&config("t_ivf"), MODEL, dimension).unwrap();
    let method: String = db
        .query_one(
            "SELECT am.amname::text FROM pg_class c JOIN pg_am am ON am.oid = c.relam
             WHERE c.relname = 't_ivf_chunks_embedding'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(method, "hnsw");
    back_to_hnsw.rebuild_index().unwrap();
    assert_eq!(back_to_hnsw.len().unwrap(), n as u64);
}

#[test]
fn stored_embeddings_are_found_by_text_hash() {
    let store = open("t_reuse", 3);
    store.apply(&position(None, 1), &first_batch()).unwrap();
    let found = store
        .embeddings_for(&[
            "hash-of-alpha one".to_owned(),
            "hash-of-beta zero".to_owned(),
            "hash-of-unknown".to_owned(),
        ])
        .unwrap();
    assert_eq!(
        found,
        HashMap::from([
            ("hash-of-alpha one".to_owned(), vec![0.0, 1.0, 0.0]),
            ("hash-of-beta zero".to_owned(), vec![0.0, 0.0, 1.0]),
        ])
    );
    assert!(store.embeddings_for(&[]).unwrap().is_empty());
    // Awkward floats come back bit for bit.
    let odd = [f32::MIN_POSITIVE, -0.0, 1.0e-30];
    let changes = IndexChanges {
        upsert_chunks: vec![chunk("b", 1, "odd", &odd)],
        ..IndexChanges::default()
    };
    store.apply(&position(Some(1), 2), &changes).unwrap();
    let back = &store.embeddings_for(&["hash-of-odd".to_owned()]).unwrap()["hash-of-odd"];
    assert_eq!(
        back.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
        odd.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn the_same_changes_give_the_same_digest() {
    let one = open("t_digest_one", 3);
    let two = open("t_digest_two", 3);
    let second = IndexChanges {
        delete_chunks: vec!["a#1".into()],
        upsert_chunks: vec![chunk("b", 1, "beta one", &[0.5, 0.25, 0.125])],
        ..IndexChanges::default()
    };
    for store in [&one, &two] {
        store.apply(&position(None, 3), &first_batch()).unwrap();
        store.apply(&position(Some(3), 4), &second).unwrap();
    }
    let digest = one.chunk_digest().unwrap();
    assert_eq!(digest, two.chunk_digest().unwrap());
    assert_eq!(
        digest
            .iter()
            .map(|d| d.chunk_id.as_str())
            .collect::<Vec<_>>(),
        ["a#0", "b#0", "b#1"]
    );
    assert!(digest.iter().all(|d| d.vector_checksum.len() == 64));

    // A vector differing in one bit changes the digest.
    let nudged = IndexChanges {
        upsert_chunks: vec![chunk(
            "b",
            1,
            "beta one",
            &[0.5, 0.25, f32::from_bits(0.125f32.to_bits() + 1)],
        )],
        ..IndexChanges::default()
    };
    two.apply(&position(Some(4), 5), &nudged).unwrap();
    let after = two.chunk_digest().unwrap();
    assert_ne!(digest, after);
    assert_eq!(digest[..2], after[..2]);
    assert_eq!(digest[2].text, after[2].text);
}

#[test]
fn three_processes_opening_at_once_share_one_set_of_tables() {
    let barrier = Arc::new(Barrier::new(3));
    let stores: Vec<PgVectorStore> = (0..3)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let settings = config("t_concurrent");
                barrier.wait();
                PgVectorStore::open(&settings, MODEL, 3)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap().expect("every concurrent open succeeds"))
        .collect();
    stores[0].apply(&position(None, 3), &first_batch()).unwrap();
    for store in &stores {
        assert_eq!(store.len().unwrap(), 3);
        assert_eq!(committed(store), Some(3));
    }
    let indexes: i64 = psql()
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 't_concurrent_chunks'",
            &[],
        )
        .unwrap()
        .get(0);
    // Primary key, doc_id, text_hash, embedding.
    assert_eq!(indexes, 4);
}

#[test]
fn connections_killed_by_the_server_are_replaced() {
    let dsn = format!("{} application_name=tw_reconnect_test", server().dsn());
    let settings = PgVectorConfig {
        dsn,
        pool_size: 2,
        ..config("t_reconnect")
    };
    let store = PgVectorStore::open(&settings, MODEL, 3).unwrap();
    store.apply(&position(None, 3), &first_batch()).unwrap();
    let kill = || {
        let killed: i64 = psql()
            .query_one(
                "SELECT count(*) FROM (
                     SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = 'tw_reconnect_test') t",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(killed >= 1, "no connection to terminate");
    };

    // Reads retry on a new connection.
    kill();
    let hits = store
        .search(&[1.0, 0.0, 0.0], 1, &Filter::default())
        .unwrap();
    assert_eq!(ids(&hits), ["a#0"]);
    // So does a batch that failed before its commit was sent.
    kill();
    store
        .apply(&position(Some(3), 4), &IndexChanges::default())
        .unwrap();
    assert_eq!(committed(&store), Some(4));
}

#[test]
fn the_default_application_name_shows_in_pg_stat_activity() {
    let store = open("t_appname", 3);
    assert_eq!(store.len().unwrap(), 0);
    let count: i64 = psql()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&APPLICATION_NAME],
        )
        .unwrap()
        .get(0);
    assert!(count >= 1);
}

#[test]
fn a_server_of_its_own_is_stopped_when_dropped() {
    let server = PgVectorServer::start();
    let dsn = format!("{} connect_timeout=5", server.dsn());
    let store =
        PgVectorStore::open(&PgVectorConfig::new(&dsn), MODEL, 3).expect("pgvector is there");
    assert_eq!(store.len().unwrap(), 0);
    drop(store);
    drop(server);
    let err = PgVectorStore::open(&PgVectorConfig::new(&dsn), MODEL, 3).unwrap_err();
    assert!(matches!(err, PgVectorError::Connect { .. }), "{err}");
}
