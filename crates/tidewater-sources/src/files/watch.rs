//! [`FileSource::run`]: the watcher loop. File-system notifications are gathered for
//! `debounce`, then the paths they name are re-checked; every `relist_interval` (and
//! whenever notifications may have been lost) the whole tree is listed again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tidewater_core::time::now_ms;

use super::error::{ErrorChain, SourceError};
use super::source::FileSource;

/// Longest time the loop waits without looking at the stop signal.
const STOP_POLL: Duration = Duration::from_millis(100);
/// First delay before retrying after a failed pass; doubles up to `relist_interval`.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Past this many distinct paths in one debounce window (a burst: a checkout, an
/// unpacked archive) one listing is cheaper than re-checking each, and memory stays bounded.
const MAX_GATHERED: usize = 10_000;

type Notifications = Receiver<notify::Result<Event>>;

impl FileSource {
    /// Watches the root until `stop` is raised; blocking, so run it on its own thread.
    ///
    /// Starts a recursive watcher, lists the whole tree once (changes made before the
    /// watcher started are caught there), then re-checks the paths of every batch of
    /// notifications and re-lists every `relist_interval`. A failed pass (the sink is down,
    /// the root vanished) is logged and retried with a growing delay by a full listing,
    /// which re-emits whatever was not acknowledged. Returns within about 100 ms of `stop`
    /// (plus the file being read at that moment), or with an error if the watcher cannot
    /// be started (the heartbeat then reports the source failed).
    pub fn run(self: Arc<Self>, stop: Arc<AtomicBool>) -> Result<(), SourceError> {
        let (tx, rx) = mpsc::channel();
        let watcher = self.watch(tx.clone()).inspect_err(|err| {
            // The source stops here: the watchdog shows it failed, not idle.
            self.heartbeat().fail(ErrorChain(err));
        })?;
        let mut watcher = Some(watcher);
        let mut next_listing = Instant::now();
        let mut failures = 0u32;
        let mut gathered: HashMap<PathBuf, i64> = HashMap::new();
        let mut gathering_since: Option<Instant> = None;

        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut wake = next_listing.min(now + STOP_POLL);
            if let Some(since) = gathering_since {
                wake = wake.min(since + self.config().debounce);
            }
            let mut lost = false;
            let mut root_gone = false;
            receive(
                &rx,
                wake.saturating_duration_since(now),
                |event| match event {
                    Ok(event) => {
                        let received = now_ms();
                        if event.need_rescan() {
                            lost = true;
                        }
                        if !is_relevant(&event.kind) {
                            return;
                        }
                        for path in event.paths {
                            if path == self.root() {
                                // The root itself was removed, renamed or changed: only a
                                // full listing can tell what that means for its documents.
                                lost = true;
                                root_gone |= matches!(
                                    event.kind,
                                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                                );
                            } else {
                                gathered.entry(path).or_insert(received);
                            }
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, root = %self.root().display(), "file watcher error; re-listing");
                        lost = true;
                    }
                },
            );
            if root_gone {
                // Its watches died with it; a new watcher is started once it is back.
                watcher = None;
            }
            if lost {
                next_listing = Instant::now();
            }
            if !gathered.is_empty() && gathering_since.is_none() {
                gathering_since = Some(Instant::now());
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }

            if gathered.len() > MAX_GATHERED {
                next_listing = Instant::now();
            }

            let now = Instant::now();
            if now >= next_listing {
                if watcher.is_none() {
                    watcher = self.rewatch(&tx);
                }
                // The listing covers every gathered path.
                gathered.clear();
                gathering_since = None;
                next_listing = match self.scan_until(Some(&stop)) {
                    Ok(report) => {
                        failures = 0;
                        if report.upserts + report.deletes > 0 {
                            tracing::info!(
                                source = self.source_name(),
                                upserts = report.upserts,
                                deletes = report.deletes,
                                unchanged = report.unchanged,
                                skipped = report.skipped.len(),
                                "listing emitted changes"
                            );
                        }
                        Instant::now() + self.config().relist_interval
                    }
                    Err(err) => self.retry_at("listing", &err, &mut failures),
                };
            } else if gathering_since.is_some_and(|since| now >= since + self.config().debounce) {
                let mut paths: Vec<(PathBuf, i64)> = gathered.drain().collect();
                paths.sort();
                gathering_since = None;
                if let Err(err) = self.sync_paths(&paths, Some(&stop)) {
                    next_listing =
                        next_listing.min(self.retry_at("watched paths", &err, &mut failures));
                }
            }
        }
        drop(watcher);
        // Stopped on request: nothing left to do, whatever the last pass left behind.
        self.heartbeat().idle();
        Ok(())
    }

    /// Starts a recursive watcher on the root that forwards into `tx`.
    fn watch(
        &self,
        tx: mpsc::Sender<notify::Result<Event>>,
    ) -> Result<RecommendedWatcher, SourceError> {
        let watch_error = |source| SourceError::Watch {
            path: self.root().to_owned(),
            source,
        };
        let mut watcher = notify::recommended_watcher(tx).map_err(watch_error)?;
        watcher
            .watch(self.root(), RecursiveMode::Recursive)
            .map_err(watch_error)?;
        Ok(watcher)
    }

    /// Restarts the watcher after the root came back; until it can, re-listing alone
    /// keeps the source current.
    fn rewatch(&self, tx: &mpsc::Sender<notify::Result<Event>>) -> Option<RecommendedWatcher> {
        match self.watch(tx.clone()) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!(error = %ErrorChain(&err), "cannot watch the file source root yet; relying on re-listing");
                None
            }
        }
    }

    /// Logs a failed pass and says when to retry it by a full listing.
    fn retry_at(&self, what: &str, err: &SourceError, failures: &mut u32) -> Instant {
        let delay = RETRY_MIN
            .saturating_mul(1u32 << (*failures).min(16))
            .min(self.config().relist_interval);
        *failures = failures.saturating_add(1);
        tracing::warn!(source = self.source_name(), error = %ErrorChain(err), retry_in = ?delay, "file source {what} failed; retrying with a full listing");
        Instant::now() + delay
    }
}

/// Waits up to `timeout` for a notification, then takes those already queued (a bounded
/// number, so that a flood of notifications cannot keep the loop from its other work).
fn receive(rx: &Notifications, timeout: Duration, mut handle: impl FnMut(notify::Result<Event>)) {
    match rx.recv_timeout(timeout) {
        Ok(event) => handle(event),
        // The loop holds a sender, so the channel never disconnects while it runs.
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
    }
    for event in rx.try_iter().take(MAX_GATHERED) {
        handle(event);
    }
}

/// Whether a notification may mean a document changed. Opening and reading do not; a
/// close after writing does (the last write of a slow writer may come after the
/// debounce window closed on its first).
fn is_relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}
