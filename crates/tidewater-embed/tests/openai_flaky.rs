//! The OpenAI-compatible backend against a real local HTTP server that misbehaves on
//! purpose: errors, rate limits, answers slower than the client's timeout, connections
//! closed mid-answer, and a stretch of being down. The embedder must still return every
//! vector, in input order, without ever exceeding its concurrency limit — or, when the
//! server stays down, a retryable error after which a later call succeeds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tidewater_core::{ErrorDomain, RetryHint};
use tidewater_embed::{EmbedError, Embedder, OpenAiConfig, OpenAiEmbedder};

const DIM: usize = 8;

/// The vector the test server returns for `text`: derived from a hash, so the client's
/// result can be checked input by input.
fn vector_for(text: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..DIM as u32)
        .map(|j| (h.rotate_left(j * 8) % 1000) as f32 / 1000.0)
        .collect()
}

/// How the server answers one request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Ok,
    /// 503 with an error body.
    Unavailable,
    /// 500 with an error body.
    ServerError,
    /// 429 with `Retry-After: 0`.
    RateLimited,
    /// Answers only after the client has given up.
    TooSlow,
    /// Starts a 200 answer and fails its body midway, so the connection is cut.
    CutOff,
    /// 400 with an OpenAI-style error body.
    BadRequest,
}

/// Decides each request's behaviour from the request (its inputs) and how often that batch
/// was seen before.
type Script = dyn Fn(&ServerState, &[String], usize) -> Behaviour + Send + Sync;

struct ServerState {
    script: Box<Script>,
    started: Instant,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Attempts seen per batch, keyed by the batch's first input.
    attempts: Mutex<HashMap<String, usize>>,
    /// How often each behaviour was served.
    served: Mutex<HashMap<String, usize>>,
    /// The `Authorization` headers received.
    auth: Mutex<Vec<Option<String>>>,
    /// The number of inputs of each request received.
    sizes: Mutex<Vec<usize>>,
}

impl ServerState {
    fn served(&self, b: Behaviour) -> usize {
        let served = self.served.lock().unwrap();
        served.get(&format!("{b:?}")).copied().unwrap_or(0)
    }
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: Vec<String>,
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a ServerState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a ServerState) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn embeddings(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Json(req): Json<EmbeddingsRequest>,
) -> Response {
    let guard = InFlight::enter(&state);
    state.requests.fetch_add(1, Ordering::SeqCst);
    state.auth.lock().unwrap().push(
        headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned()),
    );
    assert_eq!(req.model, "test-model");
    state.sizes.lock().unwrap().push(req.input.len());
    let key = req.input.first().cloned().unwrap_or_default();
    let attempt = {
        let mut attempts = state.attempts.lock().unwrap();
        let n = attempts.entry(key).or_insert(0);
        *n += 1;
        *n - 1
    };
    let behaviour = (state.script)(&state, &req.input, attempt);
    *state
        .served
        .lock()
        .unwrap()
        .entry(format!("{behaviour:?}"))
        .or_insert(0) += 1;

    match behaviour {
        Behaviour::Ok => {
            // Long enough for concurrent requests to overlap, so the limit is exercised.
            tokio::time::sleep(Duration::from_millis(30)).await;
            // Reversed on purpose: clients must order by `index`.
            let data: Vec<_> = req
                .input
                .iter()
                .enumerate()
                .rev()
                .map(
                    |(i, t)| json!({"object": "embedding", "index": i, "embedding": vector_for(t)}),
                )
                .collect();
            Json(json!({"object": "list", "data": data, "model": "test-model"})).into_response()
        }
        Behaviour::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "model is loading"})),
        )
            .into_response(),
        Behaviour::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": "out of memory"}})),
        )
            .into_response(),
        Behaviour::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "0")],
            Json(json!({"error": {"message": "slow down"}})),
        )
            .into_response(),
        Behaviour::TooSlow => {
            // The client has timed out and may send its retry before this sleep ends (the
            // server does not learn that the client left). From here on the request no
            // longer counts toward the concurrency the client controls.
            drop(guard);
            tokio::time::sleep(Duration::from_secs(2)).await;
            Json(json!({"data": []})).into_response()
        }
        Behaviour::CutOff => Response::new(Body::new(CutOffBody { sent: false })),
        Behaviour::BadRequest => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {
                "message": "input[3] is empty, which this model refuses",
                "type": "invalid_request_error"
            }})),
        )
            .into_response(),
    }
}

/// A chunked body that sends the start of a JSON answer and then fails: the server can only
/// abort the connection, and the client sees it cut mid-answer.
struct CutOffBody {
    sent: bool,
}

impl http_body::Body for CutOffBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.sent {
            return Poll::Ready(Some(Err(std::io::Error::other("cut off on purpose"))));
        }
        self.sent = true;
        let start = Bytes::from_static(br#"{"object": "list", "data": [{"index": 0, "#);
        Poll::Ready(Some(Ok(http_body::Frame::data(start))))
    }
}

/// Starts the server on a free port in a thread of its own; it runs until the test
/// process ends.
fn start_server(script: Box<Script>) -> (SocketAddr, Arc<ServerState>) {
    let state = Arc::new(ServerState {
        script,
        started: Instant::now(),
        requests: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        attempts: Mutex::new(HashMap::new()),
        served: Mutex::new(HashMap::new()),
        auth: Mutex::new(Vec::new()),
        sizes: Mutex::new(Vec::new()),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/embeddings", post(embeddings))
        .with_state(Arc::clone(&state));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (addr, state)
}

fn config(addr: SocketAddr) -> OpenAiConfig {
    let mut cfg = OpenAiConfig::new(format!("http://{addr}"), "test-model", DIM);
    cfg.batch_size = 4;
    cfg.max_concurrency = 3;
    cfg.timeout = Duration::from_millis(400);
    cfg.max_retries = 8;
    cfg.backoff_initial = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    cfg
}

fn texts(n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| format!("{i} {tag} text number {i}"))
        .collect()
}

fn assert_vectors(texts: &[String], vectors: &[Vec<f32>]) {
    assert_eq!(vectors.len(), texts.len(), "one vector per input");
    for (text, v) in texts.iter().zip(vectors) {
        assert_eq!(v, &vector_for(text), "vector of {text:?}");
    }
}

/// The index of a batch, from its first input ("{i} ..."): inputs go 4 to a batch.
fn batch_of(input: &[String]) -> usize {
    let first: usize = input[0].split(' ').next().unwrap().parse().unwrap();
    first / 4
}

#[test]
fn flaky_server_yields_every_vector_in_order_within_the_concurrency_limit() {
    let (addr, server) = start_server(Box::new(|state, input, attempt| {
        // The server comes up unhealthy: its first requests fail whatever they are.
        if state.requests.load(Ordering::SeqCst) <= 3 {
            return Behaviour::Unavailable;
        }
        // Then each batch meets its own kind of trouble on its first attempts.
        let plan: &[Behaviour] = match batch_of(input) % 5 {
            0 => &[],
            1 => &[Behaviour::Unavailable],
            2 => &[Behaviour::TooSlow],
            3 => &[Behaviour::RateLimited, Behaviour::CutOff],
            _ => &[Behaviour::CutOff, Behaviour::ServerError],
        };
        plan.get(attempt).copied().unwrap_or(Behaviour::Ok)
    }));
    let embedder = OpenAiEmbedder::new(config(addr)).unwrap();
    let texts = texts(50, "flaky");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

    let vectors = embedder.embed(&refs).unwrap();
    assert_vectors(&texts, &vectors);

    let batches = texts.len().div_ceil(4);
    let requests = server.requests.load(Ordering::SeqCst);
    let max_in_flight = server.max_in_flight.load(Ordering::SeqCst);
    println!(
        "{batches} batches took {requests} requests; served {:?}; max in flight {max_in_flight}",
        server.served.lock().unwrap()
    );
    assert!(requests > batches, "the server saw retries");
    for b in [
        Behaviour::Unavailable,
        Behaviour::ServerError,
        Behaviour::RateLimited,
        Behaviour::TooSlow,
        Behaviour::CutOff,
    ] {
        assert!(server.served(b) > 0, "{b:?} was exercised");
    }
    // At least: under heavy load an answer may come after the client gave up on it.
    assert!(
        server.served(Behaviour::Ok) >= batches,
        "each batch answered"
    );
    assert!(
        max_in_flight <= 3,
        "{max_in_flight} requests in flight, limit 3"
    );
    assert!(max_in_flight >= 2, "requests ran concurrently");
}

#[test]
fn an_outage_gives_a_retryable_error_and_a_later_call_succeeds() {
    let outage = Duration::from_secs(2);
    let (addr, server) = start_server(Box::new(move |state, _, _| {
        if state.started.elapsed() < outage {
            Behaviour::Unavailable
        } else {
            Behaviour::Ok
        }
    }));
    let mut cfg = config(addr);
    cfg.max_retries = 2;
    cfg.backoff_initial = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(100);
    let embedder = OpenAiEmbedder::new(cfg).unwrap();
    let texts = texts(10, "outage");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

    let err = embedder.embed(&refs).unwrap_err();
    assert!(
        matches!(&err, EmbedError::RetriesExhausted { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(err.retry_hint(), RetryHint::Retry);
    assert_eq!(err.domain(), ErrorDomain::External);
    let last = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        last.contains("503") && last.contains("model is loading"),
        "{last}"
    );

    // What the pipeline does with a retryable error: wait, and call again.
    let mut failed_calls = 1;
    let vectors = loop {
        std::thread::sleep(Duration::from_millis(300));
        match embedder.embed(&refs) {
            Ok(vectors) => break vectors,
            Err(e) => {
                assert_eq!(e.retry_hint(), RetryHint::Retry, "{e}");
                failed_calls += 1;
                assert!(
                    failed_calls < 20,
                    "the server came back but calls still fail: {e}"
                );
            }
        }
    };
    assert_vectors(&texts, &vectors);
    assert!(server.served(Behaviour::Unavailable) >= 3);
}

#[test]
fn a_rejected_request_fails_at_once_with_the_servers_message() {
    let (addr, server) = start_server(Box::new(|_, _, _| Behaviour::BadRequest));
    let embedder = OpenAiEmbedder::new(config(addr)).unwrap();

    let err = embedder.embed(&["a", "b", "c", ""]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, EmbedError::Status { status: 400, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("input[3] is empty, which this model refuses"),
        "{msg}"
    );
    assert_eq!(err.retry_hint(), RetryHint::Fatal);
    assert_eq!(err.domain(), ErrorDomain::User);
    assert_eq!(server.requests.load(Ordering::SeqCst), 1, "no retries");
}

#[test]
fn a_wrong_dimension_is_a_fatal_error() {
    let (addr, _server) = start_server(Box::new(|_, _, _| Behaviour::Ok));
    let mut cfg = config(addr);
    cfg.dimension = DIM + 1;
    let embedder = OpenAiEmbedder::new(cfg).unwrap();
    let err = embedder.embed(&["x"]).unwrap_err();
    assert!(
        matches!(
            err,
            EmbedError::DimensionMismatch {
                expected: 9,
                actual: 8,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.retry_hint(), RetryHint::Fatal);
}

#[test]
fn an_unreachable_endpoint_is_retryable() {
    // Bind and release a port, so that nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = config(addr);
    cfg.max_retries = 1;
    let embedder = OpenAiEmbedder::new(cfg).unwrap();
    let err = embedder.embed(&["x"]).unwrap_err();
    assert!(
        matches!(err, EmbedError::RetriesExhausted { attempts: 2, .. }),
        "{err}"
    );
    assert_eq!(err.retry_hint(), RetryHint::Retry);
}

#[test]
fn the_api_key_is_sent_as_a_bearer_token() {
    let (addr, server) = start_server(Box::new(|_, _, _| Behaviour::Ok));
    let var = "TIDEWATER_EMBED_TEST_API_KEY";
    // Only this test reads the variable, so setting it cannot race another test.
    std::env::set_var(var, "sk-test-123");
    let mut cfg = config(addr);
    cfg.api_key_env = Some(var.into());
    let embedder = OpenAiEmbedder::new(cfg).unwrap();
    embedder.embed(&["x"]).unwrap();
    assert_eq!(
        server.auth.lock().unwrap().as_slice(),
        [Some("Bearer sk-test-123".to_string())]
    );
    assert!(
        !format!("{embedder:?}").contains("sk-test-123"),
        "the key stays out of logs"
    );
}

#[test]
fn embedding_from_async_code_neither_panics_nor_deadlocks() {
    let (addr, _server) = start_server(Box::new(|_, _, _| Behaviour::Ok));
    let embedder = Arc::new(OpenAiEmbedder::new(config(addr)).unwrap());
    let texts = texts(9, "async");
    // A current-thread runtime is the harshest case: its only thread blocks in `embed`.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert_vectors(&texts, &embedder.embed(&refs).unwrap());

        let in_blocking = Arc::clone(&embedder);
        let owned = texts.clone();
        let vectors = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            in_blocking.embed(&refs)
        })
        .await
        .unwrap()
        .unwrap();
        assert_vectors(&texts, &vectors);
        // The last reference dropped inside a runtime must not panic.
        drop(embedder);
    });
}

#[test]
fn no_texts_make_no_request() {
    let (addr, server) = start_server(Box::new(|_, _, _| Behaviour::Ok));
    let embedder = OpenAiEmbedder::new(config(addr)).unwrap();
    assert!(embedder.embed(&[]).unwrap().is_empty());
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn a_connection_cut_mid_answer_is_a_retryable_transport_error() {
    let (addr, server) = start_server(Box::new(|_, _, _| Behaviour::CutOff));
    let mut cfg = config(addr);
    cfg.max_retries = 1;
    let embedder = OpenAiEmbedder::new(cfg).unwrap();
    let err = embedder.embed(&["x"]).unwrap_err();
    let EmbedError::RetriesExhausted { last, .. } = &err else {
        panic!("expected exhausted retries, got {err}")
    };
    assert!(matches!(**last, EmbedError::Transport { .. }), "{last}");
    assert_eq!(err.retry_hint(), RetryHint::Retry);
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

#[test]
fn a_request_slower_than_the_timeout_is_retried() {
    let (addr, server) = start_server(Box::new(|_, _, attempt| {
        if attempt == 0 {
            Behaviour::TooSlow
        } else {
            Behaviour::Ok
        }
    }));
    let embedder = OpenAiEmbedder::new(config(addr)).unwrap();
    let started = Instant::now();
    assert_vectors(&["slow".to_string()], &embedder.embed(&["slow"]).unwrap());
    // The answer came from the retry, long before the slow answer would have.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

/// A configuration sending to every server in `addrs`.
fn config_for(addrs: &[SocketAddr]) -> OpenAiConfig {
    let mut cfg = config(addrs[0]);
    cfg.base_url = String::new();
    cfg.base_urls = addrs.iter().map(|a| format!("http://{a}")).collect();
    cfg
}

#[test]
fn requests_are_filled_by_tokens_and_spread_over_every_endpoint() {
    let (a, server_a) = start_server(Box::new(|_, _, _| Behaviour::Ok));
    let (b, server_b) = start_server(Box::new(|_, _, _| Behaviour::Ok));
    let mut cfg = config_for(&[a, b]);
    cfg.batch_size = 64;
    // Each short text is estimated at 6 tokens (`ceil(chars / 4) + 2`): 6 fit in 40.
    cfg.batch_tokens = 40;
    let embedder = OpenAiEmbedder::new(cfg).unwrap();
    let mut inputs: Vec<String> = (10..46).map(|i| format!("{i} short text")).collect();
    inputs.insert(20, "a long text ".repeat(40));
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs).unwrap();
    assert_vectors(&inputs, &vectors);

    let mut sizes: Vec<usize> = server_a.sizes.lock().unwrap().clone();
    sizes.extend(server_b.sizes.lock().unwrap().iter());
    sizes.sort_unstable();
    // 20 short texts (6, 6, 6, 2), the long one alone, then 16 short ones (6, 6, 4).
    assert_eq!(sizes, [1, 2, 4, 6, 6, 6, 6, 6], "inputs per request");
    assert!(
        server_a.requests.load(Ordering::SeqCst) > 0
            && server_b.requests.load(Ordering::SeqCst) > 0,
        "both endpoints take requests"
    );
}

#[test]
fn a_failing_endpoint_is_left_alone_while_the_others_take_its_requests() {
    let (bad, bad_server) = start_server(Box::new(|_, _, _| Behaviour::Unavailable));
    let (good, good_server) = start_server(Box::new(|_, _, _| Behaviour::Ok));
    let mut cfg = config_for(&[bad, good]);
    // Waiting out a back-off would take seconds: the retries must not wait for one.
    cfg.backoff_initial = Duration::from_secs(5);
    cfg.backoff_max = Duration::from_secs(5);
    let embedder = OpenAiEmbedder::new(cfg).unwrap();
    let inputs = texts(40, "spread");
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let started = Instant::now();
    assert_vectors(&inputs, &embedder.embed(&refs).unwrap());
    let failed = bad_server.requests.load(Ordering::SeqCst);
    // Only requests sent before its first failure came back went there: at most the
    // embedder's requests in flight (3 per endpoint).
    assert!(failed <= 6, "{failed} requests to the failing endpoint");
    assert_eq!(good_server.served(Behaviour::Ok), 10);

    // Still within its back-off: the next call leaves it alone entirely.
    assert_vectors(&inputs, &embedder.embed(&refs).unwrap());
    assert_eq!(bad_server.requests.load(Ordering::SeqCst), failed);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "no back-off was waited: {:?}",
        started.elapsed()
    );
}

#[test]
fn one_base_url_or_several_not_both_nor_none() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut both = config_for(&[addr]);
    both.base_url = format!("http://{addr}");
    let err = OpenAiEmbedder::new(both).unwrap_err();
    assert!(err.to_string().contains("not both"), "{err}");
    let mut none = config(addr);
    none.base_url = String::new();
    let err = OpenAiEmbedder::new(none).unwrap_err();
    assert!(
        err.to_string()
            .contains("base_url (or base_urls) is required"),
        "{err}"
    );
}
