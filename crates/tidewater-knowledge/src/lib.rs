//! The knowledge pipeline: document events → text → chunks → embeddings → vector index,
//! and search over the result.
//!
//! Two index backends (`[knowledge.index] backend`):
//! - `hnsw` (built in): state lives in one redb database (`knowledge.redb`): documents,
//!   chunks, embeddings (content-addressed, reference-counted, so unchanged chunk text is
//!   never embedded twice) and an index journal. The HNSW index is a derived store:
//!   rebuilt from snapshots that record the journal position they reflect, then caught up
//!   from the journal.
//! - `pgvector`: documents, chunks with their vectors, and each partition's offset live in
//!   PostgreSQL, shared by several processes; each batch commits with its offset in one
//!   transaction, fenced, so it lands exactly once whichever process runs it.
//!
//! Both prepare batches the same way (`prepare`): last event per document, chunking,
//! embedding only chunk texts with no stored vector.
#![warn(missing_docs)]

mod config;
mod error;
mod index_store;
mod ingest;
mod local;
mod pg_sink;
mod pipeline;
mod prepare;
mod reconcile;
mod search;
mod service;
mod shared;
mod state;

/// The pipeline's name: its consumer group, dead-letter topic and offsets' owner.
pub(crate) const PIPELINE: &str = "knowledge";

pub use config::{IndexBackend, IndexConfigError, KnowledgeConfig, KnowledgeIndexConfig};
pub use error::KnowledgeError;
pub use ingest::DocumentWriter;
pub use pg_sink::KnowledgeSink;
pub use pipeline::KnowledgePipeline;
pub use prepare::{body_text, UnindexableBody};
pub use reconcile::ReconcileReport;
pub use search::{SearchFilter, SearchHit, SearchRequest};
pub use service::{DocumentStatus, Knowledge};
pub use state::DocRow;
