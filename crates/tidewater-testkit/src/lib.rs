//! Real servers for tests, started by the project's own scripts in a temporary folder on
//! a free port and stopped when dropped (also when a test panics). A machine where a
//! server cannot be started fails the test with the script's output: no test is skipped
//! for want of a server.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name)
}

/// Runs `scripts/NAME ARGS…` and returns the last line it printed; panics with its
/// output when it fails.
fn run_script(name: &str, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running scripts/{name}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{name} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A Kafka-protocol broker (Tansu with its SQLite engine, `scripts/kafka.sh`).
pub struct KafkaBroker {
    dir: tempfile::TempDir,
    port: u16,
    bootstrap: String,
}

impl KafkaBroker {
    /// Starts a broker with empty storage.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let port = free_port();
        let bootstrap = run_script(
            "kafka.sh",
            &[
                "start",
                dir.path().to_str().expect("utf-8 path"),
                &port.to_string(),
            ],
        );
        Self {
            dir,
            port,
            bootstrap,
        }
    }

    /// Its bootstrap address, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Stops the broker (SIGTERM) and starts it again on the same port and storage.
    pub fn restart(&self) {
        self.stop();
        let started = run_script(
            "kafka.sh",
            &["start", self.dir_str(), &self.port.to_string()],
        );
        assert_eq!(started, self.bootstrap, "the broker came back elsewhere");
    }

    /// Stops the broker; [`Self::restart`] brings it back.
    pub fn stop(&self) {
        run_script("kafka.sh", &["stop", self.dir_str()]);
    }

    fn dir_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 path")
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("kafka.sh"))
            .args(["stop", self.dir_str()])
            .output();
    }
}
