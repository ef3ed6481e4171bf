//! [`PgVectorStore`]: the shared index's operations, each on a client from the pool.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};

use pgvector::Vector;
use serde_json::{Map, Value};

use crate::batch::{self, BatchPosition, IndexChanges};
use crate::config::{IndexMethod, PgVectorConfig};
use crate::error::PgVectorError;
use crate::pool::{Conn, Pool};
use crate::schema::{self, Tables, MAX_INDEXED_DIMENSION};
use crate::search::{self, Filter, PgHit, SearchQuery, SearchSettings};
use crate::DocumentRow;

/// One chunk as stored, for comparing the index's contents between runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDigest {
    /// The chunk.
    pub chunk_id: String,
    /// Its document.
    pub doc_id: String,
    /// Its text.
    pub text: String,
    /// Hex BLAKE3 of the vector's `f32` values as little-endian bytes: equal exactly when
    /// the stored vectors are bit for bit equal.
    pub vector_checksum: String,
}

/// One chunk as stored, without its vector.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    /// The chunk.
    pub chunk_id: String,
    /// Its document.
    pub doc_id: String,
    /// Its place in the document, from 0.
    pub ordinal: u32,
    /// Its text.
    pub text: String,
    /// Its document's metadata (the copy filtered searches read).
    pub metadata: Map<String, Value>,
}

/// The columns [`document_row`] reads, in its order.
const DOCUMENT_COLUMNS: &str = "doc_id, source, content_hash, metadata, updated_at_ms, rejected";

/// A `{prefix}_documents` row selected as [`DOCUMENT_COLUMNS`].
fn document_row(r: &postgres::Row) -> Result<DocumentRow, PgVectorError> {
    Ok(DocumentRow {
        doc_id: r.get(0),
        source: r.get(1),
        content_hash: r.get(2),
        metadata: search::object(r.get(3))?,
        updated_at_ms: r.get(4),
        rejected: r.get(5),
    })
}

/// PostgreSQL with pgvector as the index that several Tidewater processes share.
///
/// The API is blocking: the `postgres` client runs its own single-threaded runtime and
/// panics when called from a thread that runs a tokio runtime. From async code, call it
/// on a blocking thread (`tokio::task::spawn_blocking`).
///
/// A pool of at most `pool_size` connections serves all calls; a call waits when every
/// connection is busy. A connection found broken is replaced on the next call; searches
/// retry once on a fresh connection when a pooled one turns out to be dead.
pub struct PgVectorStore {
    pool: Pool,
    tables: Tables,
    dimension: usize,
    config: PgVectorConfig,
    /// pgvector 0.8 or later.
    iterative_scan: bool,
    /// IVFFlat lists of the index when last opened or rebuilt here (probes default to √).
    lists: AtomicU32,
}

impl std::fmt::Debug for PgVectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgVectorStore")
            .field("config", &self.config)
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

impl PgVectorStore {
    /// Connects, creates the `vector` extension if it is missing, creates the tables for
    /// the vectors of `model` (or checks those present: another dimension is
    /// [`PgVectorError::DimensionMismatch`], another model [`PgVectorError::ModelMismatch`]) and
    /// builds the vector index (cosine distance, `vector_cosine_ops`) when it is missing or
    /// was built with other settings. Safe to call from several processes at once.
    ///
    /// An IVFFlat index built now, on the rows present (one list on an empty table), is
    /// only as good as those rows: call [`Self::rebuild_index`] after the first load.
    pub fn open(
        config: &PgVectorConfig,
        model: &str,
        dimension: usize,
    ) -> Result<Self, PgVectorError> {
        config.validate().map_err(PgVectorError::Config)?;
        if !(1..=MAX_INDEXED_DIMENSION).contains(&dimension) {
            return Err(PgVectorError::Config(format!(
                "dimension {dimension}: pgvector indexes vectors of 1 to \
                 {MAX_INDEXED_DIMENSION} dimensions"
            )));
        }
        let pool = Pool::new(&config.dsn, config.pool_size)?;
        let tables = Tables::new(&config.table_prefix);
        let (version, lists) = {
            let mut conn = pool.get()?;
            let version = schema::ensure_extension(&mut conn)?;
            let lists = schema::migrate(&mut conn, &tables, config, model, dimension)?;
            (version, lists)
        };
        tracing::debug!(
            prefix = %tables.prefix,
            dimension,
            pgvector = %version,
            method = ?config.method,
            "opened the pgvector index"
        );
        Ok(Self {
            pool,
            tables,
            dimension,
            config: config.clone(),
            iterative_scan: schema::supports_iterative_scan(&version),
            lists: AtomicU32::new(lists),
        })
    }

    /// The dimension of the stored vectors.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Applies one batch in one transaction: fences on the partition's stored next offset,
    /// writes `changes`, stores `position.next_offset`, commits.
    ///
    /// Fencing: the stored next offset of (pipeline, topic, partition) must equal
    /// `position.expected` (`None`: no row yet); otherwise nothing is written and
    /// [`PgVectorError::Fenced`] names the stored one. Any other failure rolls everything
    /// back too: rows and offset are written together or not at all.
    pub fn apply(
        &self,
        position: &BatchPosition,
        changes: &IndexChanges,
    ) -> Result<(), PgVectorError> {
        batch::check(position, changes, self.dimension)?;
        let span = tracing::debug_span!(
            "pgvector_apply",
            pipeline = %position.pipeline,
            topic = %position.topic,
            partition = position.partition,
            next_offset = position.next_offset,
        );
        let _entered = span.enter();
        // Until COMMIT is sent the server cannot commit: a connection lost before then
        // rolled the batch back, and running it again is safe. After, the outcome is
        // unknown and the caller decides (see `PgVectorError::Fenced`).
        let commit_sent = Cell::new(false);
        self.with_conn(
            || !commit_sent.get(),
            |conn| {
                let mut tx = conn
                    .transaction()
                    .map_err(PgVectorError::query("starting a transaction"))?;
                batch::plan_as_key_lookups(&mut tx)?;
                if let Err(stored) = batch::advance_offset(&mut tx, &self.tables, position)? {
                    // Dropping the transaction rolls it back; nothing was written.
                    return Err(PgVectorError::Fenced {
                        pipeline: position.pipeline.clone(),
                        topic: position.topic.clone(),
                        partition: position.partition,
                        stored,
                        expected: position.expected,
                    });
                }
                batch::write_changes(&mut tx, &self.tables, changes)?;
                commit_sent.set(true);
                tx.commit()
                    .map_err(PgVectorError::query("committing a batch"))?;
                tracing::debug!(
                    upserted_chunks = changes.upsert_chunks.len(),
                    deleted_chunks = changes.delete_chunks.len(),
                    upserted_documents = changes.upsert_documents.len(),
                    deleted_documents = changes.delete_documents.len(),
                    "committed a batch"
                );
                Ok(())
            },
        )
    }

    /// The stored next offset of a partition: where it resumes. `None`: no batch of it was
    /// ever applied.
    pub fn committed_offset(
        &self,
        pipeline: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, PgVectorError> {
        let partition = batch::sql_partition(partition)?;
        self.with_conn(always, |conn| {
            batch::stored_offset(&mut **conn, &self.tables, pipeline, topic, partition)
        })
    }

    /// The stored next offset of every partition of `topic` that has one, by partition:
    /// how far the pipeline got, whichever process committed.
    pub fn committed_offsets(
        &self,
        pipeline: &str,
        topic: &str,
    ) -> Result<BTreeMap<u32, u64>, PgVectorError> {
        self.with_conn(always, |conn| {
            let rows = conn
                .query(
                    &format!(
                        "SELECT partition, next_offset FROM {}
                         WHERE pipeline = $1 AND topic = $2",
                        self.tables.offsets
                    ),
                    &[&pipeline, &topic],
                )
                .map_err(PgVectorError::query("reading the partitions' offsets"))?;
            rows.iter()
                .map(|r| {
                    let (partition, offset): (i32, i64) = (r.get(0), r.get(1));
                    match (u32::try_from(partition), u64::try_from(offset)) {
                        (Ok(partition), Ok(offset)) => Ok((partition, offset)),
                        _ => Err(PgVectorError::Decode {
                            what: "a partition's next offset",
                            reason: format!("partition {partition} at {offset} is negative"),
                        }),
                    }
                })
                .collect()
        })
    }

    /// The vectors stored for these chunk-text hashes, so that an unchanged chunk is not
    /// embedded again (by any member). Hashes with no stored chunk are absent.
    pub fn embeddings_for(
        &self,
        text_hashes: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, PgVectorError> {
        if text_hashes.is_empty() {
            return Ok(HashMap::new());
        }
        self.by_keys(|tx| {
            let rows = tx
                .query(
                    &format!(
                        "SELECT DISTINCT ON (text_hash) text_hash, embedding FROM {}
                         WHERE text_hash = ANY($1)",
                        self.tables.chunks
                    ),
                    &[&text_hashes],
                )
                .map_err(PgVectorError::query("reading stored embeddings"))?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get::<_, Vector>(1).to_vec()))
                .collect())
        })
    }

    /// The `k` chunks most similar to `vector` (cosine similarity, highest first) among
    /// those `filter` lets through. Fewer only when fewer match, or when a filtered scan
    /// runs into pgvector's scan limits (`hnsw.max_scan_tuples`, `ivfflat.max_probes`).
    pub fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<PgHit>, PgVectorError> {
        self.check_query(vector)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let query = SearchQuery::new(&self.tables, vector, k, filter);
        self.in_search_transaction(k, !filter.is_empty(), |tx| {
            let rows = tx
                .query(query.sql.as_str(), &query.params())
                .map_err(PgVectorError::query("searching"))?;
            rows.iter().map(search::hit).collect()
        })
    }

    /// Runs `f`, which reads the rows of a batch's keys, in a read-only transaction planned
    /// as key lookups ([`batch::plan_as_key_lookups`]).
    fn by_keys<R>(
        &self,
        f: impl Fn(&mut postgres::Transaction<'_>) -> Result<R, PgVectorError>,
    ) -> Result<R, PgVectorError> {
        self.in_read_transaction(batch::plan_as_key_lookups, f)
    }

    /// Runs `f` in a read-only transaction with the search settings for `k` results
    /// (filtered or not) in force.
    fn in_search_transaction<R>(
        &self,
        k: usize,
        filtered: bool,
        f: impl Fn(&mut postgres::Transaction<'_>) -> Result<R, PgVectorError>,
    ) -> Result<R, PgVectorError> {
        let settings = self.search_settings().session_settings(k, filtered);
        let set = |tx: &mut postgres::Transaction<'_>| {
            tx.batch_execute(&settings)
                .map_err(PgVectorError::query("setting the search parameters"))
        };
        self.in_read_transaction(set, f)
    }

    /// Runs `f` in a read-only transaction, after `setup` (its settings).
    fn in_read_transaction<R>(
        &self,
        setup: impl Fn(&mut postgres::Transaction<'_>) -> Result<(), PgVectorError>,
        f: impl Fn(&mut postgres::Transaction<'_>) -> Result<R, PgVectorError>,
    ) -> Result<R, PgVectorError> {
        self.with_conn(always, |conn| {
            let mut tx = conn
                .build_transaction()
                .read_only(true)
                .start()
                .map_err(PgVectorError::query("starting a transaction"))?;
            setup(&mut tx)?;
            let result = f(&mut tx)?;
            tx.commit()
                .map_err(PgVectorError::query("ending a read transaction"))?;
            Ok(result)
        })
    }

    /// The plan PostgreSQL chooses for [`Self::search`] with these arguments (`EXPLAIN`
    /// text, one line per plan line): shows whether the vector index serves the search.
    pub fn explain_search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<String, PgVectorError> {
        self.check_query(vector)?;
        let query = SearchQuery::new(&self.tables, vector, k.max(1), filter);
        self.in_search_transaction(k.max(1), !filter.is_empty(), |tx| {
            let rows = tx
                .query(
                    &format!("EXPLAIN (COSTS OFF) {}", query.sql),
                    &query.params(),
                )
                .map_err(PgVectorError::query("explaining a search"))?;
            Ok(rows
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n"))
        })
    }

    /// The content hash of every document of `source`, by document id: what reconciliation
    /// compares with the source.
    pub fn document_hashes(&self, source: &str) -> Result<HashMap<String, String>, PgVectorError> {
        self.with_conn(always, |conn| {
            let rows = conn
                .query(
                    &format!(
                        "SELECT doc_id, content_hash FROM {} WHERE source = $1",
                        self.tables.documents
                    ),
                    &[&source],
                )
                .map_err(PgVectorError::query("reading documents' hashes"))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// One document's row.
    pub fn document(&self, doc_id: &str) -> Result<Option<DocumentRow>, PgVectorError> {
        self.with_conn(always, |conn| {
            let row = conn
                .query_opt(
                    &format!(
                        "SELECT {DOCUMENT_COLUMNS} FROM {} WHERE doc_id = $1",
                        self.tables.documents
                    ),
                    &[&doc_id],
                )
                .map_err(PgVectorError::query("reading a document"))?;
            row.as_ref().map(document_row).transpose()
        })
    }

    /// The rows of those of `doc_ids` that are stored, by document id: what a batch
    /// compares its events with, in one round trip.
    pub fn documents(
        &self,
        doc_ids: &[String],
    ) -> Result<HashMap<String, DocumentRow>, PgVectorError> {
        self.by_keys(|tx| {
            let rows = tx
                .query(
                    &format!(
                        "SELECT {DOCUMENT_COLUMNS} FROM {} WHERE doc_id = ANY($1)",
                        self.tables.documents
                    ),
                    &[&doc_ids],
                )
                .map_err(PgVectorError::query("reading documents"))?;
            rows.iter()
                .map(|r| document_row(r).map(|d| (d.doc_id.clone(), d)))
                .collect()
        })
    }

    /// A document's chunks in document order (by ordinal), without their vectors.
    pub fn chunks_of(&self, doc_id: &str) -> Result<Vec<StoredChunk>, PgVectorError> {
        self.with_conn(always, |conn| {
            let rows = conn
                .query(
                    &format!(
                        "SELECT chunk_id, doc_id, ordinal, text, metadata FROM {}
                         WHERE doc_id = $1 ORDER BY ordinal, chunk_id COLLATE \"C\"",
                        self.tables.chunks
                    ),
                    &[&doc_id],
                )
                .map_err(PgVectorError::query("reading a document's chunks"))?;
            rows.iter()
                .map(|r| {
                    let ordinal: i32 = r.get(2);
                    Ok(StoredChunk {
                        chunk_id: r.get(0),
                        doc_id: r.get(1),
                        ordinal: u32::try_from(ordinal).map_err(|_| PgVectorError::Decode {
                            what: "a chunk's ordinal",
                            reason: format!("{ordinal} is negative"),
                        })?,
                        text: r.get(3),
                        metadata: search::object(r.get(4))?,
                    })
                })
                .collect()
        })
    }

    /// Every chunk id, sorted (byte order).
    pub fn chunk_ids(&self) -> Result<Vec<String>, PgVectorError> {
        self.with_conn(always, |conn| {
            let rows = conn
                .query(
                    &format!(
                        "SELECT chunk_id FROM {} ORDER BY chunk_id COLLATE \"C\"",
                        self.tables.chunks
                    ),
                    &[],
                )
                .map_err(PgVectorError::query("reading the chunk ids"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// Every chunk, sorted by chunk id (byte order), with a checksum of its vector: two
    /// indexes hold the same chunks exactly when their digests are equal.
    pub fn chunk_digest(&self) -> Result<Vec<ChunkDigest>, PgVectorError> {
        self.with_conn(always, |conn| {
            let rows = conn
                .query(
                    &format!(
                        "SELECT chunk_id, doc_id, text, embedding FROM {}
                         ORDER BY chunk_id COLLATE \"C\"",
                        self.tables.chunks
                    ),
                    &[],
                )
                .map_err(PgVectorError::query("reading the chunks"))?;
            Ok(rows
                .iter()
                .map(|r| ChunkDigest {
                    chunk_id: r.get(0),
                    doc_id: r.get(1),
                    text: r.get(2),
                    vector_checksum: vector_checksum(r.get::<_, Vector>(3).as_slice()),
                })
                .collect())
        })
    }

    /// The number of chunks.
    pub fn len(&self) -> Result<u64, PgVectorError> {
        self.with_conn(always, |conn| {
            let count: i64 = conn
                .query_one(&format!("SELECT count(*) FROM {}", self.tables.chunks), &[])
                .map_err(PgVectorError::query("counting the chunks"))?
                .get(0);
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    /// Whether the index holds no chunk.
    pub fn is_empty(&self) -> Result<bool, PgVectorError> {
        Ok(self.len()? == 0)
    }

    /// Rebuilds the IVFFlat index with `lists` sized to the rows now present (or as
    /// configured). IVFFlat learns its lists' centres from the rows present when it is
    /// built, so build it again after the first load and after the data grew or shifted
    /// much. Batches wait while it builds; searches go on with the old index until the new
    /// one is swapped in. Does nothing for HNSW, which needs no rebuilding.
    pub fn rebuild_index(&self) -> Result<(), PgVectorError> {
        if self.config.method != IndexMethod::Ivfflat {
            return Ok(());
        }
        let lists = self.with_conn(never, |conn| {
            schema::rebuild_ivfflat(conn, &self.tables, &self.config)
        })?;
        self.lists.store(lists, Ordering::Relaxed);
        tracing::info!(prefix = %self.tables.prefix, lists, "rebuilt the ivfflat index");
        Ok(())
    }

    fn check_query(&self, vector: &[f32]) -> Result<(), PgVectorError> {
        if vector.len() == self.dimension {
            Ok(())
        } else {
            Err(PgVectorError::VectorDimension {
                subject: "the query".to_owned(),
                expected: self.dimension,
                actual: vector.len(),
            })
        }
    }

    fn search_settings(&self) -> SearchSettings {
        SearchSettings {
            method: self.config.method,
            ef_search: self.config.ef_search,
            probes: self.config.probes,
            lists: self.lists.load(Ordering::Relaxed),
            iterative_scan: self.iterative_scan,
        }
    }

    /// Runs `f` on a pooled client. A client that failed with a transient error is closed
    /// rather than reused, and so are the idle ones (after a server restart they are all
    /// dead). When the failed client came from the pool and `may_retry()` still holds
    /// after the failure, `f` runs once more on a new connection: a pooled connection may
    /// have died while idle, which shows only when it is used.
    fn with_conn<T>(
        &self,
        may_retry: impl Fn() -> bool,
        mut f: impl FnMut(&mut Conn<'_>) -> Result<T, PgVectorError>,
    ) -> Result<T, PgVectorError> {
        let mut conn = self.pool.get()?;
        match f(&mut conn) {
            Err(e) if e.is_transient() => {
                let retry = !conn.fresh && may_retry();
                conn.discard();
                self.pool.close_idle();
                if !retry {
                    return Err(e);
                }
                tracing::debug!(error = %e, "retrying on a new connection");
                let mut conn = self.pool.get()?;
                let result = f(&mut conn);
                if result.as_ref().is_err_and(PgVectorError::is_transient) {
                    conn.discard();
                }
                result
            }
            result => result,
        }
    }
}

/// Hex BLAKE3 of the values as little-endian bytes.
pub(crate) fn vector_checksum(vector: &[f32]) -> String {
    let mut hasher = blake3::Hasher::new();
    for value in vector {
        hasher.update(&value.to_le_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

/// Retry policies for [`PgVectorStore::with_conn`].
fn always() -> bool {
    true
}

fn never() -> bool {
    false
}
