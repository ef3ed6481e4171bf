//! [`FileSource`]: compares what is on disk with what was last delivered and emits the
//! difference, for a full listing ([`FileSource::scan`]) or for the paths a watcher
//! reported (see `watch.rs`).
//!
//! The source reports to the watchdog through its [`Heartbeat`]: working during a pass,
//! progressing with each file handled and each batch the sink acknowledges, idle between
//! passes. While the sink refuses batches only an acknowledged batch counts as progress,
//! so a sink that stays down shows as a stalled source.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::Metadata;
use std::io::{self, Read};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tidewater_core::document::MAX_ID_BYTES;
use tidewater_core::time::now_ms;
use tidewater_core::{content_hash, DocumentEvent, DocumentFormat, DocumentOp, RetryHint};
use tidewater_metrics::Heartbeat;

use super::config::FilesConfig;
use super::error::{ErrorChain, SourceError};
use super::filter::PathFilter;
use super::state::{mtime_ns, FileRecord, SourceState};
use super::walk::{walk, Rejected, WalkOutcome};
use tidewater_core::EventWriter;

/// At most this many events go to the sink in one call.
const BATCH_MAX_EVENTS: usize = 256;
/// A batch is also sent once its bodies reach this size, so a listing of large files
/// holds a bounded amount of content in memory.
const BATCH_MAX_BYTES: usize = 32 * 1024 * 1024;

/// What one pass (a full listing, or the paths of one watcher batch) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanReport {
    /// Documents created or changed (an `Upsert` each).
    pub upserts: usize,
    /// Documents removed (a `Delete` each).
    pub deletes: usize,
    /// Included files whose content is what was last delivered.
    pub unchanged: usize,
    /// Paths that look like documents but were not emitted, with the reason (too large,
    /// unreadable, a symbolic link, a name that is not UTF-8, a path too long for an id).
    pub skipped: Vec<(PathBuf, String)>,
    /// Files (and directories) that cannot have a document id — a name that is not UTF-8,
    /// a relative path longer than [`MAX_ID_BYTES`] — newly reported to the dead-letter
    /// topic by this pass. Each is reported once while it stays as it is, and counted in
    /// `skipped` by every pass.
    pub dead_lettered: usize,
}

/// Turns one folder into document events; see the [module docs](super).
pub struct FileSource {
    config: FilesConfig,
    /// The configured root, canonicalised: watcher events carry paths under it.
    root: PathBuf,
    source_name: String,
    filter: PathFilter,
    state_path: PathBuf,
    sink: Arc<dyn EventWriter<DocumentEvent>>,
    /// Held for a whole pass, so passes never interleave and the events of one document
    /// reach the sink in the order its versions were observed.
    state: Mutex<SourceState>,
    /// The source's entry in the watchdog.
    heartbeat: Heartbeat,
    /// The last batch sent was refused: until one is acknowledged, reading files again is
    /// no progress.
    sink_failing: AtomicBool,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("source", &self.source_name)
            .field("root", &self.root)
            .field("state_path", &self.state_path)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// A source over `config.root` that delivers to `sink`, remembers what it delivered
    /// in `state_path` (created on first use; its directory is created if missing) and
    /// reports its progress through `heartbeat` (see the [module docs](self)).
    ///
    /// Fails if a glob is invalid, the root is not a readable directory, or an existing
    /// state file cannot be read.
    pub fn new(
        config: FilesConfig,
        state_path: PathBuf,
        sink: Arc<dyn EventWriter<DocumentEvent>>,
        heartbeat: Heartbeat,
    ) -> Result<Self, SourceError> {
        if config.name.is_empty() {
            return Err(SourceError::InvalidConfig {
                reason: "name must not be empty".to_owned(),
            });
        }
        if config.relist_interval.is_zero() {
            return Err(SourceError::InvalidConfig {
                reason: "relist_interval must be greater than zero".to_owned(),
            });
        }
        let filter = PathFilter::new(&config.include, &config.exclude)?;
        let root = fs_err::canonicalize(&config.root).map_err(|source| SourceError::Root {
            path: config.root.clone(),
            source,
        })?;
        if !root.is_dir() {
            return Err(SourceError::RootNotADirectory { path: root });
        }
        if let Some(parent) = state_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs_err::create_dir_all(parent).map_err(|source| SourceError::StateWrite {
                path: state_path.clone(),
                source,
            })?;
        }
        let state = SourceState::load(&state_path)?;
        Ok(Self {
            source_name: config.source_name(),
            config,
            root,
            filter,
            state_path,
            sink,
            state: Mutex::new(state),
            heartbeat,
            sink_failing: AtomicBool::new(false),
        })
    }

    /// The configuration this source runs with.
    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    /// The root folder, canonicalised.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `source` of every event: `files:<name>`.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Lists the whole tree and emits what differs from what was last delivered: an
    /// `Upsert` per new or changed file (changed = different content hash; a touch emits
    /// nothing), a `Delete` per delivered document no longer present. Files whose size
    /// and mtime match the state are not re-read.
    ///
    /// On a sink error the state is not advanced past the failed batch: the next scan
    /// emits those events again.
    pub fn scan(&self) -> Result<ScanReport, SourceError> {
        self.scan_until(None)
    }

    /// [`FileSource::scan`] that gives up between two files once `stop` is raised, then
    /// delivers what it already read and emits no deletions (its listing is incomplete).
    pub(crate) fn scan_until(&self, stop: Option<&AtomicBool>) -> Result<ScanReport, SourceError> {
        let root = self.root.clone();
        self.with_pass(|pass| pass.sync_scope(&root, "", None, stop))
    }

    /// Re-checks paths reported by the watcher, each with the time its notification
    /// arrived: a file is re-read (no trust in size and mtime, the notification says it
    /// changed), a directory is listed, and known documents at or under a path that is
    /// gone are deleted.
    /// Stops early once `stop` is raised; what was not re-checked is caught by the
    /// listing that starts the next run.
    pub(crate) fn sync_paths(
        &self,
        paths: &[(PathBuf, i64)],
        stop: Option<&AtomicBool>,
    ) -> Result<ScanReport, SourceError> {
        self.with_pass(|pass| {
            for (path, observed_at) in paths {
                if stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
                    break;
                }
                let Some(id) = super::relative_doc_id(&self.root, path) else {
                    // Not UTF-8: the next listing reports it.
                    continue;
                };
                if id.len() > MAX_ID_BYTES {
                    // Too long to be read by path anyway; the next listing reports it.
                    continue;
                }
                pass.sync_scope(path, &id, Some(*observed_at), stop)?;
            }
            Ok(())
        })
    }

    /// Emits the current content of each document in `doc_ids` again, whatever the state
    /// says was delivered (a document no longer on disk emits nothing): for repairing a downstream
    /// store that lost or garbled it, as reconcile does.
    pub fn resend(&self, doc_ids: &[String]) -> Result<ScanReport, SourceError> {
        {
            let mut state = self.state.lock();
            for id in doc_ids {
                // Forgetting the record makes the re-check below treat the file as new.
                if state.docs.remove(id).is_some() {
                    state.dirty = true;
                }
            }
        }
        let observed = now_ms();
        let paths: Vec<(PathBuf, i64)> = doc_ids
            .iter()
            .map(|id| (self.root.join(id), observed))
            .collect();
        self.sync_paths(&paths, None)
    }

    /// What is on disk now: `(doc_id, content hash)` of every included file, sorted by id,
    /// for reconciling downstream stores against the source. Files whose size and mtime
    /// match the state are not re-read. Emits nothing and changes no state; unreadable
    /// files keep the hash last delivered, as a scan keeps them.
    pub fn listing(&self) -> Result<Vec<(String, String)>, SourceError> {
        let known = self.state.lock().docs.clone();
        let max = self.config.max_file_bytes;
        let mut listed = Vec::new();
        let outcome = walk(&self.root, "", &self.filter, None, |path, id, meta| {
            let known_record = known.get(id);
            let hash = match observe(path, Some(meta), known_record, max) {
                Observed::Cached => known_record.map(|r| r.hash.clone()),
                Observed::Read { record, .. } => Some(record.hash),
                Observed::Unreadable(_) => known_record.map(|r| r.hash.clone()),
                Observed::Gone | Observed::NotRegular | Observed::Oversized { .. } => None,
            };
            if let Some(hash) = hash {
                listed.push((id.to_owned(), hash));
            }
            Ok(())
        })?;
        for dir in &outcome.unreadable_dirs {
            listed.extend(
                known_under(&known, dir).map(|(id, record)| (id.clone(), record.hash.clone())),
            );
        }
        listed.sort();
        Ok(listed)
    }

    /// Runs `body` as one pass under the state lock, delivers its last batch, and persists
    /// the state if the sink acknowledged anything — also when a later batch failed, so
    /// acknowledged work is not repeated needlessly.
    ///
    /// The heartbeat is working during the pass and idle after a pass that succeeded. A
    /// failed pass leaves it working (the caller retries; without progress it stalls), or
    /// failed if retrying cannot help.
    fn with_pass(
        &self,
        body: impl FnOnce(&mut Pass<'_>) -> Result<(), SourceError>,
    ) -> Result<ScanReport, SourceError> {
        let mut state = self.state.lock();
        self.heartbeat.working();
        let mut pass = Pass {
            source: self,
            state: &mut state,
            batch: Vec::new(),
            batch_bytes: 0,
            pending: HashMap::new(),
            pending_rejections: Vec::new(),
            seen_rejections: HashSet::new(),
            seen_oversized: HashSet::new(),
            report: ScanReport::default(),
        };
        let outcome = body(&mut pass).and_then(|()| pass.flush());
        let report = std::mem::take(&mut pass.report);
        let persisted = if state.dirty {
            state.persist(&self.state_path, &self.source_name, &self.root)
        } else {
            Ok(())
        };
        let result = match (outcome, persisted) {
            (Ok(()), Ok(())) => Ok(report),
            (Ok(()), Err(err)) => Err(err),
            (Err(err), persisted) => {
                if let Err(persist_err) = persisted {
                    tracing::warn!(error = %ErrorChain(&persist_err), "cannot persist file source state after a failed pass");
                }
                Err(err)
            }
        };
        match &result {
            Ok(_) => self.heartbeat.idle(),
            Err(err) if err.retry_hint() == RetryHint::Fatal => {
                self.heartbeat.fail(ErrorChain(err));
            }
            Err(_) => {}
        }
        result
    }

    /// The source's entry in the watchdog.
    pub(crate) fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// The metadata every event of `doc_id` carries, so search can filter on it.
    fn metadata(&self, doc_id: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut metadata = serde_json::Map::new();
        metadata.insert("path".to_owned(), doc_id.into());
        metadata.insert("source".to_owned(), self.source_name.clone().into());
        metadata
    }
}

/// The records at or under `scope` (every record for the empty scope).
fn known_under<'a, V>(
    docs: &'a BTreeMap<String, V>,
    scope: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    docs.range::<str, _>((Bound::Included(scope), Bound::Unbounded))
        .take_while(move |(id, _)| id.starts_with(scope))
        .filter(move |(id, _)| is_under(id, scope))
}

/// Whether `id` is `scope` or lies below it (everything lies below the empty scope).
fn is_under(id: &str, scope: &str) -> bool {
    scope.is_empty()
        || id
            .strip_prefix(scope)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What reading one file found.
enum Observed {
    /// Read and hashed now.
    Read { body: Vec<u8>, record: FileRecord },
    /// Size and mtime match the record, which vouches for its hash.
    Cached,
    /// No longer there.
    Gone,
    /// Replaced by something that is not a regular file (a FIFO, a socket, a device, a
    /// symbolic link) since it was listed.
    NotRegular,
    /// Larger than `max_file_bytes`: `size` as reported, and the (size, mtime) it had
    /// when opened, which tells whether it changed since it was last reported.
    Oversized { size: u64, seen: (u64, i64) },
    /// There but cannot be read (permissions, I/O error).
    Unreadable(io::Error),
}

/// Reads `path` unless `cached` vouches for its listed `meta`.
fn observe(
    path: &Path,
    meta: Option<&Metadata>,
    cached: Option<&FileRecord>,
    max: u64,
) -> Observed {
    if let (Some(meta), Some(cached)) = (meta, cached) {
        if cached.vouches_for(meta.len(), mtime_ns(meta)) {
            return Observed::Cached;
        }
    }
    let file = match open_without_blocking(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Observed::Gone,
        Err(err) if is_not_a_regular_file(&err) => return Observed::NotRegular,
        Err(err) => return Observed::Unreadable(err),
    };
    // Size and mtime from the open handle, taken before reading: if the file changes
    // while being read, the next listing sees a different (size, mtime) and reads again.
    let opened = match file.metadata() {
        Ok(meta) => meta,
        Err(err) => return Observed::Unreadable(err),
    };
    // The type of what was opened, not of what was listed: anything may have been
    // renamed onto the path in between.
    if !opened.is_file() {
        return Observed::NotRegular;
    }
    let seen = (opened.len(), mtime_ns(&opened));
    if opened.len() > max {
        return Observed::Oversized {
            size: opened.len(),
            seen,
        };
    }
    let verified_at_ms = now_ms();
    let mut body = Vec::with_capacity(usize::try_from(opened.len()).unwrap_or(0));
    // One byte past the limit tells a file that grew since the stat from one that did not.
    // A file truncated meanwhile just reads short; either way its (size, mtime) now
    // differs from the record's, so the next listing reads it again.
    if let Err(err) = file.take(max.saturating_add(1)).read_to_end(&mut body) {
        return Observed::Unreadable(err);
    }
    let size = body.len() as u64;
    if size > max {
        return Observed::Oversized { size, seen };
    }
    Observed::Read {
        record: FileRecord {
            hash: content_hash(&body),
            size: opened.len(),
            mtime_ns: mtime_ns(&opened),
            verified_at_ms,
        },
        body,
    }
}

/// Opens `path` for reading such that the call cannot block and does not follow a
/// symbolic link: what was listed as a regular file may since have been replaced.
///
/// The error is std's, not `fs_err`'s: the caller tells errors apart by their OS code,
/// which `fs_err` hides, and names the path itself.
fn open_without_blocking(path: &Path) -> io::Result<fs_err::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, forever.
        // Reading a regular file ignores the flag. O_NOFOLLOW: a symbolic link in the last
        // component fails the open (ELOOP) instead of leading out of the root.
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let file = options.open(path)?;
    Ok(fs_err::File::from_parts(file, path))
}

/// Whether opening failed because the path is not a regular file: a symbolic link
/// (`O_NOFOLLOW`) or a socket.
fn is_not_a_regular_file(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENXIO))
    }
    #[cfg(not(unix))]
    {
        let _ = err;
        false
    }
}

/// One pass: the events it has produced but not yet delivered, and what the state will
/// be once they are.
struct Pass<'a> {
    source: &'a FileSource,
    state: &'a mut SourceState,
    batch: Vec<DocumentEvent>,
    batch_bytes: usize,
    /// Records the undelivered batch sets once acknowledged (`None`: removes); they take
    /// precedence over `state` when the pass compares.
    pending: HashMap<String, Option<FileRecord>>,
    /// Rejections (id, reason) the undelivered batch reports; remembered once acknowledged.
    pending_rejections: Vec<(String, String)>,
    /// Ids of the rejections this pass came across.
    seen_rejections: HashSet<String>,
    /// Ids of the oversized files this pass came across.
    seen_oversized: HashSet<String>,
    report: ScanReport,
}

impl Pass<'_> {
    /// The record of `id` as it will be once the current batch is delivered.
    fn current(&self, id: &str) -> Option<&FileRecord> {
        match self.pending.get(id) {
            Some(record) => record.as_ref(),
            None => self.state.docs.get(id),
        }
    }

    /// Brings everything at or under `id` (the whole tree for the empty id) up to date:
    /// a directory is listed, a file checked, and known documents that were not found
    /// deleted — except under directories that could not be listed.
    ///
    /// `observed_at` is the watcher's notification time, or `None` in a full listing
    /// (each file then counts as observed when it is read). `stop` aborts a listing; an
    /// aborted listing deletes nothing.
    fn sync_scope(
        &mut self,
        path: &Path,
        id: &str,
        observed_at: Option<i64>,
        stop: Option<&AtomicBool>,
    ) -> Result<(), SourceError> {
        let source = self.source;
        let mut seen = HashSet::new();
        let mut unreadable = Vec::new();
        if id.is_empty() {
            let outcome = walk(path, id, &source.filter, stop, |path, id, meta| {
                if self.check_file(path, id, Some(meta), observed_at)? {
                    seen.insert(id.to_owned());
                }
                Ok(())
            })?;
            match self.walked(outcome, observed_at)? {
                Some(dirs) => unreadable = dirs,
                None => return Ok(()),
            }
        } else if !excluded_with_ancestors(&source.filter, id) {
            match fs_err::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => {
                    let outcome = walk(path, id, &source.filter, stop, |path, id, meta| {
                        if self.check_file(path, id, Some(meta), observed_at)? {
                            seen.insert(id.to_owned());
                        }
                        Ok(())
                    })?;
                    match self.walked(outcome, observed_at)? {
                        Some(dirs) => unreadable = dirs,
                        None => return Ok(()),
                    }
                }
                Ok(meta) if meta.is_file() => {
                    // The notification says this file changed: read it whatever its
                    // size and mtime say.
                    if source.filter.includes_file(id)
                        && self.check_file(path, id, None, observed_at)?
                    {
                        seen.insert(id.to_owned());
                    }
                }
                // A symbolic link or special file is not a document (see `walk.rs`).
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot stat; its documents are kept as they were");
                    self.report
                        .skipped
                        .push((path.to_owned(), format!("cannot stat: {err}")));
                    unreadable.push(id.to_owned());
                }
            }
        }
        self.forget_resolved(id, &unreadable);
        self.sweep(id, &seen, &unreadable, observed_at)
    }

    /// Forgets the rejections and oversized files at or under `scope` that this pass did
    /// not come across (gone, or no longer a problem), so that they are reported afresh
    /// if they come back — except under directories that could not be listed.
    fn forget_resolved(&mut self, scope: &str, unreadable: &[String]) {
        let under_unreadable = |id: &str| unreadable.iter().any(|dir| is_under(id, dir));
        let resolved: Vec<String> = known_under(&self.state.rejected, scope)
            .map(|(id, _)| id)
            .filter(|id| !self.seen_rejections.contains(*id) && !under_unreadable(id))
            .cloned()
            .collect();
        if !resolved.is_empty() {
            for id in &resolved {
                self.state.rejected.remove(id);
            }
            self.state.dirty = true;
        }
        let resolved: Vec<String> = known_under(&self.state.oversized, scope)
            .map(|(id, _)| id)
            .filter(|id| !self.seen_oversized.contains(*id) && !under_unreadable(id))
            .cloned()
            .collect();
        for id in &resolved {
            self.state.oversized.remove(id);
        }
    }

    /// Takes in what a walk saw besides its files: reports its skips, dead-letters its
    /// rejections. Returns the directories it could not list, or `None` if it was aborted.
    fn walked(
        &mut self,
        outcome: WalkOutcome,
        observed_at: Option<i64>,
    ) -> Result<Option<Vec<String>>, SourceError> {
        self.report.skipped.extend(outcome.skipped);
        for rejected in outcome.rejected {
            self.reject(rejected, observed_at)?;
        }
        Ok((!outcome.aborted).then_some(outcome.unreadable_dirs))
    }

    /// Reports an entry that cannot become a document: in the pass's report every time,
    /// and once (until it changes or goes away) as a WARN and a `Reject` event, which the
    /// pipeline dead-letters with the reason.
    fn reject(&mut self, rejected: Rejected, observed_at: Option<i64>) -> Result<(), SourceError> {
        let Rejected { id, path, reason } = rejected;
        self.report.skipped.push((path.clone(), reason.clone()));
        self.seen_rejections.insert(id.clone());
        let reported = self.state.rejected.get(&id) == Some(&reason)
            || self
                .pending_rejections
                .iter()
                .any(|(pending, _)| *pending == id);
        if reported {
            return Ok(());
        }
        let source = self.source.source_name.as_str();
        tracing::warn!(source, path = %path.display(), reason, "not a document; sent to the dead-letter topic");
        let event = DocumentEvent {
            op: DocumentOp::Reject,
            format: format_of(&id),
            source: source.to_owned(),
            metadata: self.source.metadata(&id),
            content_hash: None,
            observed_at_ms: observed_at.unwrap_or_else(now_ms),
            body: format!("{source}: '{}' is not indexed: {reason}", path.display()).into_bytes(),
            doc_id: id.clone(),
        };
        self.report.dead_lettered += 1;
        self.pending_rejections.push((id, reason));
        self.push_event(event)
    }

    /// Checks one included file; returns whether it still counts as present (an
    /// unreadable file does: it is reported, and its document kept).
    fn check_file(
        &mut self,
        path: &Path,
        id: &str,
        meta: Option<&Metadata>,
        observed_at: Option<i64>,
    ) -> Result<bool, SourceError> {
        let max = self.source.config.max_file_bytes;
        let observed = observe(path, meta, self.current(id), max);
        if !self.source.sink_failing.load(Ordering::Relaxed) {
            self.source.heartbeat.progress();
        }
        match observed {
            Observed::Cached => {
                self.report.unchanged += 1;
                Ok(true)
            }
            Observed::Read { body, record } => {
                match self.current(id) {
                    Some(previous) if previous.hash == record.hash => {
                        // A touch: remember the new size and mtime so the next listing
                        // need not read the file again.
                        if !previous.vouches_for(record.size, record.mtime_ns) {
                            self.remember(id, record);
                        }
                        self.report.unchanged += 1;
                    }
                    _ => {
                        let event = DocumentEvent {
                            op: DocumentOp::Upsert,
                            doc_id: id.to_owned(),
                            source: self.source.source_name.clone(),
                            format: format_of(id),
                            metadata: self.source.metadata(id),
                            content_hash: Some(record.hash.clone()),
                            observed_at_ms: observed_at.unwrap_or(record.verified_at_ms),
                            body,
                        };
                        self.report.upserts += 1;
                        self.push(event, Some(record))?;
                    }
                }
                Ok(true)
            }
            Observed::Gone | Observed::NotRegular => Ok(false),
            Observed::Oversized { size, seen } => {
                self.seen_oversized.insert(id.to_owned());
                if self.state.oversized.insert(id.to_owned(), seen) != Some(seen) {
                    // Once per version of the file, not on every listing.
                    tracing::warn!(path = %path.display(), size, max, "file exceeds max_file_bytes; not emitted");
                }
                self.report.skipped.push((
                    path.to_owned(),
                    format!("{size} bytes exceeds max_file_bytes ({max})"),
                ));
                Ok(false)
            }
            Observed::Unreadable(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot read file; its document is kept as it was");
                self.report
                    .skipped
                    .push((path.to_owned(), format!("cannot read: {err}")));
                Ok(true)
            }
        }
    }

    /// Emits a `Delete` for every known document at or under `scope` that was not seen
    /// and does not lie under a directory that could not be listed.
    fn sweep(
        &mut self,
        scope: &str,
        seen: &HashSet<String>,
        unreadable: &[String],
        observed_at: Option<i64>,
    ) -> Result<(), SourceError> {
        let keep = |id: &str| seen.contains(id) || unreadable.iter().any(|dir| is_under(id, dir));
        let mut gone: Vec<String> = known_under(&self.state.docs, scope)
            .map(|(id, _)| id)
            .filter(|id| !self.pending.contains_key(*id) && !keep(id))
            .cloned()
            .collect();
        gone.extend(
            self.pending
                .iter()
                .filter(|(id, record)| record.is_some() && is_under(id, scope) && !keep(id))
                .map(|(id, _)| id.clone()),
        );
        gone.sort();
        let observed_at = observed_at.unwrap_or_else(now_ms);
        for id in gone {
            let event = DocumentEvent {
                op: DocumentOp::Delete,
                format: format_of(&id),
                source: self.source.source_name.clone(),
                metadata: self.source.metadata(&id),
                content_hash: None,
                observed_at_ms: observed_at,
                body: Vec::new(),
                doc_id: id,
            };
            self.report.deletes += 1;
            self.push(event, None)?;
        }
        Ok(())
    }

    /// Records a new size and mtime for a document whose content did not change.
    fn remember(&mut self, id: &str, record: FileRecord) {
        if let Some(pending) = self.pending.get_mut(id) {
            *pending = Some(record);
        } else {
            self.state.docs.insert(id.to_owned(), record);
            self.state.dirty = true;
        }
    }

    /// Adds the event of a document's new `record` (`None`: removed) to the batch.
    fn push(
        &mut self,
        event: DocumentEvent,
        record: Option<FileRecord>,
    ) -> Result<(), SourceError> {
        self.pending.insert(event.doc_id.clone(), record);
        self.push_event(event)
    }

    fn push_event(&mut self, event: DocumentEvent) -> Result<(), SourceError> {
        self.batch_bytes += event.body.len();
        self.batch.push(event);
        if self.batch.len() >= BATCH_MAX_EVENTS || self.batch_bytes >= BATCH_MAX_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Delivers the batch; only once the sink acknowledged does the state move on.
    fn flush(&mut self) -> Result<(), SourceError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let delivered = self.source.sink.write(events);
        let pending = std::mem::take(&mut self.pending);
        let rejections = std::mem::take(&mut self.pending_rejections);
        if let Err(err) = delivered {
            self.source.sink_failing.store(true, Ordering::Relaxed);
            return Err(err.into());
        }
        self.source.sink_failing.store(false, Ordering::Relaxed);
        self.source.heartbeat.progress();
        for (id, record) in pending {
            match record {
                Some(record) => self.state.docs.insert(id, record),
                None => self.state.docs.remove(&id),
            };
        }
        self.state.rejected.extend(rejections);
        self.state.dirty = true;
        Ok(())
    }
}

/// The format a document id's extension implies; plain text for extensions an
/// `include` glob admitted but Tidewater has no reader for.
fn format_of(id: &str) -> DocumentFormat {
    DocumentFormat::from_path(Path::new(id)).unwrap_or_default()
}

/// Whether `id` or one of the directories above it is excluded.
fn excluded_with_ancestors(filter: &PathFilter, id: &str) -> bool {
    id.match_indices('/')
        .map(|(at, _)| &id[..at])
        .chain(std::iter::once(id))
        .any(|prefix| filter.excludes_dir(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_themselves_and_their_subtrees() {
        assert!(is_under("a/b.md", ""));
        assert!(is_under("a", "a"));
        assert!(is_under("a/b.md", "a"));
        assert!(!is_under("ab/c.md", "a"));
        assert!(!is_under("a", "a/b"));
    }

    /// Observes `path` as a file listed with `listed`'s metadata, on a helper thread;
    /// `None` if the call never returns.
    #[cfg(unix)]
    fn observe_listed_as(path: &Path, listed: &Path) -> Option<Observed> {
        let listed = std::fs::symlink_metadata(listed).unwrap();
        let path = path.to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(observe(&path, Some(&listed), None, 1024));
        });
        rx.recv_timeout(std::time::Duration::from_secs(60)).ok()
    }

    #[cfg(unix)]
    #[test]
    fn h03_a_fifo_renamed_in_after_the_listing_is_not_opened_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("listed.txt");
        std::fs::write(&regular, "listed").unwrap();
        let fifo = dir.path().join("race.txt");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let observed = observe_listed_as(&fifo, &regular).expect("opening a FIFO blocked");
        assert!(matches!(observed, Observed::NotRegular));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_renamed_in_after_the_listing_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("listed.txt");
        std::fs::write(&regular, "listed").unwrap();
        let link = dir.path().join("race.txt");
        std::os::unix::fs::symlink(&regular, &link).unwrap();
        let observed = observe_listed_as(&link, &regular).unwrap();
        assert!(matches!(observed, Observed::NotRegular));
    }

    #[test]
    fn excluded_ancestors_exclude_their_subtree() {
        let config = FilesConfig::new("/r");
        let filter = PathFilter::new(&config.include, &config.exclude).unwrap();
        assert!(excluded_with_ancestors(&filter, ".git/objects/ab"));
        assert!(excluded_with_ancestors(&filter, "a/.cache"));
        assert!(!excluded_with_ancestors(&filter, "guides/intro.md"));
    }
}
