//! Running the real `tidewater` binary as a child process and talking HTTP to it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tidewater")
}

pub fn shared_data() -> PathBuf {
    std::env::var_os("TIDEWATER_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// The Python of `scripts/python-env.sh` (pyarrow, DuckDB, psycopg): `$TIDEWATER_PYTHON`,
/// else the default venv's.
pub fn python() -> PathBuf {
    let path = std::env::var_os("TIDEWATER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tidewater-py/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: run scripts/python-env.sh",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `tidewater run`, killed (SIGKILL) when dropped.
pub struct Tidewater {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: PathBuf,
}

impl Tidewater {
    /// Starts `tidewater run --docs DOCS --data-dir DATA --listen 127.0.0.1:<free port>` plus `extra` args.
    pub fn start(docs: &Path, data: &Path, extra: &[&str]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        std::fs::create_dir_all(data).unwrap();
        let stderr = data.with_extension("stderr.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .unwrap();
        let child = Command::new(bin())
            .arg("run")
            .arg("--docs")
            .arg(docs)
            .arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra)
            .env("TIDEWATER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child,
            addr,
            stderr,
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits for `/readyz` to answer 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "tidewater exited with {status} before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if matches!(self.try_request("GET", "/readyz", None), Ok((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "tidewater not ready after {timeout:?}:\n{}",
            self.log_tail()
        );
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        http(self.addr, method, path, body)
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_tail()))
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, text) = self.request(method, path, body);
        (
            status,
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}")),
        )
    }

    /// `POST /v1/search` results.
    pub fn search(&self, query: &str, k: usize, prefix: Option<&str>) -> Vec<Value> {
        let mut body = serde_json::json!({"query": query, "k": k});
        if let Some(p) = prefix {
            body["filter"] = serde_json::json!({"doc_id_prefix": p});
        }
        let (status, value) = self.json("POST", "/v1/search", Some(&body.to_string()));
        assert_eq!(status, 200, "{value}");
        value["results"].as_array().cloned().unwrap_or_default()
    }

    /// A metric's value from `/metrics` (first sample whose name and labels start with `series`).
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.request("GET", "/metrics", None);
        text.lines()
            .find(|l| l.starts_with(series) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "tidewater exited with {status}:\n{}",
                    self.log_tail()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tidewater did not stop after SIGTERM:\n{}", self.log_tail());
    }
}

impl Drop for Tidewater {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not within {timeout:?}: {what}");
}

/// A minimal HTTP/1.1 client (one request per connection).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The body of a chunked HTTP/1.1 response, without the chunk framing.
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The latest value per key of a topic in a stopped Tidewater's data directory.
pub fn latest_per_key(data: &Path, topic: &str) -> std::collections::BTreeMap<String, Value> {
    use tidewater_log::Log;
    let log = tidewater_log::EmbeddedLog::open(data.join("log"), Default::default()).unwrap();
    let mut latest = std::collections::BTreeMap::new();
    for partition in 0..log.partitions(topic).unwrap() {
        let mut next = log.range(topic, partition).unwrap().start;
        loop {
            let records = log.read(topic, partition, next, 1000).unwrap();
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for r in records {
                let key = String::from_utf8(r.key.unwrap_or_default()).unwrap();
                latest.insert(key, serde_json::from_slice(&r.value).unwrap());
            }
        }
    }
    latest
}

/// A throw-away PostgreSQL cluster (`scripts/postgres.sh`), stopped when dropped.
pub struct Pg {
    dir: tempfile::TempDir,
    /// Its connection string.
    pub dsn: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh")
}

impl Pg {
    /// Starts a cluster with logical decoding on a free port.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot start PostgreSQL:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir,
            dsn: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        }
    }

    /// Runs SQL; returns its unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(&self.dsn)
            .args(["-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// `scripts/openai-test-server.py`: a real OpenAI-compatible HTTP server that records
/// every request body (one JSON line each) and streams a fixed reply. Killed when dropped.
pub struct OpenAiTestServer {
    child: Child,
    /// Base URL for `[answer.llm] base_url`.
    pub base_url: String,
    /// The recorded requests.
    pub record: PathBuf,
}

impl OpenAiTestServer {
    pub fn start(record: &Path, args: &[&str]) -> Self {
        use std::io::BufRead;
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openai-test-server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--port")
            .arg("0")
            .arg("--record")
            .arg(record)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the OpenAI test server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the test server: {line:?}"))
            .to_owned();
        Self {
            child,
            base_url: format!("http://{addr}/v1"),
            record: record.to_owned(),
        }
    }

    /// The request bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for OpenAiTestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server-sent events of a response body: (event name, JSON data).
pub fn sse_events(body: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for block in body.split("\n\n") {
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            events.push((
                name,
                serde_json::from_str(&data).unwrap_or(Value::String(data)),
            ));
        }
    }
    events
}

/// Starts `tidewater run` on `dir/docs` (filled by `write_docs`) and `dir/data` with
/// `config_text` as its configuration file, and waits until it is ready.
pub fn start_with_config(
    dir: &Path,
    config_text: &str,
    write_docs: impl FnOnce(&Path),
) -> Tidewater {
    write_docs(&dir.join("docs"));
    let config = dir.join("tidewater.toml");
    std::fs::write(&config, config_text).unwrap();
    let config = config.to_string_lossy().into_owned();
    let mut tw = Tidewater::start(&dir.join("docs"), &dir.join("data"), &["--config", &config]);
    tw.wait_ready(Duration::from_secs(120));
    tw
}

/// `tidewater dlq list [--pipeline P] --data-dir DATA` on a stopped Tidewater: the dead
/// letters, one JSON value each.
pub fn dlq_list(data: &Path, pipeline: Option<&str>) -> Vec<Value> {
    let mut command = Command::new(bin());
    command.args(["dlq", "list"]);
    if let Some(pipeline) = pipeline {
        command.args(["--pipeline", pipeline]);
    }
    let out = command.arg("--data-dir").arg(data).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
