//! Errors of the file source, classified so a caller knows whether to fix the config,
//! retry, or report a bug.

use std::io;
use std::path::PathBuf;

use tidewater_core::{ErrorDomain, RetryHint};

use tidewater_core::WriteError;

/// Why the file source could not start or finish a pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// An `include` or `exclude` pattern is not a valid glob.
    #[error("invalid glob '{pattern}' in the file source config")]
    InvalidGlob {
        /// The pattern as written.
        pattern: String,
        /// What globset objected to.
        #[source]
        source: globset::Error,
    },
    /// A config value outside its allowed range.
    #[error("invalid file source config: {reason}")]
    InvalidConfig {
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The root folder is missing or unreadable. A listing stops here rather than
    /// reporting every known document as deleted (an unmounted volume is not a deletion).
    #[error("file source root {path} cannot be read")]
    Root {
        /// The configured root.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The root exists but is not a directory.
    #[error("file source root {path} is not a directory")]
    RootNotADirectory {
        /// The configured root.
        path: PathBuf,
    },
    /// The state file exists but could not be read.
    #[error("cannot read file source state {path}")]
    StateRead {
        /// The state file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The state file is not one this version wrote. It is never overwritten silently:
    /// doing so would forget which documents to delete. Removing it makes the next scan
    /// re-emit every file (harmless downstream, which dedupes by content hash) but no
    /// deletions for files removed in the meantime.
    #[error("file source state {path} is corrupt: {reason}")]
    StateCorrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The state could not be persisted. The events were delivered; they will be emitted
    /// again after a restart, which downstream dedupes.
    #[error("cannot persist file source state {path}")]
    StateWrite {
        /// The state file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The sink refused a batch; the source's state was not advanced past it.
    #[error("the document sink failed")]
    Sink(#[from] WriteError),
    /// The file-system watcher could not be started.
    #[error("cannot watch {path} for changes")]
    Watch {
        /// The root being watched.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: notify::Error,
    },
}

impl SourceError {
    /// Who is at fault: the config, the environment, or the source itself.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Self::InvalidGlob { .. }
            | Self::InvalidConfig { .. }
            | Self::RootNotADirectory { .. } => ErrorDomain::User,
            Self::Root { .. }
            | Self::StateRead { .. }
            | Self::StateWrite { .. }
            | Self::Sink(_)
            | Self::Watch { .. } => ErrorDomain::External,
            Self::StateCorrupt { .. } => ErrorDomain::Internal,
        }
    }

    /// Whether trying the same operation again may succeed.
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::Sink(err) => err.retry_hint(),
            Self::Root { .. }
            | Self::StateRead { .. }
            | Self::StateWrite { .. }
            | Self::Watch { .. } => RetryHint::Retry,
            Self::InvalidGlob { .. }
            | Self::InvalidConfig { .. }
            | Self::RootNotADirectory { .. }
            | Self::StateCorrupt { .. } => RetryHint::Fatal,
        }
    }
}

/// Displays an error followed by its causes (`a: b: c`), for log lines: the top-level
/// message alone ("the document sink failed") rarely says what to fix.
pub(crate) struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_causes_for_logs() {
        let err = SourceError::from(WriteError::new(
            "append failed",
            io::Error::other("disk full"),
        ));
        assert_eq!(
            ErrorChain(&err).to_string(),
            "the document sink failed: append failed: disk full"
        );
        assert_eq!(err.domain(), ErrorDomain::External);
        assert_eq!(err.retry_hint(), RetryHint::Retry);
    }
}
