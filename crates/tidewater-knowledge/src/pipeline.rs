//! The knowledge pipeline on the built-in index: each batch is applied to the redb state
//! (documents, chunks, reference-counted embeddings, the index journal) in the engine's
//! transaction, and the HNSW index catches up from the journal after the commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, WriteTransaction};
use tidewater_engine::{Pipeline, PipelineError, Prepared};
use tidewater_log::Record;

use crate::index_store::IndexStore;
use crate::prepare::{Change, DocVersion, PreparedDoc, Preparer, StoredState};
use crate::state::{
    encode_embedding, get_doc, get_embedding, parse_chunk, to_json, ChunkRow, DocRow, CHUNKS,
    COUNTERS, DOCS, EMBEDDINGS, JOURNAL,
};

/// Consumes the documents topic and maintains chunks, embeddings and the index.
pub struct KnowledgePipeline {
    topic: String,
    preparer: Preparer,
    index: Arc<IndexStore>,
}

/// What a committed batch changed, for `after_commit`.
pub struct Applied {
    observed_at_ms: Vec<i64>,
}

impl KnowledgePipeline {
    pub(crate) fn new(topic: String, preparer: Preparer, index: Arc<IndexStore>) -> Self {
        Self {
            topic,
            preparer,
            index,
        }
    }
}

/// The committed redb state, as [`Preparer`] reads it.
struct RedbState {
    docs: ReadOnlyTable<&'static str, &'static [u8]>,
    embeddings: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl StoredState for RedbState {
    fn versions(&self, doc_ids: &[String]) -> Result<HashMap<String, DocVersion>, PipelineError> {
        let mut versions = HashMap::new();
        for doc_id in doc_ids {
            if let Some(row) = get_doc(&self.docs, doc_id)? {
                let version = DocVersion {
                    source: row.source,
                    content_hash: row.content_hash,
                    metadata: row.metadata,
                };
                versions.insert(doc_id.clone(), version);
            }
        }
        Ok(versions)
    }

    fn embeddings(
        &self,
        text_hashes: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, PipelineError> {
        let mut found = HashMap::new();
        for hash in text_hashes {
            if let Some((_, vector)) = get_embedding(&self.embeddings, hash)? {
                found.insert(hash.clone(), vector);
            }
        }
        Ok(found)
    }
}

impl Pipeline for KnowledgePipeline {
    type Batch = Vec<PreparedDoc>;
    type Effects = Applied;

    fn name(&self) -> &str {
        crate::PIPELINE
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    fn prepare(
        &self,
        db: &Database,
        records: &[Record],
    ) -> Result<Prepared<Self::Batch>, PipelineError> {
        let txn = db.begin_read().map_err(PipelineError::from)?;
        let stored = RedbState {
            docs: txn.open_table(DOCS).map_err(PipelineError::from)?,
            embeddings: txn.open_table(EMBEDDINGS).map_err(PipelineError::from)?,
        };
        self.preparer.prepare(records, &stored)
    }

    fn apply(
        &self,
        txn: &WriteTransaction,
        batch: Self::Batch,
    ) -> Result<Self::Effects, PipelineError> {
        let mut docs = txn.open_table(DOCS)?;
        let mut chunks_table = txn.open_table(CHUNKS)?;
        let mut embeddings = txn.open_table(EMBEDDINGS)?;
        let mut journal = txn.open_table(JOURNAL)?;
        let mut counters = txn.open_table(COUNTERS)?;
        let mut next_key = counters.get("next_key")?.map(|v| v.value()).unwrap_or(1);
        let mut journal_next = counters
            .get("journal_next")?
            .map(|v| v.value())
            .unwrap_or(1);
        let now = tidewater_core::time::now_ms();
        let mut observed = Vec::new();

        for doc in batch {
            let old = get_doc(&docs, &doc.doc_id)?;
            let old_chunks: HashMap<String, u64> = old
                .as_ref()
                .map(|o| o.chunks.iter().cloned().collect())
                .unwrap_or_default();
            let keep: HashSet<&str> = doc
                .change
                .chunks()
                .iter()
                .map(|c| c.chunk_id.as_str())
                .collect();
            // Chunks that disappear: drop the row, release the embedding, journal the key.
            for (chunk_id, key) in &old_chunks {
                if keep.contains(chunk_id.as_str()) {
                    continue;
                }
                let row = match chunks_table.remove(*key)? {
                    Some(v) => Some(parse_chunk(*key, v.value())?),
                    None => None,
                };
                if let Some(row) = row {
                    let remaining = match get_embedding(&embeddings, &row.text_hash)? {
                        Some((count, vector)) if count > 1 => {
                            Some(encode_embedding(count - 1, &vector))
                        }
                        _ => None,
                    };
                    match remaining {
                        Some(bytes) => embeddings
                            .insert(row.text_hash.as_str(), bytes.as_slice())
                            .map(|_| ())?,
                        None => embeddings.remove(row.text_hash.as_str()).map(|_| ())?,
                    }
                }
                journal.insert(journal_next, *key)?;
                journal_next += 1;
            }
            match doc.change {
                Change::Delete => {
                    if old.is_some() {
                        docs.remove(doc.doc_id.as_str())?;
                        observed.push(doc.observed_at_ms);
                    }
                }
                Change::Reject { row, reason } => {
                    let doc_row = DocRow {
                        source: row.source,
                        content_hash: row.content_hash,
                        metadata: row.metadata,
                        chunks: Vec::new(),
                        updated_at_ms: now,
                        observed_at_ms: doc.observed_at_ms,
                        rejected: Some(reason),
                    };
                    docs.insert(doc.doc_id.as_str(), to_json(&doc_row).as_slice())?;
                }
                Change::Upsert { row, chunks } => {
                    let mut entries = Vec::with_capacity(chunks.len());
                    for (ordinal, chunk) in chunks.into_iter().enumerate() {
                        if let Some(key) = old_chunks.get(&chunk.chunk_id) {
                            entries.push((chunk.chunk_id, *key)); // Unchanged text: same key, same vector.
                            continue;
                        }
                        let key = next_key;
                        next_key += 1;
                        let count = get_embedding(&embeddings, &chunk.text_hash)?
                            .map(|(c, _)| c)
                            .unwrap_or(0);
                        embeddings.insert(
                            chunk.text_hash.as_str(),
                            encode_embedding(count + 1, &chunk.vector).as_slice(),
                        )?;
                        let chunk_row = ChunkRow {
                            chunk_id: chunk.chunk_id.clone(),
                            doc_id: doc.doc_id.clone(),
                            ordinal: ordinal as u32,
                            text: chunk.text,
                            text_hash: chunk.text_hash,
                        };
                        chunks_table.insert(key, to_json(&chunk_row).as_slice())?;
                        journal.insert(journal_next, key)?;
                        journal_next += 1;
                        entries.push((chunk.chunk_id, key));
                    }
                    let doc_row = DocRow {
                        source: row.source,
                        content_hash: row.content_hash,
                        metadata: row.metadata,
                        chunks: entries,
                        updated_at_ms: now,
                        observed_at_ms: doc.observed_at_ms,
                        rejected: None,
                    };
                    docs.insert(doc.doc_id.as_str(), to_json(&doc_row).as_slice())?;
                    observed.push(doc.observed_at_ms);
                }
            }
        }
        counters.insert("next_key", next_key)?;
        counters.insert("journal_next", journal_next)?;
        Ok(Applied {
            observed_at_ms: observed,
        })
    }

    fn after_commit(&self, db: &Database, effects: Self::Effects) {
        if let Err(e) = self.index.catch_up(db) {
            tracing::error!(error = %e, "cannot bring the index up to date; it will retry with the next batch");
            return;
        }
        self.preparer.observe_freshness(&effects.observed_at_ms);
    }
}
