//! [`UsearchIndex`]: an HNSW graph held by usearch, with `f32` vectors.
//!
//! Concurrency: searches run in parallel with each other under a read lock; upserts and
//! removals take the write lock, so a search never sees a vector half written. usearch
//! could insert concurrently with searches, but it reuses the slots of removed vectors in
//! place, which a concurrent reader could observe mid-update. One insertion takes in the
//! order of a millisecond, so that is about how long a search may wait.
//! [`VectorIndex::upsert_many`] inserts with one thread per core under the write lock
//! (usearch's graph takes concurrent insertions; searches are what must not overlap them),
//! [`UPSERT_GROUP`] vectors per hold of the lock, so a search waits at most for one group.
//!
//! usearch keeps one scratch context per concurrent operation, allocated by `reserve`;
//! an operation that finds none free fails. A counting semaphore therefore admits at most
//! as many searches at once as there are contexts.
//!
//! Capacity: usearch does not grow by itself; an insertion into a full index fails. The
//! index doubles its capacity (under the write lock, as usearch requires) when full.
//!
//! On disk: usearch's own format (a matrix of vectors followed by the graph), which
//! records dimension, metric and element type; [`UsearchIndex::load`] checks them.

use std::path::Path;

use parking_lot::{Condvar, Mutex, RwLock};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::config::{IndexConfig, Metric};
use crate::error::IndexError;
use crate::metric::{check_vector, sort_hits};
use crate::persist::write_atomically;
use crate::vector_index::{Hit, VectorIndex};

/// Capacity reserved by a new index, and the least it grows by.
const MIN_CAPACITY: usize = 1024;

/// Vectors [`VectorIndex::upsert_many`] inserts per hold of the write lock: with two
/// threads and ~1–2 ms per insertion into a large graph, searches wait at most ~0.2 s.
pub const UPSERT_GROUP: usize = 256;

/// Fewer insertions than this per thread are not worth a thread.
const MIN_PER_THREAD: usize = 16;

/// usearch marks deleted entries with the largest key.
const RESERVED_KEY: u64 = u64::MAX;

/// An approximate nearest-neighbour index (HNSW) backed by usearch; the default index.
///
/// Vectors are stored as `f32`, so recall is not reduced by quantisation.
pub struct UsearchIndex {
    index: RwLock<Index>,
    dimension: usize,
    metric: Metric,
    /// Scratch contexts reserved in usearch, one per concurrent operation.
    contexts: usize,
    /// Threads [`VectorIndex::upsert_many`] inserts with: one per core, within `contexts`.
    insert_threads: usize,
    searches: Semaphore,
}

impl UsearchIndex {
    /// An empty index for vectors of `dimension` components.
    pub fn new(dimension: usize, config: &IndexConfig) -> Result<Self, IndexError> {
        config.validate()?;
        if dimension == 0 {
            return Err(IndexError::InvalidConfig {
                field: "dimension",
                reason: "must be at least 1",
            });
        }
        let index = Index::new(&options(dimension, config))
            .map_err(|e| IndexError::usearch("create an index", e))?;
        let contexts = context_count();
        index
            .reserve_capacity_and_threads(MIN_CAPACITY, contexts)
            .map_err(|e| IndexError::usearch("reserve capacity", e))?;
        Ok(Self::wrap(index, dimension, config.metric, contexts))
    }

    /// Loads an index saved by [`VectorIndex::save`]. The file must have been built with
    /// the same dimension and metric; `m` is the one the file was built with, the
    /// `ef_*` settings are taken from `config`. A missing file is an
    /// [`IndexError::Io`] of kind `NotFound`.
    pub fn load(path: &Path, dimension: usize, config: &IndexConfig) -> Result<Self, IndexError> {
        config.validate()?;
        let path_str = path.to_str().ok_or_else(|| IndexError::NonUtf8Path {
            path: path.to_path_buf(),
        })?;
        // Reports a missing file as such, with its path, before usearch does in words.
        fs_err::metadata(path)?;
        let metadata = Index::metadata(path_str).map_err(|e| IndexError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let incompatible = |reason: String| IndexError::IncompatibleFile {
            path: path.to_path_buf(),
            reason,
        };
        if metadata.dimensions != dimension as u64 {
            return Err(incompatible(format!(
                "it holds {}-dimensional vectors, {dimension} were expected",
                metadata.dimensions
            )));
        }
        if metadata.metric != metric_kind(config.metric) {
            return Err(incompatible(format!(
                "it was built with metric {:?}, {:?} was expected",
                metadata.metric, config.metric
            )));
        }
        if metadata.quantization != ScalarKind::F32 || metadata.multi {
            return Err(incompatible(format!(
                "it stores {:?} elements (multi-vector: {}), f32 single vectors were expected",
                metadata.quantization, metadata.multi
            )));
        }
        let index = Index::new(&options(dimension, config))
            .map_err(|e| IndexError::usearch("create an index", e))?;
        index.load(path_str).map_err(|e| IndexError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        // Search and construction breadth are not stored in the file.
        index.change_expansion_add(config.ef_construction);
        index.change_expansion_search(config.ef_search);
        let contexts = context_count();
        let capacity = index.capacity().max(index.size() + MIN_CAPACITY);
        index
            .reserve_capacity_and_threads(capacity, contexts)
            .map_err(|e| IndexError::usearch("reserve capacity", e))?;
        Ok(Self::wrap(index, dimension, config.metric, contexts))
    }

    fn wrap(index: Index, dimension: usize, metric: Metric, contexts: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            index: RwLock::new(index),
            dimension,
            metric,
            contexts,
            insert_threads: cores.min(contexts),
            searches: Semaphore::new(contexts),
        }
    }

    /// Number of vectors the index can hold before it next grows.
    pub fn capacity(&self) -> usize {
        self.index.read().capacity()
    }

    /// Checks one vector to store under `key`.
    fn check_item(&self, key: u64, vector: &[f32]) -> Result<(), IndexError> {
        check_vector(vector, self.dimension, Some(key))?;
        if key == RESERVED_KEY {
            return Err(IndexError::ReservedKey { key });
        }
        Ok(())
    }

    /// Grows `index` so that `additional` more vectors fit: to at least twice its
    /// capacity, and by at least [`MIN_CAPACITY`].
    fn make_room(&self, index: &Index, additional: usize) -> Result<(), IndexError> {
        // `size` counts live vectors and `capacity` all slots, removed ones included;
        // removed slots are reused, so the index is full only when the two are equal.
        let (size, capacity) = (index.size(), index.capacity());
        if size + additional > capacity {
            let grown = (size + additional)
                .max(capacity.saturating_mul(2))
                .max(capacity + MIN_CAPACITY);
            index
                .reserve_capacity_and_threads(grown, self.contexts)
                .map_err(|e| IndexError::usearch(format!("grow to {grown} vectors"), e))?;
        }
        Ok(())
    }
}

/// usearch refuses a duplicate key; replacing means removing first.
fn remove_for_replacement(index: &Index, key: u64) -> Result<(), IndexError> {
    if index.contains(key) {
        index
            .remove(key)
            .map_err(|e| IndexError::usearch(format!("remove key {key}"), e))?;
    }
    Ok(())
}

fn add(index: &Index, key: u64, vector: &[f32]) -> Result<(), IndexError> {
    index
        .add(key, vector)
        .map_err(|e| IndexError::usearch(format!("add key {key}"), e))
}

impl VectorIndex for UsearchIndex {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn upsert(&self, key: u64, vector: &[f32]) -> Result<(), IndexError> {
        self.check_item(key, vector)?;
        let index = self.index.write();
        remove_for_replacement(&index, key)?;
        self.make_room(&index, 1)?;
        add(&index, key, vector)
    }

    fn upsert_many(&self, items: &[(u64, Vec<f32>)]) -> Result<(), IndexError> {
        let mut keys = std::collections::HashSet::with_capacity(items.len());
        for (key, vector) in items {
            self.check_item(*key, vector)?;
            if !keys.insert(*key) {
                return Err(IndexError::DuplicateKey { key: *key });
            }
        }
        for group in items.chunks(UPSERT_GROUP) {
            let index = self.index.write();
            for (key, _) in group {
                remove_for_replacement(&index, *key)?;
            }
            self.make_room(&index, group.len())?;
            let add = |part: &[(u64, Vec<f32>)]| {
                part.iter()
                    .try_for_each(|(key, vector)| add(&index, *key, vector))
            };
            // No search runs under the write lock, so every context is free for inserts.
            let threads = self.insert_threads.min(group.len() / MIN_PER_THREAD);
            if threads <= 1 {
                add(group)?;
                continue;
            }
            std::thread::scope(|scope| {
                let handles: Vec<_> = group
                    .chunks(group.len().div_ceil(threads))
                    .map(|part| scope.spawn(move || add(part)))
                    .collect();
                handles.into_iter().try_for_each(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
            })?;
        }
        Ok(())
    }

    fn remove(&self, key: u64) -> Result<bool, IndexError> {
        if key == RESERVED_KEY {
            return Ok(false);
        }
        let index = self.index.write();
        let removed = index
            .remove(key)
            .map_err(|e| IndexError::usearch(format!("remove key {key}"), e))?;
        Ok(removed > 0)
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<Hit>, IndexError> {
        check_vector(query, self.dimension, None)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let _context = self.searches.acquire();
        let index = self.index.read();
        if index.size() == 0 {
            return Ok(Vec::new());
        }
        let matches = match filter {
            None => index.search(query, k),
            // usearch keeps exploring the graph past filtered-out nodes until it has
            // `ef_search` accepted candidates, so a selective filter costs time, not recall.
            Some(filter) => index.filtered_search(query, k, filter),
        }
        .map_err(|e| IndexError::usearch("search", e))?;
        let mut hits: Vec<Hit> = matches
            .keys
            .iter()
            .zip(&matches.distances)
            .map(|(&key, &distance)| Hit {
                key,
                score: self.metric.score_from_distance(distance),
            })
            .collect();
        sort_hits(&mut hits);
        Ok(hits)
    }

    fn len(&self) -> usize {
        self.index.read().size()
    }

    fn contains(&self, key: u64) -> bool {
        key != RESERVED_KEY && self.index.read().contains(key)
    }

    fn save(&self, path: &Path) -> Result<(), IndexError> {
        // The read lock keeps writers out, so the file is one consistent state.
        let index = self.index.read();
        write_atomically(path, |temporary| {
            let temporary_str = temporary.to_str().ok_or_else(|| IndexError::NonUtf8Path {
                path: temporary.to_path_buf(),
            })?;
            index
                .save(temporary_str)
                .map_err(|e| IndexError::usearch(format!("save to {}", temporary.display()), e))
        })
    }
}

impl std::fmt::Debug for UsearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsearchIndex")
            .field("dimension", &self.dimension)
            .field("metric", &self.metric)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

fn options(dimension: usize, config: &IndexConfig) -> IndexOptions {
    IndexOptions {
        dimensions: dimension,
        metric: metric_kind(config.metric),
        quantization: ScalarKind::F32,
        connectivity: config.m,
        expansion_add: config.ef_construction,
        expansion_search: config.ef_search,
        multi: false,
    }
}

fn metric_kind(metric: Metric) -> MetricKind {
    match metric {
        Metric::Cosine => MetricKind::Cos,
        Metric::L2 => MetricKind::L2sq,
        Metric::InnerProduct => MetricKind::IP,
    }
}

/// Scratch contexts to reserve: one per core, and at least a few so that searches from an
/// async runtime's worker threads do not queue on a small machine.
fn context_count() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .clamp(4, 64)
}

/// A counting semaphore: at most `permits` holders at once.
struct Semaphore {
    free: Mutex<usize>,
    released: Condvar,
}

impl Semaphore {
    fn new(permits: usize) -> Self {
        Self {
            free: Mutex::new(permits),
            released: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.released.wait(&mut free);
        }
        *free -= 1;
        Permit(self)
    }
}

struct Permit<'a>(&'a Semaphore);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.released.notify_one();
    }
}
