//! The knowledge tables and their rows. Rows are JSON (small, self-describing, easy to
//! inspect); vectors are little-endian `f32`s behind a reference count.

use redb::{ReadableTable, TableDefinition};
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

fn decode_embedding(bytes: &[u8]) -> Option<(u32, Vec<f32>)> {
    if bytes.len() < 4 || !(bytes.len() - 4).is_multiple_of(4) {
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

/// Reading a stored row failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RowError {
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    #[error("corrupt {table} row {key}: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
}

fn corrupt(table: &'static str, key: impl ToString, reason: impl ToString) -> RowError {
    RowError::Corrupt {
        table,
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// Decodes a `docs` row.
pub(crate) fn parse_doc(id: &str, bytes: &[u8]) -> Result<DocRow, RowError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("docs", id, e))
}

/// Decodes a `chunks` row.
pub(crate) fn parse_chunk(key: u64, bytes: &[u8]) -> Result<ChunkRow, RowError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("chunks", key, e))
}

/// The document `id`, if stored.
pub(crate) fn get_doc(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<DocRow>, RowError> {
    table.get(id)?.map(|v| parse_doc(id, v.value())).transpose()
}

/// The chunk stored under index key `key`.
pub(crate) fn get_chunk(
    table: &impl ReadableTable<u64, &'static [u8]>,
    key: u64,
) -> Result<Option<ChunkRow>, RowError> {
    table
        .get(key)?
        .map(|v| parse_chunk(key, v.value()))
        .transpose()
}

/// The reference count and vector stored for a chunk text hash.
pub(crate) fn get_embedding(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    text_hash: &str,
) -> Result<Option<(u32, Vec<f32>)>, RowError> {
    table
        .get(text_hash)?
        .map(|v| {
            decode_embedding(v.value())
                .ok_or_else(|| corrupt("embeddings", text_hash, "length is not 4 + 4n bytes"))
        })
        .transpose()
}

/// The vector of a chunk that must have one.
pub(crate) fn chunk_vector(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    chunk: &ChunkRow,
) -> Result<Vec<f32>, RowError> {
    get_embedding(table, &chunk.text_hash)?
        .map(|(_, vector)| vector)
        .ok_or_else(|| {
            corrupt(
                "embeddings",
                &chunk.text_hash,
                format!("missing for chunk {}", chunk.chunk_id),
            )
        })
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};

    use super::*;

    #[test]
    fn undecodable_rows_are_errors_not_absent_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("s.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut docs = txn.open_table(DOCS).unwrap();
            docs.insert("bad", b"{not json".as_slice()).unwrap();
            let mut embeddings = txn.open_table(EMBEDDINGS).unwrap();
            embeddings
                .insert("h", [1u8, 0, 0, 0, 9].as_slice())
                .unwrap();
            embeddings
                .insert("ok", encode_embedding(2, &[0.5, -1.0]).as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let docs = txn.open_table(DOCS).unwrap();
        let embeddings = txn.open_table(EMBEDDINGS).unwrap();
        assert!(get_doc(&docs, "missing").unwrap().is_none());
        let err = get_doc(&docs, "bad").unwrap_err().to_string();
        assert!(err.contains("corrupt docs row bad"), "{err}");
        assert!(get_embedding(&embeddings, "h").is_err());
        assert_eq!(
            get_embedding(&embeddings, "ok").unwrap(),
            Some((2, vec![0.5, -1.0]))
        );
    }
}
