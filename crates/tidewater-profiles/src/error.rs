//! Errors of the profiles pipeline and its queries.

use tidewater_core::{ErrorDomain, RetryHint};

use crate::graph::{GraphError, RedbStoreError};

/// A failure maintaining or reading profiles. Internal: the state store failed or holds
/// data this version cannot read (bad input events are dead-lettered, never errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfilesError {
    /// The state database failed.
    #[error("profiles state store: {0}")]
    State(#[from] redb::Error),
    /// The graph's tables failed.
    #[error("identity graph store: {0}")]
    GraphStore(#[from] RedbStoreError),
    /// A graph operation failed.
    #[error("identity graph: {0}")]
    Graph(#[from] GraphError),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] tidewater_engine::EngineError),
    /// The log failed.
    #[error("log: {0}")]
    Log(#[from] tidewater_log::LogError),
    /// A stored row or profile is not valid JSON of its type.
    #[error("corrupt value in table {table}: {source}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

impl ProfilesError {
    /// Who is at fault: always Tidewater or its state store.
    pub fn domain(&self) -> ErrorDomain {
        ErrorDomain::Internal
    }

    /// Whether retrying may help: storage failures may be transient, corrupt data is not.
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::State(_) | Self::GraphStore(_) | Self::Engine(_) | Self::Log(_) => {
                RetryHint::Retry
            }
            Self::Graph(e) => e.retry_hint(),
            Self::Corrupt { .. } => RetryHint::Fatal,
        }
    }
}

tidewater_engine::from_redb_errors!(ProfilesError, State);
