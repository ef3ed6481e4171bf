//! The pipeline against an OpenAI-compatible embedding server that is down for a while,
//! answers slowly and throttles: it waits and resumes, and loses and duplicates nothing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};
use tidewater_embed::{Embedder, OpenAiConfig, OpenAiEmbedder};

struct Server {
    started: Instant,
    down_for: Duration,
    requests: AtomicUsize,
    failures: AtomicUsize,
}

async fn embeddings(State(server): State<Arc<Server>>, Json(body): Json<Value>) -> Response {
    let n = server.requests.fetch_add(1, Ordering::SeqCst);
    if server.started.elapsed() < server.down_for {
        server.failures.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "warming up").into_response();
    }
    match n % 7 {
        // Slower than the client's timeout: the client gives up and retries.
        3 => {
            server.failures.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        5 => {
            server.failures.fetch_add(1, Ordering::SeqCst);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "0")],
                "slow down",
            )
                .into_response();
        }
        _ => {}
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => return (StatusCode::BAD_REQUEST, "no input").into_response(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": word_hash_vector(t)}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
}

#[test]
fn endpoint_outage_delays_but_loses_and_duplicates_nothing() {
    let server = Arc::new(Server {
        started: Instant::now(),
        down_for: Duration::from_secs(3),
        requests: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/embeddings", post(embeddings))
        .with_state(Arc::clone(&server));
    runtime.spawn(async move { axum::serve(listener, app).await });

    let mut config = OpenAiConfig::new(format!("http://{addr}"), "word-hash-64", 64);
    config.timeout = Duration::from_millis(500);
    config.max_retries = 2;
    config.batch_size = 4;
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(100);
    let embedder: Arc<dyn Embedder> = Arc::new(OpenAiEmbedder::new(config).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), Arc::clone(&embedder));
    let paragraphs = long_document(90);
    let docs: Vec<(String, String)> = paragraphs
        .chunks(3)
        .enumerate()
        .map(|(i, p)| (format!("doc-{i:02}"), p.join("\n\n")))
        .collect();
    let events: Vec<_> = docs.iter().map(|(id, text)| upsert(id, text)).collect();
    f.write(&events);
    f.settle();

    assert!(
        server.failures.load(Ordering::SeqCst) > 0,
        "the server never misbehaved"
    );
    assert!(
        f.knowledge
            .metrics()
            .pipeline_retries
            .with(&["knowledge"])
            .get()
            > 0,
        "the pipeline never had to wait"
    );
    // Nothing lost: every document is indexed with exactly the chunks the chunker makes.
    let mut expected_chunks = 0;
    for (id, text) in &docs {
        let status = f
            .knowledge
            .document(id)
            .unwrap()
            .unwrap_or_else(|| panic!("{id} lost"));
        let chunks =
            tidewater_chunk::chunk_text(text, &Default::default(), embedder.max_tokens(), &|t| {
                embedder.count_tokens(t)
            });
        assert_eq!(status.chunks, chunks.len(), "{id}");
        assert!(status.indexed, "{id} not in the index");
        expected_chunks += chunks.len();
    }
    // Nothing doubled: one vector per chunk, each the endpoint's vector for its text.
    assert_eq!(f.knowledge.index_len(), expected_chunks);
    assert_eq!(f.knowledge.chunk_ids().unwrap().len(), expected_chunks);
    let first = tidewater_chunk::chunk_text(
        &docs[7].1,
        &Default::default(),
        embedder.max_tokens(),
        &|t| embedder.count_tokens(t),
    );
    let hits = f
        .knowledge
        .search(&tidewater_knowledge::SearchRequest {
            query: first[0].text.clone(),
            k: 1,
            filter: None,
        })
        .unwrap();
    assert_eq!(
        (hits[0].doc_id.as_str(), hits[0].text.as_str()),
        ("doc-07", first[0].text.as_str())
    );
}
