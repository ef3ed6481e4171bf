//! One pipeline batch as rows, and the transaction that writes it: the partition's offset
//! is fenced and advanced first, then documents and chunks are deleted and upserted, all
//! committed together, so a batch is applied exactly once or not at all.

use std::collections::BTreeMap;

use pgvector::Vector;
use postgres::Transaction;
use serde_json::{Map, Value};

use crate::error::PgVectorError;
use crate::schema::Tables;

/// Where a batch sits in the log: the partition it came from, the next offset stored for
/// that partition when the batch was read (the fence), and the one to store with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPosition {
    /// The pipeline reading the partition.
    pub pipeline: String,
    /// The log topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset the partition must have stored for the batch to apply; `None`: the
    /// partition must have no row yet (its first batch).
    pub expected: Option<u64>,
    /// The next offset to store: one past the batch's last record. Not below `expected`.
    pub next_offset: u64,
}

/// What one batch changes. Applied in this order: documents deleted (with their chunks),
/// documents upserted, chunks deleted, chunks upserted; so a chunk both deleted and
/// upserted ends up stored. Within each list a later entry for the same id wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexChanges {
    /// Documents to insert or replace.
    pub upsert_documents: Vec<DocumentRow>,
    /// Document ids to delete; their chunks go with them.
    pub delete_documents: Vec<String>,
    /// Chunks to insert or replace.
    pub upsert_chunks: Vec<ChunkRow>,
    /// Chunk ids to delete.
    pub delete_chunks: Vec<String>,
}

impl IndexChanges {
    /// Whether the batch changes no row (it may still advance the offset).
    pub fn is_empty(&self) -> bool {
        self.upsert_documents.is_empty()
            && self.delete_documents.is_empty()
            && self.upsert_chunks.is_empty()
            && self.delete_chunks.is_empty()
    }
}

/// A document as the index keeps it (`{prefix}_documents`).
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRow {
    /// The document's id.
    pub doc_id: String,
    /// The source it came from (`files`, `http`, a table).
    pub source: String,
    /// Hash of the content it was indexed from, compared by reconciliation.
    pub content_hash: String,
    /// The document's metadata; copied onto its chunks for filtered search.
    pub metadata: Map<String, Value>,
    /// When it was last indexed, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// Why it was not indexed (binary, too large), if it was not.
    pub rejected: Option<String>,
}

/// A chunk of a document with its embedding (`{prefix}_chunks`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    /// `<doc_id>#<hash>`.
    pub chunk_id: String,
    /// The document it belongs to; its metadata is copied onto the chunk.
    pub doc_id: String,
    /// Its place in the document, from 0.
    pub ordinal: u32,
    /// The chunk's text.
    pub text: String,
    /// Hash of the text; the key of embedding reuse ([`crate::PgVectorStore::embeddings_for`]).
    pub text_hash: String,
    /// The embedding, of the index's dimension.
    pub vector: Vec<f32>,
}

/// Has the transaction's statements planned as key lookups: nested loops over index scans,
/// never a scan or a hash of a whole table. Every statement the sink runs under it reads or
/// writes the rows of a batch's keys only, for which that plan is right at any table size.
/// Left to itself, the planner chose sequential scans of the chunks table while a bulk load
/// grew it faster than autovacuum analysed it: each batch read the whole table.
pub(crate) fn plan_as_key_lookups(tx: &mut Transaction<'_>) -> Result<(), PgVectorError> {
    tx.batch_execute(
        "SET LOCAL enable_seqscan = off;
         SET LOCAL enable_hashjoin = off;
         SET LOCAL enable_mergejoin = off",
    )
    .map_err(PgVectorError::query("choosing key-lookup plans"))
}

/// Advances the partition's offset if it still is `position.expected`; returns the stored
/// offset when it is not (the batch is fenced and the caller rolls back).
pub(crate) fn advance_offset(
    tx: &mut Transaction<'_>,
    tables: &Tables,
    position: &BatchPosition,
) -> Result<Result<(), Option<u64>>, PgVectorError> {
    let partition = sql_partition(position.partition)?;
    let next = sql_offset(position.next_offset)?;
    let advanced = match position.expected {
        Some(expected) => tx
            .execute(
                &format!(
                    "UPDATE {} SET next_offset = $4
                     WHERE pipeline = $1 AND topic = $2 AND partition = $3 AND next_offset = $5",
                    tables.offsets
                ),
                &[
                    &position.pipeline,
                    &position.topic,
                    &partition,
                    &next,
                    &sql_offset(expected)?,
                ],
            )
            .map_err(PgVectorError::query("advancing the partition's offset"))?,
        // A concurrent first batch inserting the same row makes this wait for it, then
        // insert nothing.
        None => tx
            .execute(
                &format!(
                    "INSERT INTO {} (pipeline, topic, partition, next_offset)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    tables.offsets
                ),
                &[&position.pipeline, &position.topic, &partition, &next],
            )
            .map_err(PgVectorError::query("storing the partition's first offset"))?,
    };
    if advanced == 1 {
        return Ok(Ok(()));
    }
    let stored = stored_offset(tx, tables, &position.pipeline, &position.topic, partition)?;
    Ok(Err(stored))
}

/// The partition's stored next offset.
pub(crate) fn stored_offset(
    client: &mut impl postgres::GenericClient,
    tables: &Tables,
    pipeline: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<u64>, PgVectorError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT next_offset FROM {}
                 WHERE pipeline = $1 AND topic = $2 AND partition = $3",
                tables.offsets
            ),
            &[&pipeline, &topic, &partition],
        )
        .map_err(PgVectorError::query("reading the partition's offset"))?;
    row.map(|r| {
        let offset: i64 = r.get(0);
        u64::try_from(offset).map_err(|_| PgVectorError::Decode {
            what: "a partition's next offset",
            reason: format!("{offset} is negative"),
        })
    })
    .transpose()
}

/// Writes the rows of `changes`, in the order [`IndexChanges`] documents.
pub(crate) fn write_changes(
    tx: &mut Transaction<'_>,
    tables: &Tables,
    changes: &IndexChanges,
) -> Result<(), PgVectorError> {
    if !changes.delete_documents.is_empty() {
        let ids = sorted_unique(&changes.delete_documents);
        tx.execute(
            &format!("DELETE FROM {} WHERE doc_id = ANY($1)", tables.chunks),
            &[&ids],
        )
        .map_err(PgVectorError::query(
            "deleting the chunks of deleted documents",
        ))?;
        tx.execute(
            &format!("DELETE FROM {} WHERE doc_id = ANY($1)", tables.documents),
            &[&ids],
        )
        .map_err(PgVectorError::query("deleting documents"))?;
    }
    if !changes.upsert_documents.is_empty() {
        upsert_documents(tx, tables, &changes.upsert_documents)?;
    }
    if !changes.delete_chunks.is_empty() {
        let ids = sorted_unique(&changes.delete_chunks);
        tx.execute(
            &format!("DELETE FROM {} WHERE chunk_id = ANY($1)", tables.chunks),
            &[&ids],
        )
        .map_err(PgVectorError::query("deleting chunks"))?;
    }
    if !changes.upsert_chunks.is_empty() {
        upsert_chunks(tx, tables, &changes.upsert_chunks)?;
    }
    Ok(())
}

/// Checks what the server would refuse only after the offset moved: vector lengths and
/// integer ranges.
pub(crate) fn check(
    position: &BatchPosition,
    changes: &IndexChanges,
    dimension: usize,
) -> Result<(), PgVectorError> {
    sql_partition(position.partition)?;
    sql_offset(position.next_offset)?;
    if let Some(expected) = position.expected {
        sql_offset(expected)?;
        if position.next_offset < expected {
            return Err(PgVectorError::Config(format!(
                "batch for {}/{}/{} moves the offset back from {expected} to {}",
                position.pipeline, position.topic, position.partition, position.next_offset
            )));
        }
    }
    for chunk in &changes.upsert_chunks {
        if chunk.vector.len() != dimension {
            return Err(PgVectorError::VectorDimension {
                subject: format!("chunk {:?}", chunk.chunk_id),
                expected: dimension,
                actual: chunk.vector.len(),
            });
        }
        sql_ordinal(chunk)?;
    }
    Ok(())
}

/// Upserts in one statement over arrays (one round trip for the whole batch), and copies
/// changed metadata onto the documents' stored chunks.
fn upsert_documents(
    tx: &mut Transaction<'_>,
    tables: &Tables,
    documents: &[DocumentRow],
) -> Result<(), PgVectorError> {
    let documents = last_by_id(documents, |d| &d.doc_id);
    let ids: Vec<&str> = documents.iter().map(|d| d.doc_id.as_str()).collect();
    let sources: Vec<&str> = documents.iter().map(|d| d.source.as_str()).collect();
    let hashes: Vec<&str> = documents.iter().map(|d| d.content_hash.as_str()).collect();
    let metadata: Vec<Value> = documents
        .iter()
        .map(|d| Value::Object(d.metadata.clone()))
        .collect();
    let updated: Vec<i64> = documents.iter().map(|d| d.updated_at_ms).collect();
    let rejected: Vec<Option<&str>> = documents.iter().map(|d| d.rejected.as_deref()).collect();
    tx.execute(
        &format!(
            "INSERT INTO {documents} (doc_id, source, content_hash, metadata, updated_at_ms, rejected)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::int8[], $6::text[])
             ON CONFLICT (doc_id) DO UPDATE SET
                 source = EXCLUDED.source,
                 content_hash = EXCLUDED.content_hash,
                 metadata = EXCLUDED.metadata,
                 updated_at_ms = EXCLUDED.updated_at_ms,
                 rejected = EXCLUDED.rejected",
            documents = tables.documents
        ),
        &[&ids, &sources, &hashes, &metadata, &updated, &rejected],
    )
    .map_err(PgVectorError::query("upserting documents"))?;
    tx.execute(
        &format!(
            "UPDATE {chunks} c SET metadata = d.metadata
             FROM unnest($1::text[], $2::jsonb[]) AS d(doc_id, metadata)
             WHERE c.doc_id = d.doc_id AND c.metadata IS DISTINCT FROM d.metadata",
            chunks = tables.chunks
        ),
        &[&ids, &metadata],
    )
    .map_err(PgVectorError::query(
        "copying documents' metadata onto their chunks",
    ))?;
    Ok(())
}

/// Upserts in one statement over arrays; each chunk takes its document's stored metadata
/// (an empty object when the document has no row).
fn upsert_chunks(
    tx: &mut Transaction<'_>,
    tables: &Tables,
    chunks: &[ChunkRow],
) -> Result<(), PgVectorError> {
    let chunks = last_by_id(chunks, |c| &c.chunk_id);
    let ids: Vec<&str> = chunks.iter().map(|c| c.chunk_id.as_str()).collect();
    let doc_ids: Vec<&str> = chunks.iter().map(|c| c.doc_id.as_str()).collect();
    let ordinals = chunks
        .iter()
        .map(|c| sql_ordinal(c))
        .collect::<Result<Vec<i32>, _>>()?;
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    let hashes: Vec<&str> = chunks.iter().map(|c| c.text_hash.as_str()).collect();
    let vectors: Vec<Vector> = chunks
        .iter()
        .map(|c| Vector::from(c.vector.clone()))
        .collect();
    tx.execute(
        &format!(
            "INSERT INTO {chunks} (chunk_id, doc_id, ordinal, text, text_hash, metadata, embedding)
             SELECT u.chunk_id, u.doc_id, u.ordinal, u.text, u.text_hash,
                    coalesce(d.metadata, '{{}}'::jsonb), u.embedding
             FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::vector[])
                  AS u(chunk_id, doc_id, ordinal, text, text_hash, embedding)
             LEFT JOIN {documents} d ON d.doc_id = u.doc_id
             ON CONFLICT (chunk_id) DO UPDATE SET
                 doc_id = EXCLUDED.doc_id,
                 ordinal = EXCLUDED.ordinal,
                 text = EXCLUDED.text,
                 text_hash = EXCLUDED.text_hash,
                 metadata = EXCLUDED.metadata,
                 embedding = EXCLUDED.embedding",
            chunks = tables.chunks,
            documents = tables.documents
        ),
        &[&ids, &doc_ids, &ordinals, &texts, &hashes, &vectors],
    )
    .map_err(PgVectorError::query("upserting chunks"))?;
    Ok(())
}

/// The last entry per id, sorted by id. One statement may not upsert a row twice, and a
/// fixed order keeps concurrent batches from locking rows in opposite orders.
fn last_by_id<T>(rows: &[T], id: impl Fn(&T) -> &String) -> Vec<&T> {
    let mut by_id = BTreeMap::new();
    for row in rows {
        by_id.insert(id(row), row);
    }
    by_id.into_values().collect()
}

fn sorted_unique(ids: &[String]) -> Vec<&str> {
    let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

pub(crate) fn sql_partition(partition: u32) -> Result<i32, PgVectorError> {
    i32::try_from(partition)
        .map_err(|_| PgVectorError::Config(format!("partition {partition} is above {}", i32::MAX)))
}

fn sql_offset(offset: u64) -> Result<i64, PgVectorError> {
    i64::try_from(offset)
        .map_err(|_| PgVectorError::Config(format!("offset {offset} is above {}", i64::MAX)))
}

fn sql_ordinal(chunk: &ChunkRow) -> Result<i32, PgVectorError> {
    i32::try_from(chunk.ordinal).map_err(|_| {
        PgVectorError::Config(format!(
            "chunk {:?} has ordinal {}, above {}",
            chunk.chunk_id,
            chunk.ordinal,
            i32::MAX
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &str, text: &str) -> ChunkRow {
        ChunkRow {
            chunk_id: id.into(),
            doc_id: "d".into(),
            ordinal: 0,
            text: text.into(),
            text_hash: "h".into(),
            vector: vec![1.0, 0.0],
        }
    }

    #[test]
    fn the_last_entry_per_id_wins_in_id_order() {
        let rows = [chunk("b", "1"), chunk("a", "2"), chunk("b", "3")];
        let kept: Vec<(&str, &str)> = last_by_id(&rows, |c| &c.chunk_id)
            .into_iter()
            .map(|c| (c.chunk_id.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(kept, [("a", "2"), ("b", "3")]);
    }

    #[test]
    fn a_batch_is_checked_before_anything_is_sent() {
        let position = BatchPosition {
            pipeline: "p".into(),
            topic: "t".into(),
            partition: 0,
            expected: Some(10),
            next_offset: 12,
        };
        let mut changes = IndexChanges {
            upsert_chunks: vec![chunk("a", "x")],
            ..IndexChanges::default()
        };
        assert!(check(&position, &changes, 2).is_ok());
        assert!(matches!(
            check(&position, &changes, 3),
            Err(PgVectorError::VectorDimension {
                expected: 3,
                actual: 2,
                ..
            })
        ));
        changes.upsert_chunks[0].ordinal = u32::MAX;
        assert!(matches!(
            check(&position, &changes, 2),
            Err(PgVectorError::Config(_))
        ));
        let backwards = BatchPosition {
            next_offset: 9,
            ..position.clone()
        };
        assert!(matches!(
            check(&backwards, &IndexChanges::default(), 2),
            Err(PgVectorError::Config(_))
        ));
        let huge = BatchPosition {
            next_offset: u64::MAX,
            ..position
        };
        assert!(matches!(
            check(&huge, &IndexChanges::default(), 2),
            Err(PgVectorError::Config(_))
        ));
    }
}
