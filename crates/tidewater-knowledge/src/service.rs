//! [`Knowledge`]: the running pipeline and the queries served from its state.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::Serialize;
use tidewater_embed::Embedder;
use tidewater_engine::{open_state_db, Engine, EngineConfig, EngineHandle, ProgressWatcher};
use tidewater_index::{ExactIndex, Hit, VectorIndex};
use tidewater_log::Log;
use tidewater_metrics::Metrics;
use tracing::{info, warn};

use crate::index_store::IndexStore;
use crate::ingest::DocumentWriter;
use crate::search::{SearchFilter, SearchHit, SearchRequest, MAX_K};
use crate::state::{
    chunk_vector, get_chunk, get_doc, parse_chunk, parse_doc, CHUNKS, COUNTERS, DOCS, EMBEDDINGS,
    INFO, JOURNAL,
};
use crate::{KnowledgeConfig, KnowledgeError, KnowledgePipeline};

/// The status of one document (`GET /v1/documents/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct DocumentStatus {
    /// Its id.
    pub doc_id: String,
    /// Which source wrote it.
    pub source: String,
    /// Number of chunks.
    pub chunks: usize,
    /// Their ids, in document order.
    pub chunk_ids: Vec<String>,
    /// Whether every chunk is in the vector index (false for a rejected document).
    pub indexed: bool,
    /// Why its current content is not indexed, if it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// blake3 of the content indexed.
    pub content_hash: String,
    /// Metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// When it was last indexed (ms since epoch).
    pub updated_at_ms: i64,
}

/// The knowledge pipeline of one process: its state, index, engine and queries.
pub struct Knowledge {
    db: Arc<Database>,
    db_path: PathBuf,
    embedder: Arc<dyn Embedder>,
    index: Arc<IndexStore>,
    metrics: Arc<Metrics>,
    config: KnowledgeConfig,
    log: Arc<dyn Log>,
    writer: Arc<DocumentWriter>,
    running: Mutex<Option<Running>>,
}

struct Running {
    engine: EngineHandle,
    progress: ProgressWatcher,
    snapshotter: (Sender<()>, JoinHandle<()>),
}

impl Knowledge {
    /// Opens the state under `dir` (`knowledge.redb`, `index/`), checks it was built with
    /// the same model, and loads the index.
    pub fn open(
        dir: &Path,
        config: KnowledgeConfig,
        embedder: Arc<dyn Embedder>,
        log: Arc<dyn Log>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, KnowledgeError> {
        if let Err(e) = config.chunking.validate() {
            return Err(KnowledgeError::BadRequest(e.to_string()));
        }
        let db_path = dir.join("knowledge.redb");
        let db = Arc::new(open_state_db(&db_path)?);
        Self::check_model(&db, &db_path, embedder.as_ref())?;
        let index = Arc::new(IndexStore::open(
            &db,
            &dir.join("index"),
            embedder.dimension(),
            &config.index,
            Arc::clone(&metrics),
        )?);
        log.ensure_topic(&config.topic, &config.topic_config)?;
        let writer = Arc::new(DocumentWriter::new(
            Arc::clone(&log),
            config.topic.clone(),
            Arc::clone(&metrics),
        ));
        Ok(Arc::new(Self {
            db,
            db_path,
            embedder,
            index,
            metrics,
            config,
            log,
            writer,
            running: Mutex::new(None),
        }))
    }

    fn check_model(
        db: &Database,
        path: &Path,
        embedder: &dyn Embedder,
    ) -> Result<(), KnowledgeError> {
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

    /// Starts consuming the documents topic, and snapshotting the index periodically.
    pub fn start(&self, engine_config: EngineConfig) -> Result<(), KnowledgeError> {
        let pipeline = Arc::new(KnowledgePipeline::new(
            self.config.topic.clone(),
            self.config.chunking.clone(),
            Arc::clone(&self.embedder),
            Arc::clone(&self.index),
            Arc::clone(&self.metrics),
        ));
        let engine = Engine::new(
            Arc::clone(&self.log),
            Arc::clone(&self.db),
            pipeline,
            engine_config,
            Arc::clone(&self.metrics),
        )
        .start(&self.config.topic_config)?;
        let (tx, rx) = mpsc::channel::<()>();
        let (db, index, every) = (
            Arc::clone(&self.db),
            Arc::clone(&self.index),
            self.config.snapshot_interval,
        );
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
        let progress = engine.watcher();
        *self.running.lock() = Some(Running {
            engine,
            progress,
            snapshotter: (tx, thread),
        });
        Ok(())
    }

    /// Stops the workers after their current batch and writes a final snapshot.
    pub fn stop(&self) {
        if let Some(running) = self.running.lock().take() {
            running.engine.stop();
            let _ = running.snapshotter.0.send(());
            let _ = running.snapshotter.1.join();
        }
        match self.index.snapshot(&self.db) {
            Ok(seq) => info!(journal = seq, "index snapshot written"),
            Err(e) => {
                warn!(error = %e, "final index snapshot failed; the next start replays the journal")
            }
        }
    }

    /// Writes a snapshot of the index now.
    pub fn snapshot(&self) -> Result<u64, KnowledgeError> {
        self.index.snapshot(&self.db)
    }

    /// The writer for document events (the file source's sink, the document API).
    pub fn writer(&self) -> Arc<DocumentWriter> {
        Arc::clone(&self.writer)
    }

    /// The embedding model.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Waits until the pipeline has committed past every `(partition, offset)` and the index
    /// reflects it. Returns whether that happened before the timeout.
    pub fn wait_indexed(&self, positions: &[(u32, u64)], timeout: Duration) -> bool {
        // The engine runs `after_commit` (which brings the index up to date) before it
        // publishes a commit, so a committed position is also a searchable one.
        let progress = self.running.lock().as_ref().map(|r| r.progress.clone());
        progress.is_some_and(|p| p.wait_committed(positions, timeout))
    }

    /// Waits until everything appended to the documents topic so far is indexed.
    pub fn wait_caught_up(&self, timeout: Duration) -> Result<bool, KnowledgeError> {
        let mut positions = Vec::new();
        for partition in 0..self.log.partitions(&self.config.topic)? {
            let end = self.log.range(&self.config.topic, partition)?.end;
            if end > 0 {
                positions.push((partition, end - 1));
            }
        }
        Ok(self.wait_indexed(&positions, timeout))
    }

    /// Records appended to the documents topic but not yet committed by the pipeline.
    pub fn lag(&self) -> u64 {
        let Some(progress) = self.running.lock().as_ref().map(|r| r.progress.clone()) else {
            return u64::MAX;
        };
        progress
            .committed()
            .iter()
            .enumerate()
            .map(|(p, next)| {
                self.log
                    .range(&self.config.topic, p as u32)
                    .map(|r| r.end.saturating_sub(*next))
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Searches the index.
    pub fn search(&self, request: &SearchRequest) -> Result<Vec<SearchHit>, KnowledgeError> {
        let started = Instant::now();
        if request.query.trim().is_empty() {
            return Err(KnowledgeError::BadRequest(
                "'query' must not be empty".into(),
            ));
        }
        if request.k == 0 || request.k > MAX_K {
            return Err(KnowledgeError::BadRequest(format!(
                "'k' must be between 1 and {MAX_K}"
            )));
        }
        let vector = self
            .embedder
            .embed(&[request.query.as_str()])?
            .into_iter()
            .next()
            .unwrap_or_default();
        let results = self.search_vector(&vector, request.k, request.filter.as_ref())?;
        self.metrics.search_requests.inc();
        self.metrics
            .search_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(results)
    }

    /// Searches the index with an already embedded query.
    pub fn search_vector(
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
    pub fn resolve(&self, hits: Vec<Hit>) -> Result<Vec<SearchHit>, KnowledgeError> {
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

    /// An exact (brute-force) index over every stored vector, with the same metric: the
    /// baseline the HNSW index's recall is measured against.
    pub fn exact_index(&self) -> Result<ExactIndex, KnowledgeError> {
        let exact = ExactIndex::new(self.embedder.dimension(), self.config.index.metric)?;
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

    /// The status of a document, if it is indexed.
    pub fn document(&self, doc_id: &str) -> Result<Option<DocumentStatus>, KnowledgeError> {
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

    /// A document's chunks in document order (score 0), or none if it is not indexed.
    pub fn chunks_of(&self, doc_id: &str) -> Result<Vec<SearchHit>, KnowledgeError> {
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

    /// Content hashes of the indexed documents written by `source`, by document id.
    pub fn indexed_hashes(&self, source: &str) -> Result<HashMap<String, String>, KnowledgeError> {
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

    /// Every chunk id in the state, sorted (for checks and tests).
    pub fn chunk_ids(&self) -> Result<BTreeSet<String>, KnowledgeError> {
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let mut out = BTreeSet::new();
        for entry in chunks.iter()? {
            let (key, row) = entry?;
            out.insert(parse_chunk(key.value(), row.value())?.chunk_id);
        }
        Ok(out)
    }

    /// Checks the vector index against the state and repairs it; returns the keys repaired.
    pub fn verify_index(&self) -> Result<usize, KnowledgeError> {
        self.index.verify(&self.db)
    }

    /// Number of vectors in the index.
    pub fn index_len(&self) -> usize {
        self.index.index().len()
    }

    /// Where the state database lives.
    pub fn state_path(&self) -> &Path {
        &self.db_path
    }

    /// The metrics shared with the rest of the process.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The last journal entry the index reflects.
    pub fn index_position(&self) -> u64 {
        self.index.applied()
    }
}
