//! The file source on a hostile file system: a FIFO renamed in between listing and open
//! (H03), the watchdog heartbeat, an oversized file on every listing (L10), and files that
//! cannot have a document id (N6).
#![cfg(unix)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tidewater_core::document::MAX_ID_BYTES;
use tidewater_core::{DocumentEvent, DocumentOp};
use tidewater_core::{EventWriter, WriteError};
use tidewater_metrics::{Condition, HealthConfig, Watchdog};
use tidewater_sources::FileSource;

use super::{has, summary, Fixture, Running};

/// Runs `call` on its own thread and returns its result; fails the test if it never
/// returns. The bound is generous: what is asserted is that the call returns at all.
fn returns<T: Send + 'static>(what: &str, call: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(call());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} never returned: it is blocked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Swaps a regular file and a FIFO at `name` in `root` until `stop` is raised, as in the
/// probe: each is renamed onto the name, so a reader that listed a regular file may open
/// the FIFO.
fn swap_fifo_in(root: &Path, name: &str, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let (target, regular, fifo) = (root.join(name), root.join(".r"), root.join(".f"));
    mkfifo(&fifo);
    thread::spawn(move || {
        let mut swaps = 0;
        while !stop.load(Ordering::SeqCst) {
            swaps += 1;
            std::fs::write(&regular, format!("race {swaps}\n")).unwrap();
            std::fs::rename(&regular, &target).unwrap();
            std::fs::rename(&fifo, &target).unwrap();
            std::fs::rename(&target, &fifo).unwrap();
        }
        swaps
    })
}

#[test]
fn h03_a_fifo_in_the_root_never_blocks_the_source() {
    let fx = Fixture::new();
    fx.write("a.md", "a");
    mkfifo(&fx.path("pipe.txt"));
    let source = Arc::new(fx.source());

    // Present when listed, named by a watcher event, and swapped in between listing and
    // open: none of it blocks a call of the source.
    let report = returns("scan", {
        let source = Arc::clone(&source);
        move || source.scan().unwrap()
    });
    assert_eq!(report.upserts, 1);
    assert!(
        report
            .skipped
            .iter()
            .any(|(path, reason)| path.ends_with("pipe.txt") && reason.contains("regular")),
        "{:?}",
        report.skipped
    );
    returns("resend of the FIFO's path", {
        let source = Arc::clone(&source);
        move || source.resend(&["pipe.txt".to_owned()]).unwrap()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = swap_fifo_in(&fx.root, "race.txt", Arc::clone(&stop));
    returns("scans during FIFO swaps", {
        let source = Arc::clone(&source);
        move || {
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                let _ = source.scan().unwrap();
                let _ = source.listing().unwrap();
                let _ = source.resend(&["race.txt".to_owned()]).unwrap();
            }
        }
    });
    stop.store(true, Ordering::SeqCst);
    assert!(swapper.join().unwrap() > 0);
    fx.sink.take();

    // And the source still indexes what comes next.
    fx.write("after.md", "after the race");
    let report = returns("scan after the race", move || source.scan().unwrap());
    assert_eq!(report.upserts, 1, "{report:?}");
    assert!(has(&fx.sink.take(), DocumentOp::Upsert, "after.md"));
}

#[test]
fn h03_a_fifo_swapped_in_never_blocks_a_running_source() {
    let fx = Fixture::new();
    let mut config = fx.config();
    // Listings back to back, besides the watcher's re-checks of each rename.
    config.relist_interval = Duration::from_millis(1);
    let running = Running::start(fx.source_with(config));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = swap_fifo_in(&fx.root, "race.txt", Arc::clone(&stop));
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    assert!(swapper.join().unwrap() > 0);

    fx.write("after.md", "after the race");
    fx.sink.wait_for("a file written after the race", |e| {
        has(e, DocumentOp::Upsert, "after.md")
    });
    running.stop();
}

/// A sink that holds every batch until it is opened, or refuses them while failing.
#[derive(Default)]
struct GateSink {
    closed: Mutex<bool>,
    opened: Condvar,
    failing: AtomicBool,
    delivered: Mutex<Vec<DocumentEvent>>,
}

impl EventWriter<DocumentEvent> for GateSink {
    fn write(&self, events: Vec<DocumentEvent>) -> Result<(), WriteError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(WriteError::msg("log unavailable"));
        }
        let mut closed = self.closed.lock();
        while *closed {
            self.opened.wait(&mut closed);
        }
        self.delivered.lock().extend(events);
        Ok(())
    }
}

impl GateSink {
    fn set_closed(&self, closed: bool) {
        *self.closed.lock() = closed;
        self.opened.notify_all();
    }
}

/// Waits until the only component of `watchdog` is in `condition`.
fn wait_for_condition(watchdog: &Watchdog, condition: Condition) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = watchdog.statuses().remove(0);
        if status.condition == condition {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {condition:?}, still {status:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn heartbeat_is_idle_between_passes_and_stalls_while_the_sink_is_stuck() {
    let fx = Fixture::new();
    fx.write("a.md", "a");
    let watchdog = Watchdog::new(&HealthConfig {
        stall_after: Duration::from_millis(100),
    });
    let sink = Arc::new(GateSink::default());
    let source = Arc::new(
        FileSource::new(
            fx.config(),
            fx.state.clone(),
            sink.clone(),
            watchdog.register("source files:docs"),
        )
        .unwrap(),
    );
    assert_eq!(watchdog.statuses()[0].component, "source files:docs");

    source.scan().unwrap();
    assert_eq!(watchdog.statuses()[0].condition, Condition::Idle);
    thread::sleep(Duration::from_millis(150));
    assert!(watchdog.unhealthy().is_empty(), "idle never stalls");

    // A sink that blocks: the source is working and makes no progress.
    sink.set_closed(true);
    fx.write("b.md", "b");
    let scan = thread::spawn({
        let source = Arc::clone(&source);
        move || source.scan()
    });
    wait_for_condition(&watchdog, Condition::Stalled);
    assert_eq!(watchdog.unhealthy()[0].component, "source files:docs");
    sink.set_closed(false);
    assert_eq!(scan.join().unwrap().unwrap().upserts, 1);
    assert_eq!(watchdog.statuses()[0].condition, Condition::Idle);

    // A sink that refuses: the failed pass leaves the source working, and passes that
    // read the files again while it still refuses are no progress either.
    sink.failing.store(true, Ordering::SeqCst);
    fx.write("c.md", "c");
    assert!(source.scan().is_err());
    assert_ne!(watchdog.statuses()[0].condition, Condition::Idle);
    wait_for_condition(&watchdog, Condition::Stalled);
    assert!(source.scan().is_err());
    assert_eq!(watchdog.statuses()[0].condition, Condition::Stalled);
    sink.failing.store(false, Ordering::SeqCst);
    assert_eq!(source.scan().unwrap().upserts, 1);
    assert_eq!(watchdog.statuses()[0].condition, Condition::Idle);

    // A running source is idle while it waits for changes.
    drop(source);
    let running = Running::start(
        FileSource::new(
            fx.config(),
            fx.state.clone(),
            sink.clone(),
            watchdog.register("source files:again"),
        )
        .unwrap(),
    );
    fx.write("d.md", "d");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !has(&sink.delivered.lock(), DocumentOp::Upsert, "d.md") {
        assert!(Instant::now() < deadline, "d.md never delivered");
        thread::sleep(Duration::from_millis(10));
    }
    // The dropped source is no longer watched; the running one is.
    let statuses = watchdog.statuses();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0].component, "source files:again");
    let deadline = Instant::now() + Duration::from_secs(10);
    while watchdog.statuses()[0].condition != Condition::Idle {
        assert!(Instant::now() < deadline, "{:?}", watchdog.statuses()[0]);
        thread::sleep(Duration::from_millis(10));
    }
    running.stop();
}

/// Captures what the source logs at WARN and above on the current thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture<T>(&self, call: impl FnOnce() -> T) -> T {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::with_default(subscriber, call)
    }

    /// The WARN lines that contain `text`.
    fn warnings(&self, text: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock())
            .lines()
            .filter(|line| line.contains("WARN") && line.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn l10_an_oversized_file_is_reported_once_per_size_and_mtime() {
    let fx = Fixture::new();
    fx.write("big.md", vec![b'x'; 2048]);
    let mut config = fx.config();
    config.max_file_bytes = 1024;
    let source = fx.source_with(config);
    let logs = Logs::default();

    for _ in 0..3 {
        let report = logs.capture(|| source.scan().unwrap());
        assert_eq!(report.skipped.len(), 1, "every listing counts it");
    }
    assert_eq!(logs.warnings("big.md").len(), 1, "{:?}", logs.warnings(""));
    assert!(logs.warnings("big.md")[0].contains("max_file_bytes"));

    fx.write("big.md", vec![b'x'; 4096]);
    for _ in 0..3 {
        logs.capture(|| source.scan().unwrap());
    }
    assert_eq!(logs.warnings("big.md").len(), 2, "{:?}", logs.warnings(""));
    assert!(fx.sink.take().is_empty());
}

#[test]
fn n6_a_path_longer_than_1024_bytes_is_a_document() {
    let fx = Fixture::new();
    let level = "L".repeat(200);
    let id = format!("{}/deep.txt", [level.as_str(); 8].join("/"));
    fx.write(&id, "deep long path about narwhals");
    let report = fx.source().scan().unwrap();
    assert_eq!((report.upserts, report.dead_lettered), (1, 0));
    let events = fx.sink.take();
    assert_eq!(summary(&events), [(DocumentOp::Upsert, id.clone())]);
    assert!(id.len() > 1024 && id.len() <= MAX_ID_BYTES, "{}", id.len());
}

#[test]
fn n6_a_name_that_is_not_utf8_is_dead_lettered_once_with_its_path() {
    let fx = Fixture::new();
    fx.write("good.txt", "good");
    let bad = fx.root.join(OsStr::from_bytes(b"bad\xffname.txt"));
    std::fs::write(&bad, "bad name about walruses").unwrap();
    let source = fx.source();
    let listed = source.root().join(bad.file_name().unwrap());
    let logs = Logs::default();

    let report = logs.capture(|| source.scan().unwrap());
    assert_eq!((report.upserts, report.dead_lettered), (1, 1));
    assert_eq!(report.skipped.len(), 1, "the summary counts it");
    assert_eq!(report.skipped[0].0, listed);
    assert!(report.skipped[0].1.contains("not valid UTF-8"));
    let events = fx.sink.take();
    let rejected: Vec<&DocumentEvent> = events
        .iter()
        .filter(|e| e.op == DocumentOp::Reject)
        .collect();
    assert_eq!(rejected.len(), 1, "{:?}", summary(&events));
    assert_eq!(rejected[0].doc_id, "bad\\xFFname.txt");
    assert_eq!(rejected[0].source, "files:docs");
    let reason = String::from_utf8(rejected[0].body.clone()).unwrap();
    assert!(
        reason.contains(&listed.display().to_string()) && reason.contains("not valid UTF-8"),
        "{reason}"
    );
    let warnings = logs.warnings("bad\u{fffd}name.txt");
    assert_eq!(warnings.len(), 1, "{:?}", logs.warnings(""));
    assert!(warnings[0].contains("not valid UTF-8"), "{}", warnings[0]);

    // Once: neither the next listing nor a restart reports it again...
    let report = logs.capture(|| source.scan().unwrap());
    assert_eq!((report.dead_lettered, report.skipped.len()), (0, 1));
    let report = logs.capture(|| fx.source().scan().unwrap());
    assert_eq!((report.dead_lettered, report.skipped.len()), (0, 1));
    assert!(fx.sink.take().is_empty());
    assert_eq!(logs.warnings("bad\u{fffd}name.txt").len(), 1);

    // ...until it went away and came back.
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(source.scan().unwrap().skipped.len(), 0);
    assert!(fx.sink.take().is_empty(), "nothing to delete");
    std::fs::write(&bad, "back").unwrap();
    assert_eq!(source.scan().unwrap().dead_lettered, 1);
    assert_eq!(
        summary(&fx.sink.take()),
        [(DocumentOp::Reject, "bad\\xFFname.txt".to_owned())]
    );
}

#[test]
fn n6_paths_over_the_id_limit_are_dead_lettered() {
    let fx = Fixture::new();
    let root_len = fx.root.as_os_str().len();
    // The deep directory is reachable by path (under PATH_MAX); what is below it is not.
    assert!(
        root_len < 100,
        "temporary directory path too long: {root_len}"
    );
    let mut deep = vec!["d".repeat(250); 15];
    deep.push("e".repeat(185));
    let deep = deep.join("/");
    assert_eq!(deep.len(), 3950);
    fx.write(&format!("{deep}/ok.txt"), "within the limit");
    let long_name = format!("{}.txt", "f".repeat(196));
    let long_dir = "g".repeat(200);
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"cd "$1" && echo beyond > "$2" && mkdir "$3" && echo below > "$3/x.txt""#)
        .arg("sh")
        .arg(fx.path(&deep))
        .arg(&long_name)
        .arg(&long_dir)
        .status()
        .unwrap();
    assert!(status.success());

    let logs = Logs::default();
    let report = logs.capture(|| fx.source().scan().unwrap());
    assert_eq!((report.upserts, report.dead_lettered), (1, 2), "{report:?}");
    assert_eq!(report.skipped.len(), 2, "the summary counts them");
    let events = fx.sink.take();
    assert!(has(&events, DocumentOp::Upsert, &format!("{deep}/ok.txt")));
    let file_id = format!("{deep}/{long_name}");
    let file = events.iter().find(|e| e.doc_id == file_id).unwrap();
    assert_eq!(file.op, DocumentOp::Reject);
    assert!(file_id.len() > MAX_ID_BYTES);
    let reason = String::from_utf8(file.body.clone()).unwrap();
    assert!(reason.contains("over the limit of 4096"), "{reason}");
    let dir = events
        .iter()
        .find(|e| e.doc_id == format!("{deep}/{long_dir}"))
        .unwrap();
    assert_eq!(dir.op, DocumentOp::Reject);
    let reason = String::from_utf8(dir.body.clone()).unwrap();
    assert!(reason.contains("nothing under it is indexed"), "{reason}");
    assert_eq!(
        logs.warnings(&long_name).len(),
        1,
        "{:?}",
        logs.warnings("")
    );
    assert_eq!(logs.warnings(&long_dir).len(), 1, "{:?}", logs.warnings(""));
}
