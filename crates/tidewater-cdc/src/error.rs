//! Errors of the change-event parser: what is wrong with an event, and where in it.

use tidewater_core::ErrorDomain;

/// Why a change record could not be parsed. Every variant is bad user input: the record
/// is dead-lettered with its `Display` text (`path: reason`) as the reason, and retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdcError {
    /// The record's key or value bytes are not JSON.
    #[error("{part}: not valid JSON: {source}")]
    Json {
        /// Which part of the record: `"key"` or `"value"`.
        part: &'static str,
        /// The JSON parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The record is JSON but not a change event Tidewater understands.
    #[error("{path}: {reason}")]
    Invalid {
        /// Where it failed, as a dotted JSON path such as `payload.source.lsn` (`$` for
        /// the whole record).
        path: String,
        /// What is wrong, for a person to read.
        reason: String,
    },
}

impl CdcError {
    /// Who is at fault: always the input.
    pub fn domain(&self) -> ErrorDomain {
        ErrorDomain::User
    }

    /// The JSON path where parsing failed (`key` or `value` for malformed JSON).
    pub fn path(&self) -> &str {
        match self {
            Self::Json { part, .. } => part,
            Self::Invalid { path, .. } => path,
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        let path = path.into();
        Self::Invalid {
            path: if path.is_empty() {
                "$".to_owned()
            } else {
                path
            },
            reason: reason.into(),
        }
    }
}
