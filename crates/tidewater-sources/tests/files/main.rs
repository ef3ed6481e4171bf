//! The file source against real temporary directories: listing, restart, watching,
//! odd files and a failing sink. Hostile file systems (races, unreachable names, the
//! watchdog) are in `hostile.rs`.

mod hostile;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tidewater_core::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};
use tidewater_core::{EventWriter, WriteError};
use tidewater_metrics::{Heartbeat, Watchdog};
use tidewater_sources::{FileSource, FilesConfig, SourceError};

/// Collects every delivered event; can be told to refuse batches.
#[derive(Default)]
struct CollectSink {
    events: Mutex<Vec<DocumentEvent>>,
    failing: AtomicBool,
}

impl EventWriter<DocumentEvent> for CollectSink {
    fn write(&self, events: Vec<DocumentEvent>) -> Result<(), WriteError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(WriteError::msg("log unavailable"));
        }
        self.events.lock().extend(events);
        Ok(())
    }
}

impl CollectSink {
    fn take(&self) -> Vec<DocumentEvent> {
        std::mem::take(&mut *self.events.lock())
    }

    /// Waits until the collected events satisfy `done`, then returns and clears them.
    fn wait_for(&self, what: &str, done: impl Fn(&[DocumentEvent]) -> bool) -> Vec<DocumentEvent> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let mut events = self.events.lock();
                if done(&events) {
                    return std::mem::take(&mut *events);
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {:?}",
                summary(&self.events.lock())
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `(op, doc_id)` of each event, for assertions and failure messages.
fn summary(events: &[DocumentEvent]) -> Vec<(DocumentOp, String)> {
    events.iter().map(|e| (e.op, e.doc_id.clone())).collect()
}

fn has(events: &[DocumentEvent], op: DocumentOp, doc_id: &str) -> bool {
    events.iter().any(|e| e.op == op && e.doc_id == doc_id)
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    sink: Arc<CollectSink>,
    watchdog: Watchdog,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("docs");
        std::fs::create_dir(&root).unwrap();
        let state = dir.path().join("state").join("files-docs.json");
        Self {
            _dir: dir,
            root,
            state,
            sink: Arc::new(CollectSink::default()),
            watchdog: Watchdog::default(),
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        self.watchdog.register("source files:docs")
    }

    fn config(&self) -> FilesConfig {
        FilesConfig::new(&self.root)
    }

    fn source(&self) -> FileSource {
        self.source_with(self.config())
    }

    fn source_with(&self, config: FilesConfig) -> FileSource {
        FileSource::new(
            config,
            self.state.clone(),
            self.sink.clone(),
            self.heartbeat(),
        )
        .unwrap()
    }

    fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

fn by_id(events: Vec<DocumentEvent>) -> BTreeMap<String, DocumentEvent> {
    events.into_iter().map(|e| (e.doc_id.clone(), e)).collect()
}

#[test]
fn scan_emits_included_files_only() {
    let fx = Fixture::new();
    fx.write("readme.md", "# Hello");
    fx.write("guides/intro.markdown", "intro");
    fx.write("notes.txt", "plain");
    fx.write("web/page.html", "<p>hi</p>");
    fx.write("image.png", [0x89, b'P', b'N', b'G']);
    fx.write(".hidden.md", "hidden");
    fx.write(".git/info.md", "git");
    fx.write("guides/.cache/x.txt", "cache");

    let source = fx.source();
    let report = source.scan().unwrap();
    assert_eq!(
        (report.upserts, report.deletes, report.unchanged),
        (4, 0, 0)
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);

    let events = by_id(fx.sink.take());
    let ids: Vec<&str> = events.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        [
            "guides/intro.markdown",
            "notes.txt",
            "readme.md",
            "web/page.html"
        ]
    );

    let readme = &events["readme.md"];
    assert_eq!(readme.op, DocumentOp::Upsert);
    assert_eq!(readme.source, "files:docs");
    assert_eq!(readme.format, DocumentFormat::Markdown);
    assert_eq!(readme.body, b"# Hello");
    assert_eq!(
        readme.content_hash.as_deref(),
        Some(content_hash(b"# Hello").as_str())
    );
    assert_eq!(readme.metadata["path"], "readme.md");
    assert_eq!(readme.metadata["source"], "files:docs");
    assert!(readme.observed_at_ms > 0);
    assert_eq!(
        events["guides/intro.markdown"].format,
        DocumentFormat::Markdown
    );
    assert_eq!(
        events["guides/intro.markdown"].metadata["path"],
        "guides/intro.markdown"
    );
    assert_eq!(events["notes.txt"].format, DocumentFormat::Text);
    assert_eq!(events["web/page.html"].format, DocumentFormat::Html);
}

#[test]
fn custom_name_and_globs_apply() {
    let fx = Fixture::new();
    fx.write("a.md", "a");
    fx.write("drafts/b.md", "b");
    fx.write("c.rst", "c");
    let mut config = fx.config();
    config.name = "handbook".into();
    config.include = vec!["**/*.md".into(), "*.rst".into()];
    config.exclude = vec!["drafts/**".into()];
    let source = fx.source_with(config);
    source.scan().unwrap();
    let events = by_id(fx.sink.take());
    assert_eq!(events.keys().collect::<Vec<_>>(), ["a.md", "c.rst"]);
    assert_eq!(events["a.md"].source, "files:handbook");
    assert_eq!(
        events["c.rst"].format,
        DocumentFormat::Text,
        "unknown extensions read as text"
    );
}

#[test]
fn unchanged_and_touched_files_emit_nothing_and_edits_emit_once() {
    let fx = Fixture::new();
    fx.write("a.md", "one");
    fx.write("b.md", "bee");
    let source = fx.source();
    source.scan().unwrap();
    assert_eq!(fx.sink.take().len(), 2);

    let report = source.scan().unwrap();
    assert_eq!(
        (report.upserts, report.deletes, report.unchanged),
        (0, 0, 2)
    );
    assert!(fx.sink.take().is_empty());

    // A touch: new mtime, same content.
    let file = std::fs::File::options()
        .write(true)
        .open(fx.path("a.md"))
        .unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(file);
    let report = source.scan().unwrap();
    assert_eq!((report.upserts, report.unchanged), (0, 2));
    assert!(fx.sink.take().is_empty());

    fx.write("a.md", "two");
    let report = source.scan().unwrap();
    assert_eq!(
        (report.upserts, report.deletes, report.unchanged),
        (1, 0, 1)
    );
    let events = fx.sink.take();
    assert_eq!(summary(&events), [(DocumentOp::Upsert, "a.md".to_owned())]);
    assert_eq!(
        events[0].content_hash.as_deref(),
        Some(content_hash(b"two").as_str())
    );
    assert_eq!(events[0].body, b"two");
}

#[test]
fn scan_trusts_size_and_mtime_of_files_hashed_well_after_their_mtime() {
    // The listing's cache: a same-size edit that also restores an old mtime (`cp -p`,
    // `rsync -t`) is invisible to a scan, as to rsync's quick check; the watcher re-reads
    // on every notification (see `watcher_rereads_files_the_cache_would_trust`).
    let fx = Fixture::new();
    fx.write("a.md", "aaa");
    let old = SystemTime::now() - Duration::from_secs(3600);
    let set_mtime = |fx: &Fixture| {
        let file = std::fs::File::options()
            .write(true)
            .open(fx.path("a.md"))
            .unwrap();
        file.set_modified(old).unwrap();
    };
    set_mtime(&fx);
    let source = fx.source();
    source.scan().unwrap();
    fx.sink.take();
    fx.write("a.md", "bbb");
    set_mtime(&fx);
    let report = source.scan().unwrap();
    assert_eq!((report.upserts, report.unchanged), (0, 1));
    // What the cache is for: the file was not read, yet the listing still knows its hash.
    assert_eq!(
        source.listing().unwrap(),
        [("a.md".to_owned(), content_hash(b"aaa"))]
    );
}

#[test]
fn scan_rereads_recently_written_files() {
    // A file hashed within moments of its mtime may have been rewritten in the same mtime
    // tick; the cache must not vouch for it, so an equal-size edit with an equal mtime is
    // still caught.
    let fx = Fixture::new();
    let mtime = SystemTime::now();
    let write = |content: &str| {
        fx.write("a.md", content);
        let file = std::fs::File::options()
            .write(true)
            .open(fx.path("a.md"))
            .unwrap();
        file.set_modified(mtime).unwrap();
    };
    write("aaa");
    let source = fx.source();
    source.scan().unwrap();
    fx.sink.take();
    write("bbb");
    let report = source.scan().unwrap();
    assert_eq!(report.upserts, 1);
    assert_eq!(fx.sink.take()[0].body, b"bbb");
}

#[test]
fn changes_while_down_are_emitted_on_restart() {
    let fx = Fixture::new();
    fx.write("keep.md", "keep");
    fx.write("edit.md", "before");
    fx.write("gone.md", "bye");
    fx.write("dir/gone-too.txt", "bye");
    fx.source().scan().unwrap();
    assert_eq!(fx.sink.take().len(), 4);

    std::fs::remove_file(fx.path("gone.md")).unwrap();
    std::fs::remove_dir_all(fx.path("dir")).unwrap();
    fx.write("edit.md", "after");
    fx.write("new.md", "new");

    let restarted = fx.source();
    let report = restarted.scan().unwrap();
    assert_eq!(
        (report.upserts, report.deletes, report.unchanged),
        (2, 2, 1)
    );
    let events = by_id(fx.sink.take());
    assert_eq!(events["gone.md"].op, DocumentOp::Delete);
    assert_eq!(events["gone.md"].source, "files:docs");
    assert!(events["gone.md"].body.is_empty());
    assert_eq!(events["gone.md"].content_hash, None);
    assert_eq!(events["dir/gone-too.txt"].op, DocumentOp::Delete);
    assert_eq!(events["edit.md"].body, b"after");
    assert_eq!(events["new.md"].op, DocumentOp::Upsert);
    assert!(!events.contains_key("keep.md"));

    // And the deletes are final: a third instance has nothing to say.
    let report = fx.source().scan().unwrap();
    assert_eq!((report.upserts, report.deletes), (0, 0));
}

#[test]
fn binary_and_invalid_utf8_files_are_emitted_raw() {
    let fx = Fixture::new();
    let binary: Vec<u8> = (0..=255).collect();
    fx.write("blob.txt", &binary);
    fx.write("latin1.md", b"caf\xe9");
    let report = fx.source().scan().unwrap();
    assert_eq!(report.upserts, 2);
    let events = by_id(fx.sink.take());
    assert_eq!(events["blob.txt"].body, binary);
    assert_eq!(
        events["blob.txt"].content_hash.as_deref(),
        Some(content_hash(&binary).as_str())
    );
    assert_eq!(events["latin1.md"].body, b"caf\xe9");
    assert_eq!(events["latin1.md"].format, DocumentFormat::Markdown);
}

#[test]
fn oversized_files_are_reported_not_emitted() {
    let fx = Fixture::new();
    fx.write("small.md", "ok");
    fx.write("big.md", vec![b'x'; 2048]);
    let mut config = fx.config();
    config.max_file_bytes = 1024;
    let source = fx.source_with(config);
    let report = source.scan().unwrap();
    assert_eq!(report.upserts, 1);
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert!(report.skipped[0].0.ends_with("big.md"));
    assert!(
        report.skipped[0].1.contains("max_file_bytes"),
        "{}",
        report.skipped[0].1
    );
    assert_eq!(
        summary(&fx.sink.take()),
        [(DocumentOp::Upsert, "small.md".to_owned())]
    );

    // A document that grows past the limit leaves the source rather than going stale.
    fx.write("small.md", vec![b'y'; 4096]);
    let report = source.scan().unwrap();
    assert_eq!(
        (report.upserts, report.deletes, report.skipped.len()),
        (0, 1, 2)
    );
    assert_eq!(
        summary(&fx.sink.take()),
        [(DocumentOp::Delete, "small.md".to_owned())]
    );
}

#[cfg(unix)]
#[test]
fn symlinks_are_not_followed() {
    let fx = Fixture::new();
    let outside = fx._dir.path().join("outside.md");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, fx.path("link.md")).unwrap();
    std::os::unix::fs::symlink(fx._dir.path(), fx.path("loop")).unwrap();
    fx.write("real.md", "real");
    let report = fx.source().scan().unwrap();
    assert_eq!(
        summary(&fx.sink.take()),
        [(DocumentOp::Upsert, "real.md".to_owned())]
    );
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert!(report.skipped[0].1.contains("symbolic link"));
}

#[test]
fn failing_sink_does_not_advance_the_state() {
    let fx = Fixture::new();
    fx.write("a.md", "a");
    fx.write("b.md", "b");
    let source = fx.source();
    fx.sink.failing.store(true, Ordering::SeqCst);
    let err = source.scan().unwrap_err();
    assert!(matches!(err, SourceError::Sink(_)), "{err}");
    assert!(fx.sink.take().is_empty());

    // Neither this instance nor a restarted one thinks the events were delivered.
    fx.sink.failing.store(false, Ordering::SeqCst);
    let report = source.scan().unwrap();
    assert_eq!(report.upserts, 2);
    fx.sink.take();

    std::fs::remove_file(fx.path("a.md")).unwrap();
    fx.sink.failing.store(true, Ordering::SeqCst);
    assert!(source.scan().is_err());
    fx.sink.failing.store(false, Ordering::SeqCst);
    let restarted = fx.source();
    let report = restarted.scan().unwrap();
    assert_eq!((report.upserts, report.deletes), (0, 1));
    assert_eq!(
        summary(&fx.sink.take()),
        [(DocumentOp::Delete, "a.md".to_owned())]
    );
}

#[test]
fn large_listings_are_sent_in_batches() {
    #[derive(Default)]
    struct Sizes(Mutex<Vec<usize>>);
    impl EventWriter<DocumentEvent> for Sizes {
        fn write(&self, events: Vec<DocumentEvent>) -> Result<(), WriteError> {
            self.0.lock().push(events.len());
            Ok(())
        }
    }
    let fx = Fixture::new();
    for i in 0..600 {
        fx.write(&format!("d{}/f{i}.txt", i % 7), format!("doc {i}"));
    }
    let sizes = Arc::new(Sizes::default());
    let source =
        FileSource::new(fx.config(), fx.state.clone(), sizes.clone(), fx.heartbeat()).unwrap();
    assert_eq!(source.scan().unwrap().upserts, 600);
    let sizes = sizes.0.lock().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 600);
    assert!(sizes.iter().all(|&n| n <= 256), "{sizes:?}");
}

#[test]
fn listing_reports_what_is_on_disk() {
    let fx = Fixture::new();
    fx.write("a.md", "a");
    fx.write("sub/b.txt", "b");
    fx.write("skip.png", "x");
    let source = fx.source();
    source.scan().unwrap();
    fx.write("c.md", "c");
    std::fs::remove_file(fx.path("a.md")).unwrap();
    let listing = source.listing().unwrap();
    assert_eq!(
        listing,
        [
            ("c.md".to_owned(), content_hash(b"c")),
            ("sub/b.txt".to_owned(), content_hash(b"b")),
        ]
    );
    assert!(fx.sink.take().len() == 2, "listing emits nothing");
}

#[test]
fn config_errors_are_reported() {
    let fx = Fixture::new();
    let mut config = fx.config();
    config.include = vec!["[".into()];
    let err =
        FileSource::new(config, fx.state.clone(), fx.sink.clone(), fx.heartbeat()).unwrap_err();
    assert!(matches!(err, SourceError::InvalidGlob { .. }), "{err}");

    let config = FilesConfig::new(fx.root.join("missing"));
    let err =
        FileSource::new(config, fx.state.clone(), fx.sink.clone(), fx.heartbeat()).unwrap_err();
    assert!(matches!(err, SourceError::Root { .. }), "{err}");
}

/// A running source and the thread it runs on.
struct Running {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Result<(), SourceError>>>,
}

impl Running {
    fn start(source: FileSource) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let source = Arc::new(source);
        let handle = thread::spawn({
            let stop = stop.clone();
            move || source.run(stop)
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.join().unwrap().unwrap();
        }
        started.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn watching_config(fx: &Fixture) -> FilesConfig {
    let mut config = fx.config();
    // Long enough that only the watcher can explain what the tests observe.
    config.relist_interval = Duration::from_secs(3600);
    config
}

#[test]
fn watcher_sees_creates_edits_renames_and_deletes() {
    let fx = Fixture::new();
    fx.write("existing.md", "there before");
    let running = Running::start(fx.source_with(watching_config(&fx)));
    fx.sink.wait_for("the initial listing", |e| {
        has(e, DocumentOp::Upsert, "existing.md")
    });

    fx.write("new.md", "v1");
    let events = fx
        .sink
        .wait_for("create", |e| has(e, DocumentOp::Upsert, "new.md"));
    assert_eq!(events.last().unwrap().body, b"v1");

    fx.write("new.md", "v2 longer");
    let events = fx.sink.wait_for("edit", |e| {
        e.iter()
            .any(|e| e.doc_id == "new.md" && e.body == b"v2 longer")
    });
    assert!(
        events.iter().all(|e| e.op == DocumentOp::Upsert),
        "{:?}",
        summary(&events)
    );
    assert_eq!(
        events.last().unwrap().content_hash.as_deref(),
        Some(content_hash(b"v2 longer").as_str())
    );

    std::fs::rename(fx.path("new.md"), fx.path("renamed.md")).unwrap();
    let events = fx.sink.wait_for("rename", |e| {
        has(e, DocumentOp::Delete, "new.md") && has(e, DocumentOp::Upsert, "renamed.md")
    });
    assert_eq!(events.len(), 2, "{:?}", summary(&events));

    std::fs::remove_file(fx.path("renamed.md")).unwrap();
    let events = fx
        .sink
        .wait_for("delete", |e| has(e, DocumentOp::Delete, "renamed.md"));
    assert_eq!(events.len(), 1, "{:?}", summary(&events));

    // A file moved in from outside the root, and one moved out.
    let outside = fx._dir.path().join("outside.md");
    std::fs::write(&outside, "from outside").unwrap();
    std::fs::rename(&outside, fx.path("moved-in.md")).unwrap();
    fx.sink
        .wait_for("move in", |e| has(e, DocumentOp::Upsert, "moved-in.md"));
    std::fs::rename(fx.path("moved-in.md"), &outside).unwrap();
    fx.sink
        .wait_for("move out", |e| has(e, DocumentOp::Delete, "moved-in.md"));

    // Hidden editor files stay out.
    fx.write(".new.md.swp", "swap");
    fx.write("later.md", "later");
    let events = fx
        .sink
        .wait_for("a later create", |e| has(e, DocumentOp::Upsert, "later.md"));
    assert_eq!(events.len(), 1, "{:?}", summary(&events));

    assert!(running.stop() < Duration::from_secs(2));
}

#[test]
fn watcher_handles_directories() {
    let fx = Fixture::new();
    let running = Running::start(fx.source_with(watching_config(&fx)));
    // Let the watcher and the (empty) initial listing settle.
    thread::sleep(Duration::from_millis(200));

    // A directory created with files in it: some may land before its watch exists.
    std::fs::create_dir(fx.path("guides")).unwrap();
    fx.write("guides/a.md", "a");
    fx.write("guides/deep/b.md", "b");
    fx.sink.wait_for("new directory", |e| {
        has(e, DocumentOp::Upsert, "guides/a.md") && has(e, DocumentOp::Upsert, "guides/deep/b.md")
    });

    std::fs::rename(fx.path("guides"), fx.path("manuals")).unwrap();
    let events = fx.sink.wait_for("directory rename", |e| {
        ["guides/a.md", "guides/deep/b.md"]
            .iter()
            .all(|id| has(e, DocumentOp::Delete, id))
            && ["manuals/a.md", "manuals/deep/b.md"]
                .iter()
                .all(|id| has(e, DocumentOp::Upsert, id))
    });
    assert_eq!(events.len(), 4, "{:?}", summary(&events));

    // The renamed directory is still watched.
    fx.write("manuals/deep/b.md", "b2");
    fx.sink.wait_for("edit in renamed directory", |e| {
        e.iter()
            .any(|e| e.doc_id == "manuals/deep/b.md" && e.body == b"b2")
    });

    std::fs::remove_dir_all(fx.path("manuals")).unwrap();
    fx.sink.wait_for("directory delete", |e| {
        has(e, DocumentOp::Delete, "manuals/a.md")
            && has(e, DocumentOp::Delete, "manuals/deep/b.md")
    });

    running.stop();
}

#[test]
fn watcher_rereads_files_the_cache_would_trust() {
    let fx = Fixture::new();
    fx.write("a.md", "aaa");
    let old = SystemTime::now() - Duration::from_secs(3600);
    let set_mtime = || {
        let file = std::fs::File::options()
            .write(true)
            .open(fx.path("a.md"))
            .unwrap();
        file.set_modified(old).unwrap();
    };
    set_mtime();
    let running = Running::start(fx.source_with(watching_config(&fx)));
    fx.sink.wait_for("the initial listing", |e| {
        has(e, DocumentOp::Upsert, "a.md")
    });
    fx.write("a.md", "bbb");
    set_mtime();
    fx.sink
        .wait_for("same-size edit", |e| e.iter().any(|e| e.body == b"bbb"));
    running.stop();
}

#[test]
fn run_relists_to_catch_what_the_watcher_missed() {
    let fx = Fixture::new();
    let mut config = fx.config();
    config.relist_interval = Duration::from_millis(300);
    let running = Running::start(fx.source_with(config));
    thread::sleep(Duration::from_millis(100));
    // Losing a notification is hard to arrange; losing a watcher pass is not: the sink
    // refuses it, and only the retry by a full listing can deliver the file.
    fx.sink.failing.store(true, Ordering::SeqCst);
    fx.write("a.md", "a");
    thread::sleep(Duration::from_millis(500));
    fx.sink.failing.store(false, Ordering::SeqCst);
    fx.sink
        .wait_for("retry by listing", |e| has(e, DocumentOp::Upsert, "a.md"));
    running.stop();
}

#[test]
fn run_stops_promptly() {
    let fx = Fixture::new();
    fx.write("a.md", "a");
    let running = Running::start(fx.source_with(watching_config(&fx)));
    fx.sink.wait_for("the initial listing", |e| {
        has(e, DocumentOp::Upsert, "a.md")
    });
    assert!(running.stop() < Duration::from_secs(2));
}

#[test]
fn resend_emits_current_content_whatever_was_delivered() {
    let fx = Fixture::new();
    fx.write("a.md", "alpha");
    fx.write("b.md", "beta");
    let source = fx.source();
    source.scan().unwrap();
    fx.sink.take();

    let report = source
        .resend(&["a.md".to_owned(), "gone.md".to_owned()])
        .unwrap();
    assert_eq!((report.upserts, report.deletes), (1, 0));
    let events = fx.sink.take();
    assert_eq!(
        summary(&events),
        vec![(DocumentOp::Upsert, "a.md".to_owned())]
    );
    assert_eq!(events[0].body, b"alpha");
    // The state is as before: a scan finds nothing to emit.
    assert_eq!(source.scan().unwrap().upserts, 0);
    assert!(fx.sink.take().is_empty());
}
