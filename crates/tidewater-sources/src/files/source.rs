//! [`FileSource`]: compares what is on disk with what was last delivered and emits the
//! difference, for a full listing ([`FileSource::scan`]) or for the paths a watcher
//! reported (see `watch.rs`).

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::io::{self, Read};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tidewater_core::time::now_ms;
use tidewater_core::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};

use super::config::FilesConfig;
use super::error::SourceError;
use super::filter::PathFilter;
use super::state::{mtime_ns, FileRecord, SourceState};
use super::walk::walk;
use crate::sink::DocumentSink;

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
    /// unreadable, a symbolic link, a name that is not UTF-8).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Turns one folder into document events; see the [module docs](super).
pub struct FileSource {
    config: FilesConfig,
    /// The configured root, canonicalised: watcher events carry paths under it.
    root: PathBuf,
    source_name: String,
    filter: PathFilter,
    state_path: PathBuf,
    sink: Arc<dyn DocumentSink>,
    /// Held for a whole pass, so passes never interleave and the events of one document
    /// reach the sink in the order its versions were observed.
    state: Mutex<SourceState>,
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
    /// A source over `config.root` that delivers to `sink` and remembers what it delivered
    /// in `state_path` (created on first use; its directory is created if missing).
    ///
    /// Fails if a glob is invalid, the root is not a readable directory, or an existing
    /// state file cannot be read.
    pub fn new(
        config: FilesConfig,
        state_path: PathBuf,
        sink: Arc<dyn DocumentSink>,
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
                    continue;
                };
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
    fn with_pass(
        &self,
        body: impl FnOnce(&mut Pass<'_>) -> Result<(), SourceError>,
    ) -> Result<ScanReport, SourceError> {
        let mut state = self.state.lock();
        let mut pass = Pass {
            source: self,
            state: &mut state,
            batch: Vec::new(),
            batch_bytes: 0,
            pending: HashMap::new(),
            report: ScanReport::default(),
        };
        let outcome = body(&mut pass).and_then(|()| pass.flush());
        let report = std::mem::take(&mut pass.report);
        let persisted = if state.dirty {
            state.persist(&self.state_path, &self.source_name, &self.root)
        } else {
            Ok(())
        };
        match (outcome, persisted) {
            (Ok(()), Ok(())) => Ok(report),
            (Ok(()), Err(err)) => Err(err),
            (Err(err), persisted) => {
                if let Err(persist_err) = persisted {
                    tracing::warn!(error = %super::error::ErrorChain(&persist_err), "cannot persist file source state after a failed pass");
                }
                Err(err)
            }
        }
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
fn known_under<'a>(
    docs: &'a std::collections::BTreeMap<String, FileRecord>,
    scope: &'a str,
) -> impl Iterator<Item = (&'a String, &'a FileRecord)> + 'a {
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
    /// Replaced by something that is not a regular file since it was listed.
    NotRegular,
    /// Larger than `max_file_bytes`.
    Oversized { size: u64 },
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
    let file = match fs_err::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Observed::Gone,
        Err(err) => return Observed::Unreadable(err),
    };
    // Size and mtime from the open handle, taken before reading: if the file changes
    // while being read, the next listing sees a different (size, mtime) and reads again.
    let opened = match file.metadata() {
        Ok(meta) => meta,
        Err(err) => return Observed::Unreadable(err),
    };
    if !opened.is_file() {
        return Observed::NotRegular;
    }
    if opened.len() > max {
        return Observed::Oversized { size: opened.len() };
    }
    let verified_at_ms = now_ms();
    let mut body = Vec::with_capacity(usize::try_from(opened.len()).unwrap_or(0));
    // One byte past the limit tells a file that grew since the stat from one that did not.
    if let Err(err) = file.take(max.saturating_add(1)).read_to_end(&mut body) {
        return Observed::Unreadable(err);
    }
    let size = body.len() as u64;
    if size > max {
        return Observed::Oversized { size };
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
            self.report.skipped.extend(outcome.skipped);
            if outcome.aborted {
                return Ok(());
            }
            unreadable = outcome.unreadable_dirs;
        } else if !excluded_with_ancestors(&source.filter, id) {
            match fs_err::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => {
                    let outcome = walk(path, id, &source.filter, stop, |path, id, meta| {
                        if self.check_file(path, id, Some(meta), observed_at)? {
                            seen.insert(id.to_owned());
                        }
                        Ok(())
                    })?;
                    self.report.skipped.extend(outcome.skipped);
                    if outcome.aborted {
                        return Ok(());
                    }
                    unreadable = outcome.unreadable_dirs;
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
        self.sweep(id, &seen, &unreadable, observed_at)
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
        match observe(path, meta, self.current(id), max) {
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
            Observed::Oversized { size } => {
                tracing::warn!(path = %path.display(), size, max, "file exceeds max_file_bytes; not emitted");
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

    fn push(
        &mut self,
        event: DocumentEvent,
        record: Option<FileRecord>,
    ) -> Result<(), SourceError> {
        self.batch_bytes += event.body.len();
        self.pending.insert(event.doc_id.clone(), record);
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
        let delivered = self.source.sink.send(events);
        let pending = std::mem::take(&mut self.pending);
        delivered?;
        for (id, record) in pending {
            match record {
                Some(record) => self.state.docs.insert(id, record),
                None => self.state.docs.remove(&id),
            };
        }
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

    #[test]
    fn excluded_ancestors_exclude_their_subtree() {
        let config = FilesConfig::new("/r");
        let filter = PathFilter::new(&config.include, &config.exclude).unwrap();
        assert!(excluded_with_ancestors(&filter, ".git/objects/ab"));
        assert!(excluded_with_ancestors(&filter, "a/.cache"));
        assert!(!excluded_with_ancestors(&filter, "guides/intro.md"));
    }
}
