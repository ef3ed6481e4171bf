//! Real servers for tests, started by the project's own scripts in a temporary folder on
//! a free port and stopped when dropped (also when a test panics). A machine where a
//! server cannot be started fails the test with the script's output: no test is skipped
//! for want of a server.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

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

/// A PostgreSQL with pgvector (`scripts/pgvector.sh`): trust authentication on
/// 127.0.0.1, the `vector` extension created in the database `postgres`.
pub struct PgVectorServer {
    /// `None` for [`Self::shared`], whose folder a watchdog removes.
    dir: Option<tempfile::TempDir>,
    dsn: String,
}

impl PgVectorServer {
    /// Starts a cluster of its own in a new temporary folder, stopped when dropped.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tidewater-pgvector")
            .tempdir()
            .expect("temporary folder");
        let dsn = start_pgvector(dir.path());
        Self {
            dir: Some(dir),
            dsn,
        }
    }

    /// One cluster for the whole test binary, started on first use; tests keep apart by
    /// table prefix. A static is never dropped, so a watchdog process stops the cluster
    /// and removes its folder once this process has exited, however it exits.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<PgVectorServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("tidewater-pgvector")
                .tempdir()
                .expect("temporary folder")
                .keep();
            let watchdog = format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
                 bash '{script}' stop '{dir}'; rm -rf '{dir}'",
                pid = std::process::id(),
                script = script("pgvector.sh").display(),
                dir = dir.display(),
            );
            // Never waited for: it must outlive this process to stop the cluster after it.
            #[allow(clippy::zombie_processes)]
            let _watchdog = Command::new("sh")
                .args(["-c", &watchdog])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting the cluster's watchdog");
            let dsn = start_pgvector(&dir);
            Self { dir: None, dsn }
        })
    }

    /// Its connection string, `host=127.0.0.1 port=PORT user=postgres dbname=postgres`.
    pub fn dsn(&self) -> &str {
        &self.dsn
    }
}

/// Starts a cluster in `dir` on a free port; returns its DSN.
fn start_pgvector(dir: &Path) -> String {
    run_script(
        "pgvector.sh",
        &[
            "start",
            dir.to_str().expect("utf-8 path"),
            &free_port().to_string(),
        ],
    )
}

impl Drop for PgVectorServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new("bash")
                .arg(script("pgvector.sh"))
                .arg("stop")
                .arg(dir.path())
                .output();
        }
    }
}
