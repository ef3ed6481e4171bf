//! [`ChatClient`]: calls an OpenAI-compatible `/v1/chat/completions` endpoint, for a whole
//! answer or a stream of tokens, with time limits and retries.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use reqwest::header::{ACCEPT, RETRY_AFTER};
use tidewater_core::redact::redact;
use tidewater_core::ChatMessage;

use crate::error::{Awaited, Oversized};
use crate::sse::SseDecoder;
use crate::wire::{self, ChatRequest, StreamEvent};
use crate::{retry, LlmConfig, LlmError};

/// The pieces of a streamed answer, in order; their concatenation is the answer. After an
/// error the stream ends. Dropping it closes the connection, which stops the generation on
/// servers that notice.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<String, LlmError>> + Send>>;

/// A client of one chat-completions endpoint and model. Cheap to clone; clones share their
/// connections.
///
/// Each request is attempted up to `max_retries + 1` times while it fails in a way that
/// may pass ([`LlmError::retryable`]), waiting a jittered, doubling back-off or the
/// server's `Retry-After` between attempts. A stream is retried only until its first
/// token: after that, the answer has been seen.
///
/// Responses are read piece by piece and refused past `max_response_bytes`, and errors and
/// log lines show the endpoint with its secrets masked ([`redact`]).
#[derive(Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    endpoint: Arc<Endpoint>,
    api_key: Option<String>,
    timeout: Duration,
    idle_timeout: Duration,
    max_retries: u32,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
}

/// The most bytes of an error response read for its message: enough for any error
/// message, little enough to read whatever the endpoint sends.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Where requests go; every error names it.
#[derive(Debug)]
struct Endpoint {
    url: reqwest::Url,
    /// `url` with its secrets masked: what errors and logs show.
    shown: String,
    model: String,
    /// `max_response_bytes`.
    max_bytes: usize,
}

/// How one attempt failed.
struct Failed {
    error: LlmError,
    /// How long the server asked the client to wait, if it did.
    retry_after: Option<Duration>,
}

impl From<LlmError> for Failed {
    fn from(error: LlmError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

impl ChatClient {
    /// Checks `config`, reads the API key from the environment variable it names, and
    /// builds the HTTP client. Makes no request: an unreachable endpoint shows on the
    /// first call.
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        let invalid = |reason| LlmError::InvalidConfig { reason };
        config.validate().map_err(invalid)?;
        let url = config.completions_url().map_err(invalid)?;
        let api_key = std::env::var(&config.api_key_env)
            .ok()
            .filter(|key| !key.trim().is_empty());

        // reqwest is built without a default TLS crypto provider so that the binary links
        // one only; installing it fails harmlessly when another part of the process has.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoint: Arc::new(Endpoint {
                shown: redact(url.as_str()).into_owned(),
                url,
                model: config.model.clone(),
                max_bytes: config.max_response_bytes,
            }),
            api_key,
            timeout: config.timeout,
            idle_timeout: config.idle_timeout,
            max_retries: config.max_retries,
            temperature: config.temperature,
            max_tokens: config.max_tokens,
        })
    }

    /// The model asked.
    pub fn model(&self) -> &str {
        &self.endpoint.model
    }

    /// The endpoint requests go to, `{base_url}/chat/completions`, with any password or
    /// secret parameter in it masked.
    pub fn url(&self) -> &str {
        &self.endpoint.shown
    }

    /// Asks for a whole answer (`"stream": false`); each attempt must finish within
    /// `timeout`.
    pub async fn complete(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        let body = &self.request(messages, false);
        self.with_retries(move || async move {
            match tokio::time::timeout(self.timeout, self.complete_once(body)).await {
                Ok(result) => result,
                Err(_) => Err(self
                    .endpoint
                    .timeout(Awaited::Response, self.timeout)
                    .into()),
            }
        })
        .await
    }

    /// Asks for a streamed answer (`"stream": true`).
    ///
    /// Returns once the first token has arrived (within `timeout` of each attempt's
    /// start), or the answer ended without any: failures before that are retried and,
    /// when retries run out, returned here, so a caller can still answer with an error
    /// status. The stream yields the first token and the pieces after it; a silence
    /// longer than `idle_timeout` ends it with [`LlmError::Timeout`].
    pub async fn stream(&self, messages: &[ChatMessage]) -> Result<TokenStream, LlmError> {
        let body = &self.request(messages, true);
        let deltas = self
            .with_retries(move || async move {
                match tokio::time::timeout(self.timeout, self.start_stream(body)).await {
                    Ok(result) => result,
                    Err(_) => Err(self
                        .endpoint
                        .timeout(Awaited::FirstToken, self.timeout)
                        .into()),
                }
            })
            .await?;
        Ok(deltas.into_stream(self.idle_timeout))
    }

    fn request<'a>(&'a self, messages: &'a [ChatMessage], stream: bool) -> ChatRequest<'a> {
        ChatRequest {
            model: &self.endpoint.model,
            messages,
            stream,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or `max_retries` retries are spent;
    /// the error is the last attempt's.
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, LlmError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failed>>,
    {
        let mut retry = 0;
        loop {
            let failed = match attempt().await {
                Ok(value) => return Ok(value),
                Err(failed) => failed,
            };
            if !failed.error.retryable() || retry >= self.max_retries {
                return Err(failed.error);
            }
            let delay = retry::delay(retry, failed.retry_after);
            tracing::warn!(
                url = %self.endpoint.shown,
                model = %self.endpoint.model,
                attempt = retry + 1,
                ?delay,
                error = %failed.error,
                "chat completion failed; retrying"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    async fn complete_once(&self, body: &ChatRequest<'_>) -> Result<String, Failed> {
        let response = self.send(body).await?;
        let limit = self.endpoint.max_bytes;
        let bytes = match read_body(response, limit).await {
            Ok(Body::Whole(bytes)) => bytes,
            Ok(Body::Cut(_)) => return Err(self.endpoint.too_large(Oversized::Body).into()),
            Err(e) => return Err(self.endpoint.transport(e).into()),
        };
        wire::completion_text(&bytes).map_err(|reason| self.endpoint.malformed(reason).into())
    }

    /// Sends a streaming request and reads up to its first token, so that a failure before
    /// it can still be retried.
    async fn start_stream(&self, body: &ChatRequest<'_>) -> Result<Deltas, Failed> {
        let response = self.send(body).await?;
        let mut deltas = Deltas {
            response,
            endpoint: Arc::clone(&self.endpoint),
            decoder: SseDecoder::new(self.endpoint.max_bytes),
            pending: VecDeque::new(),
            answer_bytes: 0,
            ended: false,
        };
        deltas.fill(None).await?;
        Ok(deltas)
    }

    /// Sends one request; a non-success status becomes an error carrying the message of
    /// the body's start and the `Retry-After` header.
    async fn send(&self, body: &ChatRequest<'_>) -> Result<reqwest::Response, Failed> {
        let mut request = self.http.post(self.endpoint.url.clone()).json(body);
        if body.stream {
            request = request.header(ACCEPT, "text/event-stream");
        }
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.endpoint.transport(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        let message = match read_body(response, MAX_ERROR_BODY_BYTES).await {
            Ok(Body::Whole(body) | Body::Cut(body)) => wire::error_message(&body),
            Err(e) => format!("(the error body could not be read: {})", e.without_url()),
        };
        Err(Failed {
            error: self.endpoint.status(status.as_u16(), message),
            retry_after,
        })
    }
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the API key must not reach logs.
        f.debug_struct("ChatClient")
            .field("url", &self.endpoint.shown)
            .field("model", &self.endpoint.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "…"))
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// A streamed answer being read.
struct Deltas {
    response: reqwest::Response,
    endpoint: Arc<Endpoint>,
    decoder: SseDecoder,
    /// Text received and not yet handed out.
    pending: VecDeque<String>,
    /// Bytes of answer text received so far.
    answer_bytes: usize,
    /// `[DONE]`, or the end of the body, was reached.
    ended: bool,
}

/// A response body read up to a limit.
enum Body {
    /// The whole body.
    Whole(Vec<u8>),
    /// The first bytes of a body longer than the limit; the rest was not read.
    Cut(Vec<u8>),
}

/// Reads `response`'s body piece by piece, stopping once it exceeds `limit` bytes (a
/// declared `Content-Length` over it stops before anything is read).
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Body, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|declared| declared > limit as u64)
    {
        return Ok(Body::Cut(Vec::new()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            body.extend_from_slice(&chunk[..limit - body.len()]);
            return Ok(Body::Cut(body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Body::Whole(body))
}

impl Deltas {
    /// Reads until there is text to hand out or the answer has ended; with `idle`, no read
    /// may wait longer than that.
    async fn fill(&mut self, idle: Option<Duration>) -> Result<(), LlmError> {
        while self.pending.is_empty() && !self.ended {
            let read = self.response.chunk();
            let chunk = match idle {
                Some(limit) => tokio::time::timeout(limit, read)
                    .await
                    .map_err(|_| self.endpoint.timeout(Awaited::NextChunk, limit))?,
                None => read.await,
            };
            let too_large = |_| self.endpoint.too_large(Oversized::Event);
            match chunk.map_err(|e| self.endpoint.transport(e))? {
                Some(bytes) => {
                    for data in self.decoder.push(&bytes).map_err(too_large)? {
                        self.event(&data)?;
                    }
                }
                None => {
                    // A body that ends without `[DONE]` (older llama.cpp servers) ends the
                    // answer too; a connection cut mid-body is a read error above.
                    if let Some(data) = self.decoder.finish().map_err(too_large)? {
                        self.event(&data)?;
                    }
                    self.ended = true;
                }
            }
        }
        Ok(())
    }

    fn event(&mut self, data: &str) -> Result<(), LlmError> {
        if self.ended {
            return Ok(());
        }
        match wire::stream_event(data).map_err(|reason| self.endpoint.malformed(reason))? {
            StreamEvent::Delta(text) if !text.is_empty() => {
                self.answer_bytes += text.len();
                if self.answer_bytes > self.endpoint.max_bytes {
                    return Err(self.endpoint.too_large(Oversized::Answer));
                }
                self.pending.push_back(text);
            }
            StreamEvent::Delta(_) => {}
            StreamEvent::Done => self.ended = true,
            StreamEvent::Error(message) => return Err(self.endpoint.upstream(message)),
        }
        Ok(())
    }

    fn into_stream(self, idle: Duration) -> TokenStream {
        Box::pin(futures_util::stream::unfold(
            Some(self),
            move |state| async move {
                let mut deltas = state?;
                if let Err(error) = deltas.fill(Some(idle)).await {
                    return Some((Err(error), None));
                }
                let text = deltas.pending.pop_front()?;
                Some((Ok(text), Some(deltas)))
            },
        ))
    }
}

impl Endpoint {
    fn url(&self) -> String {
        self.shown.clone()
    }

    /// A failure to connect, send or read.
    fn transport(&self, source: reqwest::Error) -> LlmError {
        // reqwest's error carries the URL, password included: the endpoint is named here.
        let source = source.without_url();
        let (url, model) = (self.url(), self.model.clone());
        if source.is_connect() {
            LlmError::Unreachable { url, model, source }
        } else {
            LlmError::Interrupted { url, model, source }
        }
    }

    fn timeout(&self, waiting_for: Awaited, after: Duration) -> LlmError {
        LlmError::Timeout {
            url: self.url(),
            model: self.model.clone(),
            waiting_for,
            after,
        }
    }

    fn status(&self, status: u16, message: String) -> LlmError {
        LlmError::Status {
            url: self.url(),
            model: self.model.clone(),
            status,
            message,
        }
    }

    fn upstream(&self, message: String) -> LlmError {
        LlmError::Upstream {
            url: self.url(),
            model: self.model.clone(),
            message,
        }
    }

    fn malformed(&self, reason: String) -> LlmError {
        LlmError::Malformed {
            url: self.url(),
            model: self.model.clone(),
            reason,
        }
    }

    fn too_large(&self, part: Oversized) -> LlmError {
        LlmError::TooLarge {
            url: self.url(),
            model: self.model.clone(),
            part,
            limit: self.max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_the_named_variable_and_stays_out_of_debug() {
        let var = "TIDEWATER_ANSWER_TEST_KEY_7F3A";
        let mut config = LlmConfig::new("http://127.0.0.1:9/v1", "m");
        config.api_key_env = var.into();
        // A unique name: no other test reads or writes it.
        std::env::set_var(var, "sk-secret");
        let client = ChatClient::new(&config).unwrap();
        std::env::remove_var(var);
        assert_eq!(client.api_key.as_deref(), Some("sk-secret"));
        assert!(!format!("{client:?}").contains("sk-secret"));
        assert_eq!(client.url(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(client.model(), "m");

        config.api_key_env = "TIDEWATER_ANSWER_TEST_SURELY_UNSET".into();
        assert_eq!(ChatClient::new(&config).unwrap().api_key, None);
    }

    #[test]
    fn calls_and_streams_can_move_between_threads() {
        fn assert_send<T: Send + 'static>(_: &T) {}
        fn assert_send_borrowed<T: Send>(_: &T) {}
        let client = ChatClient::new(&LlmConfig::new("http://127.0.0.1:9/v1", "m")).unwrap();
        let messages = [ChatMessage::new("user", "hi")];
        assert_send_borrowed(&client.complete(&messages));
        assert_send_borrowed(&client.stream(&messages));
        let stream: TokenStream = Box::pin(futures_util::stream::empty());
        assert_send(&stream);
    }

    #[test]
    fn the_url_shown_in_debug_and_errors_has_its_password_masked() {
        let config = LlmConfig::new("http://llmuser:hunter2pw@127.0.0.1:9/v1", "m");
        let client = ChatClient::new(&config).unwrap();
        assert_eq!(
            client.url(),
            "http://llmuser:***@127.0.0.1:9/v1/chat/completions"
        );
        for shown in [
            format!("{client:?}"),
            format!("{config:?}"),
            client.endpoint.status(500, "boom".into()).to_string(),
        ] {
            assert!(!shown.contains("hunter2pw"), "{shown}");
        }
        let err = ChatClient::new(&LlmConfig::new("ftp://u:hunter2pw@h/v1", "m")).unwrap_err();
        assert!(!err.to_string().contains("hunter2pw"), "{err}");
    }

    #[test]
    fn a_bad_configuration_is_refused() {
        let err = ChatClient::new(&LlmConfig::new("localhost:8000", "m")).unwrap_err();
        assert!(matches!(err, LlmError::InvalidConfig { .. }), "{err}");
    }
}
