//! [`KnowledgeSink`]: the knowledge pipeline on the pgvector index. Each batch of a
//! partition becomes one [`PgVectorStore::apply`]: its documents and chunks together with
//! the partition's next offset, in one PostgreSQL transaction fenced on the offset the
//! batch started from. So several processes can run the same partitions and each batch
//! still lands exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use tidewater_engine::{PipelineError, Prepared, Sink, SinkPosition};
use tidewater_log::Record;
use tidewater_pgvector::{
    BatchPosition, ChunkRow, DocumentRow, IndexChanges, PgVectorError, PgVectorStore,
};

use crate::prepare::{Change, DocVersion, PreparedDoc, Preparer, StoredState};

/// Consumes the documents topic into the shared pgvector index.
pub struct KnowledgeSink {
    topic: String,
    preparer: Preparer,
    store: Arc<PgVectorStore>,
}

impl KnowledgeSink {
    pub(crate) fn new(topic: String, preparer: Preparer, store: Arc<PgVectorStore>) -> Self {
        Self {
            topic,
            preparer,
            store,
        }
    }
}

/// What PostgreSQL holds, as [`Preparer`] reads it.
struct PgState<'a>(&'a PgVectorStore);

impl StoredState for PgState<'_> {
    fn versions(&self, doc_ids: &[String]) -> Result<HashMap<String, DocVersion>, PipelineError> {
        let rows = self
            .0
            .documents(doc_ids)
            .map_err(|e| pipeline_error("reading the batch's documents", e))?;
        Ok(rows
            .into_iter()
            .map(|(doc_id, row)| {
                let version = DocVersion {
                    source: row.source,
                    content_hash: row.content_hash,
                    metadata: row.metadata,
                };
                (doc_id, version)
            })
            .collect())
    }

    fn embeddings(
        &self,
        text_hashes: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, PipelineError> {
        self.0
            .embeddings_for(text_hashes)
            .map_err(|e| pipeline_error("reading stored embeddings", e))
    }
}

impl Sink for KnowledgeSink {
    type Batch = Vec<PreparedDoc>;

    fn name(&self) -> &str {
        crate::PIPELINE
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    fn committed(&self, partition: u32) -> Result<Option<u64>, PipelineError> {
        self.store
            .committed_offset(crate::PIPELINE, &self.topic, partition)
            .map_err(|e| pipeline_error("reading the partition's offset", e))
    }

    fn prepare(
        &self,
        partition: u32,
        records: &[Record],
    ) -> Result<Prepared<Self::Batch>, PipelineError> {
        let _span = tracing::debug_span!(
            "knowledge_prepare",
            topic = %self.topic,
            partition,
            first_offset = records.first().map(|r| r.offset),
        )
        .entered();
        self.preparer.prepare(records, &PgState(&self.store))
    }

    fn commit(&self, position: &SinkPosition, batch: Self::Batch) -> Result<(), PipelineError> {
        let (changes, observed) = index_changes(batch, tidewater_core::time::now_ms());
        let position = BatchPosition {
            pipeline: crate::PIPELINE.to_owned(),
            topic: self.topic.clone(),
            partition: position.partition,
            expected: position.expected,
            next_offset: position.next,
        };
        self.store
            .apply(&position, &changes)
            .map_err(|e| pipeline_error("committing a batch", e))?;
        self.preparer.observe_freshness(&observed);
        Ok(())
    }
}

/// The rows a batch writes, and when the changes it indexes were observed (for the
/// freshness metric). A changed document is deleted and written again with all its
/// chunks (the store deletes first); unchanged chunks keep their stored vectors.
fn index_changes(batch: Vec<PreparedDoc>, now_ms: i64) -> (IndexChanges, Vec<i64>) {
    let mut changes = IndexChanges::default();
    let mut observed = Vec::new();
    for doc in batch {
        changes.delete_documents.push(doc.doc_id.clone());
        let (version, rejected) = match doc.change {
            Change::Delete => {
                observed.push(doc.observed_at_ms);
                continue;
            }
            Change::Reject { row, reason } => (row, Some(reason)),
            Change::Upsert { row, chunks } => {
                observed.push(doc.observed_at_ms);
                changes
                    .upsert_chunks
                    .extend(
                        chunks
                            .into_iter()
                            .enumerate()
                            .map(|(ordinal, chunk)| ChunkRow {
                                chunk_id: chunk.chunk_id,
                                doc_id: doc.doc_id.clone(),
                                ordinal: ordinal as u32,
                                text: chunk.text,
                                text_hash: chunk.text_hash,
                                vector: Arc::unwrap_or_clone(chunk.vector),
                            }),
                    );
                (row, None)
            }
        };
        changes.upsert_documents.push(DocumentRow {
            doc_id: doc.doc_id,
            source: version.source,
            content_hash: version.content_hash,
            metadata: version.metadata,
            updated_at_ms: now_ms,
            rejected,
        });
    }
    (changes, observed)
}

/// The engine's view of a store error: fencing is the engine's to handle, a transient
/// failure is retried with back-off, anything else stops the partition.
fn pipeline_error(what: &str, error: PgVectorError) -> PipelineError {
    match error {
        PgVectorError::Fenced {
            partition,
            stored,
            expected,
            ..
        } => PipelineError::Fenced {
            partition,
            expected,
            stored,
        },
        e if e.is_transient() => PipelineError::external(format!("pgvector index, {what}"), e),
        e => PipelineError::Internal(format!("pgvector index, {what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::PreparedChunk;

    fn version(hash: &str) -> DocVersion {
        DocVersion {
            source: "api".into(),
            content_hash: hash.into(),
            metadata: Default::default(),
        }
    }

    fn chunk(id: &str, vector: f32) -> PreparedChunk {
        PreparedChunk {
            chunk_id: id.into(),
            text: format!("text of {id}"),
            text_hash: format!("hash of {id}"),
            vector: Arc::new(vec![vector]),
        }
    }

    #[test]
    fn every_change_replaces_the_document_and_a_delete_only_deletes() {
        let doc = |doc_id: &str, change| PreparedDoc {
            doc_id: doc_id.into(),
            change,
            observed_at_ms: 7,
        };
        let batch = vec![
            doc(
                "edited",
                Change::Upsert {
                    row: version("h1"),
                    chunks: vec![chunk("edited#a", 1.0), chunk("edited#b", 2.0)],
                },
            ),
            doc(
                "binary",
                Change::Reject {
                    row: version("h2"),
                    reason: "is binary".into(),
                },
            ),
            doc("gone", Change::Delete),
        ];
        let (changes, observed) = index_changes(batch, 99);
        assert_eq!(changes.delete_documents, ["edited", "binary", "gone"]);
        let documents: Vec<(&str, Option<&str>, i64)> = changes
            .upsert_documents
            .iter()
            .map(|d| (d.doc_id.as_str(), d.rejected.as_deref(), d.updated_at_ms))
            .collect();
        assert_eq!(
            documents,
            [("edited", None, 99), ("binary", Some("is binary"), 99)]
        );
        let chunks: Vec<(&str, &str, u32, &[f32])> = changes
            .upsert_chunks
            .iter()
            .map(|c| {
                (
                    c.chunk_id.as_str(),
                    c.doc_id.as_str(),
                    c.ordinal,
                    c.vector.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            chunks,
            [
                ("edited#a", "edited", 0, [1.0].as_slice()),
                ("edited#b", "edited", 1, [2.0].as_slice())
            ]
        );
        assert!(changes.delete_chunks.is_empty());
        // A rejection indexes nothing, so it is no freshness sample.
        assert_eq!(observed, [7, 7]);
    }

    #[test]
    fn fencing_reaches_the_engine_with_both_offsets() {
        let fenced = PgVectorError::Fenced {
            pipeline: "knowledge".into(),
            topic: "documents".into(),
            partition: 3,
            stored: Some(10),
            expected: Some(4),
        };
        assert!(matches!(
            pipeline_error("committing", fenced),
            PipelineError::Fenced {
                partition: 3,
                expected: Some(4),
                stored: Some(10)
            }
        ));
        let config = PgVectorError::Config("bad".into());
        assert!(matches!(
            pipeline_error("committing", config),
            PipelineError::Internal(m) if m.contains("bad")
        ));
    }
}
