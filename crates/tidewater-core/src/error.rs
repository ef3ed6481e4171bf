//! Error classification shared by all crates: who is at fault, and whether retrying helps.

/// Where an error comes from. Decides how a pipeline reacts: user input goes to the
/// dead-letter topic, an external failure is retried, an internal one stops the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDomain {
    /// The input itself is bad (malformed event, binary file, unknown key). Retrying
    /// cannot help; the event is dead-lettered.
    User,
    /// A system outside Tidewater failed (embedding endpoint, disk full). Retrying may help.
    External,
    /// A bug or broken invariant inside Tidewater.
    Internal,
}

/// Whether an operation that failed may succeed if tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// Try again after a back-off.
    Retry,
    /// Do not retry.
    Fatal,
}
