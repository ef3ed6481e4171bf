//! A SIGTERM while `tidewater run` is still starting stops it cleanly once it has started,
//! instead of ending the process mid-start.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Whether process `pid` has a handler for signal `signal` (the `SigCgt` mask in
/// `/proc/<pid>/status`).
fn catches(pid: u32, signal: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

#[test]
fn sigterm_during_start_up_ends_in_a_clean_shutdown() {
    const SIGTERM: u32 = 15;
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("a.txt"), "The ferry leaves at nine.").unwrap();
    let mut tw = Tidewater::start(&docs, &dir.path().join("data"), &[]);
    let pid = tw.child.id();

    // The handler is installed before the configuration is read and the model loaded.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !catches(pid, SIGTERM) {
        assert!(
            tw.child.try_wait().unwrap().is_none(),
            "exited early:\n{}",
            tw.log_tail()
        );
        assert!(Instant::now() < deadline, "SIGTERM is never handled");
        std::thread::sleep(Duration::from_millis(1));
    }
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let log_at_signal = std::fs::read_to_string(&tw.stderr).unwrap_or_default();
    assert!(
        !log_at_signal.contains("serving the API"),
        "the signal was meant to arrive during start-up:\n{log_at_signal}"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = tw.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exited with {status}:\n{}", tw.log_tail());
    let log = std::fs::read_to_string(&tw.stderr).unwrap();
    let serving = log
        .find("serving the API")
        .expect("the app finished starting");
    let stopping = log.find("shutting down").expect("then shut down");
    assert!(serving < stopping, "{log}");
}

/// H03: a pipeline that has work and makes no progress (here: its embedding endpoint
/// accepts connections and never answers) shows in `/readyz`, `/v1/stats` and
/// `tidewater_component_stalled`; and SIGTERM ends the process within the drain time even
/// though that pipeline cannot finish its batch.
#[test]
fn h03_a_stuck_pipeline_shows_in_readyz_and_sigterm_exits_within_the_drain_time() {
    // An "embedding endpoint" that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("a.txt"), "The ferry leaves at nine.").unwrap();
    let config = dir.path().join("tidewater.toml");
    std::fs::write(
        &config,
        format!(
            "[embedding]\nbackend = \"openai\"\nbase_url = \"http://{silent_addr}\"\n\
             model = \"m\"\ndimension = 8\ntimeout = \"10m\"\nmax_retries = 0\n\
             [health]\nstall_after = \"1s\"\n[server]\ndrain_timeout = \"3s\"\n"
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let mut tw = Tidewater::start(&docs, &dir.path().join("data"), &["--config", &config]);

    let mut stuck = String::new();
    eventually(
        Duration::from_secs(60),
        "the knowledge pipeline reported stalled",
        || {
            let Ok((_, body)) = tw.try_request("GET", "/v1/stats", None) else {
                return false;
            };
            let stats: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let found = stats["components"].as_array().and_then(|components| {
                components.iter().find(|c| {
                    c["condition"] == "stalled"
                        && c["component"]
                            .as_str()
                            .is_some_and(|name| name.starts_with("pipeline knowledge documents/"))
                })
            });
            if let Some(component) = found {
                stuck = component["component"].as_str().unwrap().to_owned();
            }
            found.is_some()
        },
    );
    // Every source and pipeline reports to the one watchdog.
    let (_, stats) = tw.json("GET", "/v1/stats", None);
    let names: Vec<&str> = stats["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["component"].as_str())
        .collect();
    for expected in [
        "source files:",
        "pipeline analytics",
        "outbox knowledge.dead-letters",
    ] {
        assert!(
            names.iter().any(|name| name.starts_with(expected)),
            "{expected} missing from {names:?}"
        );
    }
    let (status, readyz) = tw.json("GET", "/readyz", None);
    assert_eq!(status, 503, "{readyz}");
    assert!(
        readyz["unhealthy"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["component"] == stuck.as_str()),
        "{readyz}"
    );
    assert_eq!(
        tw.metric(&format!(
            "tidewater_component_stalled{{component=\"{stuck}\"}}"
        )),
        1.0
    );

    let signalled = Instant::now();
    let sent = Command::new("kill")
        .args(["-TERM", &tw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = loop {
        if let Some(status) = tw.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "no exit within 20 s of SIGTERM (drain_timeout 3s):\n{}",
            tw.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !status.success(),
        "gave up on a stuck pipeline: not a clean exit"
    );
    let log = std::fs::read_to_string(&tw.stderr).unwrap();
    assert!(
        log.contains("shutdown did not finish within") && log.contains(&stuck),
        "the error names what was still busy:\n{}",
        tw.log_tail()
    );
}
