//! [`LocalIndex`]: the built-in backend (`[knowledge.index] backend = "hnsw"`). This
//! process's redb state (`knowledge.redb`) holds documents, chunks and embeddings; the
//! HNSW index under `index/` is derived from it. Queries read both.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable};
use tidewater_embed::Embedder;
use tidewater_engine::open_state_db;
use tidewater_index::{ExactIndex, Hit, IndexConfig, VectorIndex};
use tidewater_metrics::Metrics;
use tracing::warn;

use crate::index_store::IndexStore;
use crate::search::{SearchFilter, SearchHit};
use crate::service::DocumentStatus;
use crate::state::{
    chunk_vector, get_chunk, get_doc, parse_chunk, parse_doc, CHUNKS, COUNTERS, DOCS, EMBEDDINGS,
    INFO, JOURNAL,
};
use crate::KnowledgeError;

/// This process's state database and the HNSW index derived from it.
pub(crate) struct LocalIndex {
    pub(crate) db: Arc<Database>,
    pub(crate) db_path: PathBuf,
    pub(crate) index: Arc<IndexStore>,
    config: IndexConfig,
}

/// The thread that snapshots the index periodically, and how to stop it.
pub(crate) type Snapshotter = (Sender<()>, JoinHandle<()>);

impl LocalIndex {
    /// Opens the state under `dir` (`knowledge.redb`, `index/`), checks it was built with
    /// the same model, and loads the index.
    pub(crate) fn open(
        dir: &Path,
        config: IndexConfig,
        embedder: &dyn Embedder,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KnowledgeError> {
        let db_path = dir.join("knowledge.redb");
        let db = Arc::new(open_state_db(&db_path)?);
        check_model(&db, &db_path, embedder)?;
        let index = Arc::new(IndexStore::open(
            &db,
            &dir.join("index"),
            embedder.dimension(),
            &config,
            metrics,
        )?);
        Ok(Self {
            db,
            db_path,
            index,
            config,
        })
    }

    /// Starts a thread that snapshots the index every `every`.
    pub(crate) fn spawn_snapshotter(&self, every: Duration) -> Result<Snapshotter, KnowledgeError> {
        let (tx, rx) = mpsc::channel::<()>();
        let (db, index) = (Arc::clone(&self.db), Arc::clone(&self.index));
        let thread = std::thread::Builder::new()
            .name("index-snapshot".into())
            .spawn(move || loop {
                match rx.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = index.snapshot(&db) {
                            warn!(error = %e, "index snapshot failed; the journal keeps every change until the next one");
                        }
                    }
                    _ => return,
                }
            })
            .map_err(|e| KnowledgeError::State(redb::Error::Io(e)))?;
        Ok((tx, thread))
    }

    /// Writes a snapshot of the index now; returns the journal position it reflects.
    pub(crate) fn snapshot(&self) -> Result<u64, KnowledgeError> {
        self.index.snapshot(&self.db)
    }

    /// Number of vectors in the index.
    pub(crate) fn len(&self) -> usize {
        self.index.index().len()
    }

    /// The `k` nearest chunks to `vector` among those `filter` lets through.
    pub(crate) fn search_vector(
        &self,
        vector: &[f32],
        k: usize,
        filter: Option<&SearchFilter>,
    ) -> Result<Vec<SearchHit>, KnowledgeError> {
        let predicate = filter.map(|f| {
            move |key: u64| {
                self.index
                    .doc_of(key)
                    .is_some_and(|doc| f.matches(&doc, self.index.metadata_of(&doc).as_deref()))
            }
        });
        let hits = match &predicate {
            Some(p) => self.index.index().search(vector, k, Some(p))?,
            None => self.index.index().search(vector, k, None)?,
        };
        self.resolve(hits)
    }

    /// Turns index hits into results with text and metadata.
    pub(crate) fn resolve(&self, hits: Vec<Hit>) -> Result<Vec<SearchHit>, KnowledgeError> {
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let mut results = Vec::with_capacity(hits.len());
        for hit in hits {
            // A key removed after the index answered is skipped, never served stale.
            let Some(row) = get_chunk(&chunks, hit.key)? else {
                continue;
            };
            let metadata = self
                .index
                .metadata_of(&row.doc_id)
                .map(|m| (*m).clone())
                .unwrap_or_default();
            results.push(SearchHit {
                chunk_id: row.chunk_id,
                doc_id: row.doc_id,
                text: row.text,
                score: hit.score,
                metadata,
            });
        }
        Ok(results)
    }

    /// An exact (brute-force) index over every stored vector, with the same metric.
    pub(crate) fn exact_index(&self, dimension: usize) -> Result<ExactIndex, KnowledgeError> {
        let exact = ExactIndex::new(dimension, self.config.metric)?;
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let embeddings = txn.open_table(EMBEDDINGS)?;
        for entry in chunks.iter()? {
            let (key, row) = entry?;
            let row = parse_chunk(key.value(), row.value())?;
            exact.upsert(key.value(), &chunk_vector(&embeddings, &row)?)?;
        }
        Ok(exact)
    }

    /// The status of a document, if it is stored.
    pub(crate) fn document(&self, doc_id: &str) -> Result<Option<DocumentStatus>, KnowledgeError> {
        let txn = self.db.begin_read()?;
        let docs = txn.open_table(DOCS)?;
        let Some(row) = get_doc(&docs, doc_id)? else {
            return Ok(None);
        };
        let index = self.index.index();
        Ok(Some(DocumentStatus {
            doc_id: doc_id.to_owned(),
            source: row.source,
            chunks: row.chunks.len(),
            chunk_ids: row.chunks.iter().map(|(id, _)| id.clone()).collect(),
            indexed: row.rejected.is_none()
                && row.chunks.iter().all(|(_, key)| index.contains(*key)),
            rejected: row.rejected,
            content_hash: row.content_hash,
            metadata: row.metadata,
            updated_at_ms: row.updated_at_ms,
        }))
    }

    /// A document's chunks in document order (score 0).
    pub(crate) fn chunks_of(&self, doc_id: &str) -> Result<Vec<SearchHit>, KnowledgeError> {
        let txn = self.db.begin_read()?;
        let docs = txn.open_table(DOCS)?;
        let Some(row) = get_doc(&docs, doc_id)? else {
            return Ok(Vec::new());
        };
        drop((docs, txn));
        self.resolve(
            row.chunks
                .iter()
                .map(|(_, key)| Hit {
                    key: *key,
                    score: 0.0,
                })
                .collect(),
        )
    }

    /// Content hashes of the stored documents written by `source`, by document id.
    pub(crate) fn indexed_hashes(
        &self,
        source: &str,
    ) -> Result<HashMap<String, String>, KnowledgeError> {
        let txn = self.db.begin_read()?;
        let docs = txn.open_table(DOCS)?;
        let mut out = HashMap::new();
        for entry in docs.iter()? {
            let (id, row) = entry?;
            let row = parse_doc(id.value(), row.value())?;
            if row.source == source {
                out.insert(id.value().to_owned(), row.content_hash);
            }
        }
        Ok(out)
    }

    /// Every chunk id in the state.
    pub(crate) fn chunk_ids(&self) -> Result<BTreeSet<String>, KnowledgeError> {
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let mut out = BTreeSet::new();
        for entry in chunks.iter()? {
            let (key, row) = entry?;
            out.insert(parse_chunk(key.value(), row.value())?.chunk_id);
        }
        Ok(out)
    }
}

/// Records the embedding model in a new state, or refuses a state built with another.
fn check_model(db: &Database, path: &Path, embedder: &dyn Embedder) -> Result<(), KnowledgeError> {
    let txn = db.begin_write()?;
    {
        let mut info = txn.open_table(INFO)?;
        let stored = info.get("model")?.map(|v| v.value().to_owned());
        let configured = format!("{}/{}", embedder.model_id(), embedder.dimension());
        match stored {
            Some(stored) if stored != configured => {
                return Err(KnowledgeError::ModelMismatch {
                    path: path.display().to_string(),
                    stored,
                    configured,
                });
            }
            Some(_) => {}
            None => {
                info.insert("model", configured.as_str())?;
            }
        }
        txn.open_table(DOCS)?;
        txn.open_table(CHUNKS)?;
        txn.open_table(EMBEDDINGS)?;
        txn.open_table(JOURNAL)?;
        txn.open_table(COUNTERS)?;
    }
    txn.commit()?;
    Ok(())
}
