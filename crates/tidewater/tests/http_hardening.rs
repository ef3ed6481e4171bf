//! The HTTP API under hostile use, against the real binary: bodies only as JSON/NDJSON,
//! only allowed Host names, security headers, JSON 413s, synchronous refusal of what the
//! pipeline would reject, bounded connections, and a warning when the unauthenticated API
//! listens beyond loopback.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// A response: status, headers (names in lower case) and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `error.code` of a JSON error body.
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// One HTTP/1.1 request with exactly the given headers (plus `Host: addr` unless one is
/// given, `Content-Length` and `Connection: close`).
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).unwrap();
    // The body is written while the response is read: the server may answer (413) and
    // close before it has read the whole body.
    let mut writer = stream.try_clone().unwrap();
    let mut raw = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = writer.write_all(body);
        });
        // A reset after the response leaves what was read in `raw`.
        let _ = stream.read_to_end(&mut raw);
    });
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn post_json(tw: &Tidewater, method: &str, path: &str, body: &Value) -> Reply {
    send(
        tw.addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// Records appended per topic, from `/v1/stats`.
fn appended(tw: &Tidewater) -> std::collections::BTreeMap<String, u64> {
    let (_, stats) = tw.json("GET", "/v1/stats", None);
    stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap().to_owned(),
                t["appended_total"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Starts Tidewater on an empty docs folder with `config` as its configuration file.
fn start(dir: &Path, config: &str) -> Tidewater {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let file = dir.join("tidewater.toml");
    std::fs::write(&file, config).unwrap();
    let mut tw = Tidewater::start(
        &docs,
        &dir.join("data"),
        &["--config", &file.to_string_lossy()],
    );
    tw.wait_ready(Duration::from_secs(120));
    tw
}

const PROFILES: &str = r#"
[profiles]
[[profiles.tables]]
table = "crm.public.customers"
identifiers = [{ column = "email", namespace = "email", normaliser = "email" }]
attributes = ["name"]
"#;

fn change_event(id: u64, name: &str, email: &str) -> Value {
    json!({"key": {"id": id}, "value": {"op": "c", "after": {"id": id, "name": name, "email": email},
        "source": {"connector": "postgresql", "db": "crm", "schema": "public", "table": "customers", "lsn": id}}})
}

#[test]
fn h01_every_body_route_requires_a_json_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let tw = start(dir.path(), PROFILES);
    let before = appended(&tw);

    let doc = json!({"text": "planted by a web page"}).to_string();
    let search = json!({"query": "planted", "k": 3}).to_string();
    let ask = json!({"question": "what was planted?"}).to_string();
    let feedback = json!({"conversation_id": "c-h01", "rating": "down"}).to_string();
    let change = change_event(1, "Mallory", "victim@example.com").to_string();
    let routes = [
        ("PUT", "/v1/documents/h01", &doc),
        ("POST", "/v1/search", &search),
        ("POST", "/v1/ask", &ask),
        ("POST", "/v1/feedback", &feedback),
        ("POST", "/v1/events/changes", &change),
        ("POST", "/v1/events/feedback", &feedback),
    ];
    for (method, path, body) in routes {
        for content_type in [
            Some("text/plain"),
            Some("text/plain; charset=utf-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let headers: Vec<(&str, &str)> = content_type
                .map(|c| ("Content-Type", c))
                .into_iter()
                .chain([("Origin", "http://evil.example")])
                .collect();
            let reply = send(tw.addr, method, path, &headers, body.as_bytes());
            assert_eq!(
                reply.status, 415,
                "{method} {path} as {content_type:?}: {}",
                reply.body
            );
            assert_eq!(reply.code(), "unsupported_media_type", "{}", reply.body);
        }
    }
    // NDJSON only where the route reads it.
    let ndjson = send(
        tw.addr,
        "POST",
        "/v1/feedback",
        &[("Content-Type", "application/x-ndjson")],
        feedback.as_bytes(),
    );
    assert_eq!(ndjson.status, 415, "{}", ndjson.body);

    assert_eq!(appended(&tw), before, "a refused request wrote to the log");
    assert_eq!(
        tw.request("GET", "/v1/profiles/email:victim@example.com", None)
            .0,
        404
    );

    // The same bodies as JSON (and NDJSON for events) are accepted.
    let ok = send(
        tw.addr,
        "POST",
        "/v1/events/changes",
        &[("Content-Type", "application/x-ndjson")],
        change_event(2, "Alice", "alice@example.com")
            .to_string()
            .as_bytes(),
    );
    assert_eq!(ok.status, 202, "{}", ok.body);
    let ok = send(
        tw.addr,
        "PUT",
        "/v1/documents/h01",
        &[("Content-Type", "application/json; charset=utf-8")],
        doc.as_bytes(),
    );
    assert_eq!(ok.status, 202, "{}", ok.body);
    assert_eq!(
        post_json(
            &tw,
            "POST",
            "/v1/feedback",
            &serde_json::from_str(&feedback).unwrap()
        )
        .status,
        202
    );
    eventually(Duration::from_secs(30), "alice's profile", || {
        tw.request("GET", "/v1/profiles/email:alice@example.com", None)
            .0
            == 200
    });
    assert_eq!(
        tw.request("GET", "/v1/profiles/email:victim@example.com", None)
            .0,
        404
    );
}

#[test]
fn h06_foreign_hosts_are_refused_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let tw = start(
        dir.path(),
        "[server]\nallowed_hosts = [\"localhost\", \"tidewater.test\"]\n",
    );
    let port = tw.addr.port();
    for path in [
        "/v1/stats",
        "/metrics",
        "/",
        "/healthz",
        "/readyz",
        "/v1/documents/x",
        "/nope",
    ] {
        for host in [
            "attacker.example",
            "attacker.example:80",
            &format!("localhost.attacker.example:{port}"),
        ] {
            let reply = send(tw.addr, "GET", path, &[("Host", host)], b"");
            assert_eq!(reply.status, 421, "GET {path} for {host}: {}", reply.body);
            assert_eq!(reply.code(), "misdirected_request");
        }
    }
    let search = json!({"query": "x"}).to_string();
    let reply = send(
        tw.addr,
        "POST",
        "/v1/search",
        &[
            ("Host", "attacker.example"),
            ("Content-Type", "application/json"),
        ],
        search.as_bytes(),
    );
    assert_eq!(reply.status, 421, "{}", reply.body);

    for host in [
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("tidewater.test:{port}"),
        "tidewater.test".to_owned(),
    ] {
        let reply = send(tw.addr, "GET", "/v1/stats", &[("Host", &host)], b"");
        assert_eq!(reply.status, 200, "{host}: {}", reply.body);
    }
}

#[test]
fn l5_every_response_carries_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let tw = start(dir.path(), "");
    let page = send(tw.addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // The page's script and style are the only ones it may use: no inline code.
    assert!(!page.body.contains("<script>") && !page.body.contains("<style"));
    assert!(!page.body.contains("style="));
    let script = send(tw.addr, "GET", "/dashboard.js", &[], b"");
    assert_eq!(script.status, 200);
    assert!(script
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/javascript"));
    let style = send(tw.addr, "GET", "/dashboard.css", &[], b"");
    assert_eq!(style.status, 200);
    assert!(style
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/css"));

    let replies = [
        page,
        send(tw.addr, "GET", "/v1/stats", &[], b""),
        send(tw.addr, "GET", "/metrics", &[], b""),
        send(tw.addr, "GET", "/nope", &[], b""),
        send(
            tw.addr,
            "POST",
            "/v1/search",
            &[("Content-Type", "text/plain")],
            b"x",
        ),
        send(tw.addr, "DELETE", "/v1/search", &[], b""),
        send(
            tw.addr,
            "GET",
            "/v1/stats",
            &[("Host", "attacker.example")],
            b"",
        ),
    ];
    for reply in &replies {
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{}",
            reply.status
        );
        assert_eq!(
            reply.header("x-frame-options"),
            Some("DENY"),
            "{}",
            reply.status
        );
        assert!(
            reply.header("content-security-policy").is_some(),
            "{}",
            reply.status
        );
    }
    // A 405 is a JSON error too.
    assert_eq!(replies[5].status, 405);
    assert_eq!(replies[5].code(), "method_not_allowed");
}

#[test]
fn l3_l4_oversized_records_and_bodies_get_json_413s() {
    let dir = tempfile::tempdir().unwrap();
    let tw = start(
        dir.path(),
        &format!(
            "[log]\nmax_record_bytes = 65536\n{}",
            PROFILES.replace("[profiles]\n", "[profiles]\nmax_profile_bytes = 32768\n")
        ),
    );
    // L3: under the body limit, over the log's record limit: 413, not a retryable 503.
    let big = "x".repeat(100_000);
    let reply = post_json(&tw, "PUT", "/v1/documents/big", &json!({"text": big}));
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.code(), "record_too_large");
    let reply = post_json(
        &tw,
        "POST",
        "/v1/events/changes",
        &change_event(1, &big, "big@example.com"),
    );
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.code(), "record_too_large");

    // L4: over a route's body limit: a JSON 413 on every route.
    let huge = format!("[{}1]", "1,".repeat(17 << 20));
    let reply = send(
        tw.addr,
        "POST",
        "/v1/events/feedback",
        &[("Content-Type", "application/json")],
        huge.as_bytes(),
    );
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
    assert_eq!(reply.code(), "payload_too_large");
    let doc = json!({"text": "y".repeat(3 << 20)});
    let reply = post_json(&tw, "PUT", "/v1/documents/huge", &doc);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.code(), "payload_too_large");
}

#[test]
fn l11_text_the_pipeline_would_reject_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let tw = start(dir.path(), "");
    let before = appended(&tw);
    let reply = post_json(&tw, "PUT", "/v1/documents/nul", &json!({"text": "a\u{0}b"}));
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("binary"), "{}", reply.body);
    assert_eq!(appended(&tw), before, "the refused document was appended");
    assert_eq!(tw.request("GET", "/v1/documents/nul", None).0, 404);

    let reply = post_json(&tw, "PUT", "/v1/documents/ok", &json!({"text": "a b"}));
    assert_eq!(reply.status, 202, "{}", reply.body);
    eventually(Duration::from_secs(30), "ok indexed", || {
        tw.request("GET", "/v1/documents/ok", None).0 == 200
    });
    assert_eq!(tw.request("GET", "/v1/documents/nul", None).0, 404);
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn h05_connections_are_bounded_in_number_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let max = 8;
    let tw = start(
        dir.path(),
        &format!(
            "[server]\nmax_connections = {max}\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n"
        ),
    );
    let pid = tw.child.id();
    let baseline = open_fds(pid);

    // Slow clients: a request line and one header, then nothing.
    let mut slow: Vec<TcpStream> = (0..5 * max)
        .map(|_| {
            let mut s = TcpStream::connect(tw.addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let held = open_fds(pid);
    assert!(
        held <= baseline + max + 4,
        "{held} fds with {} slow connections (baseline {baseline}, cap {max})",
        slow.len()
    );
    // The API still answers: slots free up as the slow clients time out.
    let (status, _) = http(tw.addr, "GET", "/healthz", None).unwrap();
    assert_eq!(status, 200);
    // Every slow client gets disconnected.
    for (i, stream) in slow.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream, Duration::from_secs(60)),
            "slow connection {i} is still open"
        );
    }
    // So does a client that never sends anything.
    let mut silent = TcpStream::connect(tw.addr).unwrap();
    assert!(closed_by_server(&mut silent, Duration::from_secs(30)));
    assert!(open_fds(pid) <= baseline + 2);
}

#[test]
fn n2_a_non_loopback_listen_warns_that_the_api_has_no_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(bin())
        .arg("run")
        .arg("--docs")
        .arg(&docs)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(format!("0.0.0.0:{port}"))
        .env("TIDEWATER_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ready = (0..2400).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        matches!(http(addr, "GET", "/readyz", None), Ok((200, _)))
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(ready, "not ready:\n{text}");
    assert!(
        text.lines().any(|l| l.contains("WARN")
            && l.contains("no authentication")
            && l.contains("0.0.0.0")),
        "no warning about the exposed API:\n{text}"
    );
}
