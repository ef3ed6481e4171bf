//! On the real binary: secrets in the configuration never reach a client, a log line or
//! `check-config`'s output (N5, L1); what a language model sends is bounded (N1);
//! `check-config` refuses what `run` refuses (L2); and a damaged state store is a one-line
//! error naming the file, not a panic (H07).

mod support;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const QUESTION: &str = "Who is the harbour master?";

fn write_docs(docs: &Path) {
    std::fs::create_dir_all(docs).unwrap();
    std::fs::write(
        docs.join("harbour.md"),
        "The harbour. The harbour master is Ada. Boats moor at the north quay.",
    )
    .unwrap();
}

fn start(dir: &Path, config_text: &str) -> Tidewater {
    start_with_config(dir, config_text, write_docs)
}

/// `tidewater check-config --config <file with text>`.
fn check_config(dir: &Path, text: &str) -> Output {
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(bin())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap()
}

fn ask(tw: &Tidewater, stream: bool) -> (u16, String) {
    let body = json!({"question": QUESTION, "stream": stream}).to_string();
    tw.request("POST", "/v1/ask", Some(&body))
}

#[test]
fn n5_a_failing_model_answers_502_without_its_url_password_or_body() {
    let dir = tempfile::tempdir().unwrap();
    let llm = OpenAiTestServer::start(&dir.path().join("requests.jsonl"), &["--fail", "100"]);
    let address = llm.base_url.trim_start_matches("http://").to_owned();
    let base_url = format!("http://llmuser:SECRETPW@{address}");
    let tw = start(
        dir.path(),
        &format!(
            "[answer.llm]\nbase_url = \"{base_url}\"\nmodel = \"test-model\"\nmax_retries = 0\n"
        ),
    );
    let address = address.trim_end_matches("/v1");
    let assert_says_only_which_model_failed = |status: u16, body: &str, how: &str| {
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("model_failed"), "{body}");
        assert!(
            body.contains(&format!("the language model 'test-model' {how}")),
            "{body}"
        );
        for leak in ["SECRETPW", "llmuser", address, "simulated failure"] {
            assert!(!body.contains(leak), "the 502 shows {leak:?}: {body}");
        }
    };

    // The model answers HTTP 500 with a body of its own.
    for stream in [false, true] {
        let (status, body) = ask(&tw, stream);
        assert_says_only_which_model_failed(status, &body, "failed: HTTP 500");
    }
    assert_eq!(llm.requests().len(), 2);

    // The model is gone: nothing listens at its address.
    drop(llm);
    let (status, body) = ask(&tw, false);
    assert_says_only_which_model_failed(status, &body, "is unreachable");

    // The server's log has the detail, with the password masked.
    let log = std::fs::read_to_string(&tw.stderr).unwrap();
    assert!(!log.contains("SECRETPW"), "{log}");
    assert!(log.contains("llmuser:***@"), "{log}");
    assert!(log.contains("simulated failure"), "{log}");
}

#[test]
fn l1_check_config_prints_no_password_or_secret_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let output = check_config(
        dir.path(),
        r#"
[embedding]
backend = "openai"
base_url = "https://embed.example/v1?api_key=SECRET1"
model = "m"
dimension = 8

[answer.llm]
base_url = "http://llmuser:SECRET2@127.0.0.1:8000/v1"
model = "m"

[profiles]
[[profiles.tables]]
table = "crm.public.customers"

[[sources.postgres]]
dsn = "postgres://tw:SECRET3@127.0.0.1:5432/crm"
slot = "url_form"
tables = ["public.customers"]

[[sources.postgres]]
dsn = "host=127.0.0.1 user=tw password=SECRET4 dbname=crm"
slot = "key_value_form"
tables = ["public.customers"]

[[sources.postgres]]
dsn = "host=127.0.0.1 user=tw password='SECRET5 with spaces' dbname=crm"
slot = "quoted"
tables = ["public.customers"]
"#,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        !stdout.contains("SECRET") && !stderr.contains("SECRET"),
        "{stdout}{stderr}"
    );
    for masked in [
        "https://embed.example/v1?api_key=***",
        "http://llmuser:***@127.0.0.1:8000/v1",
        "postgres://tw:***@127.0.0.1:5432/crm",
        "host=127.0.0.1 user=tw password=*** dbname=crm",
        "password='***' dbname=crm",
    ] {
        assert!(stdout.contains(masked), "{masked} not in {stdout}");
    }
}

#[test]
fn l2_check_config_refuses_zero_sizes_as_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[knowledge.topic_config]\npartitions = 0\n",
            "knowledge.topic_config.partitions",
        ),
        ("[log]\nmax_record_bytes = 0\n", "log.max_record_bytes"),
        ("[log]\nsegment_bytes = 0\n", "log.segment_bytes"),
        ("[lake]\nmax_rows_per_file = 0\n", "lake.max_rows_per_file"),
    ];
    for (text, key) in cases {
        let output = check_config(dir.path(), text);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{text}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: invalid configuration: ") && stderr.contains(key),
            "{text}: {stderr}"
        );
    }

    // `run` refuses it with the same line, before opening anything.
    let output = Command::new(bin())
        .args(["run", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(dir.path().join("check.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lake.max_rows_per_file"), "{stderr}");
    assert!(!dir.path().join("data").exists());
}

#[test]
fn n1_an_answer_over_the_model_response_cap_is_a_502() {
    let dir = tempfile::tempdir().unwrap();
    let reply = "tide ".repeat(4000);
    let llm = OpenAiTestServer::start(&dir.path().join("requests.jsonl"), &["--reply", &reply]);
    let tw = start(
        dir.path(),
        &format!(
            "[answer.llm]\nbase_url = \"{}\"\nmodel = \"test-model\"\nmax_retries = 0\n\
             max_response_bytes = 16384\n",
            llm.base_url
        ),
    );
    let (status, body) = ask(&tw, false);
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("model_failed")
            && body.contains("the language model 'test-model' sent a response body over 16384"),
        "{body}"
    );

    // Streamed: the tokens up to the cap, then an error event.
    let (status, body) = ask(&tw, true);
    assert_eq!(status, 200, "{body}");
    let events = sse_events(&body);
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "error", "{body}");
    assert_eq!(data["error"]["code"], "model_failed", "{data}");
    let streamed: usize = events
        .iter()
        .filter(|(name, _)| name == "token")
        .map(|(_, d)| d["delta"].as_str().unwrap().len())
        .sum();
    assert!(streamed <= 16384, "{streamed}");
    assert_eq!(
        tw.metric("tidewater_answers_total{model=\"test-model\",outcome=\"failed\"}"),
        2.0
    );
}

#[test]
fn n1_an_answer_too_large_for_the_log_is_a_502_and_logged_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let reply = "tide ".repeat(4000); // 20 000 bytes
    let llm = OpenAiTestServer::start(&dir.path().join("requests.jsonl"), &["--reply", &reply]);
    let tw = start(
        dir.path(),
        &format!(
            "[log]\nmax_record_bytes = 16384\n\n[answer.llm]\nbase_url = \"{}\"\n\
             model = \"test-model\"\nmax_retries = 0\n",
            llm.base_url
        ),
    );
    for stream in [false, true] {
        let (status, body) = ask(&tw, stream);
        let error = if stream {
            assert_eq!(status, 200, "{body}");
            let events = sse_events(&body);
            let (last, data) = events.last().cloned().expect("events");
            assert_eq!(last, "error", "{body}");
            data
        } else {
            assert_eq!(status, 502, "{body}");
            serde_json::from_str(&body).unwrap()
        };
        assert_eq!(error["error"]["code"], "model_failed", "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("answer of 20000 bytes") && message.contains("16384"),
            "{message}"
        );
    }
    assert_eq!(
        tw.metric("tidewater_answers_total{model=\"test-model\",outcome=\"failed\"}"),
        2.0
    );
    tw.terminate();

    let conversations = latest_per_key(&dir.path().join("data"), "conversations");
    assert_eq!(conversations.len(), 2, "{conversations:?}");
    for conversation in conversations.values() {
        assert_eq!(conversation["status"], "failed", "{conversation}");
        assert_eq!(conversation["answer"], "", "{conversation}");
        assert!(
            conversation["error"]
                .as_str()
                .unwrap()
                .contains("max_record_bytes"),
            "{conversation}"
        );
    }
}

/// Overwrites 64 bytes in every 4 KiB page past the header, as disk damage might.
fn damage(path: &Path) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let size = file.metadata().unwrap().len();
    for page in (8192..size).step_by(4096) {
        file.seek(SeekFrom::Start(page + 100)).unwrap();
        file.write_all(&[0xff; 64]).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn h07_a_damaged_state_store_is_a_one_line_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    let tw = start(dir.path(), "");
    for i in 0..20 {
        let body = json!({"text": format!("Document {i} about the harbour.")}).to_string();
        let (status, reply) = tw.request("PUT", &format!("/v1/documents/d/{i}"), Some(&body));
        assert!((200..300).contains(&status), "{reply}");
    }
    eventually(Duration::from_secs(60), "the documents indexed", || {
        tw.search("harbour", 30, Some("d/")).len() == 20
    });
    tw.terminate();

    for (n, store) in [
        "knowledge/knowledge.redb",
        "analytics/analytics.redb",
        "lake-state/lake.redb",
    ]
    .into_iter()
    .enumerate()
    {
        let data = dir.path().join(format!("damaged-{n}"));
        copy_dir(&dir.path().join("data"), &data);
        let path = data.join(store);
        damage(&path);
        let mut child = Command::new(bin())
            .arg("run")
            .arg("--docs")
            .arg(&docs)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tidewater started on a damaged {store}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(status.code(), Some(1), "{store}: {stderr}");
        assert!(!stderr.contains("panicked"), "{store}: {stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{store}: {stderr}");
        let shown = path.display().to_string();
        assert!(
            errors[0].contains(&format!("state store {shown} is corrupt ("))
                && errors[0].contains("delete it"),
            "{store}: {stderr}"
        );
        assert!(
            !stderr.lines().any(|l| l.trim_start().starts_with("at ")),
            "no backtrace: {stderr}"
        );
    }
}
