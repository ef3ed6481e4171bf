//! The knowledge pipeline proper: what happens to each document event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use tidewater_chunk::{chunk_text, extract_text, ChunkerConfig};
use tidewater_core::document::MAX_ID_BYTES;
use tidewater_core::{content_hash, DocumentEvent, DocumentOp};
use tidewater_embed::Embedder;
use tidewater_engine::{DeadLetter, Pipeline, PipelineError, Prepared};
use tidewater_log::Record;
use tidewater_metrics::Metrics;

use crate::index_store::IndexStore;
use crate::state::{
    encode_embedding, get_doc, get_embedding, parse_chunk, to_json, ChunkRow, DocRow, CHUNKS,
    COUNTERS, DOCS, EMBEDDINGS, JOURNAL,
};

/// A document event's body read as text: `None` for a delete, `Err` with the reason when
/// it cannot be indexed.
type BodyText = Result<Option<String>, String>;

/// Consumes the documents topic and maintains chunks, embeddings and the index.
pub struct KnowledgePipeline {
    topic: String,
    chunking: ChunkerConfig,
    embedder: Arc<dyn Embedder>,
    index: Arc<IndexStore>,
    metrics: Arc<Metrics>,
}

/// A document's new content, chunked and embedded, ready to apply.
pub struct PreparedDoc {
    doc_id: String,
    change: Change,
    observed_at_ms: i64,
}

enum Change {
    Upsert {
        row: DocRowDraft,
        chunks: Vec<PreparedChunk>,
    },
    /// New content that cannot be indexed: the old chunks go, the reason is kept.
    Reject {
        row: DocRowDraft,
        reason: String,
    },
    Delete,
}

struct DocRowDraft {
    source: String,
    content_hash: String,
    metadata: serde_json::Map<String, serde_json::Value>,
}

struct PreparedChunk {
    chunk_id: String,
    text: String,
    text_hash: String,
    vector: Arc<Vec<f32>>,
}

/// What a committed batch changed, for `after_commit`.
pub struct Applied {
    observed_at_ms: Vec<i64>,
}

impl KnowledgePipeline {
    pub(crate) fn new(
        topic: String,
        chunking: ChunkerConfig,
        embedder: Arc<dyn Embedder>,
        index: Arc<IndexStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            topic,
            chunking,
            embedder,
            index,
            metrics,
        }
    }

    /// Reads a record as a document event and its body as text.
    fn decode(record: &Record) -> Result<(DocumentEvent, BodyText), String> {
        let event = DocumentEvent::decode(&record.value).map_err(|e| e.to_string())?;
        if event.doc_id.is_empty() {
            return Err("document event has an empty doc_id".into());
        }
        if event.op == DocumentOp::Reject {
            // The source could not turn what it found into a document; the body says why.
            return Err(String::from_utf8_lossy(&event.body).into_owned());
        }
        if event.doc_id.len() > MAX_ID_BYTES {
            return Err(format!(
                "document id is {} bytes, over the limit of {MAX_ID_BYTES}",
                event.doc_id.len()
            ));
        }
        if event.op == DocumentOp::Delete {
            return Ok((event, Ok(None)));
        }
        let text = match body_text(&event.body) {
            Ok(text) => Ok(Some(text.to_owned())),
            Err(e) => Err(format!("document '{}' {e}", event.doc_id)),
        };
        Ok((event, text))
    }
}

/// Why a document body cannot be indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnindexableBody {
    /// The body holds NUL bytes: a binary file, not text.
    #[error("is binary (contains NUL bytes); only text, Markdown and HTML are indexed")]
    Binary,
    /// The body is not UTF-8.
    #[error("is not valid UTF-8 (invalid byte sequence at byte {valid_up_to})")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
}

/// A document body as the text the pipeline indexes, or why the pipeline would refuse it
/// (and dead-letter its event). The document API uses it to refuse such bodies up front.
pub fn body_text(body: &[u8]) -> Result<&str, UnindexableBody> {
    if body.contains(&0) {
        return Err(UnindexableBody::Binary);
    }
    std::str::from_utf8(body).map_err(|e| UnindexableBody::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// The id of a chunk: its document and a hash of its text, so an edit elsewhere in the
/// document leaves it unchanged. Repeated identical text within a document gets `~n`.
fn chunk_id(doc_id: &str, text_hash: &str, seen: &mut HashMap<String, u32>) -> String {
    let base = format!("{doc_id}#{}", &text_hash[..16]);
    let n = seen.entry(base.clone()).or_insert(0);
    *n += 1;
    if *n == 1 {
        base
    } else {
        format!("{base}~{n}")
    }
}

impl Pipeline for KnowledgePipeline {
    type Batch = Vec<PreparedDoc>;
    type Effects = Applied;

    fn name(&self) -> &str {
        "knowledge"
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    fn prepare(
        &self,
        db: &Database,
        records: &[Record],
    ) -> Result<Prepared<Self::Batch>, PipelineError> {
        let mut dead_letters = Vec::new();
        // Each event carries a document's full content, so within a batch only the last
        // event per document matters; applying just that one equals applying all in order.
        let mut latest: BTreeMap<String, (u64, DocumentEvent, BodyText)> = BTreeMap::new();
        let mut order = Vec::new();
        for record in records {
            match Self::decode(record) {
                Ok((event, text)) => {
                    if !latest.contains_key(&event.doc_id) {
                        order.push(event.doc_id.clone());
                    }
                    latest.insert(event.doc_id.clone(), (record.offset, event, text));
                }
                Err(reason) => dead_letters.push(DeadLetter {
                    offset: record.offset,
                    reason,
                }),
            }
        }

        let txn = db.begin_read().map_err(PipelineError::from)?;
        let docs = txn.open_table(DOCS).map_err(PipelineError::from)?;
        let embeddings = txn.open_table(EMBEDDINGS).map_err(PipelineError::from)?;

        let mut batch = Vec::new();
        let mut cached: HashMap<String, Arc<Vec<f32>>> = HashMap::new();
        let mut to_embed: Vec<(String, String)> = Vec::new();
        for doc_id in order {
            let Some((offset, event, text)) = latest.remove(&doc_id) else {
                continue;
            };
            let observed_at_ms = event.observed_at_ms;
            let current = get_doc(&docs, &doc_id)?;
            let hash = event
                .content_hash
                .clone()
                .unwrap_or_else(|| content_hash(&event.body));
            let unchanged = current.as_ref().is_some_and(|c| {
                c.content_hash == hash && c.metadata == event.metadata && c.source == event.source
            });
            let text = match text {
                Ok(None) => {
                    batch.push(PreparedDoc {
                        doc_id,
                        change: Change::Delete,
                        observed_at_ms,
                    });
                    continue;
                }
                // Nothing changed (a touch, a re-scan, a replayed event).
                _ if unchanged => continue,
                Ok(Some(text)) => text,
                Err(reason) => {
                    dead_letters.push(DeadLetter {
                        offset,
                        reason: reason.clone(),
                    });
                    let row = DocRowDraft {
                        source: event.source,
                        content_hash: hash,
                        metadata: event.metadata,
                    };
                    batch.push(PreparedDoc {
                        doc_id,
                        change: Change::Reject { row, reason },
                        observed_at_ms,
                    });
                    continue;
                }
            };
            let plain = extract_text(&text, event.format);
            let pieces = chunk_text(&plain, &self.chunking, self.embedder.max_tokens(), &|t| {
                self.embedder.count_tokens(t)
            });
            let mut seen = HashMap::new();
            let mut chunks = Vec::with_capacity(pieces.len());
            for piece in pieces {
                let text_hash = content_hash(piece.text.as_bytes());
                if !cached.contains_key(&text_hash) {
                    match get_embedding(&embeddings, &text_hash)? {
                        Some((_, vector)) => {
                            cached.insert(text_hash.clone(), Arc::new(vector));
                            self.metrics.reused_chunks.inc();
                        }
                        None => {
                            if !to_embed.iter().any(|(h, _)| *h == text_hash) {
                                to_embed.push((text_hash.clone(), piece.text.clone()));
                            }
                        }
                    }
                } else {
                    self.metrics.reused_chunks.inc();
                }
                chunks.push((
                    chunk_id(&doc_id, &text_hash, &mut seen),
                    piece.text,
                    text_hash,
                ));
            }
            batch.push(PreparedDoc {
                doc_id,
                change: Change::Upsert {
                    row: DocRowDraft {
                        source: event.source,
                        content_hash: hash,
                        metadata: event.metadata,
                    },
                    // Vectors are filled in below, once the whole batch is embedded.
                    chunks: chunks
                        .into_iter()
                        .map(|(chunk_id, text, text_hash)| PreparedChunk {
                            chunk_id,
                            text,
                            text_hash,
                            vector: Arc::new(Vec::new()),
                        })
                        .collect(),
                },
                observed_at_ms,
            });
        }
        drop((docs, embeddings, txn));

        if !to_embed.is_empty() {
            let texts: Vec<&str> = to_embed.iter().map(|(_, t)| t.as_str()).collect();
            let vectors = self
                .embedder
                .embed(&texts)
                .map_err(|e| PipelineError::external("embedding chunks", e))?;
            self.metrics.embedded_chunks.add(vectors.len() as u64);
            for ((hash, _), vector) in to_embed.into_iter().zip(vectors) {
                cached.insert(hash, Arc::new(vector));
            }
        }
        for doc in &mut batch {
            if let Change::Upsert { chunks, .. } = &mut doc.change {
                for chunk in chunks {
                    chunk.vector = cached.get(&chunk.text_hash).cloned().ok_or_else(|| {
                        PipelineError::Internal(format!("no vector for chunk {}", chunk.chunk_id))
                    })?;
                }
            }
        }
        Ok(Prepared {
            batch,
            dead_letters,
        })
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
            let keep: HashSet<&str> = match &doc.change {
                Change::Upsert { chunks, .. } => {
                    chunks.iter().map(|c| c.chunk_id.as_str()).collect()
                }
                Change::Delete | Change::Reject { .. } => HashSet::new(),
            };
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
        let now = tidewater_core::time::now_ms();
        for observed in effects.observed_at_ms {
            self.metrics
                .freshness_seconds
                .observe((now - observed).max(0) as f64 / 1000.0);
        }
    }
}
