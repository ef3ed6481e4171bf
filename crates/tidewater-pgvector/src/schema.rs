//! The tables, their creation and migration, and the vector index over the embeddings.
//!
//! Several processes may open the same tables at once: creation and migration run in a
//! transaction holding an advisory lock per table prefix (the extension, which a database
//! has once, under a lock of its own), so one process creates and the others find
//! everything in place. `{prefix}_meta` records the schema version, the embedding model,
//! the dimension and the metric; a process with another model or dimension is refused
//! rather than mixing vectors.
//!
//! `{prefix}_chunks.metadata` is a copy of the document's metadata so that filtered
//! searches read one table; [`crate::PgVectorStore::apply`] keeps the copies in step.

use postgres::{GenericClient, Transaction};

use crate::config::{default_lists, IndexMethod, PgVectorConfig};
use crate::error::PgVectorError;

/// The version of the tables' layout this build writes and reads.
pub const SCHEMA_VERSION: i32 = 2;

/// The only metric: embeddings are compared by cosine similarity.
pub(crate) const METRIC: &str = "cosine";

/// pgvector indexes `vector` columns of at most 2,000 dimensions.
pub const MAX_INDEXED_DIMENSION: usize = 2000;

/// First key of this crate's advisory locks ("TWPG"); the second is the table prefix's
/// hash, or 0 for the extension.
const LOCK_CLASS: i32 = 0x5457_5047;

/// The names of one deployment's tables and indexes. The prefix is validated
/// (`[a-z_][a-z0-9_]*`), so the names need no quoting.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub(crate) prefix: String,
    pub(crate) meta: String,
    pub(crate) documents: String,
    pub(crate) chunks: String,
    pub(crate) offsets: String,
    pub(crate) embedding_index: String,
}

impl Tables {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            meta: format!("{prefix}_meta"),
            documents: format!("{prefix}_documents"),
            chunks: format!("{prefix}_chunks"),
            offsets: format!("{prefix}_offsets"),
            embedding_index: format!("{prefix}_chunks_embedding"),
        }
    }
}

/// Creates the `vector` extension unless it exists; returns its version.
pub(crate) fn ensure_extension(client: &mut postgres::Client) -> Result<String, PgVectorError> {
    if let Some(version) = extension_version(client)? {
        return Ok(version);
    }
    // Two concurrent CREATE EXTENSION IF NOT EXISTS can both miss the other's row and
    // fail on a unique index; the lock makes the second see the first's.
    let mut tx = client
        .transaction()
        .map_err(PgVectorError::query("starting a transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_CLASS])
        .map_err(PgVectorError::query("locking the extension's creation"))?;
    tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
        .map_err(|source| PgVectorError::Extension { source })?;
    tx.commit()
        .map_err(|source| PgVectorError::Extension { source })?;
    extension_version(client)?.ok_or_else(|| PgVectorError::Decode {
        what: "the vector extension's version",
        reason: "no row in pg_extension after CREATE EXTENSION".to_owned(),
    })
}

fn extension_version(client: &mut impl GenericClient) -> Result<Option<String>, PgVectorError> {
    let row = client
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
            &[],
        )
        .map_err(PgVectorError::query(
            "reading the vector extension's version",
        ))?;
    Ok(row.map(|r| r.get(0)))
}

/// Whether this pgvector version has iterative index scans (`hnsw.iterative_scan`,
/// `ivfflat.iterative_scan`, added in 0.8.0).
pub(crate) fn supports_iterative_scan(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (0, 8)
}

/// Creates or checks the tables and the indexes, in one transaction under the prefix's
/// advisory lock.
pub(crate) fn migrate(
    client: &mut postgres::Client,
    tables: &Tables,
    config: &PgVectorConfig,
    model: &str,
    dimension: usize,
) -> Result<u32, PgVectorError> {
    let mut tx = client
        .transaction()
        .map_err(PgVectorError::query("starting a transaction"))?;
    lock_prefix(&mut tx, &tables.prefix)?;

    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {meta} (
             singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
             schema_version integer NOT NULL,
             dimension integer NOT NULL,
             metric text NOT NULL
         )",
        meta = tables.meta
    ))
    .map_err(PgVectorError::query("creating the meta table"))?;
    check_meta(&mut tx, tables, model, dimension)?;

    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {documents} (
             doc_id text PRIMARY KEY,
             source text NOT NULL,
             content_hash text NOT NULL,
             metadata jsonb NOT NULL,
             updated_at_ms bigint NOT NULL,
             rejected text
         );
         CREATE TABLE IF NOT EXISTS {chunks} (
             chunk_id text PRIMARY KEY,
             doc_id text NOT NULL,
             ordinal integer NOT NULL,
             text text NOT NULL,
             text_hash text NOT NULL,
             metadata jsonb NOT NULL,
             embedding vector({dimension}) NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {offsets} (
             pipeline text NOT NULL,
             topic text NOT NULL,
             partition integer NOT NULL,
             next_offset bigint NOT NULL CHECK (next_offset >= 0),
             PRIMARY KEY (pipeline, topic, partition)
         )",
        documents = tables.documents,
        chunks = tables.chunks,
        offsets = tables.offsets,
    ))
    .map_err(PgVectorError::query("creating the tables"))?;

    // Indexes by name, created only when missing: CREATE INDEX IF NOT EXISTS on an existing
    // index still takes the table's SHARE lock, which would wait for every running batch.
    let btree = [
        (
            format!("{}_documents_source", tables.prefix),
            format!("{} (source)", tables.documents),
        ),
        (
            // text_pattern_ops: serves both `doc_id = x` and the prefix filter
            // `doc_id LIKE 'p%'` whatever the database's collation.
            format!("{}_chunks_doc_id", tables.prefix),
            format!("{} (doc_id text_pattern_ops)", tables.chunks),
        ),
        (
            format!("{}_chunks_text_hash", tables.prefix),
            format!("{} (text_hash)", tables.chunks),
        ),
    ];
    for (name, on) in &btree {
        if !index_exists(&mut tx, name)? {
            tx.batch_execute(&format!("CREATE INDEX {name} ON {on}"))
                .map_err(PgVectorError::query("creating an index"))?;
        }
    }

    let lists = ensure_vector_index(&mut tx, tables, config, false)?;
    tx.commit()
        .map_err(PgVectorError::query("committing the tables' creation"))?;
    Ok(lists)
}

/// Rebuilds the IVFFlat index with lists sized to the rows now present, in one
/// transaction under the prefix's lock. Returns the lists.
pub(crate) fn rebuild_ivfflat(
    client: &mut postgres::Client,
    tables: &Tables,
    config: &PgVectorConfig,
) -> Result<u32, PgVectorError> {
    let mut tx = client
        .transaction()
        .map_err(PgVectorError::query("starting a transaction"))?;
    lock_prefix(&mut tx, &tables.prefix)?;
    let lists = ensure_vector_index(&mut tx, tables, config, true)?;
    tx.commit()
        .map_err(PgVectorError::query("committing the index's rebuild"))?;
    Ok(lists)
}

pub(crate) fn lock_prefix(tx: &mut Transaction<'_>, prefix: &str) -> Result<(), PgVectorError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS, &prefix],
    )
    .map_err(PgVectorError::query("locking the tables' creation"))?;
    Ok(())
}

/// Records the model and the dimension on first open; refuses another model, another
/// dimension or a newer schema later. Version 1 tables gain the model column, recorded
/// by the first process that opens them.
fn check_meta(
    tx: &mut Transaction<'_>,
    tables: &Tables,
    model: &str,
    dimension: usize,
) -> Result<(), PgVectorError> {
    // Version 2: the model the vectors come from (same dimension, other vectors).
    tx.batch_execute(&format!(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS model text",
        tables.meta
    ))
    .map_err(PgVectorError::query("adding the model to the meta table"))?;
    let wanted = i32::try_from(dimension)
        .map_err(|_| PgVectorError::Config(format!("dimension {dimension} is too large")))?;
    let row = tx
        .query_opt(
            &format!(
                "SELECT schema_version, dimension, metric, model FROM {}",
                tables.meta
            ),
            &[],
        )
        .map_err(PgVectorError::query("reading the meta table"))?;
    let Some(row) = row else {
        tx.execute(
            &format!(
                "INSERT INTO {} (schema_version, dimension, metric, model) \
                 VALUES ($1, $2, $3, $4)",
                tables.meta
            ),
            &[&SCHEMA_VERSION, &wanted, &METRIC, &model],
        )
        .map_err(PgVectorError::query("writing the meta table"))?;
        return Ok(());
    };
    let version: i32 = row.get(0);
    let stored: i32 = row.get(1);
    let metric: String = row.get(2);
    let stored_model: Option<String> = row.get(3);
    if version > SCHEMA_VERSION {
        return Err(PgVectorError::SchemaVersion {
            prefix: tables.prefix.clone(),
            stored: version,
            supported: SCHEMA_VERSION,
        });
    }
    if stored != wanted {
        return Err(PgVectorError::DimensionMismatch {
            prefix: tables.prefix.clone(),
            stored: usize::try_from(stored).unwrap_or(0),
            requested: dimension,
        });
    }
    if metric != METRIC {
        return Err(PgVectorError::Decode {
            what: "the meta table's metric",
            reason: format!("{metric:?}, this build compares by {METRIC}"),
        });
    }
    match stored_model {
        Some(stored) if stored != model => {
            return Err(PgVectorError::ModelMismatch {
                prefix: tables.prefix.clone(),
                stored,
                requested: model.to_owned(),
            })
        }
        Some(_) => {}
        None => {
            tx.execute(
                &format!("UPDATE {} SET model = $1, schema_version = $2", tables.meta),
                &[&model, &SCHEMA_VERSION],
            )
            .map_err(PgVectorError::query(
                "recording the model in the meta table",
            ))?;
        }
    }
    Ok(())
}

fn index_exists(tx: &mut Transaction<'_>, name: &str) -> Result<bool, PgVectorError> {
    let row = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .map_err(PgVectorError::query("looking up an index"))?;
    Ok(row.get(0))
}

/// The vector index as built: its access method and storage options (`m=16`, `lists=4`).
struct BuiltIndex {
    method: String,
    options: Vec<String>,
}

impl BuiltIndex {
    fn option(&self, name: &str) -> Option<u32> {
        self.options.iter().find_map(|o| {
            let (key, value) = o.split_once('=')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
    }

    /// Whether it is the index `config` asks for. IVFFlat lists count only when
    /// configured: unset, they follow the row count at the last (re)build.
    fn matches(&self, config: &PgVectorConfig) -> bool {
        if self.method != config.method.access_method() {
            return false;
        }
        match config.method {
            IndexMethod::Hnsw => {
                self.option("m") == Some(config.m)
                    && self.option("ef_construction") == Some(config.ef_construction)
            }
            IndexMethod::Ivfflat => config.lists.is_none() || self.option("lists") == config.lists,
        }
    }
}

fn built_index(tx: &mut Transaction<'_>, name: &str) -> Result<Option<BuiltIndex>, PgVectorError> {
    let row = tx
        .query_opt(
            "SELECT am.amname::text, coalesce(c.reloptions, '{}')
             FROM pg_class c JOIN pg_am am ON am.oid = c.relam
             WHERE c.oid = to_regclass($1)",
            &[&name],
        )
        .map_err(PgVectorError::query("inspecting the vector index"))?;
    Ok(row.map(|r| BuiltIndex {
        method: r.get(0),
        options: r.get(1),
    }))
}

/// Builds the vector index when it is missing, differs from the configuration, or
/// (`rebuild`, IVFFlat only) always. The new index is built beside the old one and
/// swapped in, so searches keep an index until the commit. Returns the IVFFlat lists.
fn ensure_vector_index(
    tx: &mut Transaction<'_>,
    tables: &Tables,
    config: &PgVectorConfig,
    rebuild: bool,
) -> Result<u32, PgVectorError> {
    let name = &tables.embedding_index;
    let built = built_index(tx, name)?;
    let keep = match &built {
        Some(index) => index.matches(config) && !(rebuild && config.method == IndexMethod::Ivfflat),
        None => false,
    };
    if keep {
        return Ok(built.and_then(|b| b.option("lists")).unwrap_or(0));
    }
    let (using, lists) = match config.method {
        IndexMethod::Hnsw => (
            format!(
                "hnsw (embedding vector_cosine_ops) WITH (m = {}, ef_construction = {})",
                config.m, config.ef_construction
            ),
            0,
        ),
        IndexMethod::Ivfflat => {
            let lists = match config.lists {
                Some(lists) => lists,
                None => {
                    let rows: i64 = tx
                        .query_one(&format!("SELECT count(*) FROM {}", tables.chunks), &[])
                        .map_err(PgVectorError::query("counting the chunks"))?
                        .get(0);
                    default_lists(u64::try_from(rows).unwrap_or(0))
                }
            };
            (
                format!("ivfflat (embedding vector_cosine_ops) WITH (lists = {lists})"),
                lists,
            )
        }
    };
    if let Some(old) = &built {
        tracing::info!(
            index = %name,
            from = %old.method,
            options = ?old.options,
            to = %using,
            "rebuilding the vector index"
        );
    }
    let staging = format!("{name}_new");
    tx.batch_execute(&format!(
        "DROP INDEX IF EXISTS {staging};
         CREATE INDEX {staging} ON {chunks} USING {using};
         DROP INDEX IF EXISTS {name};
         ALTER INDEX {staging} RENAME TO {name}",
        chunks = tables.chunks,
    ))
    .map_err(PgVectorError::query("building the vector index"))?;
    Ok(lists)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterative_scans_arrived_in_0_8() {
        assert!(supports_iterative_scan("0.8.0"));
        assert!(supports_iterative_scan("0.8.2"));
        assert!(supports_iterative_scan("1.0"));
        assert!(!supports_iterative_scan("0.7.4"));
        assert!(!supports_iterative_scan("garbage"));
    }

    #[test]
    fn the_longest_prefix_keeps_names_within_postgres_limit() {
        let tables = Tables::new(&"p".repeat(crate::config::MAX_PREFIX_LEN));
        let staging = format!("{}_new", tables.embedding_index);
        assert!(staging.len() <= 63, "{} bytes", staging.len());
    }

    #[test]
    fn an_index_matches_the_configuration_it_was_built_from() {
        let hnsw = BuiltIndex {
            method: "hnsw".into(),
            options: vec!["m=16".into(), "ef_construction=256".into()],
        };
        let mut config = PgVectorConfig::new("host=db");
        assert!(hnsw.matches(&config));
        config.m = 32;
        assert!(!hnsw.matches(&config));
        config.method = IndexMethod::Ivfflat;
        assert!(!hnsw.matches(&config));
        let ivf = BuiltIndex {
            method: "ivfflat".into(),
            options: vec!["lists=7".into()],
        };
        assert!(ivf.matches(&config));
        config.lists = Some(8);
        assert!(!ivf.matches(&config));
        config.lists = Some(7);
        assert!(ivf.matches(&config));
    }
}
