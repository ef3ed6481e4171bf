//! The vector index as a derived store.
//!
//! Every change of a chunk's vector is journaled (sequence → key) in the transaction that
//! makes it. The in-memory HNSW index applies journal entries in order and remembers the
//! last one applied. A snapshot is the index file `index-<seq>.usearch`, where `<seq>` is
//! the journal position it reflects; on start the newest snapshot is loaded and the
//! journal replayed from there, so a crash at any point loses no index update and applies
//! none twice. Journal entries covered by a snapshot are trimmed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use tidewater_index::{IndexConfig, UsearchIndex, VectorIndex};
use tidewater_metrics::Metrics;
use tracing::{info, warn};

use crate::state::{
    chunk_vector, get_chunk, get_doc, parse_chunk, parse_doc, CHUNKS, COUNTERS, DOCS, EMBEDDINGS,
    JOURNAL,
};
use crate::KnowledgeError;

/// Vectors handed to the index at once (it inserts them in parallel): a bound on the
/// memory a long catch-up or a rebuild holds, 6 MB of 384-d vectors.
const UPSERT_BATCH: usize = 4096;

/// A document's user metadata.
type Metadata = serde_json::Map<String, serde_json::Value>;

/// What search filters need to know about an indexed key, kept in memory.
#[derive(Debug, Clone)]
pub(crate) struct KeyInfo {
    pub doc_id: Arc<str>,
}

pub(crate) struct IndexStore {
    index: UsearchIndex,
    keys: RwLock<HashMap<u64, KeyInfo>>,
    /// Per document, its metadata (shared by all its chunks), for metadata filters.
    doc_metadata: RwLock<HashMap<Arc<str>, Arc<Metadata>>>,
    /// Last journal sequence applied; held while applying so entries go in order.
    applied: Mutex<u64>,
    dir: PathBuf,
    metrics: Arc<Metrics>,
}

/// Whether a snapshot taken at journal position `seq` can be brought up to date from the
/// state in `db`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotFit {
    /// The journal holds every entry after `seq`.
    Usable,
    /// Entries after `seq` were trimmed (a newer snapshot covered them): it is stale.
    Stale,
    /// The state has not journaled up to `seq`: the snapshot belongs to a state database
    /// that was deleted and is being rebuilt from the log. Its vectors and position mean
    /// nothing for this one.
    Foreign,
}

/// How a snapshot at `seq` fits the state. (Journal entries covered by the newest
/// snapshot are trimmed; an older snapshot cannot be used once that happened. A snapshot
/// is only ever taken at a position the state has written, so one ahead of the state is
/// from another state database.)
fn snapshot_fit(db: &Database, seq: u64) -> Result<SnapshotFit, KnowledgeError> {
    let txn = db.begin_read()?;
    let last_written = txn
        .open_table(COUNTERS)?
        .get("journal_next")?
        .map(|v| v.value())
        .unwrap_or(1)
        .saturating_sub(1);
    let first_kept = txn.open_table(JOURNAL)?.first()?.map(|(k, _)| k.value());
    Ok(if seq > last_written {
        SnapshotFit::Foreign
    } else if last_written == seq || first_kept.is_some_and(|first| first <= seq + 1) {
        SnapshotFit::Usable
    } else {
        SnapshotFit::Stale
    })
}

fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("index-{seq:020}.usearch"))
}

/// Snapshot files in `dir`, newest first.
fn snapshots(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = fs_err::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let seq = name
                        .strip_prefix("index-")?
                        .strip_suffix(".usearch")?
                        .parse()
                        .ok()?;
                    Some((seq, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    found
}

impl IndexStore {
    /// Loads the newest usable snapshot (or starts empty) and replays the journal.
    pub(crate) fn open(
        db: &Database,
        dir: &Path,
        dimension: usize,
        config: &IndexConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KnowledgeError> {
        fs_err::create_dir_all(dir).map_err(|e| KnowledgeError::State(redb::Error::Io(e)))?;
        let mut loaded = None;
        for (seq, path) in snapshots(dir) {
            match snapshot_fit(db, seq)? {
                SnapshotFit::Usable => {}
                SnapshotFit::Stale => {
                    warn!(path = %path.display(), "index snapshot is older than the journal reaches back; rebuilding the index from the state instead");
                    break;
                }
                SnapshotFit::Foreign => {
                    warn!(path = %path.display(), "index snapshot is ahead of the state database (it was rebuilt from the log); removing the snapshot");
                    if let Err(e) = fs_err::remove_file(&path) {
                        warn!(error = %e, "cannot remove the index snapshot; it is ignored");
                    }
                    continue;
                }
            }
            match UsearchIndex::load(&path, dimension, config) {
                Ok(index) => {
                    loaded = Some((seq, index));
                    break;
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot load index snapshot; trying an older one")
                }
            }
        }
        let (applied, index, rebuild) = match loaded {
            Some((seq, index)) => (seq, index, false),
            None => (0, UsearchIndex::new(dimension, config)?, true),
        };
        let store = Self {
            index,
            keys: RwLock::new(HashMap::new()),
            doc_metadata: RwLock::new(HashMap::new()),
            applied: Mutex::new(applied),
            dir: dir.to_path_buf(),
            metrics,
        };
        store.load_key_info(db, rebuild)?;
        if rebuild {
            // The full rebuild reflects everything journaled so far.
            let txn = db.begin_read()?;
            let journal = txn.open_table(JOURNAL)?;
            *store.applied.lock() = journal.last()?.map(|(k, _)| k.value()).unwrap_or(0);
        }
        store.catch_up(db)?;
        info!(
            vectors = store.index.len(),
            snapshot = !rebuild,
            "vector index ready"
        );
        Ok(store)
    }

    /// Reads key → document (and, when rebuilding, every vector) from the state.
    fn load_key_info(&self, db: &Database, insert_vectors: bool) -> Result<(), KnowledgeError> {
        let txn = db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let embeddings = txn.open_table(EMBEDDINGS)?;
        let docs = txn.open_table(DOCS)?;
        let mut keys = self.keys.write();
        let mut metadata = self.doc_metadata.write();
        for entry in docs.iter()? {
            let (doc_id, row) = entry?;
            let row = parse_doc(doc_id.value(), row.value())?;
            metadata.insert(Arc::from(doc_id.value()), Arc::new(row.metadata));
        }
        let mut upserts = Vec::new();
        for entry in chunks.iter()? {
            let (key, row) = entry?;
            let row = parse_chunk(key.value(), row.value())?;
            if insert_vectors {
                self.queue_upsert(&mut upserts, key.value(), chunk_vector(&embeddings, &row)?)?;
            }
            keys.insert(
                key.value(),
                KeyInfo {
                    doc_id: Arc::from(row.doc_id.as_str()),
                },
            );
        }
        self.index.upsert_many(&upserts)?;
        self.metrics.index_vectors.set(self.index.len() as i64);
        self.metrics.documents.set(metadata.len() as i64);
        Ok(())
    }

    /// Adds `(key, vector)` to `upserts`, handing them to the index once there are
    /// [`UPSERT_BATCH`]; the caller hands over the rest at the end.
    fn queue_upsert(
        &self,
        upserts: &mut Vec<(u64, Vec<f32>)>,
        key: u64,
        vector: Vec<f32>,
    ) -> Result<(), KnowledgeError> {
        upserts.push((key, vector));
        if upserts.len() == UPSERT_BATCH {
            self.index.upsert_many(upserts)?;
            upserts.clear();
        }
        Ok(())
    }

    /// Applies every journal entry after the last applied one.
    pub(crate) fn catch_up(&self, db: &Database) -> Result<(), KnowledgeError> {
        let mut applied = self.applied.lock();
        self.catch_up_in(&mut applied, &db.begin_read()?)
    }

    /// [`IndexStore::catch_up`] with the lock held, reading the state as of `txn`.
    fn catch_up_in(&self, applied: &mut u64, txn: &ReadTransaction) -> Result<(), KnowledgeError> {
        let journal = txn.open_table(JOURNAL)?;
        let chunks = txn.open_table(CHUNKS)?;
        let embeddings = txn.open_table(EMBEDDINGS)?;
        let docs = txn.open_table(DOCS)?;
        let mut last = *applied;
        let mut touched_docs = Vec::new();
        // Each entry brings its key in line with the committed state, whatever happened
        // before, so a key named twice needs doing once; the vectors go in as one batch,
        // which the index may insert in parallel.
        let mut seen = HashSet::new();
        let mut upserts = Vec::new();
        for entry in journal.range(*applied + 1..)? {
            let (seq, key) = entry?;
            let key = key.value();
            last = seq.value();
            if !seen.insert(key) {
                continue;
            }
            match get_chunk(&chunks, key)? {
                Some(row) => {
                    self.queue_upsert(&mut upserts, key, chunk_vector(&embeddings, &row)?)?;
                    let doc_id: Arc<str> = Arc::from(row.doc_id.as_str());
                    touched_docs.push(Arc::clone(&doc_id));
                    self.keys.write().insert(key, KeyInfo { doc_id });
                }
                None => {
                    self.index.remove(key)?;
                    if let Some(info) = self.keys.write().remove(&key) {
                        touched_docs.push(info.doc_id);
                    }
                }
            }
        }
        self.index.upsert_many(&upserts)?;
        if last != *applied {
            let mut metadata = self.doc_metadata.write();
            for doc_id in touched_docs {
                match get_doc(&docs, &doc_id)? {
                    Some(row) => metadata.insert(doc_id, Arc::new(row.metadata)),
                    None => metadata.remove(&doc_id),
                };
            }
            self.metrics.documents.set(metadata.len() as i64);
            self.metrics.index_vectors.set(self.index.len() as i64);
        }
        *applied = last;
        Ok(())
    }

    /// Compares the index with the committed state and repairs any difference: a chunk
    /// missing from the index is inserted, an indexed key without a chunk is removed.
    /// Returns how many keys needed repair (0 unless something went wrong before).
    pub(crate) fn verify(&self, db: &Database) -> Result<usize, KnowledgeError> {
        // Catch up and compare under one lock and one read transaction, so commits made
        // meanwhile are neither half seen nor mistaken for drift.
        let mut applied = self.applied.lock();
        let txn = db.begin_read()?;
        self.catch_up_in(&mut applied, &txn)?;
        let chunks = txn.open_table(CHUNKS)?;
        let embeddings = txn.open_table(EMBEDDINGS)?;
        let mut repaired = 0;
        let mut in_state = HashSet::new();
        for entry in chunks.iter()? {
            let (key, row) = entry?;
            let key = key.value();
            in_state.insert(key);
            if !self.index.contains(key) {
                let row = parse_chunk(key, row.value())?;
                warn!(key, chunk = %row.chunk_id, "chunk missing from the vector index; re-inserting");
                self.index.upsert(key, &chunk_vector(&embeddings, &row)?)?;
                self.keys.write().insert(
                    key,
                    KeyInfo {
                        doc_id: Arc::from(row.doc_id.as_str()),
                    },
                );
                repaired += 1;
            }
        }
        let extra: Vec<u64> = self
            .keys
            .read()
            .keys()
            .filter(|k| !in_state.contains(k))
            .copied()
            .collect();
        for key in extra {
            warn!(key, "vector index holds a key with no chunk; removing it");
            self.index.remove(key)?;
            self.keys.write().remove(&key);
            repaired += 1;
        }
        if self.index.len() != in_state.len() {
            return Err(KnowledgeError::Corrupt(format!(
                "the vector index holds {} vectors for {} chunks after repair",
                self.index.len(),
                in_state.len()
            )));
        }
        self.metrics.index_vectors.set(self.index.len() as i64);
        Ok(repaired)
    }

    /// Writes a snapshot of the index as of the last applied journal entry, removes older
    /// snapshots and trims the journal entries it covers.
    pub(crate) fn snapshot(&self, db: &Database) -> Result<u64, KnowledgeError> {
        self.catch_up(db)?;
        let seq = {
            let applied = self.applied.lock();
            let path = snapshot_path(&self.dir, *applied);
            if !path.exists() {
                self.index.save(&path)?;
            }
            *applied
        };
        for (old, path) in snapshots(&self.dir) {
            // Older ones are covered; a newer one can only be left from a deleted state.
            if old != seq {
                let _ = fs_err::remove_file(path);
            }
        }
        let txn = db.begin_write()?;
        {
            let mut journal = txn.open_table(JOURNAL)?;
            journal.retain_in(..=seq, |_, _| false)?;
        }
        txn.commit()?;
        Ok(seq)
    }

    pub(crate) fn index(&self) -> &UsearchIndex {
        &self.index
    }

    /// Document id of an indexed key.
    pub(crate) fn doc_of(&self, key: u64) -> Option<Arc<str>> {
        self.keys.read().get(&key).map(|k| Arc::clone(&k.doc_id))
    }

    /// Metadata of an indexed document.
    pub(crate) fn metadata_of(
        &self,
        doc_id: &str,
    ) -> Option<Arc<serde_json::Map<String, serde_json::Value>>> {
        self.doc_metadata.read().get(doc_id).cloned()
    }

    /// The last applied journal sequence.
    pub(crate) fn applied(&self) -> u64 {
        *self.applied.lock()
    }
}
