//! What a batch of document events becomes, whichever index it goes to: the last event
//! per document, its text chunked and embedded (reusing stored vectors by text hash), or
//! the reason it is rejected. [`crate::KnowledgePipeline`] (redb and the built-in index)
//! and [`crate::KnowledgeSink`] (pgvector) share this and differ only in how they read
//! what is stored ([`StoredState`]) and how they write the result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tidewater_chunk::{chunk_text, extract_text, ChunkerConfig};
use tidewater_core::document::MAX_ID_BYTES;
use tidewater_core::{content_hash, DocumentEvent, DocumentOp};
use tidewater_embed::Embedder;
use tidewater_engine::{DeadLetter, PipelineError, Prepared};
use tidewater_log::Record;
use tidewater_metrics::Metrics;

/// A document event's body read as text: `None` for a delete, `Err` with the reason when
/// it cannot be indexed.
type BodyText = Result<Option<String>, String>;

/// A document's user metadata.
pub(crate) type Metadata = serde_json::Map<String, serde_json::Value>;

/// What an index already holds, as far as preparing a batch needs to know.
pub(crate) trait StoredState {
    /// The stored version of each of `doc_ids` that is stored.
    fn versions(&self, doc_ids: &[String]) -> Result<HashMap<String, DocVersion>, PipelineError>;

    /// The stored vectors of these chunk-text hashes; those with none are absent.
    fn embeddings(
        &self,
        text_hashes: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, PipelineError>;
}

/// What decides whether an event changes a stored document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DocVersion {
    pub(crate) source: String,
    pub(crate) content_hash: String,
    pub(crate) metadata: Metadata,
}

/// A document's new content, chunked and embedded, ready to write.
pub struct PreparedDoc {
    pub(crate) doc_id: String,
    pub(crate) change: Change,
    pub(crate) observed_at_ms: i64,
}

pub(crate) enum Change {
    /// New content: these chunks replace the document's old ones.
    Upsert {
        row: DocVersion,
        chunks: Vec<PreparedChunk>,
    },
    /// New content that cannot be indexed: the old chunks go, the reason is kept.
    Reject { row: DocVersion, reason: String },
    /// The document is gone. Only prepared for a stored document.
    Delete,
}

pub(crate) struct PreparedChunk {
    pub(crate) chunk_id: String,
    pub(crate) text: String,
    pub(crate) text_hash: String,
    pub(crate) vector: Arc<Vec<f32>>,
}

/// Turns batches of document events into [`PreparedDoc`]s.
pub(crate) struct Preparer {
    chunking: ChunkerConfig,
    embedder: Arc<dyn Embedder>,
    metrics: Arc<Metrics>,
}

/// The events of a batch that matter: the last per document, in first-seen order.
struct Latest {
    events: Vec<(u64, DocumentEvent, BodyText)>,
    dead_letters: Vec<DeadLetter>,
}

impl Preparer {
    /// Chunks with `chunking`, embeds with `embedder`, counts in `metrics`
    /// (`embedded_chunks`, `reused_chunks`, `freshness_seconds`).
    pub(crate) fn new(
        chunking: ChunkerConfig,
        embedder: Arc<dyn Embedder>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            chunking,
            embedder,
            metrics,
        }
    }

    /// Decodes, folds, chunks and embeds `records`, comparing with `stored`: unchanged
    /// documents are skipped, only chunk texts with no stored vector are embedded (in one
    /// call), and events that cannot be indexed become dead letters.
    pub(crate) fn prepare(
        &self,
        records: &[Record],
        stored: &impl StoredState,
    ) -> Result<Prepared<Vec<PreparedDoc>>, PipelineError> {
        let Latest {
            events,
            mut dead_letters,
        } = latest_events(records);
        let doc_ids: Vec<String> = events.iter().map(|(_, e, _)| e.doc_id.clone()).collect();
        let versions = if doc_ids.is_empty() {
            HashMap::new()
        } else {
            stored.versions(&doc_ids)?
        };

        let mut batch = Vec::with_capacity(events.len());
        for (offset, event, text) in events {
            let current = versions.get(&event.doc_id);
            let hash = event
                .content_hash
                .clone()
                .unwrap_or_else(|| content_hash(&event.body));
            let row = DocVersion {
                source: event.source,
                content_hash: hash,
                metadata: event.metadata,
            };
            let change = match text {
                // Deleting what was never stored changes nothing.
                Ok(None) if current.is_none() => continue,
                Ok(None) => Change::Delete,
                // Nothing changed (a touch, a re-scan, a replayed event).
                _ if current == Some(&row) => continue,
                Err(reason) => {
                    dead_letters.push(DeadLetter {
                        offset,
                        reason: reason.clone(),
                    });
                    Change::Reject { row, reason }
                }
                Ok(Some(text)) => Change::Upsert {
                    chunks: self.chunks(&event.doc_id, &extract_text(&text, event.format)),
                    row,
                },
            };
            batch.push(PreparedDoc {
                doc_id: event.doc_id,
                change,
                observed_at_ms: event.observed_at_ms,
            });
        }
        self.embed(&mut batch, stored)?;
        Ok(Prepared {
            batch,
            dead_letters,
        })
    }

    /// Records, once a batch is committed, how long its changes took from their source to
    /// the index.
    pub(crate) fn observe_freshness(&self, observed_at_ms: &[i64]) {
        let now = tidewater_core::time::now_ms();
        for observed in observed_at_ms {
            self.metrics
                .freshness_seconds
                .observe((now - observed).max(0) as f64 / 1000.0);
        }
    }

    /// A document's chunks, their vectors still empty.
    fn chunks(&self, doc_id: &str, plain: &str) -> Vec<PreparedChunk> {
        let pieces = chunk_text(plain, &self.chunking, self.embedder.max_tokens(), &|t| {
            self.embedder.count_tokens(t)
        });
        let mut seen = HashMap::new();
        pieces
            .into_iter()
            .map(|piece| {
                let text_hash = content_hash(piece.text.as_bytes());
                PreparedChunk {
                    chunk_id: chunk_id(doc_id, &text_hash, &mut seen),
                    text: piece.text,
                    text_hash,
                    vector: Arc::new(Vec::new()),
                }
            })
            .collect()
    }

    /// Gives every chunk of `batch` its vector: the stored one for a known text hash,
    /// otherwise a new embedding (each distinct text once, all in one call).
    fn embed(
        &self,
        batch: &mut [PreparedDoc],
        stored: &impl StoredState,
    ) -> Result<(), PipelineError> {
        let mut hashes = Vec::new();
        let mut texts: HashMap<&str, &str> = HashMap::new();
        for chunk in batch.iter().flat_map(|doc| doc.change.chunks()) {
            if texts
                .insert(chunk.text_hash.as_str(), chunk.text.as_str())
                .is_none()
            {
                hashes.push(chunk.text_hash.clone());
            }
        }
        if hashes.is_empty() {
            return Ok(());
        }
        let mut vectors: HashMap<String, Arc<Vec<f32>>> = stored
            .embeddings(&hashes)?
            .into_iter()
            .map(|(hash, vector)| (hash, Arc::new(vector)))
            .collect();
        let reused = batch
            .iter()
            .flat_map(|doc| doc.change.chunks())
            .filter(|c| vectors.contains_key(&c.text_hash))
            .count();
        self.metrics.reused_chunks.add(reused as u64);
        let missing: Vec<String> = hashes
            .into_iter()
            .filter(|h| !vectors.contains_key(h))
            .collect();
        if !missing.is_empty() {
            let inputs: Vec<&str> = missing.iter().map(|h| texts[h.as_str()]).collect();
            let embedded = self
                .embedder
                .embed(&inputs)
                .map_err(|e| PipelineError::external("embedding chunks", e))?;
            if embedded.len() != missing.len() {
                return Err(PipelineError::Internal(format!(
                    "the embedder returned {} vectors for {} texts",
                    embedded.len(),
                    missing.len()
                )));
            }
            self.metrics.embedded_chunks.add(embedded.len() as u64);
            vectors.extend(missing.into_iter().zip(embedded.into_iter().map(Arc::new)));
        }
        for doc in batch {
            if let Change::Upsert { chunks, .. } = &mut doc.change {
                for chunk in chunks {
                    chunk.vector = Arc::clone(&vectors[&chunk.text_hash]);
                }
            }
        }
        Ok(())
    }
}

impl Change {
    /// The chunks the change writes (none for a delete or a rejection).
    pub(crate) fn chunks(&self) -> &[PreparedChunk] {
        match self {
            Self::Upsert { chunks, .. } => chunks,
            Self::Reject { .. } | Self::Delete => &[],
        }
    }
}

/// Decodes `records`, keeping the last event per document. Each event carries a
/// document's full content, so applying just the last one equals applying all in order.
fn latest_events(records: &[Record]) -> Latest {
    let mut dead_letters = Vec::new();
    let mut latest: BTreeMap<String, (u64, DocumentEvent, BodyText)> = BTreeMap::new();
    let mut order = Vec::new();
    for record in records {
        match decode(record) {
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
    let events = order
        .iter()
        .filter_map(|doc_id| latest.remove(doc_id))
        .collect();
    Latest {
        events,
        dead_letters,
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
