//! [`Knowledge`]: the running pipeline and the queries served from its index, on either
//! backend: the built-in HNSW index over this process's redb state ([`LocalIndex`]) or
//! PostgreSQL with pgvector shared by every member ([`SharedIndex`]).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tidewater_embed::Embedder;
use tidewater_engine::{Engine, EngineConfig, EngineHandle, ProgressWatcher, SinkEngine};
use tidewater_index::{ExactIndex, Hit};
use tidewater_log::Log;
use tidewater_metrics::Metrics;
use tracing::{info, warn};

use crate::ingest::DocumentWriter;
use crate::local::{LocalIndex, Snapshotter};
use crate::prepare::Preparer;
use crate::search::{SearchFilter, SearchHit, SearchRequest, MAX_K};
use crate::shared::SharedIndex;
use crate::{KnowledgeConfig, KnowledgeError, KnowledgePipeline, KnowledgeSink};

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

/// The knowledge pipeline of one process: its index, engine and queries.
pub struct Knowledge {
    backend: Backend,
    embedder: Arc<dyn Embedder>,
    metrics: Arc<Metrics>,
    config: KnowledgeConfig,
    log: Arc<dyn Log>,
    writer: Arc<DocumentWriter>,
    running: Mutex<Option<Running>>,
}

/// Where chunks are indexed and searched (`[knowledge.index] backend`).
enum Backend {
    /// The built-in HNSW index over this process's state.
    Hnsw(LocalIndex),
    /// PostgreSQL with pgvector, shared by every member.
    Pgvector(SharedIndex),
}

struct Running {
    engine: EngineHandle,
    progress: ProgressWatcher,
    /// The built-in index's periodic snapshots.
    snapshotter: Option<Snapshotter>,
}

impl Knowledge {
    /// Opens the index: with the built-in backend the state under `dir` (`knowledge.redb`,
    /// `index/`), checked to be built with the same model; with pgvector the shared
    /// tables (nothing is written under `dir`).
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
        config.index.validate()?;
        let backend = match config.index.pgvector()? {
            None => Backend::Hnsw(LocalIndex::open(
                dir,
                config.index.hnsw(),
                embedder.as_ref(),
                Arc::clone(&metrics),
            )?),
            Some(pgvector) => Backend::Pgvector(SharedIndex::open(
                pgvector,
                embedder.model_id(),
                embedder.dimension(),
            )?),
        };
        log.ensure_topic(&config.topic, &config.topic_config)?;
        let writer = Arc::new(DocumentWriter::new(
            Arc::clone(&log),
            config.topic.clone(),
            Arc::clone(&metrics),
        ));
        Ok(Arc::new(Self {
            backend,
            embedder,
            metrics,
            config,
            log,
            writer,
            running: Mutex::new(None),
        }))
    }

    /// Starts consuming the documents topic (and, with the built-in index, snapshotting
    /// it periodically).
    pub fn start(&self, engine_config: EngineConfig) -> Result<(), KnowledgeError> {
        let (log, metrics) = (Arc::clone(&self.log), Arc::clone(&self.metrics));
        let topic = self.config.topic.clone();
        let preparer = Preparer::new(
            self.config.chunking.clone(),
            Arc::clone(&self.embedder),
            Arc::clone(&metrics),
        );
        let topic_config = &self.config.topic_config;
        let (engine, snapshotter) = match &self.backend {
            Backend::Hnsw(local) => {
                let pipeline = KnowledgePipeline::new(topic, preparer, Arc::clone(&local.index));
                let db = Arc::clone(&local.db);
                let engine = Engine::new(log, db, Arc::new(pipeline), engine_config, metrics)
                    .start(topic_config)?;
                let snapshotter = local.spawn_snapshotter(self.config.snapshot_interval)?;
                (engine, Some(snapshotter))
            }
            Backend::Pgvector(shared) => {
                let sink = KnowledgeSink::new(topic, preparer, Arc::clone(&shared.store));
                let engine = SinkEngine::new(log, Arc::new(sink), engine_config, metrics)
                    .start(topic_config)?;
                (engine, None)
            }
        };
        let progress = engine.watcher();
        *self.running.lock() = Some(Running {
            engine,
            progress,
            snapshotter,
        });
        Ok(())
    }

    /// Stops the workers after their current batch and, with the built-in index, writes a
    /// final snapshot.
    pub fn stop(&self) {
        if let Some(running) = self.running.lock().take() {
            running.engine.stop();
            if let Some((stop, thread)) = running.snapshotter {
                let _ = stop.send(());
                let _ = thread.join();
            }
        }
        if let Backend::Hnsw(local) = &self.backend {
            match local.snapshot() {
                Ok(seq) => info!(journal = seq, "index snapshot written"),
                Err(e) => {
                    warn!(error = %e, "final index snapshot failed; the next start replays the journal")
                }
            }
        }
    }

    /// Writes a snapshot of the built-in index now.
    pub fn snapshot(&self) -> Result<u64, KnowledgeError> {
        match &self.backend {
            Backend::Hnsw(local) => local.snapshot(),
            Backend::Pgvector(_) => Err(KnowledgeError::NotWithPgvector("a snapshot")),
        }
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
    /// reflects it. Returns whether that happened before the timeout. With pgvector, a
    /// commit by any member counts.
    pub fn wait_indexed(&self, positions: &[(u32, u64)], timeout: Duration) -> bool {
        match &self.backend {
            // The engine runs `after_commit` (which brings the index up to date) before it
            // publishes a commit, so a committed position is also a searchable one.
            Backend::Hnsw(_) => self
                .progress()
                .is_some_and(|p| p.wait_committed(positions, timeout)),
            Backend::Pgvector(shared) => {
                shared.wait_committed(&self.config.topic, positions, timeout)
            }
        }
    }

    /// The running engine's progress.
    fn progress(&self) -> Option<ProgressWatcher> {
        self.running.lock().as_ref().map(|r| r.progress.clone())
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

    /// Records appended to the documents topic but not yet committed by the pipeline: in
    /// the partitions this process owns with the built-in index, in every partition (by
    /// any member) with pgvector. `u64::MAX` when that is unknown: the built-in index's
    /// pipeline is not running, or PostgreSQL cannot be read.
    pub fn lag(&self) -> u64 {
        let topic = self.config.topic.as_str();
        // (partition, next offset) of the partitions whose lag counts here.
        let committed: Vec<(u32, u64)> = match &self.backend {
            // The local index holds only what this member's partitions carry.
            Backend::Hnsw(_) => match self.progress() {
                Some(progress) => {
                    let committed = progress.committed();
                    progress
                        .owned()
                        .into_iter()
                        .filter_map(|p| Some((p, *committed.get(p as usize)?)))
                        .collect()
                }
                None => return u64::MAX,
            },
            Backend::Pgvector(shared) => {
                let committed = self
                    .log
                    .partitions(topic)
                    .map_err(KnowledgeError::from)
                    .and_then(|partitions| shared.committed(topic, partitions));
                match committed {
                    Ok(committed) => (0..).zip(committed).collect(),
                    Err(e) => {
                        warn!(error = %e, "cannot read the committed offsets");
                        return u64::MAX;
                    }
                }
            }
        };
        committed
            .into_iter()
            .map(|(p, next)| {
                self.log
                    .range(topic, p)
                    .map(|r| r.end.saturating_sub(next))
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
        match &self.backend {
            Backend::Hnsw(local) => local.search_vector(vector, k, filter),
            Backend::Pgvector(shared) => shared.search(vector, k, filter),
        }
    }

    /// Turns hits of the built-in index (or of [`Self::exact_index`]) into results with
    /// text and metadata.
    pub fn resolve(&self, hits: Vec<Hit>) -> Result<Vec<SearchHit>, KnowledgeError> {
        match &self.backend {
            Backend::Hnsw(local) => local.resolve(hits),
            Backend::Pgvector(_) => Err(KnowledgeError::NotWithPgvector("resolving index keys")),
        }
    }

    /// An exact (brute-force) index over every stored vector, with the same metric: the
    /// baseline the HNSW index's recall is measured against.
    pub fn exact_index(&self) -> Result<ExactIndex, KnowledgeError> {
        match &self.backend {
            Backend::Hnsw(local) => local.exact_index(self.embedder.dimension()),
            Backend::Pgvector(_) => Err(KnowledgeError::NotWithPgvector("an exact index")),
        }
    }

    /// Rebuilds pgvector's IVFFlat index with lists sized to the rows now present (its
    /// centres are learnt from the rows there when it is built: do it after a bulk load).
    /// Nothing to do for the built-in index or pgvector's HNSW.
    pub fn rebuild_index(&self) -> Result<(), KnowledgeError> {
        match &self.backend {
            Backend::Hnsw(_) => Ok(()),
            Backend::Pgvector(shared) => Ok(shared.store.rebuild_index()?),
        }
    }

    /// The status of a document, if it is stored.
    pub fn document(&self, doc_id: &str) -> Result<Option<DocumentStatus>, KnowledgeError> {
        match &self.backend {
            Backend::Hnsw(local) => local.document(doc_id),
            Backend::Pgvector(shared) => shared.document(doc_id),
        }
    }

    /// A document's chunks in document order (score 0), or none if it is not indexed.
    pub fn chunks_of(&self, doc_id: &str) -> Result<Vec<SearchHit>, KnowledgeError> {
        match &self.backend {
            Backend::Hnsw(local) => local.chunks_of(doc_id),
            Backend::Pgvector(shared) => shared.chunks_of(doc_id),
        }
    }

    /// Content hashes of the indexed documents written by `source`, by document id.
    pub fn indexed_hashes(&self, source: &str) -> Result<HashMap<String, String>, KnowledgeError> {
        match &self.backend {
            Backend::Hnsw(local) => local.indexed_hashes(source),
            Backend::Pgvector(shared) => shared.indexed_hashes(source),
        }
    }

    /// Every chunk id in the index, sorted (for checks and tests).
    pub fn chunk_ids(&self) -> Result<BTreeSet<String>, KnowledgeError> {
        match &self.backend {
            Backend::Hnsw(local) => local.chunk_ids(),
            Backend::Pgvector(shared) => shared.chunk_ids(),
        }
    }

    /// Checks the built-in index against the state and repairs it; returns the keys
    /// repaired. Always 0 with pgvector: chunks and vectors are one row there, with
    /// nothing derived to drift.
    pub fn verify_index(&self) -> Result<usize, KnowledgeError> {
        match &self.backend {
            Backend::Hnsw(local) => local.index.verify(&local.db),
            Backend::Pgvector(_) => Ok(0),
        }
    }

    /// Number of vectors in the index. With pgvector a count in PostgreSQL, 0 (and a
    /// warning) when that fails.
    pub fn index_len(&self) -> usize {
        match &self.backend {
            Backend::Hnsw(local) => local.len(),
            Backend::Pgvector(shared) => shared.store.len().map_or_else(
                |e| {
                    warn!(error = %e, "cannot count the chunks in the pgvector index");
                    0
                },
                |n| n as usize,
            ),
        }
    }

    /// Where the built-in index's state database lives (`None` with pgvector).
    pub fn state_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Hnsw(local) => Some(&local.db_path),
            Backend::Pgvector(_) => None,
        }
    }

    /// The metrics shared with the rest of the process.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The last journal entry the built-in index reflects (0 with pgvector).
    pub fn index_position(&self) -> u64 {
        match &self.backend {
            Backend::Hnsw(local) => local.index.applied(),
            Backend::Pgvector(_) => 0,
        }
    }
}
