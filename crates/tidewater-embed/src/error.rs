//! The crate's error type, [`EmbedError`], and how each failure is classified: whose fault it
//! is ([`ErrorDomain`]) and whether calling again may succeed ([`RetryHint`]).

use std::path::PathBuf;

use tidewater_core::{ErrorDomain, RetryHint};

/// Why an embedder could not be built or could not embed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The configuration is inconsistent (a zero batch size, a sequence length the model
    /// cannot hold, an unparsable URL).
    #[error("invalid embedder configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, naming the offending key.
        reason: String,
    },

    /// The local model directory, or a file it must contain, does not exist.
    #[error(
        "model not found: {} does not exist; run scripts/fetch-model.sh to fetch the model \
         (or point TIDEWATER_MODEL_DIR or model_dir at it)",
        path.display()
    )]
    ModelMissing {
        /// The missing directory or file.
        path: PathBuf,
    },

    /// Reading a model file failed. The I/O error names the file.
    #[error("reading the model failed: {source}")]
    Io {
        /// The underlying error, naming the file.
        #[from]
        source: std::io::Error,
    },

    /// A model file exists but cannot be parsed (`config.json`, `tokenizer.json`).
    #[error("model file {} is malformed: {reason}", path.display())]
    ModelFormat {
        /// The malformed file.
        path: PathBuf,
        /// What the parser reported.
        reason: String,
    },

    /// Loading the weights or running the model failed inside candle.
    #[cfg(feature = "candle")]
    #[error("candle failed while {context}: {source}")]
    Candle {
        /// What was being done: "loading weights from …", "running the model".
        context: String,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },

    /// The tokenizer rejected a text.
    #[cfg(feature = "local")]
    #[error("tokenizing failed: {source}")]
    Tokenize {
        /// The tokenizer's error.
        #[source]
        source: tokenizers::Error,
    },

    /// The thread pool for `threads` could not be started.
    #[cfg(feature = "local")]
    #[error("starting {threads} inference threads failed: {source}")]
    ThreadPool {
        /// The configured thread count.
        threads: usize,
        /// Rayon's error.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },

    /// The environment variable that should hold the API key is not set.
    #[error("environment variable {var} (the embedding endpoint's API key) is not set")]
    MissingApiKey {
        /// The variable's name.
        var: String,
    },

    /// The HTTP request could not be sent or its answer not read (connection refused or
    /// reset, timeout).
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The endpoint.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },

    /// The endpoint answered with a non-success HTTP status.
    #[error("{url} answered HTTP {status}: {message}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The error message from the response body (or the body itself, shortened).
        message: String,
    },

    /// The endpoint answered 2xx with a body that is not a valid embeddings response.
    #[error("{url} sent an invalid embeddings response: {reason}")]
    BadResponse {
        /// The endpoint.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The endpoint's vectors do not have the configured length: it serves another model
    /// than the configuration says.
    #[error("{url} returned vectors of length {actual}, configured dimension is {expected}")]
    DimensionMismatch {
        /// The endpoint.
        url: String,
        /// The configured dimension.
        expected: usize,
        /// The length the endpoint returned.
        actual: usize,
    },

    /// A retryable failure persisted through every attempt. The endpoint may recover: the
    /// caller should wait and call again.
    #[error("embedding request to {url} failed after {attempts} attempts")]
    RetriesExhausted {
        /// The endpoint.
        url: String,
        /// How many requests were made.
        attempts: u32,
        /// The failure of the last attempt.
        #[source]
        last: Box<EmbedError>,
    },

    /// The HTTP backend's runtime could not start.
    #[error("starting the HTTP client runtime failed: {source}")]
    Runtime {
        /// The I/O error from creating its threads.
        #[source]
        source: std::io::Error,
    },

    /// The HTTP backend's worker task ended without an answer (it panicked).
    #[error("the embedding worker task ended without an answer")]
    WorkerLost,
}

impl EmbedError {
    /// [`EmbedError::InvalidConfig`] with `reason`.
    pub fn invalid_config(reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            reason: reason.into(),
        }
    }

    /// Whose fault the error is.
    ///
    /// Configuration and model-file problems count as [`ErrorDomain::User`] (the operator's
    /// input), as does an endpoint rejecting the texts themselves (HTTP 400, 413, 422);
    /// failures of the endpoint or the network are [`ErrorDomain::External`]; the rest are
    /// [`ErrorDomain::Internal`].
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Self::InvalidConfig { .. }
            | Self::ModelMissing { .. }
            | Self::ModelFormat { .. }
            | Self::MissingApiKey { .. } => ErrorDomain::User,
            #[cfg(feature = "local")]
            Self::Tokenize { .. } => ErrorDomain::User,
            Self::Status { status, .. } if is_input_rejection(*status) => ErrorDomain::User,
            // Disk and endpoint failures come from outside the process.
            Self::Io { .. }
            | Self::Transport { .. }
            | Self::Status { .. }
            | Self::BadResponse { .. }
            | Self::DimensionMismatch { .. }
            | Self::RetriesExhausted { .. } => ErrorDomain::External,
            #[cfg(feature = "candle")]
            Self::Candle { .. } => ErrorDomain::Internal,
            #[cfg(feature = "local")]
            Self::ThreadPool { .. } => ErrorDomain::Internal,
            Self::Runtime { .. } | Self::WorkerLost => ErrorDomain::Internal,
        }
    }

    /// Whether calling [`crate::Embedder::embed`] again later may succeed.
    ///
    /// Only transient endpoint failures are [`RetryHint::Retry`]; the HTTP backend has
    /// already retried them itself, so the caller should pause before calling again.
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::RetriesExhausted { .. } | Self::Transport { .. } | Self::BadResponse { .. } => {
                RetryHint::Retry
            }
            Self::Status { status, .. } if is_retryable_status(*status) => RetryHint::Retry,
            _ => RetryHint::Fatal,
        }
    }
}

/// HTTP statuses that say "not now": the request timed out on the server, the client is
/// rate limited, or the server failed.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// HTTP statuses by which an embedding endpoint rejects the request's content (malformed,
/// too large, unprocessable), as opposed to the caller's credentials or URL.
fn is_input_rejection(status: u16) -> bool {
    matches!(status, 400 | 413 | 422)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> EmbedError {
        EmbedError::Status {
            url: "http://x/v1/embeddings".into(),
            status,
            message: "m".into(),
        }
    }

    #[test]
    fn http_statuses_are_classified() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(status(s).retry_hint(), RetryHint::Retry, "{s}");
            assert_eq!(status(s).domain(), ErrorDomain::External, "{s}");
        }
        for s in [400, 413, 422] {
            assert_eq!(status(s).retry_hint(), RetryHint::Fatal, "{s}");
            assert_eq!(status(s).domain(), ErrorDomain::User, "{s}");
        }
        for s in [401, 403, 404] {
            assert_eq!(status(s).retry_hint(), RetryHint::Fatal, "{s}");
            assert_eq!(status(s).domain(), ErrorDomain::External, "{s}");
        }
    }

    #[test]
    fn exhausted_retries_ask_for_a_retry() {
        let e = EmbedError::RetriesExhausted {
            url: "u".into(),
            attempts: 3,
            last: Box::new(status(503)),
        };
        assert_eq!(e.retry_hint(), RetryHint::Retry);
        assert_eq!(e.domain(), ErrorDomain::External);
    }

    #[test]
    fn a_missing_model_says_how_to_fetch_it() {
        let e = EmbedError::ModelMissing {
            path: PathBuf::from("/nowhere/model"),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("/nowhere/model") && msg.contains("scripts/fetch-model.sh"),
            "{msg}"
        );
    }
}
