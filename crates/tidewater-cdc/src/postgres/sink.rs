//! Where the source delivers its events.

use crate::event::ChangeEvent;

/// Takes the source's events and stores them durably.
///
/// The source advances the replication slot only after [`ChangeSink::send`] returns
/// `Ok`, so a sink must not return before the events would survive a crash (for the log:
/// appended and synced). Events arrive in commit order, whole transactions at a time
/// during streaming. After a crash between a successful `send` and the source recording
/// its progress, the last batch is sent again: each event carries its LSN and transaction
/// id, so a sink that needs exactly-once skips positions it already holds.
///
/// `send` is called on the async runtime's thread; a sink that blocks for long should
/// hand the work to a blocking thread itself.
pub trait ChangeSink: Send + Sync {
    /// Stores the events; `Ok` means they are durable.
    fn send(&self, events: Vec<ChangeEvent>) -> Result<(), SinkError>;
}

/// A sink's failure, keeping the underlying error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SinkError(Box<dyn std::error::Error + Send + Sync>);

impl SinkError {
    /// Wraps the sink's own error.
    pub fn new(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(err.into())
    }
}
