//! Errors of the knowledge pipeline's services.

/// Errors serving or maintaining the knowledge state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnowledgeError {
    /// The state store failed.
    #[error("state store: {0}")]
    State(#[from] redb::Error),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] tidewater_engine::EngineError),
    /// The vector index failed.
    #[error("vector index: {0}")]
    Index(#[from] tidewater_index::IndexError),
    /// The embedding model failed.
    #[error("embedding: {0}")]
    Embed(#[from] tidewater_embed::EmbedError),
    /// The log failed.
    #[error("log: {0}")]
    Log(#[from] tidewater_log::LogError),
    /// The state was built with another embedding model.
    #[error("the knowledge state in {path} was built with model '{stored}', but '{configured}' is configured; use a new data directory or delete that file to re-index")]
    ModelMismatch {
        /// The state file.
        path: String,
        /// Model recorded in the state.
        stored: String,
        /// Model configured now.
        configured: String,
    },
    /// `[knowledge.index]` is invalid.
    #[error("knowledge: {0}")]
    Config(#[from] crate::config::IndexConfigError),
    /// The pgvector index failed.
    #[error("pgvector index: {0}")]
    PgVector(#[from] tidewater_pgvector::PgVectorError),
    /// The operation needs the built-in index (`[knowledge.index] backend = "hnsw"`).
    #[error("{0} needs the built-in index: it is not available with backend = \"pgvector\"")]
    NotWithPgvector(&'static str),
    /// A request that cannot be served as asked.
    #[error("{0}")]
    BadRequest(String),
    /// Stored data is not what this version wrote.
    #[error("corrupt knowledge state: {0}")]
    Corrupt(String),
}

tidewater_engine::from_redb_errors!(KnowledgeError, State);

impl From<crate::state::RowError> for KnowledgeError {
    fn from(e: crate::state::RowError) -> Self {
        match e {
            crate::state::RowError::Storage(e) => Self::State(e.into()),
            corrupt => Self::Corrupt(corrupt.to_string()),
        }
    }
}

impl From<crate::state::RowError> for tidewater_engine::PipelineError {
    fn from(e: crate::state::RowError) -> Self {
        match e {
            crate::state::RowError::Storage(e) => Self::State(e.into()),
            corrupt => Self::Internal(corrupt.to_string()),
        }
    }
}
