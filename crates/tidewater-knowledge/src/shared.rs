//! [`SharedIndex`]: the pgvector backend (`[knowledge.index] backend = "pgvector"`).
//! Documents, chunks, vectors and the partitions' offsets live in PostgreSQL, shared by
//! every member; nothing is kept on local disk. Queries read PostgreSQL directly, so they
//! see every member's commits.
//!
//! The store's client is blocking and must not be called on a tokio runtime thread.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewater_pgvector::{Filter, PgVectorConfig, PgVectorStore};
use tracing::warn;

use crate::search::{SearchFilter, SearchHit};
use crate::service::DocumentStatus;
use crate::{KnowledgeError, PIPELINE};

/// How often a wait for positions reads the offsets again: other members' commits show
/// only there.
const POLL: Duration = Duration::from_millis(20);

/// The pgvector index this process shares with the others.
pub(crate) struct SharedIndex {
    pub(crate) store: Arc<PgVectorStore>,
}

impl SharedIndex {
    /// Connects, and creates or checks the tables for vectors of `model`, of `dimension`.
    pub(crate) fn open(
        config: &PgVectorConfig,
        model: &str,
        dimension: usize,
    ) -> Result<Self, KnowledgeError> {
        Ok(Self {
            store: Arc::new(PgVectorStore::open(config, model, dimension)?),
        })
    }

    /// The next offset committed for each of `topic`'s first `partitions` partitions, by
    /// any member (0 where none is).
    pub(crate) fn committed(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<Vec<u64>, KnowledgeError> {
        let stored = self.store.committed_offsets(PIPELINE, topic)?;
        Ok((0..partitions)
            .map(|p| stored.get(&p).copied().unwrap_or(0))
            .collect())
    }

    /// Waits until every `(partition, offset)` of `topic` is committed, by any member, or
    /// the timeout passes. Returns whether all are.
    pub(crate) fn wait_committed(
        &self,
        topic: &str,
        positions: &[(u32, u64)],
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let partitions = positions.iter().map(|(p, _)| p + 1).max().unwrap_or(0);
        loop {
            match self.committed(topic, partitions) {
                Ok(next) if positions.iter().all(|(p, o)| next[*p as usize] > *o) => return true,
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot read the committed offsets; retrying"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    /// The `k` chunks most similar to `vector` (cosine similarity) among those `filter`
    /// lets through; its metadata conditions are JSON containment.
    pub(crate) fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: Option<&SearchFilter>,
    ) -> Result<Vec<SearchHit>, KnowledgeError> {
        let filter = filter
            .map(|f| Filter {
                doc_id_prefix: f.doc_id_prefix.clone(),
                metadata: f.metadata.clone(),
            })
            .unwrap_or_default();
        Ok(self
            .store
            .search(vector, k, &filter)?
            .into_iter()
            .map(|hit| SearchHit {
                chunk_id: hit.chunk_id,
                doc_id: hit.doc_id,
                text: hit.text,
                score: hit.score,
                metadata: hit.metadata,
            })
            .collect())
    }

    /// The status of a document, if it is stored. Its row and its chunks are read one
    /// after the other: a batch committed in between may show in one and not the other.
    pub(crate) fn document(&self, doc_id: &str) -> Result<Option<DocumentStatus>, KnowledgeError> {
        let Some(row) = self.store.document(doc_id)? else {
            return Ok(None);
        };
        let chunk_ids: Vec<String> = self
            .store
            .chunks_of(doc_id)?
            .into_iter()
            .map(|c| c.chunk_id)
            .collect();
        Ok(Some(DocumentStatus {
            doc_id: row.doc_id,
            source: row.source,
            content_hash: row.content_hash,
            metadata: row.metadata,
            updated_at_ms: row.updated_at_ms,
            // Chunks are written with their vectors, in the document's transaction.
            indexed: row.rejected.is_none(),
            rejected: row.rejected,
            chunks: chunk_ids.len(),
            chunk_ids,
        }))
    }

    /// A document's chunks by ordinal (score 0).
    pub(crate) fn chunks_of(&self, doc_id: &str) -> Result<Vec<SearchHit>, KnowledgeError> {
        Ok(self
            .store
            .chunks_of(doc_id)?
            .into_iter()
            .map(|c| SearchHit {
                chunk_id: c.chunk_id,
                doc_id: c.doc_id,
                text: c.text,
                score: 0.0,
                metadata: c.metadata,
            })
            .collect())
    }

    /// By document id, the content hash of each stored document of `source`: what
    /// reconcile compares with the files.
    pub(crate) fn indexed_hashes(
        &self,
        source: &str,
    ) -> Result<HashMap<String, String>, KnowledgeError> {
        Ok(self.store.document_hashes(source)?)
    }

    /// Every chunk id.
    pub(crate) fn chunk_ids(&self) -> Result<BTreeSet<String>, KnowledgeError> {
        Ok(self.store.chunk_ids()?.into_iter().collect())
    }
}
