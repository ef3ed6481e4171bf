//! [`OpenAiEmbedder`]: a blocking [`Embedder`] over an async HTTP client running on a small
//! tokio runtime the embedder owns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use reqwest::header::RETRY_AFTER;
use tidewater_core::redact::redact;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::retry::{parse_retry_after, Backoff};
use super::wire::{error_message, parse_response, EmbeddingsRequest, ResponseProblem};
use crate::error::is_retryable_status;
use crate::{EmbedError, Embedder, OpenAiConfig};

/// Environment variable read for the API key when the configuration names none.
const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";

/// Worker threads of the embedder's runtime: the work is waiting on sockets, so a couple
/// serve any `max_concurrency`.
const RUNTIME_THREADS: usize = 2;

/// Embeds by calling an OpenAI-compatible `POST /v1/embeddings` endpoint.
///
/// One call to [`Embedder::embed`] splits its texts into requests of `batch_size`, sends them
/// with at most `max_concurrency` in flight (shared by all concurrent callers), and retries
/// each failed request that may succeed later (connection error, timeout, HTTP 408, 429,
/// 5xx, malformed answer) up to `max_retries` times with jittered exponential back-off,
/// honouring `Retry-After`. Other 4xx answers fail at once. When retries run out the error's
/// [`EmbedError::retry_hint`] is [`tidewater_core::RetryHint::Retry`]: the call has no side
/// effects, so the caller may wait and call again.
///
/// `embed` blocks the calling thread. The requests run on the embedder's own runtime, so it
/// neither panics nor deadlocks when called from inside another tokio runtime, but called
/// from an async task it holds that task's worker thread for the whole call: async code
/// should call it through `tokio::task::spawn_blocking`.
pub struct OpenAiEmbedder {
    shared: Arc<Shared>,
    /// `Option` only so that `Drop` can take it and shut it down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
}

/// What the request tasks need, shared with them.
struct Shared {
    client: reqwest::Client,
    endpoints: Vec<Endpoint>,
    /// Where the search for the least busy endpoint starts next, so that ties rotate.
    next: AtomicUsize,
    /// The endpoints' URLs, masked, comma-separated: what the embedder's errors name.
    shown: String,
    model: String,
    api_key: Option<String>,
    dimension: usize,
    max_tokens: usize,
    batch_size: usize,
    batch_tokens: usize,
    max_retries: u32,
    backoff: Backoff,
    /// Bounds the requests in flight to `max_concurrency` per endpoint.
    in_flight: Semaphore,
}

/// One server, its load and its health.
struct Endpoint {
    url: reqwest::Url,
    /// `url` with its secrets masked: what errors and logs show.
    shown: String,
    /// Requests sent to it and not answered yet.
    in_flight: AtomicUsize,
    health: Mutex<Health>,
}

/// Failures in a row, and until when an endpoint that failed is left alone.
#[derive(Default)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
}

impl Endpoint {
    fn is_up(&self, now: Instant) -> bool {
        self.health
            .lock()
            .down_until
            .is_none_or(|until| until <= now)
    }

    /// A request failed in a way another try may fix: leave the endpoint alone for the
    /// back-off of its failures in a row (or what it asked for).
    fn failed(&self, backoff: &Backoff, retry_after: Option<Duration>, error: &EmbedError) {
        let mut health = self.health.lock();
        let pause = retry_after.map_or_else(
            || backoff.bound(health.failures),
            |asked| asked.min(backoff.max),
        );
        health.failures += 1;
        health.down_until = Some(Instant::now() + pause);
        if health.failures == 1 {
            tracing::warn!(url = %self.shown, error = %error, ?pause, "embedding endpoint failed; the others take its requests meanwhile");
        }
    }

    fn succeeded(&self) {
        let mut health = self.health.lock();
        if health.failures > 0 {
            tracing::info!(url = %self.shown, failures = health.failures, "embedding endpoint answers again");
        }
        *health = Health::default();
    }
}

/// Counts a request in flight to an endpoint while it lives.
struct Sending<'a>(&'a AtomicUsize);

impl<'a> Sending<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How one request failed.
enum Failure {
    /// It may succeed if sent again, after `retry_after` if the server said so.
    Retryable {
        error: EmbedError,
        retry_after: Option<Duration>,
    },
    /// Sending it again cannot help.
    Fatal(EmbedError),
}

impl OpenAiEmbedder {
    /// Checks `cfg`, reads the API key from the environment and starts the HTTP client.
    /// Makes no request: an unreachable endpoint shows on the first [`Embedder::embed`].
    pub fn new(cfg: OpenAiConfig) -> Result<Self, EmbedError> {
        let urls = Self::check_config(&cfg)?;
        let api_key = match &cfg.api_key_env {
            Some(var) => Some(
                std::env::var(var).map_err(|_| EmbedError::MissingApiKey { var: var.clone() })?,
            ),
            None => std::env::var(DEFAULT_API_KEY_ENV)
                .ok()
                .filter(|k| !k.is_empty()),
        };

        // reqwest is built without a default TLS crypto provider so that the binary links one
        // only; installing it fails harmlessly when another part of the process already has.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("tidewater-embed-http")
            .enable_all()
            .build()
            .map_err(|source| EmbedError::Runtime { source })?;
        let client = {
            let _in_runtime = runtime.enter();
            reqwest::Client::builder()
                .timeout(cfg.timeout)
                .build()
                .map_err(|e| {
                    EmbedError::invalid_config(format!("cannot build the HTTP client: {e}"))
                })?
        };

        let endpoints: Vec<Endpoint> = urls
            .into_iter()
            .map(|url| Endpoint {
                shown: redact(url.as_str()).into_owned(),
                url,
                in_flight: AtomicUsize::new(0),
                health: Mutex::new(Health::default()),
            })
            .collect();
        let shown = endpoints
            .iter()
            .map(|e| e.shown.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                in_flight: Semaphore::new(cfg.max_concurrency * endpoints.len()),
                endpoints,
                next: AtomicUsize::new(0),
                shown,
                model: cfg.model,
                api_key,
                dimension: cfg.dimension,
                max_tokens: cfg.max_tokens,
                batch_size: cfg.batch_size,
                batch_tokens: cfg.batch_tokens,
                max_retries: cfg.max_retries,
                backoff: Backoff {
                    initial: cfg.backoff_initial,
                    max: cfg.backoff_max,
                },
            }),
            runtime: Some(runtime),
        })
    }

    /// Checks `cfg` as [`OpenAiEmbedder::new`] does, without starting anything (for
    /// `tidewater check-config`): limits of at least 1, a positive timeout, one http or
    /// https base URL or several. Returns the embeddings URLs.
    pub fn check_config(cfg: &OpenAiConfig) -> Result<Vec<reqwest::Url>, EmbedError> {
        for (key, value) in [
            ("batch_size", cfg.batch_size),
            ("batch_tokens", cfg.batch_tokens),
            ("max_concurrency", cfg.max_concurrency),
            ("dimension", cfg.dimension),
            ("max_tokens", cfg.max_tokens),
        ] {
            if value == 0 {
                return Err(EmbedError::invalid_config(format!(
                    "{key} must be at least 1"
                )));
            }
        }
        if cfg.timeout.is_zero() {
            return Err(EmbedError::invalid_config("timeout must be positive"));
        }
        match (cfg.base_url.is_empty(), cfg.base_urls.is_empty()) {
            (true, true) => {
                return Err(EmbedError::invalid_config(
                    "base_url (or base_urls) is required",
                ))
            }
            (false, false) => {
                return Err(EmbedError::invalid_config(
                    "give base_url or base_urls, not both",
                ))
            }
            _ => {}
        }
        cfg.endpoints().into_iter().map(embeddings_url).collect()
    }

    /// The endpoints requests go to, `{base_url}/v1/embeddings` each, comma-separated,
    /// with any password or secret parameter masked.
    pub fn url(&self) -> &str {
        &self.shared.shown
    }
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the API key must not reach logs.
        f.debug_struct("OpenAiEmbedder")
            .field("url", &self.shared.shown)
            .field("model", &self.shared.model)
            .field("dimension", &self.shared.dimension)
            .finish_non_exhaustive()
    }
}

impl Drop for OpenAiEmbedder {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which panics inside another runtime;
        // the embedder may well be dropped from async code.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.shared.model
    }

    fn dimension(&self) -> usize {
        self.shared.dimension
    }

    fn max_tokens(&self) -> usize {
        self.shared.max_tokens
    }

    /// An estimate: the server's tokenizer is unknown here. English text averages about four
    /// characters per token, plus two for the special tokens BERT-style models add, so this
    /// returns `ceil(chars / 4) + 2`. Callers that split by it should leave some headroom
    /// in `max_tokens`.
    fn count_tokens(&self, text: &str) -> usize {
        text.chars().count().div_ceil(4) + 2
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let runtime = self.runtime.as_ref().ok_or(EmbedError::WorkerLost)?;
        let batches = self.batches(texts);
        // The work runs as a task on the embedder's runtime and this thread waits on a plain
        // channel: `Runtime::block_on` would panic when the caller is itself on a runtime.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let shared = Arc::clone(&self.shared);
        runtime.spawn(async move {
            let _ = tx.send(shared.embed_batches(batches).await);
        });
        // A closed channel means the task panicked.
        rx.recv().map_err(|_| EmbedError::WorkerLost)?
    }
}

impl OpenAiEmbedder {
    /// `texts` in requests of at most `batch_tokens` estimated tokens and `batch_size`
    /// inputs, in order; a text over the token limit goes alone.
    fn batches(&self, texts: &[&str]) -> Vec<Vec<String>> {
        let mut batches: Vec<Vec<String>> = Vec::new();
        let mut tokens = 0;
        for text in texts {
            let cost = self.count_tokens(text);
            let fits = batches.last().is_some_and(|batch| {
                batch.len() < self.shared.batch_size && tokens + cost <= self.shared.batch_tokens
            });
            if !fits {
                batches.push(Vec::new());
                tokens = 0;
            }
            tokens += cost;
            batches
                .last_mut()
                .expect("a batch was just pushed")
                .push((*text).to_owned());
        }
        batches
    }
}

impl Shared {
    /// The endpoint for the next request: of those not left alone after a failure, the one
    /// with the fewest requests in flight (ties rotate); when every one is, the one that
    /// comes back first.
    fn pick(&self) -> &Endpoint {
        let now = Instant::now();
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let order = (0..n).map(|i| &self.endpoints[(start + i) % n]);
        order
            .clone()
            .filter(|e| e.is_up(now))
            .min_by_key(|e| e.in_flight.load(Ordering::SeqCst))
            .or_else(|| order.min_by_key(|e| e.health.lock().down_until))
            .expect("at least one endpoint")
    }

    /// Whether some endpoint may be tried at once.
    fn any_up(&self) -> bool {
        let now = Instant::now();
        self.endpoints.iter().any(|e| e.is_up(now))
    }

    /// Embeds each batch in its own task, at most `max_concurrency` requests in flight, and
    /// concatenates the vectors in batch order. The first error ends the call; returning
    /// drops the remaining tasks, which cancels their requests.
    async fn embed_batches(
        self: Arc<Self>,
        batches: Vec<Vec<String>>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut results: Vec<Option<Vec<Vec<f32>>>> = vec![None; batches.len()];
        let mut tasks = JoinSet::new();
        for (i, batch) in batches.into_iter().enumerate() {
            let shared = Arc::clone(&self);
            tasks.spawn(async move { (i, shared.embed_batch(batch).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            let (i, vectors) = joined.map_err(|_| EmbedError::WorkerLost)?;
            results[i] = Some(vectors?);
        }
        Ok(results.into_iter().flatten().flatten().collect())
    }

    /// Sends one batch, retrying retryable failures: at once on another endpoint while
    /// one is up, else after a back-off (these waits are the retries `max_retries` counts).
    async fn embed_batch(&self, input: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut retry = 0;
        // Tries without a wait, bounded so that endpoints failing in turn still end.
        let mut switches = 0;
        loop {
            let endpoint = self.pick();
            let outcome = self.request(endpoint, &input).await;
            match &outcome {
                Ok(_) => endpoint.succeeded(),
                Err(Failure::Retryable { error, retry_after }) => {
                    endpoint.failed(&self.backoff, *retry_after, error);
                }
                Err(Failure::Fatal(_)) => {}
            }
            match outcome {
                Ok(vectors) => return Ok(vectors),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retryable { .. })
                    if self.any_up()
                        && switches < self.endpoints.len() * (self.max_retries as usize + 1) =>
                {
                    switches += 1;
                }
                Err(Failure::Retryable { error, .. }) if retry >= self.max_retries => {
                    return Err(EmbedError::RetriesExhausted {
                        url: self.shown.clone(),
                        attempts: retry + 1,
                        last: Box::new(error),
                    });
                }
                Err(Failure::Retryable { error, retry_after }) => {
                    let delay = self.backoff.delay(retry, retry_after);
                    tracing::warn!(
                        url = %self.shown,
                        attempt = retry + 1,
                        inputs = input.len(),
                        ?delay,
                        error = %error,
                        "embedding request failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
            }
        }
    }

    /// Sends one request to `endpoint`, holding a concurrency permit until its answer is
    /// read.
    async fn request(
        &self,
        endpoint: &Endpoint,
        input: &[String],
    ) -> Result<Vec<Vec<f32>>, Failure> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Failure::Fatal(EmbedError::WorkerLost))?;
        let _sending = Sending::new(&endpoint.in_flight);
        let shown = &endpoint.shown;
        let mut request = self
            .client
            .post(endpoint.url.clone())
            .json(&EmbeddingsRequest {
                model: &self.model,
                input,
            });
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| transport(shown, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.bytes().await.map_err(|e| transport(shown, e))?;

        if !status.is_success() {
            let error = EmbedError::Status {
                url: shown.clone(),
                status: status.as_u16(),
                message: error_message(&body),
            };
            return Err(if is_retryable_status(status.as_u16()) {
                Failure::Retryable { error, retry_after }
            } else {
                Failure::Fatal(error)
            });
        }
        parse_response(&body, input.len(), self.dimension).map_err(|problem| match problem {
            // A garbled answer is more likely a proxy or server hiccup than a standing fault.
            ResponseProblem::Malformed(reason) => Failure::Retryable {
                error: EmbedError::BadResponse {
                    url: shown.clone(),
                    reason,
                },
                retry_after: None,
            },
            ResponseProblem::Dimension { actual } => {
                Failure::Fatal(EmbedError::DimensionMismatch {
                    url: shown.clone(),
                    expected: self.dimension,
                    actual,
                })
            }
        })
    }
}

/// A failure to send or to read the answer (refused, reset, timed out): retryable.
fn transport(shown: &str, source: reqwest::Error) -> Failure {
    Failure::Retryable {
        error: EmbedError::Transport {
            url: shown.to_owned(),
            // reqwest's error carries the URL, password included: `url` names it.
            source: source.without_url(),
        },
        retry_after: None,
    }
}

/// `{base_url}/v1/embeddings`, without doubling a `/v1` the base URL already ends with.
fn embeddings_url(base_url: &str) -> Result<reqwest::Url, EmbedError> {
    let base = base_url.trim_end_matches('/');
    let full = if base.ends_with("/v1") {
        format!("{base}/embeddings")
    } else {
        format!("{base}/v1/embeddings")
    };
    let shown = redact(base_url);
    let url = reqwest::Url::parse(&full)
        .map_err(|e| EmbedError::invalid_config(format!("base_url {shown:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EmbedError::invalid_config(format!(
            "base_url {shown:?} must be http or https"
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embeddings_path_is_appended_once() {
        for (base, want) in [
            ("http://h:8080", "http://h:8080/v1/embeddings"),
            ("http://h:8080/", "http://h:8080/v1/embeddings"),
            (
                "https://api.openai.com/v1",
                "https://api.openai.com/v1/embeddings",
            ),
            (
                "https://api.openai.com/v1/",
                "https://api.openai.com/v1/embeddings",
            ),
            ("http://gw/openai", "http://gw/openai/v1/embeddings"),
        ] {
            assert_eq!(embeddings_url(base).unwrap().as_str(), want, "{base}");
        }
        assert!(embeddings_url("not a url").is_err());
        assert!(embeddings_url("ftp://h").is_err());
    }

    #[test]
    fn token_counts_are_estimated_from_characters() {
        let e = OpenAiEmbedder::new(OpenAiConfig::new("http://127.0.0.1:9", "m", 4)).unwrap();
        assert_eq!(e.count_tokens(""), 2);
        assert_eq!(e.count_tokens("abcd"), 3);
        assert_eq!(e.count_tokens("abcde"), 4);
        assert_eq!(e.count_tokens("ééééé"), 4);
    }

    #[test]
    fn a_named_but_unset_key_variable_is_an_error() {
        let mut cfg = OpenAiConfig::new("http://127.0.0.1:9", "m", 4);
        cfg.api_key_env = Some("TIDEWATER_TEST_SURELY_UNSET_KEY".into());
        let err = OpenAiEmbedder::new(cfg).unwrap_err();
        assert!(matches!(err, EmbedError::MissingApiKey { .. }), "{err}");
    }

    #[test]
    fn n5_the_url_in_errors_and_debug_has_its_password_masked() {
        let mut cfg = OpenAiConfig::new("http://u:SECRETPW@127.0.0.1:9", "m", 4);
        cfg.max_retries = 0;
        let e = OpenAiEmbedder::new(cfg).unwrap();
        assert_eq!(e.url(), "http://u:***@127.0.0.1:9/v1/embeddings");
        assert!(!format!("{e:?}").contains("SECRETPW"));
        // Nothing listens on port 9: the connection error names the endpoint, masked.
        let err = e.embed(&["x"]).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("SECRETPW") && shown.contains("u:***@"),
            "{shown}"
        );
        let err = embeddings_url("ftp://u:SECRETPW@h").unwrap_err();
        assert!(!err.to_string().contains("SECRETPW"), "{err}");
    }

    #[test]
    fn zero_limits_are_rejected() {
        let mut cfg = OpenAiConfig::new("http://127.0.0.1:9", "m", 4);
        cfg.max_concurrency = 0;
        assert!(matches!(
            OpenAiEmbedder::new(cfg),
            Err(EmbedError::InvalidConfig { .. })
        ));
    }
}
