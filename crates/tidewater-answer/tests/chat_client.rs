//! [`ChatClient`] against a real HTTP server: `scripts/openai-test-server.py`, started for
//! each test on a free port, which answers deterministically and fails, stalls or trickles
//! on request. A machine without `python3` fails these tests with the spawn error.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tidewater_answer::{Awaited, ChatClient, LlmConfig, LlmError, Oversized};
use tidewater_core::{ChatMessage, ErrorDomain};

/// A running test server, killed when dropped (also when a test panics).
struct TestServer {
    child: Child,
    base_url: String,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestServer {
    fn start(args: &[&str]) -> Self {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openai-test-server.py");
        let dir = tempfile::tempdir().expect("temporary folder");
        let record = dir.path().join("requests.jsonl");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--port", "0", "--record"])
            .arg(&record)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting python3 {}: {e}", script.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("reading the server's first line");
        let Some(address) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!("unexpected first line from the test server: {line:?}");
        };
        Self {
            base_url: format!("http://{address}/v1"),
            child,
            record,
            _dir: dir,
        }
    }

    /// The request bodies received so far.
    fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).expect("a recorded JSON line"))
            .collect()
    }

    /// A configuration for this server with short, test-sized limits.
    fn config(&self) -> LlmConfig {
        config_for(&self.base_url)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_for(base_url: &str) -> LlmConfig {
    let mut config = LlmConfig::new(base_url, "test-model");
    config.api_key_env = "TIDEWATER_ANSWER_TEST_SURELY_UNSET".into();
    config.timeout = Duration::from_secs(3);
    config.idle_timeout = Duration::from_secs(2);
    config.max_retries = 2;
    config
}

fn messages() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Answer from the context."),
        ChatMessage::new(
            "user",
            "How long is the refund window for shoes bought online?",
        ),
    ]
}

/// The default reply of the test server to [`messages`].
const DEFAULT_REPLY: &str = "Test reply to 2 messages: How long is the refund window for shoes ";

#[tokio::test]
async fn complete_returns_the_reply_and_sends_the_messages_and_model() {
    let server = TestServer::start(&[]);
    let client = ChatClient::new(&server.config()).unwrap();
    assert_eq!(client.complete(&messages()).await.unwrap(), DEFAULT_REPLY);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["model"], "test-model");
    assert_eq!(requests[0]["stream"], false);
    assert_eq!(
        requests[0]["messages"],
        json!([
            {"role": "system", "content": "Answer from the context."},
            {"role": "user", "content": "How long is the refund window for shoes bought online?"}
        ])
    );
    // Unset sampling options are left to the server.
    assert!(requests[0].get("temperature").is_none());
    assert!(requests[0].get("max_tokens").is_none());

    let mut config = server.config();
    config.temperature = Some(0.5);
    config.max_tokens = Some(64);
    let client = ChatClient::new(&config).unwrap();
    client.complete(&messages()).await.unwrap();
    let sent = &server.requests()[1];
    assert_eq!(
        (sent["temperature"].as_f64(), sent["max_tokens"].as_u64()),
        (Some(0.5), Some(64))
    );
}

#[tokio::test]
async fn stream_yields_the_reply_in_several_pieces() {
    let reply = "Shoes can be returned within 30 days [1], unworn and with the receipt [2].";
    let server = TestServer::start(&["--reply", reply]);
    let client = ChatClient::new(&server.config()).unwrap();
    let stream = client.stream(&messages()).await.unwrap();
    let pieces: Vec<String> = stream.map(|piece| piece.unwrap()).collect().await;
    assert!(pieces.len() >= 5, "{pieces:?}");
    assert_eq!(pieces.concat(), reply);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["stream"], true);
    assert_eq!(requests[0]["messages"][1]["role"], "user");
}

#[tokio::test]
async fn failures_before_success_are_retried_transparently() {
    let server = TestServer::start(&["--fail", "2"]);
    let client = ChatClient::new(&server.config()).unwrap();
    assert_eq!(client.complete(&messages()).await.unwrap(), DEFAULT_REPLY);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests
        .iter()
        .all(|r| r["messages"] == requests[0]["messages"]));

    // A stream is retried too, as long as no token has arrived.
    let server = TestServer::start(&["--fail", "1", "--status", "503"]);
    let client = ChatClient::new(&server.config()).unwrap();
    let pieces: Vec<String> = client
        .stream(&messages())
        .await
        .unwrap()
        .map(|piece| piece.unwrap())
        .collect()
        .await;
    assert_eq!(pieces.concat(), DEFAULT_REPLY);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn persistent_failures_report_the_status_and_upstream_message() {
    let server = TestServer::start(&["--fail", "10"]);
    let config = server.config();
    let client = ChatClient::new(&config).unwrap();
    let err = client.complete(&messages()).await.unwrap_err();
    let LlmError::Status {
        status,
        ref message,
        ref url,
        ref model,
    } = err
    else {
        panic!("not a status error: {err:?}");
    };
    assert_eq!(status, 500);
    assert_eq!(message, "simulated failure 3 of 10");
    assert_eq!(url, &format!("{}/chat/completions", server.base_url));
    assert_eq!(model, "test-model");
    assert!(err.retryable());
    assert_eq!(err.domain(), ErrorDomain::External);
    let text = err.to_string();
    assert!(
        text.contains("HTTP 500") && text.contains(&server.base_url),
        "{text}"
    );
    assert_eq!(server.requests().len(), config.max_retries as usize + 1);

    let err = client.stream(&messages()).await.err().expect("an error");
    assert!(matches!(err, LlmError::Status { status: 500, .. }), "{err}");
    assert_eq!(
        server.requests().len(),
        2 * (config.max_retries as usize + 1)
    );
}

#[tokio::test]
async fn a_rejected_request_is_not_retried() {
    let server = TestServer::start(&["--fail", "10", "--status", "400"]);
    let client = ChatClient::new(&server.config()).unwrap();
    let err = client.complete(&messages()).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Status { status: 400, message, .. } if message == "simulated failure 1 of 10"),
        "{err}"
    );
    assert!(!err.retryable());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = TestServer::start(&["--fail", "1", "--status", "429", "--retry-after", "1"]);
    let client = ChatClient::new(&server.config()).unwrap();
    let started = Instant::now();
    assert_eq!(client.complete(&messages()).await.unwrap(), DEFAULT_REPLY);
    // The jittered back-off alone waits at most 250 ms before the first retry.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let server = TestServer::start(&["--delay-ms", "2000"]);
    let mut config = server.config();
    config.timeout = Duration::from_millis(300);
    config.max_retries = 1;
    let client = ChatClient::new(&config).unwrap();

    let err = client.complete(&messages()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Timeout { waiting_for: Awaited::Response, after, .. } if after == config.timeout),
        "{err}"
    );
    assert!(err.retryable());
    // Timeouts are retried.
    assert_eq!(server.requests().len(), 2);

    let err = client.stream(&messages()).await.err().expect("an error");
    assert!(
        matches!(
            err,
            LlmError::Timeout {
                waiting_for: Awaited::FirstToken,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_stream_that_falls_silent_ends_with_a_timeout_and_is_not_retried() {
    let server = TestServer::start(&["--chunk-delay-ms", "400"]);
    let mut config = server.config();
    config.idle_timeout = Duration::from_millis(100);
    let client = ChatClient::new(&config).unwrap();
    let mut stream = client.stream(&messages()).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), "Test");
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(
        matches!(err, LlmError::Timeout { waiting_for: Awaited::NextChunk, after, .. } if after == config.idle_timeout),
        "{err}"
    );
    assert!(
        stream.next().await.is_none(),
        "the stream ends after an error"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = config_for(&format!("http://127.0.0.1:{port}/v1"));
    config.max_retries = 1;
    let client = ChatClient::new(&config).unwrap();
    let err = client.complete(&messages()).await.unwrap_err();
    assert!(matches!(err, LlmError::Unreachable { .. }), "{err:?}");
    assert!(err.retryable());
    assert_eq!(err.domain(), ErrorDomain::External);
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    let err = client.stream(&messages()).await.err().expect("an error");
    assert!(matches!(err, LlmError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn the_test_server_lists_models_embeds_and_answers_unknown_paths_with_json() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestServer::start(&[]);
    let http = reqwest::Client::new();
    let models: Value = http
        .get(format!("{}/models", server.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "test-model");

    // Embeddings are deterministic: the same text, the same unit vector.
    let embedded: Value = http
        .post(format!("{}/embeddings", server.base_url))
        .body(r#"{"model": "m", "input": ["a tide", "a tide"]}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vector = |i: usize| embedded["data"][i]["embedding"].as_array().unwrap().clone();
    assert_eq!(vector(0).len(), 64);
    assert_eq!(vector(0), vector(1));
    let norm: f64 = vector(0).iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-9, "{norm}");

    let missing = http
        .post(format!("{}/audio/speech", server.base_url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/audio/speech"));
    assert!(server.requests().is_empty());
}

/// A one-shot HTTP server for responses the test server cannot send: it answers each
/// connection with `head` and then `body_piece` repeated until the client stops reading
/// (or `max_pieces` are sent). Returns the base URL.
fn raw_server(head: &'static str, body_piece: &'static [u8], max_pieces: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                // The request: headers, then the body its Content-Length announces.
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                let header_end = loop {
                    let n = stream.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                };
                let head_text = String::from_utf8_lossy(&request[..header_end]).to_lowercase();
                let length: usize = head_text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while request.len() < header_end + length {
                    let n = stream.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for _ in 0..max_pieces {
                    if stream.write_all(body_piece).is_err() {
                        return; // the client stopped reading
                    }
                }
            });
        }
    });
    format!("http://{address}/v1")
}

/// 1 MiB of one byte.
static MIB_OF_A: [u8; 1 << 20] = [b'A'; 1 << 20];

#[tokio::test]
async fn n1_a_response_body_over_the_cap_fails_without_reading_the_rest() {
    // A completion body of up to 4 GiB, no Content-Length: read until the cap, then refused.
    let base_url = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n\
         {\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
        &MIB_OF_A,
        4096,
    );
    let mut config = config_for(&base_url);
    config.max_response_bytes = 1 << 20;
    config.timeout = Duration::from_secs(20);
    let client = ChatClient::new(&config).unwrap();
    let started = Instant::now();
    let err = client.complete(&messages()).await.unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::TooLarge {
                part: Oversized::Body,
                limit,
                ..
            } if limit == 1 << 20
        ),
        "{err:?}"
    );
    assert!(!err.retryable(), "the same answer would come again");
    assert_eq!(err.domain(), ErrorDomain::External);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A declared Content-Length over the cap is refused before the body is read.
    let base_url = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9000000000\r\n\r\n",
        &MIB_OF_A,
        4096,
    );
    let mut config = config_for(&base_url);
    config.max_response_bytes = 1 << 20;
    let err = ChatClient::new(&config)
        .unwrap()
        .complete(&messages())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::TooLarge { .. }), "{err:?}");

    // An error body is read only as far as its message needs.
    let base_url = raw_server(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"error\":{\"message\":\"",
        &MIB_OF_A,
        4096,
    );
    let mut config = config_for(&base_url);
    config.max_retries = 0;
    let err = ChatClient::new(&config)
        .unwrap()
        .complete(&messages())
        .await
        .unwrap_err();
    let LlmError::Status {
        status: 500,
        ref message,
        ..
    } = err
    else {
        panic!("not a status error: {err:?}");
    };
    assert!(message.len() < 2048, "{} bytes", message.len());
}

#[tokio::test]
async fn n1_an_unterminated_event_over_the_cap_ends_the_stream_with_an_error() {
    // One token, then a `data:` line that never ends.
    let base_url = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
         data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"The\"}}]}\n\n\
         data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"",
        &MIB_OF_A,
        4096,
    );
    let mut config = config_for(&base_url);
    config.max_response_bytes = 1 << 20;
    config.idle_timeout = Duration::from_secs(20);
    let client = ChatClient::new(&config).unwrap();
    let mut stream = client.stream(&messages()).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), "The");
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::TooLarge {
                part: Oversized::Event,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        stream.next().await.is_none(),
        "the stream ends after an error"
    );
}

#[tokio::test]
async fn n1_a_streamed_answer_over_the_cap_ends_with_an_error() {
    // Small events, but together more than the cap.
    let reply = "word ".repeat(400);
    let server = TestServer::start(&["--reply", &reply]);
    let mut config = server.config();
    config.max_response_bytes = 1000;
    let client = ChatClient::new(&config).unwrap();
    let mut stream = client.stream(&messages()).await.unwrap();
    let mut received = 0;
    let err = loop {
        match stream.next().await.expect("an error before the end") {
            Ok(piece) => received += piece.len(),
            Err(err) => break err,
        }
    };
    assert!(received <= 1000, "{received}");
    assert!(
        matches!(
            err,
            LlmError::TooLarge {
                part: Oversized::Answer,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn n5_errors_and_summaries_never_show_the_url_password() {
    let server = TestServer::start(&["--fail", "10"]);
    let base_url = server
        .base_url
        .replace("http://", "http://llmuser:SECRETPW@");
    let mut config = config_for(&base_url);
    config.max_retries = 0;
    let client = ChatClient::new(&config).unwrap();
    assert!(!client.url().contains("SECRETPW"), "{}", client.url());
    let err = client.complete(&messages()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Status { status: 500, .. }),
        "{err:?}"
    );
    // The log's form names the endpoint without the password; the client's form names
    // neither the endpoint nor what it sent.
    let detail = err.to_string();
    assert!(
        detail.contains("llmuser:***@") && !detail.contains("SECRETPW"),
        "{detail}"
    );
    assert!(!format!("{err:?}").contains("SECRETPW"), "{err:?}");
    assert_eq!(
        err.summary(),
        "the language model 'test-model' failed: HTTP 500"
    );

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = config_for(&format!("http://llmuser:SECRETPW@127.0.0.1:{port}/v1"));
    config.max_retries = 0;
    let err = ChatClient::new(&config)
        .unwrap()
        .complete(&messages())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Unreachable { .. }), "{err:?}");
    assert!(!err.to_string().contains("SECRETPW"), "{err}");
    assert!(!format!("{err:?}").contains("SECRETPW"), "{err:?}");
    assert_eq!(
        err.summary(),
        "the language model 'test-model' is unreachable"
    );
}
