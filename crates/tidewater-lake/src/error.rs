//! Errors of the lake and of the fine-tuning export.

use std::path::PathBuf;

use tidewater_core::ErrorDomain;

/// Errors of the lake, with the context needed to act on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LakeError {
    /// A configuration value that cannot be used.
    #[error("invalid [lake] configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The lake's state database could not be opened or created.
    #[error("cannot open the lake's state database {path}: {source}")]
    OpenState {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tidewater_engine::EngineError,
    },
    /// The lake's state database is damaged. Unlike a pipeline's state, it records which
    /// rows the lake's files already hold: without it, the lake writes them again.
    #[error(
        "the lake's state store {} is corrupt ({reason}); delete it to write the lake again \
         from the log, and delete the lake's files in {} too unless rows they hold may appear \
         twice",
        path.display(),
        dir.display()
    )]
    CorruptState {
        /// The database file.
        path: PathBuf,
        /// The lake's directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The state store failed.
    #[error("lake state store: {0}")]
    State(#[from] redb::Error),
    /// The engine's offsets, kept in the lake's state store, could not be read.
    #[error("lake offsets: {0}")]
    Offsets(#[from] tidewater_engine::EngineError),
    /// The log failed while the lake read a topic.
    #[error("log, topic '{topic}': {source}")]
    Log {
        /// The topic being read.
        topic: String,
        /// The cause.
        #[source]
        source: tidewater_log::LogError,
    },
    /// The log ended before the last offset of a recorded batch: the batch cannot be
    /// written as recorded.
    #[error(
        "{topic}/{partition}: the log ends at offset {end}, before the batch's last offset {last}"
    )]
    MissingRecords {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The batch's last offset.
        last: u64,
        /// The partition's end.
        end: u64,
    },
    /// A file operation failed; `fs_err` names the file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Writing or reading a Parquet file failed.
    #[error("parquet file {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Building an Arrow batch failed (a bug: the columns do not match the schema).
    #[error("arrow batch for topic '{topic}': {source}")]
    Arrow {
        /// The topic.
        topic: String,
        /// The cause.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A Parquet file in the lake does not have the columns the lake writes.
    #[error("{path} is not a lake file of its topic: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Serialising a line of the export failed.
    #[error("cannot serialise the export: {0}")]
    Json(#[from] serde_json::Error),
    /// A worker thread could not be started.
    #[error("cannot start the lake's thread for topic '{topic}': {source}")]
    Spawn {
        /// The topic.
        topic: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `start` was called on a lake that is already running.
    #[error("the lake is already started")]
    AlreadyStarted,
    /// A crash injected by a test (`Lake::crash_next_batch`); the worker stops dead.
    #[doc(hidden)]
    #[error("injected crash")]
    InjectedCrash,
}

impl LakeError {
    /// Who is at fault.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Self::Config { .. } | Self::Format { .. } => ErrorDomain::User,
            Self::Log { .. } | Self::Io(_) | Self::Parquet { .. } | Self::Spawn { .. } => {
                ErrorDomain::External
            }
            Self::OpenState { .. }
            | Self::CorruptState { .. }
            | Self::State(_)
            | Self::Offsets(_)
            | Self::MissingRecords { .. }
            | Self::Arrow { .. }
            | Self::Json(_)
            | Self::AlreadyStarted
            | Self::InjectedCrash => ErrorDomain::Internal,
        }
    }
}

tidewater_engine::from_redb_errors!(LakeError, State);

#[cfg(test)]
mod tests {
    use super::*;

    fn shareable<T: Send + Sync + 'static>() {}

    #[test]
    fn errors_and_the_lake_cross_threads() {
        // `anyhow` in the binary and the server's handlers need both.
        shareable::<LakeError>();
        shareable::<crate::Lake>();
        assert_eq!(LakeError::AlreadyStarted.domain(), ErrorDomain::Internal);
        let config = LakeError::Config {
            reason: "x".to_owned(),
        };
        assert_eq!(config.domain(), ErrorDomain::User);
    }
}
