//! [`LlmError`]: why a chat completion failed, naming the endpoint and the model; whose
//! fault it is and whether asking again may help.

use std::time::Duration;

use tidewater_core::ErrorDomain;

/// Why the language model gave no (complete) answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The `llm` configuration is unusable (a base URL that is not http or https, a zero
    /// timeout).
    #[error("invalid language model configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, naming the key.
        reason: String,
    },

    /// No connection could be made: refused, name not resolved, TLS failed.
    #[error("cannot reach the language model {model} at {url}: {}", innermost(.source))]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The model asked.
        model: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },

    /// The connection broke before the answer was complete.
    #[error("the connection to the language model {model} at {url} broke: {}", innermost(.source))]
    Interrupted {
        /// The endpoint.
        url: String,
        /// The model asked.
        model: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },

    /// The endpoint was too slow.
    #[error("the language model {model} at {url} timed out: no {waiting_for} within {after:?}")]
    Timeout {
        /// The endpoint.
        url: String,
        /// The model asked.
        model: String,
        /// What did not come in time.
        waiting_for: Awaited,
        /// The limit that ran out.
        after: Duration,
    },

    /// The endpoint answered with an HTTP error status.
    #[error("the language model {model} at {url} answered HTTP {status}: {message}")]
    Status {
        /// The endpoint.
        url: String,
        /// The model asked.
        model: String,
        /// The HTTP status code.
        status: u16,
        /// The message of the error body (`{"error": {"message": …}}`), or the start of
        /// the body itself.
        message: String,
    },

    /// The endpoint reported an error inside an event stream that had started well.
    #[error("the language model {model} at {url} reported an error mid-stream: {message}")]
    Upstream {
        /// The endpoint.
        url: String,
        /// The model asked.
        model: String,
        /// The error's message.
        message: String,
    },

    /// The endpoint answered 2xx with something that is not a chat completion.
    #[error("the language model {model} at {url} sent an invalid response: {reason}")]
    Malformed {
        /// The endpoint.
        url: String,
        /// The model asked.
        model: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The endpoint sent more than `max_response_bytes`; the rest was not read.
    #[error(
        "the language model {model} at {url} sent {part} over {limit} bytes \
         (answer.llm.max_response_bytes)"
    )]
    TooLarge {
        /// The endpoint.
        url: String,
        /// The model asked.
        model: String,
        /// What was too large.
        part: Oversized,
        /// The limit, in bytes.
        limit: usize,
    },
}

/// What a [`LlmError::TooLarge`] found too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Oversized {
    /// The body of an answer that is not streamed.
    Body,
    /// One event (or one line) of a streamed answer.
    Event,
    /// The text of a streamed answer, all pieces together.
    Answer,
}

impl std::fmt::Display for Oversized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Oversized::Body => "a response body",
            Oversized::Event => "a streamed event",
            Oversized::Answer => "a streamed answer",
        })
    }
}

/// What a [`LlmError::Timeout`] waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Awaited {
    /// The whole answer of a request that does not stream.
    Response,
    /// The first token of a streamed answer.
    FirstToken,
    /// The next piece of a streamed answer.
    NextChunk,
}

impl std::fmt::Display for Awaited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Awaited::Response => "complete response",
            Awaited::FirstToken => "first token",
            Awaited::NextChunk => "further streamed data",
        })
    }
}

impl LlmError {
    /// Whose fault the error is: the operator's for a bad configuration
    /// ([`ErrorDomain::User`]), the endpoint's or the network's for everything else
    /// ([`ErrorDomain::External`]).
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Self::InvalidConfig { .. } => ErrorDomain::User,
            Self::Unreachable { .. }
            | Self::Interrupted { .. }
            | Self::Timeout { .. }
            | Self::Status { .. }
            | Self::Upstream { .. }
            | Self::Malformed { .. }
            | Self::TooLarge { .. } => ErrorDomain::External,
        }
    }

    /// What a client of the API may be told: which model failed and how, without the
    /// endpoint's URL or anything the endpoint sent (the [`Display`](std::fmt::Display)
    /// form, with both, is for the server's log).
    pub fn summary(&self) -> String {
        match self {
            Self::InvalidConfig { .. } => "the language model is not configured correctly".into(),
            Self::Unreachable { model, .. } => {
                format!("the language model '{model}' is unreachable")
            }
            Self::Interrupted { model, .. } => {
                format!("the connection to the language model '{model}' broke")
            }
            Self::Timeout {
                model,
                waiting_for,
                after,
                ..
            } => {
                format!("the language model '{model}' timed out: no {waiting_for} within {after:?}")
            }
            Self::Status { model, status, .. } => {
                format!("the language model '{model}' failed: HTTP {status}")
            }
            Self::Upstream { model, .. } => {
                format!("the language model '{model}' reported an error mid-stream")
            }
            Self::Malformed { model, .. } => {
                format!("the language model '{model}' sent an invalid response")
            }
            Self::TooLarge {
                model, part, limit, ..
            } => format!("the language model '{model}' sent {part} over {limit} bytes"),
        }
    }

    /// Whether the same request may succeed later: network failures, timeouts, and the
    /// statuses that say "not now" (408, 429, 5xx). The client has already retried these
    /// as configured, except a stream that broke after its first token.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Interrupted { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => is_retryable_status(*status),
            Self::InvalidConfig { .. }
            | Self::Upstream { .. }
            | Self::Malformed { .. }
            | Self::TooLarge { .. } => false,
        }
    }
}

/// HTTP statuses that say "not now": the server timed out waiting for the request, the
/// client is rate limited, or the server failed.
fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// The deepest cause of `error`: reqwest's own message ("error sending request") says
/// less than the I/O error under it ("Connection refused").
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> LlmError {
        LlmError::Status {
            url: "http://h/v1/chat/completions".into(),
            model: "m".into(),
            status: code,
            message: "boom".into(),
        }
    }

    #[test]
    fn statuses_that_say_not_now_are_retryable() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(status(code).retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert!(!status(code).retryable(), "{code}");
        }
    }

    #[test]
    fn upstream_faults_are_external_and_messages_name_the_endpoint() {
        let err = status(503);
        assert_eq!(err.domain(), ErrorDomain::External);
        assert_eq!(
            err.to_string(),
            "the language model m at http://h/v1/chat/completions answered HTTP 503: boom"
        );
        let timeout = LlmError::Timeout {
            url: "http://h".into(),
            model: "m".into(),
            waiting_for: Awaited::FirstToken,
            after: Duration::from_millis(250),
        };
        assert_eq!(
            timeout.to_string(),
            "the language model m at http://h timed out: no first token within 250ms"
        );
        assert!(timeout.retryable());
        let config = LlmError::InvalidConfig { reason: "x".into() };
        assert_eq!(config.domain(), ErrorDomain::User);
        assert!(!config.retryable());
    }
}
