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
