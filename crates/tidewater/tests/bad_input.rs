//! Bad input gets a clear error or goes to the dead-letter topic, and nothing stops.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn bad_files_are_dead_lettered_and_bad_requests_get_4xx_json() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("latin1.txt"),
        b"Caf\xe9 cr\xe8me, encoded in Latin-1.",
    )
    .unwrap();
    std::fs::write(
        docs.join("photo.txt"),
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
    )
    .unwrap();
    std::fs::write(
        docs.join("good.txt"),
        "The falcon nests on the quarry wall.",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut tw = Tidewater::start(&docs, &data, &[]);
    tw.wait_ready(Duration::from_secs(120));

    assert_eq!(
        tw.json("GET", "/v1/documents/good.txt", None).1["indexed"],
        true
    );
    let (status, latin1) = tw.json("GET", "/v1/documents/latin1.txt", None);
    assert_eq!(status, 200);
    assert_eq!(latin1["indexed"], false);
    assert!(
        latin1["rejected"]
            .as_str()
            .is_some_and(|r| r.contains("not valid UTF-8")),
        "{latin1}"
    );
    assert_eq!(
        tw.metric("tidewater_dead_letters_total{pipeline=\"knowledge\",topic=\"documents\"}"),
        2.0
    );

    // The pipeline keeps going after them.
    std::fs::write(docs.join("later.txt"), "Written after the bad files.").unwrap();
    eventually(Duration::from_secs(20), "later.txt indexed", || {
        tw.request("GET", "/v1/documents/later.txt", None).0 == 200
    });

    for (method, path, body, status, code) in [
        (
            "POST",
            "/v1/search",
            "{\"query\": \"falcon\",",
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/search",
            "{\"query\": \"falcon\", \"top\": 3}",
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/search",
            "{\"query\": \"falcon\", \"k\": 0}",
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/search",
            "{\"query\": \"  \"}",
            400,
            "invalid_request",
        ),
        (
            "PUT",
            "/v1/documents/x",
            "{\"body\": \"no text field\"}",
            400,
            "invalid_request",
        ),
        (
            "PUT",
            "/v1/documents/x",
            "{\"text\": \"unterminated",
            400,
            "invalid_json",
        ),
        ("GET", "/v1/nothing-here", "", 404, "not_found"),
    ] {
        let (got, value) = tw.json(method, path, (!body.is_empty()).then_some(body));
        assert_eq!(got, status, "{method} {path} {body}: {value}");
        assert_eq!(
            value["error"]["code"], code,
            "{method} {path} {body}: {value}"
        );
        assert!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{value}"
        );
    }
    // A good request still works.
    let (status, _) = tw.json(
        "PUT",
        "/v1/documents/api/doc",
        Some("{\"text\": \"Sent over HTTP.\"}"),
    );
    assert_eq!(status, 202);
    eventually(Duration::from_secs(20), "api doc indexed", || {
        tw.request("GET", "/v1/documents/api/doc", None).0 == 200
    });
    // Reconcile does not count rejected files as drift, nor send them again.
    assert_eq!(tw.metric("tidewater_drift_documents"), 0.0);
    assert_eq!(
        tw.metric("tidewater_dead_letters_total{pipeline=\"knowledge\",topic=\"documents\"}"),
        2.0
    );
    tw.terminate();

    // The dead letters can be inspected, with their reasons.
    let letters = dlq_list(&data, None);
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters
            .iter()
            .any(|l| l["reason"].as_str().unwrap().contains("not valid UTF-8")),
        "{letters:?}"
    );
    assert!(
        letters
            .iter()
            .any(|l| l["reason"].as_str().unwrap().contains("binary")),
        "{letters:?}"
    );
}

#[test]
fn configuration_mistakes_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:8080\"\n[knowledge.chunking]\nmax_chars = 500\nchunk_size = 3\n",
    )
    .unwrap();
    for args in [vec!["check-config", "--config"], vec!["run", "--config"]] {
        let out = Command::new(bin())
            .args(&args)
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted an unknown key");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("");
        assert!(
            last.starts_with("error:") && last.contains("chunk_size"),
            "{args:?}: {stderr}"
        );
    }
    let out = Command::new(bin())
        .args(["run", "--docs"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such directory"));

    std::fs::write(
        &config,
        "[knowledge.chunking]\nmax_chars = 100\noverlap_chars = 200\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("overlap"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tidewater dlq` reads the data directory the configuration file names, as `run` does.
#[test]
fn dlq_honours_the_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("binary.txt"), b"a\0b").unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("tidewater.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", data.to_string_lossy()),
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let mut tw = Tidewater::start(&docs, &data, &["--config", &config]);
    tw.wait_ready(Duration::from_secs(120));
    tw.terminate();

    let out = Command::new(bin())
        .args(["dlq", "list", "--config", &config])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("binary.txt"), "{listed}");

    // Without the file, the default data directory is not this one.
    let out = Command::new(bin())
        .args(["dlq", "list"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("no log in"), "{error}");
}
