//! The seam between a source and durable storage: a source hands batches of
//! [`DocumentEvent`]s to a [`DocumentSink`] and only records its own progress once the
//! sink has acknowledged them, so a crash re-emits rather than loses.

use std::error::Error as StdError;

use tidewater_core::{DocumentEvent, RetryHint};

/// Where a source delivers its events.
pub trait DocumentSink: Send + Sync {
    /// Delivers `events` in order. Returns only once they are durable (in a running
    /// engine: appended to the log under its configured durability); an error means none
    /// of them may be assumed delivered, and the source will emit them again later.
    fn send(&self, events: Vec<DocumentEvent>) -> Result<(), SinkError>;
}

/// A sink could not make a batch durable.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct SinkError {
    message: String,
    retry: RetryHint,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl SinkError {
    /// A failure caused by `source`, described by `message`; retryable by default since
    /// sinks front external storage (a full disk, a broker that went away).
    pub fn new(
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            retry: RetryHint::Retry,
            source: Some(source.into()),
        }
    }

    /// A failure with no underlying error, described by `message`.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: RetryHint::Retry,
            source: None,
        }
    }

    /// Marks the failure as one that retrying cannot fix (e.g. a record the log refuses
    /// as too large).
    pub fn fatal(mut self) -> Self {
        self.retry = RetryHint::Fatal;
        self
    }

    /// What went wrong, without the underlying cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether delivering the same batch again may succeed.
    pub fn retry_hint(&self) -> RetryHint {
        self.retry
    }
}
