//! The knowledge pipeline: document events → text → chunks → embeddings → vector index,
//! and search over the result.
//!
//! State lives in one redb database (`knowledge.redb`): documents, chunks, embeddings
//! (content-addressed, reference-counted, so unchanged chunk text is never embedded twice)
//! and an index journal. The HNSW index is a derived store: rebuilt from snapshots that
//! record the journal position they reflect, then caught up from the journal.
#![warn(missing_docs)]

mod config;
mod error;
mod index_store;
mod ingest;
mod pipeline;
mod reconcile;
mod search;
mod service;
mod state;

pub use config::KnowledgeConfig;
pub use error::KnowledgeError;
pub use ingest::DocumentWriter;
pub use pipeline::{body_text, KnowledgePipeline, UnindexableBody};
pub use reconcile::ReconcileReport;
pub use search::{SearchFilter, SearchHit, SearchRequest};
pub use service::{DocumentStatus, Knowledge};
pub use state::DocRow;
