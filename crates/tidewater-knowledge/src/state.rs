//! The knowledge tables and their rows. Rows are JSON (small, self-describing, easy to
//! inspect); vectors are little-endian `f32`s behind a reference count.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

/// Documents by id.
pub(crate) const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");
/// Chunks by index key.
pub(crate) const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("chunks");
/// Embeddings by chunk-text hash: `u32` reference count, then the vector.
pub(crate) const EMBEDDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("embeddings");
/// Index journal: sequence → index key whose vector changed (added, replaced or removed).
pub(crate) const JOURNAL: TableDefinition<u64, u64> = TableDefinition::new("index_journal");
/// Counters: `next_key`, `journal_next`.
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("knowledge_counters");
/// Facts about the state: `model` (embedding model id), `dimension`.
pub(crate) const INFO: TableDefinition<&str, &str> = TableDefinition::new("knowledge_info");

/// What is stored for an indexed document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocRow {
    /// Which source wrote it (`api`, `files:<name>`).
    pub source: String,
    /// blake3 of the body it was indexed from.
    pub content_hash: String,
    /// User metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Its chunks, in document order: (chunk id, index key).
    pub chunks: Vec<(String, u64)>,
    /// When it was last indexed (ms since epoch).
    pub updated_at_ms: i64,
    /// When its source observed the change indexed last (ms since epoch).
    pub observed_at_ms: i64,
    /// Why its current content cannot be indexed (binary, not UTF-8); it then has no
    /// chunks, and the event is in the dead-letter topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// What is stored for a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChunkRow {
    pub chunk_id: String,
    pub doc_id: String,
    pub ordinal: u32,
    pub text: String,
    pub text_hash: String,
}

pub(crate) fn encode_embedding(refcount: u32, vector: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + vector.len() * 4);
    out.extend_from_slice(&refcount.to_le_bytes());
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub(crate) fn decode_embedding(bytes: &[u8]) -> Option<(u32, Vec<f32>)> {
    if bytes.len() < 4 || (bytes.len() - 4) % 4 != 0 {
        return None;
    }
    let refcount = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let vector = bytes[4..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((refcount, vector))
}

pub(crate) fn to_json<T: Serialize>(row: &T) -> Vec<u8> {
    serde_json::to_vec(row).expect("rows serialise")
}
