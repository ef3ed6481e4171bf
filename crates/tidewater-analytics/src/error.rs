//! Errors of the analytics operator.

/// Errors raised when building the analytics operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured window size is zero (user input).
    #[error("window size must be greater than zero")]
    ZeroWindowSize,
}
