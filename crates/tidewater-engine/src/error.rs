//! Errors of the engine and of the pipelines it runs.

use tidewater_core::{ErrorDomain, RetryHint};

/// A failure of a whole batch reported by a pipeline. (A single bad event is not an
/// error: the pipeline dead-letters it through [`crate::Prepared::dead_letters`].)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A system outside Tidewater failed (e.g. the embedding endpoint); the engine waits
    /// and retries the same batch, so nothing is lost or skipped.
    #[error("external failure in {what}: {source}")]
    External {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The state store failed.
    #[error("state store: {0}")]
    State(#[from] redb::Error),
    /// A broken invariant; the batch is retried after the longest back-off.
    #[error("internal error: {0}")]
    Internal(String),
    /// A sink's target holds another offset for the partition than the batch expected:
    /// another process committed it meanwhile. Nothing was written; the engine resumes
    /// from the target's offset.
    #[error(
        "fenced: partition {partition} is at offset {stored:?} in the target, not {expected:?}"
    )]
    Fenced {
        /// The partition.
        partition: u32,
        /// What the batch expected.
        expected: Option<u64>,
        /// What the target holds.
        stored: Option<u64>,
    },
}

impl PipelineError {
    /// Who is at fault.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Self::External { .. } => ErrorDomain::External,
            Self::State(_) | Self::Internal(_) => ErrorDomain::Internal,
            // Not a fault: ownership moved. The worker resumes from the target.
            Self::Fenced { .. } => ErrorDomain::External,
        }
    }

    /// Whether retrying the batch may help. A broken invariant or a corrupt state store
    /// will fail the same way again: the engine stops that partition instead of retrying
    /// for ever. Storage I/O, external systems and fencing are retried.
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::External { .. } | Self::Fenced { .. } => RetryHint::Retry,
            Self::State(redb::Error::Corrupted(_)) | Self::Internal(_) => RetryHint::Fatal,
            Self::State(_) => RetryHint::Retry,
        }
    }

    /// Wraps an external failure.
    pub fn external(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::External {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// Implements `From` each of redb's operation errors (transaction, table, storage,
/// commit, database) for an error type whose `$variant` wraps [`redb::Error`], so that
/// state-store code can use `?` on any redb call. Used by every pipeline crate.
#[macro_export]
macro_rules! from_redb_errors {
    ($target:ty, $variant:ident) => {
        $crate::from_redb_errors!(@each $target, $variant,
            redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError,
            redb::DatabaseError);
    };
    (@each $target:ty, $variant:ident, $($source:ty),*) => {$(
        impl From<$source> for $target {
            fn from(e: $source) -> Self {
                Self::$variant(e.into())
            }
        }
    )*};
}

from_redb_errors!(PipelineError, State);

/// Errors starting or running the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The log failed.
    #[error("log: {0}")]
    Log(#[from] tidewater_log::LogError),
    /// The state store failed.
    #[error("state store: {0}")]
    State(#[from] redb::Error),
    /// A worker thread could not be started.
    #[error("cannot start worker thread: {0}")]
    Spawn(std::io::Error),
    /// Engine state that cannot be read back (a bug or a damaged state database).
    #[error("corrupt engine state: {0}")]
    Corrupt(String),
    /// A state database is damaged: it failed its integrity check, or redb could not read
    /// it. Pipeline state is derived from the log, so deleting the file rebuilds it.
    #[error(
        "state store {} is corrupt ({reason}); delete it to rebuild it from the log",
        path.display()
    )]
    CorruptState {
        /// The database file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Pipeline state kept outside the process (one member at a time owns it) could not
    /// be taken over, read, or run on.
    #[error("shared state `{name}`: {reason}")]
    SharedState {
        /// The state's name.
        name: String,
        /// What failed.
        reason: String,
    },
}

impl EngineError {
    /// [`EngineError::SharedState`] of the state `name`.
    pub fn shared_state(name: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::SharedState {
            name: name.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<EngineError> for PipelineError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::State(e) => Self::State(e),
            EngineError::Log(e) => Self::external("the log", e),
            other => Self::Internal(other.to_string()),
        }
    }
}

from_redb_errors!(EngineError, State);
