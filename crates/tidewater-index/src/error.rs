//! Errors of the vector indexes.

use std::path::PathBuf;

/// Errors of a vector index, with the context needed to act on them.
///
/// [`IndexError::is_user_error`] tells bad input (a vector of the wrong length, a bad
/// setting, a file built for another model) from failures of the system (I/O, memory).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// A vector or query whose length is not the index's dimension — usually an index
    /// built for another embedding model.
    #[error("vector has {actual} dimensions but the index has {expected}")]
    DimensionMismatch {
        /// The index's dimension.
        expected: usize,
        /// The vector's length.
        actual: usize,
    },
    /// A vector or query containing NaN or an infinity, which would corrupt the graph
    /// and the ordering of results.
    #[error("{} has a non-finite value at position {position}", describe_key(*key))]
    NonFiniteValue {
        /// The key being inserted; `None` for a query.
        key: Option<u64>,
        /// Index of the first bad component.
        position: usize,
    },
    /// `u64::MAX`, which usearch uses internally to mark deleted entries.
    #[error("key {key} is reserved by the index and cannot be stored")]
    ReservedKey {
        /// The key.
        key: u64,
    },
    /// A key given twice to one [`crate::VectorIndex::upsert_many`].
    #[error("key {key} appears twice in one batch of upserts")]
    DuplicateKey {
        /// The key.
        key: u64,
    },
    /// An invalid setting.
    #[error("invalid index setting index.{field}: {reason}")]
    InvalidConfig {
        /// Setting name.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// An index file that exists but was built with other settings (dimension, metric or
    /// element type), so it cannot serve this configuration.
    #[error("index file {path} does not match this index: {reason}")]
    IncompatibleFile {
        /// The file.
        path: PathBuf,
        /// Which setting differs, with both values.
        reason: String,
    },
    /// An index file that cannot be read back (truncated, wrong magic, bad header).
    #[error("index file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A path that is not valid UTF-8; usearch takes paths as strings.
    #[error("index path {path:?} is not valid UTF-8")]
    NonUtf8Path {
        /// The path.
        path: PathBuf,
    },
    /// usearch reported a failure (out of memory, a file it could not read or write).
    /// usearch errors cross from C++ as a message only, so the message is what is kept.
    #[error("usearch failed to {operation}: {message}")]
    Usearch {
        /// What was being done, with the key or path involved.
        operation: String,
        /// usearch's message.
        message: String,
    },
    /// The operation is not supported by this index.
    #[error("{index} does not support {operation}")]
    Unsupported {
        /// Index implementation.
        index: &'static str,
        /// Operation.
        operation: &'static str,
    },
    /// An I/O error; `fs_err` names the file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn describe_key(key: Option<u64>) -> String {
    match key {
        Some(key) => format!("vector for key {key}"),
        None => "query vector".to_string(),
    }
}

impl IndexError {
    /// Whether the error is caused by the input (vector, key, setting, file built for
    /// another model), so that retrying the same call cannot succeed. Other errors come
    /// from the system — I/O, memory — and may succeed later.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::DimensionMismatch { .. }
                | Self::NonFiniteValue { .. }
                | Self::ReservedKey { .. }
                | Self::DuplicateKey { .. }
                | Self::InvalidConfig { .. }
                | Self::IncompatibleFile { .. }
                | Self::NonUtf8Path { .. }
                | Self::Unsupported { .. }
        )
    }

    pub(crate) fn usearch(operation: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::Usearch {
            operation: operation.into(),
            message: error.to_string(),
        }
    }
}
