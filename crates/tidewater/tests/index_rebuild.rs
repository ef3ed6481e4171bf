//! `tidewater index rebuild`: pgvector's IVFFlat index is built again with lists sized to
//! the rows present (it is built on an empty table at first start); other indexes are
//! refused with a one-line reason.

mod support;

use std::process::Command;

use support::*;
use tidewater_pgvector::{
    BatchPosition, ChunkRow, DocumentRow, IndexChanges, IndexMethod, PgVectorConfig, PgVectorStore,
};
use tidewater_testkit::PgVectorServer;

const ROWS: usize = 2_500;

#[test]
fn rebuild_sizes_the_ivfflat_lists_to_the_rows() {
    let pg = PgVectorServer::shared();
    let dir = tempfile::tempdir().unwrap();
    let embedder = tidewater_embed::build_embedder(&Default::default()).unwrap();
    let prefix = "rebuild_cli";
    let config = PgVectorConfig {
        dsn: pg.dsn().to_owned(),
        table_prefix: prefix.to_owned(),
        method: IndexMethod::Ivfflat,
        ..PgVectorConfig::default()
    };
    // Tables made on an empty database: one list.
    let store = PgVectorStore::open(&config, embedder.model_id(), embedder.dimension()).unwrap();
    let changes = IndexChanges {
        upsert_documents: vec![DocumentRow {
            doc_id: "d".into(),
            source: "test".into(),
            content_hash: String::new(),
            metadata: Default::default(),
            updated_at_ms: 0,
            rejected: None,
        }],
        upsert_chunks: (0..ROWS)
            .map(|i| {
                let mut vector = vec![0.0f32; embedder.dimension()];
                vector[i % embedder.dimension()] = 1.0;
                vector[(i * 7 + 1) % embedder.dimension()] += 0.5;
                ChunkRow {
                    chunk_id: format!("d#{i}"),
                    doc_id: "d".into(),
                    ordinal: i as u32,
                    text: format!("chunk {i}"),
                    text_hash: format!("h{i}"),
                    vector,
                }
            })
            .collect(),
        ..IndexChanges::default()
    };
    let position = BatchPosition {
        pipeline: "knowledge".into(),
        topic: "documents".into(),
        partition: 0,
        expected: None,
        next_offset: 1,
    };
    store.apply(&position, &changes).unwrap();
    let lists = || -> String {
        let mut client = postgres::Client::connect(pg.dsn(), postgres::NoTls).unwrap();
        client
            .query_one(
                "SELECT indexdef FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%ivfflat%'",
                &[&format!("{prefix}_chunks")],
            )
            .unwrap()
            .get(0)
    };
    assert!(lists().contains("lists='1'"), "{}", lists());

    let file = dir.path().join("tidewater.toml");
    std::fs::write(
        &file,
        format!(
            "[knowledge.index]\nbackend = \"pgvector\"\n[knowledge.index.pgvector]\n\
             dsn = \"{}\"\ntable_prefix = \"{prefix}\"\nmethod = \"ivfflat\"\n",
            pg.dsn()
        ),
    )
    .unwrap();
    let output = Command::new(bin())
        .args(["index", "rebuild", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("({ROWS} chunks)")), "{stdout}");
    // rows / 1000, as pgvector advises.
    assert!(lists().contains("lists='2'"), "{}", lists());
    // The rows are still all there, and searchable through the new index.
    assert_eq!(store.len().unwrap(), ROWS as u64);
}

#[test]
fn rebuild_refuses_indexes_that_need_none() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = dir.path().join("builtin.toml");
    std::fs::write(&builtin, "").unwrap();
    let hnsw = dir.path().join("hnsw.toml");
    std::fs::write(
        &hnsw,
        "[knowledge.index]\nbackend = \"pgvector\"\n[knowledge.index.pgvector]\n\
         dsn = \"host=127.0.0.1 port=1 user=nobody\"\n",
    )
    .unwrap();
    for (file, reason) in [
        (&builtin, "the built-in index needs no rebuilding"),
        (&hnsw, "HNSW index needs no rebuilding"),
    ] {
        let output = Command::new(bin())
            .args(["index", "rebuild", "--config"])
            .arg(file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}
