//! PostgreSQL with pgvector as Tidewater's shared vector index (`[knowledge.index]
//! backend = "pgvector"`), for several processes indexing and searching one corpus.
//!
//! Each pipeline batch — one log partition's records — is applied by
//! [`PgVectorStore::apply`] in one PostgreSQL transaction together with the partition's
//! next offset, and only if the stored offset is the one the batch expects. So a batch
//! lands exactly once, and a member that lost the partition to another is refused
//! ([`PgVectorError::Fenced`]) instead of overwriting newer rows.
//!
//! Tables, with the configured prefix (`tidewater` by default):
//! - `{prefix}_meta`: one row, the schema version, the embedding model, the vector dimension
//!   and the metric;
//! - `{prefix}_documents`: one row per document (source, content hash, metadata);
//! - `{prefix}_chunks`: one row per chunk with its `vector(dimension)` embedding and a copy
//!   of its document's metadata (`jsonb`), under an HNSW or IVFFlat index
//!   (`vector_cosine_ops`);
//! - `{prefix}_offsets`: the next offset per (pipeline, topic, partition).
//!
//! [`PgStateStore`] keeps, in the same database, the state of the pipelines that one
//! member at a time runs (profiles, analytics): a redb image in blocks, written at each
//! commit and fenced by an owner token (see its module).
//!
//! The API is blocking (the sync `postgres` client); see [`PgVectorStore`] on calling it
//! from async code. Connections are TCP (TLS through rustls, as the connection string's
//! `sslmode` and `sslrootcert` ask: see the `tls` module) or a Unix socket.

#![warn(missing_docs)]

mod batch;
mod config;
mod error;
mod pool;
mod schema;
mod search;
mod state;
mod store;
mod tls;

pub use batch::{BatchPosition, ChunkRow, DocumentRow, IndexChanges};
pub use config::{IndexMethod, PgVectorConfig};
pub use error::PgVectorError;
pub use pool::APPLICATION_NAME;
pub use schema::{MAX_INDEXED_DIMENSION, SCHEMA_VERSION};
pub use search::{Filter, PgHit};
pub use state::{PgAdvisoryLock, PgStateBackend, PgStateStore, StateSnapshot, STATE_BLOCK};
pub use store::{ChunkDigest, PgVectorStore, StoredChunk};
