//! The one seam between a source and durable storage: a source (files, PostgreSQL, Kafka
//! topics, HTTP) hands batches of events to an [`EventWriter`] — in a running Tidewater an
//! append to the pipeline's topic — and records its own progress only once the writer has
//! acknowledged them, so a crash re-emits rather than loses.

use std::error::Error as StdError;

use crate::RetryHint;

/// Where a source delivers its events of type `E`.
pub trait EventWriter<E>: Send + Sync {
    /// Makes `events` durable, in order. Returns only once they are (in a running engine:
    /// appended to the log under its configured durability); an error means none of them
    /// may be assumed delivered, and the source will write them again later. Sources that
    /// call it from an async runtime's thread must expect it to block for as long as an
    /// append takes.
    fn write(&self, events: Vec<E>) -> Result<(), WriteError>;
}

/// A writer could not make a batch durable.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct WriteError {
    message: String,
    retry: RetryHint,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl WriteError {
    /// A failure caused by `source`, described by `message`; retryable by default since
    /// writers front external storage (a full disk, a broker that went away).
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
